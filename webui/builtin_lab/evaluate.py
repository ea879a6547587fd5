"""Score Easel's built-in model with a classical detector on prompts it samples itself.

`detect` finds the objects of a 64x64 scene without any learned model: the background is the dominant border
colour; foreground pixels (far from it) form connected components; each component's colour is the nearest palette
colour to its core pixels and its shape comes from contour geometry (a hole -> ring; low solidity -> star or
cross, told apart by how much of the enclosing circle they fill; otherwise circle/square/triangle by that fill
ratio); its position is the 3x3 grid cell of its centroid. `validate_detector` checks it on rendered ground truth.
`highlight_mask` reads a segmentation-as-editing result back into a mask (pixels that changed from the source
towards the highlight colour). `evaluate` runs the model on held-out prompts of each kind and reports:

    python -m webui.builtin_lab.evaluate --model models/builtin/easel-shapes --n 200
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from webui.builtin import data as D

logger = logging.getLogger(__name__)

PALETTE_ARRAY = np.array([D.PALETTE[c] for c in D.COLORS], dtype=np.float32)  # [10,3]
FOREGROUND_DISTANCE = 45.0  # RGB distance from the background above which a pixel is foreground
MIN_AREA = 8  # components smaller than this (in output pixels) are noise
UPSCALE = 4


@dataclass(frozen=True)
class Detection:
    color: str
    shape: str
    position: str
    cx: float
    cy: float
    area: int
    radius: float


def nearest_color(rgb: np.ndarray, exclude: str | None = None) -> str:
    d = np.linalg.norm(PALETTE_ARRAY - rgb[None].astype(np.float32), axis=1)  # [10]
    if exclude is not None:
        d[D.COLORS.index(exclude)] = np.inf
    return D.COLORS[int(np.argmin(d))]


def background_color(image: np.ndarray) -> tuple[str, np.ndarray]:
    """(palette name, median RGB) of the border pixels."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)  # [4S,3]
    names = [nearest_color(p) for p in border[:: max(1, len(border) // 64)]]
    name = max(set(names), key=names.count)
    close = border[np.linalg.norm(border - np.array(D.PALETTE[name], np.float32), axis=1) < 60]
    return name, (np.median(close, axis=0) if len(close) else np.array(D.PALETTE[name], np.float32))


def position_of(cx: float, cy: float, size: int = D.SIZE) -> str:
    col = 0 if cx < size * 0.375 else (2 if cx >= size * 0.625 else 1)
    row = 0 if cy < size * 0.375 else (2 if cy >= size * 0.625 else 1)
    return next(name for name, cell in D.POSITIONS.items() if cell == (col, row))


def classify_shape(alpha: np.ndarray) -> tuple[str, float]:
    """Shape name and enclosing radius (output pixels) of one object from its soft mask [H,W] in [0,1]."""
    big = cv2.resize(alpha, None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_LINEAR)
    binary = (big >= 0.5).astype(np.uint8)
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return "unknown", 0.0
    outer_idx = max((i for i in range(len(contours)) if hierarchy[0][i][3] < 0),
                    key=lambda i: cv2.contourArea(contours[i]))
    outer = contours[outer_idx]
    filled = cv2.contourArea(outer)
    holes = sum(cv2.contourArea(contours[i]) for i in range(len(contours)) if hierarchy[0][i][3] == outer_idx)
    (_, _), radius = cv2.minEnclosingCircle(outer)
    radius_px = radius / UPSCALE
    if filled <= 0:
        return "unknown", radius_px
    if holes > 0.08 * filled:
        return "ring", radius_px
    hull = cv2.convexHull(outer)
    solidity = filled / max(cv2.contourArea(hull), 1e-6)
    fill = filled / (np.pi * radius * radius)
    if solidity < 0.86:  # star ~0.55-0.73, cross ~0.74-0.82; circles, squares and triangles > 0.9
        return ("star" if fill < 0.61 else "cross"), radius_px  # fill: star ~0.42-0.57, cross ~0.65-0.69
    if fill > 0.8:
        return "circle", radius_px
    return ("square" if fill > 0.59 else "triangle"), radius_px  # square ~0.65-0.70, triangle ~0.44-0.53


def foreground_components(image: np.ndarray, min_area: int = MIN_AREA
                          ) -> tuple[np.ndarray, str, np.ndarray, list[np.ndarray]]:
    """(float image, background colour name, background RGB, components) of an RGB uint8 image [H,W,3]: each
    component a boolean mask [H,W] of connected pixels far from the background, at least `min_area` of them."""
    from scipy import ndimage

    img = image.astype(np.float32)
    bg_name, bg = background_color(image)
    dist = np.linalg.norm(img - bg[None, None], axis=-1)  # [H,W]
    labels, n = ndimage.label(dist > FOREGROUND_DISTANCE)
    components = [comp for comp in (labels == k for k in range(1, n + 1)) if comp.sum() >= min_area]
    return img, bg_name, bg, components


def detect(image: np.ndarray) -> tuple[str, list[Detection]]:
    """(background colour name, objects) of an RGB uint8 image [H,W,3]."""
    from scipy import ndimage

    img, bg_name, bg, components = foreground_components(image)
    found = []
    for comp in components:
        area = int(comp.sum())
        color, alpha = coverage(img, comp, bg_name, bg)
        shape, radius = classify_shape(alpha)
        filled = ndimage.binary_fill_holes(comp)
        ys, xs = np.nonzero(filled)
        cx, cy = float(xs.mean()) + 0.5, float(ys.mean()) + 0.5
        found.append(Detection(color, shape, position_of(cx, cy, image.shape[1]), cx, cy, area, radius))
    return bg_name, found


def coverage(img: np.ndarray, comp: np.ndarray, bg_name: str, bg: np.ndarray) -> tuple[str, np.ndarray]:
    """(palette colour, coverage [H,W] in [0,1]) of one foreground component of a float RGB image: the colour is
    that of its pixels farthest from the background; each pixel's coverage is where it lies on the line from the
    background to that colour (an anti-aliased edge or a faint halo counts by how much of the object it holds)."""
    from scipy import ndimage

    core = ndimage.binary_erosion(comp)
    pixels = img[core] if core.sum() >= 3 else img[comp]
    far = pixels[np.linalg.norm(pixels - bg, axis=1) >= np.median(np.linalg.norm(pixels - bg, axis=1))]
    color = nearest_color(np.median(far, axis=0), exclude=bg_name)
    span = np.array(D.PALETTE[color], np.float32) - bg  # [3]
    alpha = np.clip(((img - bg) @ span) / max(float(span @ span), 1e-6), 0.0, 1.0)  # [H,W]
    region = ndimage.binary_dilation(comp, iterations=1)
    return color, np.where(region, alpha, 0.0).astype(np.float32)


def scene_key(objects: list) -> list[tuple[str, str, str]]:
    return sorted((o.color, o.shape, o.position) for o in objects)


def validate_detector(n: int = 300, seed: int = 12345) -> float:
    """Share of rendered held-out scenes whose detected (colour, shape, position) set equals the truth."""
    good = 0
    for i in range(n):
        scene = D.random_scene(D.example_rng(seed, i, "eval"))
        image, _ = D.render(scene)
        bg, found = detect(image)
        good += bg == scene.background and scene_key(found) == scene_key(list(scene.objects))
    return good / n


def highlight_mask(result: np.ndarray, source: np.ndarray, highlight: str = D.DEFAULT_HIGHLIGHT,
                   threshold: float = 60.0) -> np.ndarray:
    """Bool mask [H,W] of pixels repainted towards the highlight colour (segmentation as editing).

    Pixels that moved towards the highlight colour by more than `threshold` are surely repainted; an edge pixel
    counts when it moved at least half as far as those (its object covered at least half of it).
    """
    r, s = result.astype(np.float32), source.astype(np.float32)
    h = np.array(D.HIGHLIGHTS[highlight], np.float32)
    change = np.linalg.norm(r - s, axis=-1)  # [H,W]
    towards = np.linalg.norm(r - h, axis=-1) < np.linalg.norm(s - h, axis=-1)  # [H,W]
    sure = (change > threshold) & towards
    if sure.sum() < 4:
        return np.zeros(change.shape, bool)
    return (change > 0.5 * float(np.median(change[sure]))) & towards


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


# ------------------------------------------------------------------------------------------------ model scoring


def _bg_phrase(rng: random.Random, bg: str) -> str:
    return " " + rng.choice(D.BACKGROUND_PHRASES).format(c=bg) if rng.random() < 0.5 else ""


def single_object_cases(n: int, seed: int) -> list[dict]:
    cases = []
    for i in range(n):
        rng = D.example_rng(seed, i, "eval")
        scene = D.random_scene(rng, n_objects=1)
        obj = scene.objects[0]
        with_pos = rng.random() < 0.6
        prompt = D.describe_object(rng, obj, size_p=0.3, position_p=1.0 if with_pos else 0.0)
        cases.append({"prompt": prompt + _bg_phrase(rng, scene.background), "color": obj.color, "shape": obj.shape,
                      "position": obj.position if with_pos else None})
    return cases


def relation_cases(n: int, seed: int) -> list[dict]:
    cases = []
    i = 0
    while len(cases) < n:
        rng = D.example_rng(seed + 1, i, "eval")
        i += 1
        scene = D.random_scene(rng, n_objects=2)
        if len(scene.objects) != 2:
            continue
        a, b = scene.objects
        if (a.color, a.shape) == (b.color, b.shape):
            continue
        rel = rng.choice(D.relation(a, b))
        prompt = (f"{D.describe_object(rng, a, position_p=0)} {rng.choice(D.RELATION_PHRASES[rel])} "
                  f"{D.describe_object(rng, b, position_p=0)}")
        cases.append({"prompt": prompt + _bg_phrase(rng, scene.background), "a": (a.color, a.shape),
                      "b": (b.color, b.shape), "relation": rel})
    return cases


def relation_holds(a: Detection, b: Detection, rel: str, margin: float = 4.0) -> bool:
    return {"left of": a.cx < b.cx - margin, "right of": a.cx > b.cx + margin,
            "above": a.cy < b.cy - margin, "below": a.cy > b.cy + margin}[rel]


class Runner:
    """Batched calls of the pipeline with one seeded generator per image."""

    def __init__(self, pipe, steps: int, guidance: float, batch: int, seed: int,
                 guidance_interval: tuple[float, float] | None = None, plan_layout: bool | None = None,
                 redraw_objects: bool | None = None) -> None:
        self.pipe, self.steps, self.guidance, self.batch, self.seed = pipe, steps, guidance, batch, seed
        self.guidance_interval, self.plan_layout, self.redraw_objects = guidance_interval, plan_layout, redraw_objects

    def __call__(self, prompts: list[str], **kwargs) -> list[np.ndarray]:
        import torch

        out: list[np.ndarray] = []
        per_image = {k: v for k, v in kwargs.items() if isinstance(v, list)}
        shared = {k: v for k, v in kwargs.items() if not isinstance(v, list)}
        for start in range(0, len(prompts), self.batch):
            chunk = prompts[start:start + self.batch]
            gens = [torch.Generator().manual_seed(self.seed + start + j) for j in range(len(chunk))]
            extra = {k: _stack(v[start:start + self.batch]) for k, v in per_image.items()}
            res = self.pipe(chunk, num_inference_steps=self.steps, guidance_scale=self.guidance, generator=gens,
                            guidance_interval=self.guidance_interval, plan_layout=self.plan_layout,
                            redraw_objects=self.redraw_objects, output_type="np", **shared, **extra).images
            out.extend((np.asarray(r) * 255.0).round().astype(np.uint8) for r in res)
        return out


def _stack(images: list[np.ndarray]):
    import torch

    arr = np.stack(images)
    if arr.ndim == 3:  # masks [B,H,W]
        return torch.from_numpy(arr.astype(np.float32))[:, None]
    return torch.from_numpy(arr.astype(np.float32) / 255.0).permute(0, 3, 1, 2)  # [B,3,H,W] in [0,1]


def evaluate(pipe, n: int = 200, seed: int = 0, steps: int = 20, guidance: float = 4.0, batch: int = 16,
             guidance_interval: tuple[float, float] | None = None, plan_layout: bool | None = None,
             redraw_objects: bool | None = None) -> dict:
    """Run every scored task on `n` held-out cases each; returns a dict of results. `guidance_interval`,
    `plan_layout` and `redraw_objects` None use the model's own defaults (its model_index.json)."""
    run = Runner(pipe, steps, guidance, batch, seed, guidance_interval, plan_layout, redraw_objects)
    results: dict = {"n": n, "steps": steps, "guidance_scale": guidance,
                     "guidance_interval": list(pipe.guidance_window(guidance_interval)),
                     "plan_layout": pipe.switch("plan_layout", plan_layout),
                     "redraw_objects": pipe.switch("redraw_objects", redraw_objects)}

    # single object: exact colour + shape (and position where named)
    cases = single_object_cases(n, seed)
    images = run([c["prompt"] for c in cases])
    ok = ok_pos = n_pos = 0
    for c, img in zip(cases, images):
        _, found = detect(img)
        right = len(found) == 1 and (found[0].color, found[0].shape) == (c["color"], c["shape"])
        ok += right
        if c["position"] is not None:
            n_pos += 1
            ok_pos += right and found[0].position == c["position"]
    results["single_object"] = ok / n
    results["single_object_position"] = ok_pos / max(n_pos, 1)

    # two objects with a relation
    cases = relation_cases(n, seed)
    images = run([c["prompt"] for c in cases])
    ok = 0
    for c, img in zip(cases, images):
        _, found = detect(img)
        if len(found) != 2:
            continue
        for a, b in (found, found[::-1]):
            if (a.color, a.shape) == c["a"] and (b.color, b.shape) == c["b"] and relation_holds(a, b, c["relation"]):
                ok += 1
                break
    results["relation"] = ok / n

    # inpainting a named shape into a box; outside the box must be unchanged
    srcs, masks, prompts, wants = [], [], [], []
    for i in range(n):
        rng = D.example_rng(seed + 2, i, "eval")
        while True:
            scene = D.random_scene(rng)
            image, obj_masks = D.render(scene)
            k = rng.randrange(len(scene.objects))
            box = D.inpaint_mask(rng, scene.objects[k])
            if not any((obj_masks[j] > 0.02)[box > 0].any() for j in range(len(scene.objects)) if j != k):
                break
        color = rng.choice([c for c in D.COLORS if c != scene.background])
        shape = rng.choice(D.SHAPES)
        srcs.append(image)
        masks.append(box)
        prompts.append(f"a {color} {shape}")
        wants.append((color, shape))
    images = run(prompts, image=srcs, mask_image=masks)
    inside = outside = 0
    for img, src, box, want in zip(images, srcs, masks, wants):
        outside += bool(np.array_equal(img[box == 0], src[box == 0]))
        _, found = detect(img)
        in_box = [f for f in found if box[min(int(f.cy), D.SIZE - 1), min(int(f.cx), D.SIZE - 1)] > 0]
        inside += len(in_box) == 1 and (in_box[0].color, in_box[0].shape) == want
    results["inpaint_inside"] = inside / n
    results["inpaint_outside_unchanged"] = outside / n

    # img2img at strength 0.3 keeps the scene
    srcs, prompts, keys = [], [], []
    for i in range(n):
        rng = D.example_rng(seed + 3, i, "eval")
        scene = D.random_scene(rng)
        srcs.append(D.render(scene)[0])
        prompts.append(D.caption(rng, scene)[0])
        keys.append(scene_key(list(scene.objects)))
    images = run(prompts, image=srcs, strength=0.3)
    results["img2img_keeps_scene"] = sum(scene_key(detect(img)[1]) == key for img, key in zip(images, keys)) / n

    # segmentation as editing, and the other instruction edits
    seg: dict[str, list[float]] = {"attribute": [], "position": [], "relation": []}
    absent_empty: list[bool] = []
    edits: dict[str, list[bool]] = {"recolor": [], "remove": [], "add": []}
    exs = []
    for i in range(n):
        rng = D.example_rng(seed + 4, i, "eval")
        task = rng.choices(["highlight", "absent", "recolor", "remove", "add"], weights=[4, 1, 1, 1, 1])[0]
        exs.append(D.sample_example(rng, task))
    images = run([e.prompt for e in exs], source_image=[e.source for e in exs])
    for e, img in zip(exs, images):
        if e.task in ("highlight", "absent"):
            pred = highlight_mask(img, e.source, e.info["highlight"])
            if e.task == "absent":
                absent_empty.append(not pred.any())
            else:
                seg[e.info["kind"]].append(iou(pred, e.info["mask"]))
        else:
            edits[e.task].append(scene_key(detect(img)[1]) == scene_key(list(e.info["target_scene"].objects)))
    results["segmentation_miou"] = {k: (statistics.fmean(v) if v else None) for k, v in seg.items()}
    results["segmentation_counts"] = {k: len(v) for k, v in seg.items()}
    results["absent_empty"] = statistics.fmean(absent_empty) if absent_empty else None
    results["edits"] = {k: (statistics.fmean(v) if v else None) for k, v in edits.items()}

    # latency: 20 steps with guidance, 64x64, batch 1
    import torch

    times = []
    for r in range(6):
        t0 = time.perf_counter()
        pipe("a red circle", num_inference_steps=20, guidance_scale=guidance, guidance_interval=guidance_interval,
             generator=torch.Generator().manual_seed(r))
        times.append(time.perf_counter() - t0)
    results["latency_s_median"] = statistics.median(times[1:])
    results["torch_threads"] = torch.get_num_threads()
    return results


def markdown(results: dict) -> str:
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    seg = results["segmentation_miou"]
    rows = [
        ("Single object: exact colour + shape", pct(results["single_object"]), ">= 90%"),
        ("Single object: also right position", pct(results["single_object_position"]), ">= 80%"),
        ("Two objects with a relation", pct(results["relation"]), ">= 70%"),
        ("Inpaint: named shape inside the mask", pct(results["inpaint_inside"]), ">= 80%"),
        ("Inpaint: outside the mask bit-identical", pct(results["inpaint_outside_unchanged"]), "100%"),
        ("img2img strength 0.3 keeps the scene", pct(results["img2img_keeps_scene"]), ">= 90%"),
        ("Segmentation mIoU, colour+shape queries", pct(seg["attribute"]), ""),
        ("Segmentation mIoU, position queries", pct(seg["position"]), ""),
        ("Segmentation mIoU, relation queries", pct(seg["relation"]), ""),
        ("Absent-object queries answered empty", pct(results["absent_empty"]), ""),
        ("Recolour edits correct", pct(results["edits"]["recolor"]), ""),
        ("Remove edits correct", pct(results["edits"]["remove"]), ""),
        ("Add edits correct", pct(results["edits"]["add"]), ""),
        ("Latency, 20 steps + CFG, 64x64, batch 1 (median)", f"{results['latency_s_median']:.2f} s "
         f"({results['torch_threads']} threads)", "<= 1 s"),
    ]
    window = results.get("guidance_interval")
    where = f" for noise levels {window[0]:g}-{window[1]:g}" if window and tuple(window) != (0.0, 1.0) else ""
    where += ", layout planned" if results.get("plan_layout") else ", no layout planning"
    where += ", objects redrawn" if results.get("plan_layout") and results.get("redraw_objects") else ""
    lines = [f"n = {results['n']} per row, {results['steps']} steps, guidance {results['guidance_scale']}{where}", "",
             "| metric | result | target |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def cli_parser(prog: str, description: str, n: int, n_help: str | None = None) -> argparse.ArgumentParser:
    """An evaluation CLI's parser with the options every evaluation takes: --model, --n, --seed, --steps,
    --guidance."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--model", type=Path, default=Path("models/builtin/easel-shapes"))
    p.add_argument("--n", type=int, default=n, help=n_help)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    return p


def parse_cli(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The parsed arguments, with logging set up and torch limited to `--threads` threads."""
    import torch

    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    return args


def load_pipeline(model: Path):
    """The built-in pipeline from `model`, its progress bar off."""
    from webui.builtin.pipeline import EaselPipeline

    pipe = EaselPipeline.from_pretrained(str(model))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_report(table: str, results: dict, path: Path) -> int:
    """Print the table, write the results as JSON to `path`; the CLI's exit status."""
    print(table)  # noqa: T201 - the CLI's output
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = cli_parser("python -m webui.builtin_lab.evaluate", __doc__.split("\n")[0], n=200)
    p.add_argument("--guidance-interval", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="guide only at noise levels in [LOW, HIGH] (default: the model's own setting)")
    p.add_argument("--plan-layout", action=argparse.BooleanOptionalAction, default=None,
                   help="plan positions for unplaced objects in text-to-image prompts (default: the model's setting)")
    p.add_argument("--redraw-objects", action=argparse.BooleanOptionalAction, default=None,
                   help="with a planned layout of two or more objects, inpaint each object again alone (default: the "
                        "model's setting)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=Path("outputs/builtin-eval.json"))
    p.add_argument("--validate-detector", type=int, default=300, help="ground-truth scenes to check first (0 = skip)")
    args = parse_cli(p, argv)
    results: dict = {}
    if args.validate_detector:
        results["detector_accuracy"] = validate_detector(args.validate_detector)
        logger.info("detector accuracy on %d rendered scenes: %.1f%%", args.validate_detector,
                    100 * results["detector_accuracy"])
    pipe = load_pipeline(args.model)
    info_path = args.model / "training.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        results["model_step"], results["model_loss"] = info.get("step"), info.get("loss")
    results.update(evaluate(pipe, args.n, args.seed, args.steps, args.guidance, args.batch, args.guidance_interval,
                            args.plan_layout, args.redraw_objects))
    table = markdown(results)
    if "detector_accuracy" in results:
        table += f"\n\nDetector accuracy on {args.validate_detector} rendered scenes: " \
                 f"{100 * results['detector_accuracy']:.1f}%"
    if "model_step" in results:
        table += f"\nModel: step {results['model_step']}, training loss {results['model_loss']}"
    return write_report(table, results, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
