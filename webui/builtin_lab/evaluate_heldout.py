"""Score the built-in model on the held-out world: scenes and phrasings it was not trained on, fixed seeds.

Scenes come from `heldout_world` (its own renderer: continuous positions and sizes, rotation, other anti-aliasing,
textured backgrounds) and prompts from its held-out templates; images are read back by the classical detector of
`evaluate.py`, whose accuracy on held-out drawings is measured first and printed with the table. Text-to-image
runs twice: the **model alone** (no layout planning, no redraw) and the **shipped pipeline** (the model's
`model_index.json` defaults: planning and redraw on). Inpainting, img2img and segmentation do not plan, so they
run once. Segmentation is read out twice from the same edits: with the shipped read-out
(`webui.engine.mask_extraction.extract_mask`, default settings) and with its `snap_to_regions` setting.

    python -m webui.builtin_lab.evaluate_heldout --model models/builtin/easel-shapes --n 48
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from pathlib import Path

import numpy as np

from webui.builtin.data import COLORS, SHAPES
from webui.builtin_lab import evaluate as E
from webui.builtin_lab import heldout_world as W

logger = logging.getLogger(__name__)

TARGETS = {"single": 0.90, "single_position": 0.80, "pairs": 0.75, "counts": 0.70, "inpaint_inside": 0.80,
           "inpaint_outside": 1.0, "img2img": 0.90, "seg_miou": 0.80, "absent_empty": 0.90}


def _rng(task: str, seed: int, i: int) -> random.Random:
    return random.Random(f"heldout/{task}/{seed}/{i}")


# ------------------------------------------------------------------------------------------------ cases


def single_cases(n: int, seed: int) -> list[dict]:
    out = []
    for i in range(n):
        rng = _rng("single", seed, i)
        bg = rng.choice(COLORS)
        color, shape = rng.choice([c for c in COLORS if c != bg]), rng.choice(SHAPES)
        text = W.object_words(rng, color, shape)
        region = rng.choice(list(W.REGIONS)) if rng.random() < 0.6 else None
        if region:
            pos = rng.choice(W.HELD_OUT_POSITIONS[region])
            text = f"{text} {pos}" if rng.random() < 0.7 else f"{pos}, {text}"
        out.append({"prompt": W.with_background(rng, text, bg), "color": color, "shape": shape, "region": region})
    return out


def pair_cases(n: int, seed: int) -> list[dict]:
    out = []
    for i in range(n):
        rng = _rng("pairs", seed, i)
        bg = rng.choice(COLORS)
        (ca, sa), (cb, sb) = rng.sample([(c, s) for c in COLORS if c != bg for s in SHAPES], 2)
        rel = rng.choice(list(W.HELD_OUT_RELATIONS))
        text = rng.choice(W.HELD_OUT_PAIR).format(x=W.object_words(rng, ca, sa),
                                                 rel=rng.choice(W.HELD_OUT_RELATIONS[rel]),
                                                 y=W.object_words(rng, cb, sb))
        out.append({"prompt": W.with_background(rng, text, bg), "a": (ca, sa), "b": (cb, sb), "relation": rel})
    return out


def count_cases(n: int, seed: int) -> list[dict]:
    out = []
    for i in range(n):
        rng = _rng("counts", seed, i)
        bg = rng.choice(COLORS)
        color, shape, k = rng.choice([c for c in COLORS if c != bg]), rng.choice(SHAPES), 2 + i % 3
        text = rng.choice(W.HELD_OUT_COUNT[k]).format(c=color, p=W.PLURAL[shape])
        out.append({"prompt": W.with_background(rng, text, bg), "color": color, "shape": shape, "count": k})
    return out


def scene_cases(task: str, n: int, seed: int) -> list[dict]:
    """Held-out scenes of 1-3 things (2-3 for segmentation), alternating the two anti-aliasing styles."""
    out = []
    for i in range(n):
        rng = _rng(task, seed, i)
        k = rng.choice([2, 3]) if task == "segment" else rng.choice([1, 2, 3])
        world = W.random_world(rng, k)
        style = W.STYLES[i % 2]
        image, masks = W.draw(world, style=style, seed=rng.randrange(1 << 30))
        out.append({"world": world, "image": image, "masks": masks, "rng": rng, "style": style})
    return out


def truth_key(world: W.World) -> list[tuple[str, str, str]]:
    return sorted((t.color, t.shape, E.position_of(t.x, t.y)) for t in world.things)


# ------------------------------------------------------------------------------------------------ scoring


def validate_detector(n: int = 200, seed: int = 0) -> float:
    """Share of held-out drawings (1-3 things, both styles) whose detected (colour, shape, cell) set is right."""
    good = 0
    for i in range(n):
        rng = _rng("detector", seed, i)
        world = W.random_world(rng, rng.choice([1, 2, 3]))
        image, _ = W.draw(world, style=W.STYLES[i % 2], seed=i)
        bg, found = E.detect(image)
        good += bg == world.background and E.scene_key(found) == truth_key(world)
    return good / n


def score_txt2img(images: list[np.ndarray], singles: list[dict], pairs: list[dict], counts: list[dict]) -> dict:
    it = iter(images)
    ok = ok_pos = n_pos = 0
    for c in singles:
        found = E.detect(next(it))[1]
        right = len(found) == 1 and (found[0].color, found[0].shape) == (c["color"], c["shape"])
        ok += right
        if c["region"]:
            n_pos += 1
            ok_pos += right and found[0].position == c["region"]
    ok_pairs = 0
    for c in pairs:
        found = E.detect(next(it))[1]
        if len(found) == 2:
            ok_pairs += any((a.color, a.shape) == c["a"] and (b.color, b.shape) == c["b"] and
                            W.relation_holds(c["relation"], (a.cx, a.cy), (b.cx, b.cy))
                            for a, b in (found, found[::-1]))
    ok_counts = 0
    for c in counts:
        found = E.detect(next(it))[1]
        ok_counts += len(found) == c["count"] and all((f.color, f.shape) == (c["color"], c["shape"]) for f in found)
    return {"single": ok / len(singles), "single_position": ok_pos / max(n_pos, 1), "n_position": n_pos,
            "pairs": ok_pairs / len(pairs), "counts": ok_counts / len(counts)}


def score_segmentation(cases: list[dict], images: list[np.ndarray]) -> dict:
    from webui.engine.mask_extraction import MaskSettings, extract_mask

    magenta = (255, 0, 255)
    res: dict[str, list] = {"shipped": [], "snapped": [], "found": [], "absent_empty": []}
    for c, img in zip(cases, images):
        r = extract_mask(c["image"], img, magenta)
        if c["index"] is None:
            res["absent_empty"].append(not r.found)
            continue
        truth = c["masks"][c["index"]] >= 0.5
        res["found"].append(r.found)
        res["shipped"].append(E.iou(r.mask, truth))
        snapped = extract_mask(c["image"], img, magenta, MaskSettings(snap_to_regions=True))
        res["snapped"].append(E.iou(snapped.mask, truth))
    mean = lambda v: float(statistics.fmean(v)) if v else None  # noqa: E731
    return {"seg_miou": mean(res["shipped"]), "seg_miou_snapped": mean(res["snapped"]),
            "seg_found": mean(res["found"]), "absent_empty": mean(res["absent_empty"]),
            "n_present": len(res["shipped"]), "n_absent": len(res["absent_empty"])}


# ------------------------------------------------------------------------------------------------ run


def evaluate(pipe, n: int = 48, seed: int = 0, steps: int = 20, guidance: float = 4.0, batch: int = 16,
             parts: tuple[str, ...] = ("alone", "pipeline", "edits")) -> dict:
    """The held-out scores. `parts`: "alone" (txt2img, no planning), "pipeline" (txt2img with the model's
    defaults), "edits" (inpaint, img2img, segmentation)."""
    from webui.engine.segment_prompts import build_prompt

    results: dict = {"n": n, "seed": seed, "steps": steps, "guidance": guidance}
    singles, pairs, counts = single_cases(n, seed), pair_cases(n, seed), count_cases(n, seed)
    prompts = [c["prompt"] for c in singles + pairs + counts]
    for part, plan in (("alone", False), ("pipeline", None)):
        if part not in parts:
            continue
        run = E.Runner(pipe, steps, guidance, batch, seed, plan_layout=plan, redraw_objects=plan)
        t0 = time.perf_counter()
        results[part] = score_txt2img(run(prompts), singles, pairs, counts)
        results[part]["seconds"] = time.perf_counter() - t0
        logger.info("%s: %s", part, results[part])
    if "edits" not in parts:
        return results
    run = E.Runner(pipe, steps, guidance, batch, seed, plan_layout=False, redraw_objects=False)
    # inpainting: a box around one thing, which must not touch another; a held-out phrase for the new object
    cases = []
    for c in scene_cases("inpaint", n * 3, seed):
        world, rng = c["world"], c["rng"]
        k = rng.randrange(len(world.things))
        t = world.things[k]
        m = t.r + rng.uniform(3, 6)
        box = np.zeros((W.SIZE, W.SIZE), np.float32)
        box[max(0, int(t.y - m)):int(np.ceil(t.y + m)), max(0, int(t.x - m)):int(np.ceil(t.x + m))] = 1
        if any((c["masks"][j] > 0.02)[box > 0].any() for j in range(len(world.things)) if j != k):
            continue
        color = rng.choice([x for x in COLORS if x != world.background])
        shape = rng.choice(SHAPES)
        cases.append({"image": c["image"], "box": box, "prompt": W.object_words(rng, color, shape),
                      "want": (color, shape)})
        if len(cases) == n:
            break
    images = run([c["prompt"] for c in cases], image=[c["image"] for c in cases], mask_image=[c["box"] for c in cases])
    inside = outside = 0
    for c, img in zip(cases, images):
        outside += bool(np.array_equal(img[c["box"] == 0], c["image"][c["box"] == 0]))
        found = [f for f in E.detect(img)[1] if c["box"][min(int(f.cy), 63), min(int(f.cx), 63)] > 0]
        inside += len(found) == 1 and (found[0].color, found[0].shape) == c["want"]
    results["inpaint_inside"], results["inpaint_outside"] = inside / len(cases), outside / len(cases)
    # img2img at strength 0.3 with a held-out caption (comma list, held-out positions and background words)
    cases = scene_cases("img2img", n, seed)
    prompts = []
    for c in cases:
        rng = c["rng"]
        parts_ = [f"{W.object_words(rng, t.color, t.shape)} {rng.choice(W.HELD_OUT_POSITIONS[W.region_of(t.x, t.y)])}"
                  for t in c["world"].things]
        prompts.append(W.with_background(rng, ", ".join(parts_), c["world"].background))
    images = run(prompts, image=[c["image"] for c in cases], strength=0.3)
    results["img2img"] = sum(E.scene_key(E.detect(img)[1]) == truth_key(c["world"])
                             for c, img in zip(cases, images)) / n
    # segmentation: "highlight the <colour> <shape> in magenta" (the Segment tab's prompt); a quarter absent
    cases = scene_cases("segment", n, seed)
    for i, c in enumerate(cases):
        world, rng = c["world"], c["rng"]
        if i % 4 == 3:
            present = {(t.color, t.shape) for t in world.things}
            color, shape = rng.choice([(x, s) for x in COLORS if x != world.background for s in SHAPES
                                       if (x, s) not in present])
            c["index"] = None
        else:
            c["index"] = rng.randrange(len(world.things))
            color, shape = world.things[c["index"]].color, world.things[c["index"]].shape
        c["prompt"] = build_prompt("EaselPipeline", None, f"the {color} {shape}", "magenta")
    images = run([c["prompt"] for c in cases], source_image=[c["image"] for c in cases])
    results.update(score_segmentation(cases, images))
    return results


def markdown(results: dict) -> str:
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.0f}%"

    lines = ["| task (held-out renderer and phrasings) | model alone | shipped pipeline | target |",
             "| --- | --- | --- | --- |"]
    a, p = results.get("alone", {}), results.get("pipeline", {})
    for key, label in (("single", "txt2img single object: colour + shape, nothing else"),
                       ("single_position", "txt2img single object: also in the named region"),
                       ("pairs", "txt2img two objects with a relation"), ("counts", "txt2img counts 2-4 exact")):
        lines.append(f"| {label} | {pct(a.get(key))} | {pct(p.get(key))} | >= {pct(TARGETS[key])} |")
    for key, label in (("inpaint_inside", "inpaint: named shape inside the box"),
                       ("inpaint_outside", "inpaint: outside the box bit-identical"),
                       ("img2img", "img2img strength 0.3 keeps the scene"),
                       ("seg_miou", "segmentation mIoU, 2-3 objects, shipped read-out"),
                       ("seg_miou_snapped", "segmentation mIoU, read-out snapped to source objects"),
                       ("seg_found", "segmentation: present object found"),
                       ("absent_empty", "segmentation: absent object answered empty")):
        if key in results:
            target = f">= {pct(TARGETS[key])}" if key in TARGETS else ""
            lines.append(f"| {label} | {pct(results[key])} | (same: no planning) | {target} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = E.cli_parser("python -m webui.builtin_lab.evaluate_heldout", __doc__.split("\n")[0], n=48,
                     n_help="cases per task")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--parts", nargs="+", default=["alone", "pipeline", "edits"],
                   choices=["alone", "pipeline", "edits"])
    p.add_argument("--validate-detector", type=int, default=200, help="held-out drawings to check first (0 = skip)")
    p.add_argument("--json", type=Path, default=Path("outputs/builtin-heldout-eval.json"))
    args = E.parse_cli(p, argv)
    results: dict = {}
    if args.validate_detector:
        results["detector_accuracy"] = validate_detector(args.validate_detector)
    pipe = E.load_pipeline(args.model)
    t0 = time.perf_counter()
    results.update(evaluate(pipe, args.n, args.seed, args.steps, args.guidance, args.batch, tuple(args.parts)))
    results["seconds"] = time.perf_counter() - t0
    table = markdown(results)
    if "detector_accuracy" in results:
        table += (f"\n\nDetector accuracy on {args.validate_detector} held-out drawings: "
                  f"{100 * results['detector_accuracy']:.1f}%")
    table += f"\nn = {args.n} per task, {args.steps} steps, guidance {args.guidance}, seed {args.seed}"
    return E.write_report(table, results, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
