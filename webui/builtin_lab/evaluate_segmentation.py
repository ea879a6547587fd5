"""Score segmentation on held-out generated scenes against their true masks.

Cases come from the built-in model's scene generator (`webui.builtin.data`) on the held-out split: a scene, a
query and the true mask of the object it names. Queries are of four kinds, in equal numbers: the referent named
by colour and shape ("the red circle"), by position ("the star on the left"), by a relation to another object
("the square above the ring"), and an object that is not in the scene. Each query runs through the same code as
the Segment tab (`webui.engine.modes.segment.segment_query`: the family's template, the edit, mask extraction),
one segmentation at a time, and is timed. Reported: mIoU overall and by kind (an empty prediction scores 0 against
a present object), cumulative IoU (RefCOCO's cIoU), the share of present objects found, the share of absent
objects answered with found = false, and the median seconds per segmentation. A CLIPSeg folder (`--clipseg`, or
the first one in models/clipseg) is scored on the same cases as a baseline when present.

    python -m webui.builtin_lab.evaluate_segmentation --model models/builtin/easel-shapes --n 100
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from webui.builtin import data as D

log = logging.getLogger(__name__)

KINDS = ("attribute", "position", "relation", "absent")
KIND_LABELS = {"attribute": "colour + shape", "position": "with position", "relation": "with relation",
               "absent": "absent object"}
TARGETS = {"attribute": 0.85, "position": 0.75, "relation": 0.75, "absent": 0.90, "seconds": 2.0}


@dataclass(frozen=True)
class Case:
    """One held-out query: the scene image [64, 64, 3] uint8, the query, its kind and the true mask [64, 64]."""

    image: np.ndarray
    query: str
    kind: str
    mask: np.ndarray  # bool; all False for an absent object


def make_case(kind: str, index: int, seed: int) -> Case:
    """A case of `kind` from held-out scenes (scenes are drawn until one allows a query of that kind)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    rng = D.example_rng(seed + 7919 * (KINDS.index(kind) + 1), index, "eval")
    for _attempt in range(200):
        scene = D.random_scene(rng, n_objects=1 if kind == "attribute" and rng.random() < 0.3 else None)
        image, masks = D.render(scene)
        if kind == "absent":
            return Case(image, D.absent_referent(rng, scene), kind, np.zeros(image.shape[:2], bool))
        order = list(range(len(scene.objects)))
        rng.shuffle(order)
        for i in order:
            phrases = [p for p, k in D.referents(rng, scene, i) if k == kind]
            if kind == "attribute":  # named by colour and shape, as the target says
                colour_words = D.COLOR_WORDS[scene.objects[i].color]
                phrases = [p for p in phrases if any(f" {w} " in f" {p} " for w in colour_words)]
            if phrases:
                return Case(image, rng.choice(phrases), kind, masks[i] >= 0.5)
    raise RuntimeError(f"no scene allowed a {kind} query in 200 draws")


def make_cases(n: int, seed: int = 0) -> list[Case]:
    """`n` cases, the four kinds in turn (so each has about n/4)."""
    return [make_case(KINDS[i % len(KINDS)], i // len(KINDS), seed) for i in range(n)]


def iou(pred: np.ndarray, true: np.ndarray) -> float:
    union = np.logical_or(pred, true).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, true).sum() / union)


Segmenter = Callable[[Image.Image, str], tuple[np.ndarray, bool]]  # (image, query) -> (mask [H, W] bool, found)


def score(segment: Segmenter, cases: list[Case]) -> dict[str, Any]:
    """Run `segment` on every case and summarise (see the module docstring)."""
    ious: dict[str, list[float]] = {k: [] for k in KINDS[:3]}
    found_present: list[bool] = []
    absent_not_found: list[bool] = []
    inter = union = 0
    seconds: list[float] = []
    for case in cases:
        started = time.perf_counter()
        mask, found = segment(Image.fromarray(case.image), case.query)
        seconds.append(time.perf_counter() - started)
        if case.kind == "absent":
            absent_not_found.append(not found)
            continue
        ious[case.kind].append(iou(mask, case.mask))
        found_present.append(found)
        inter += int(np.logical_and(mask, case.mask).sum())
        union += int(np.logical_or(mask, case.mask).sum())
    present = [v for values in ious.values() for v in values]

    def mean(values: list[float] | list[bool]) -> float | None:
        return float(statistics.fmean(values)) if values else None

    return {
        "miou": mean(present),
        "miou_by_kind": {k: mean(v) for k, v in ious.items()},
        "counts": {**{k: len(v) for k, v in ious.items()}, "absent": len(absent_not_found)},
        "ciou": inter / union if union else None,
        "present_found": mean(found_present),
        "absent_not_found": mean(absent_not_found),
        "seconds_median": statistics.median(seconds) if seconds else None,
        "seconds_total": sum(seconds),
    }


def generative_segmenter(pipe: Any, steps: int, cfg_scale: float, seed: int, highlight: str = "magenta",
                         threshold: float = 12.0, keep_largest: bool = False) -> Segmenter:
    """The Segment tab's path for an editing pipeline (the built-in model at 64×64)."""
    from webui.engine.mask_extraction import MaskSettings
    from webui.engine.modes.segment import segment_query
    from webui.model_manager.identify import Arch

    arch = Arch.EASEL if type(pipe).__name__ == "EaselPipeline" else Arch.UNKNOWN
    settings = MaskSettings(change_threshold=threshold, keep_largest=keep_largest)

    def run(image: Image.Image, query: str) -> tuple[np.ndarray, bool]:
        result = segment_query(pipe, arch, image, query, highlight=highlight, steps=steps, cfg_scale=cfg_scale,
                               seed=seed, settings=settings)
        return result.mask, result.found

    return run


def clipseg_segmenter(folder: Path, mask_threshold: float = 0.4) -> Segmenter:
    """The Segment tab's path for a CLIPSeg folder (loaded offline from `folder`)."""
    import torch

    from webui.engine.clipseg import clipseg_probabilities
    from webui.engine.mask_extraction import MaskSettings
    from webui.engine.modes.segment import segment_with_probabilities
    from webui.model_manager.segmenters import SegmenterEntry, load_segmenter

    loaded = load_segmenter(SegmenterEntry(folder.name, folder, "clipseg"), "cpu", torch.float32)

    def run(image: Image.Image, query: str) -> tuple[np.ndarray, bool]:
        probs = clipseg_probabilities(loaded.model, loaded.processor, image, [query])
        result = segment_with_probabilities(image, [query], probs, mask_threshold, "magenta", MaskSettings())[0]
        return result.mask, result.found

    return run


def find_clipseg(roots: list[Path]) -> Path | None:
    from webui.model_manager.segmenters import scan_segmenters

    entries = [e for e in scan_segmenters(roots) if e.kind == "clipseg"]
    return entries[0].path if entries else None


def markdown(results: dict[str, Any]) -> str:
    """The results as the table in docs/BENCHMARKS.md."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    def verdict(value: float | None, target: float, lower_is_better: bool = False) -> str:
        if value is None:
            return ""
        return "met" if (value <= target if lower_is_better else value >= target) else "not met"

    runs = [("generative", results["generative"])]
    if results.get("clipseg"):
        runs.append(("CLIPSeg", results["clipseg"]))
    header = "| metric | target | " + " | ".join(name for name, _ in runs) + " |"
    lines = [header, "|" + " --- |" * (2 + len(runs))]

    def row(label: str, target: str, values: list[str]) -> None:
        lines.append(f"| {label} | {target} | " + " | ".join(values) + " |")

    g = results["generative"]
    for kind in KINDS[:3]:
        target = TARGETS[kind]
        row(f"mIoU, {KIND_LABELS[kind]} (n={g['counts'][kind]})", f"≥ {target:.2f}",
            [f"{num(r['miou_by_kind'][kind])} ({verdict(r['miou_by_kind'][kind], target)})" for _, r in runs])
    row("mIoU, all present objects", "", [num(r["miou"]) for _, r in runs])
    row("cIoU, all present objects", "", [num(r["ciou"]) for _, r in runs])
    row("present objects found", "", [pct(r["present_found"]) for _, r in runs])
    row(f"absent objects answered found = false (n={g['counts']['absent']})", "≥ 90%",
        [f"{pct(r['absent_not_found'])} ({verdict(r['absent_not_found'], TARGETS['absent'])})" for _, r in runs])
    row("median seconds per segmentation, 64×64, CPU", "≤ 2 s",
        [f"{r['seconds_median']:.2f} s ({verdict(r['seconds_median'], TARGETS['seconds'], True)})"
         for _, r in runs])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(prog="python -m webui.builtin_lab.evaluate_segmentation",
                                description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=Path("models/builtin/easel-shapes"))
    p.add_argument("--n", type=int, default=100, help="cases in all, the four kinds in turn")
    p.add_argument("--seed", type=int, default=0, help="picks the held-out cases; also the edit's seed")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg-scale", type=float, default=4.0)
    p.add_argument("--highlight", default="magenta", choices=tuple(D.HIGHLIGHTS))
    p.add_argument("--threshold", type=float, default=12.0, help="ΔE a pixel must change by to count")
    p.add_argument("--keep-largest", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clipseg", type=Path, default=None,
                   help="a CLIPSeg folder to score as a baseline (default: the first in models/clipseg, if any)")
    p.add_argument("--json", type=Path, default=Path("outputs/segmentation-eval.json"))
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    from webui.builtin.pipeline import EaselPipeline

    cases = make_cases(args.n, args.seed)
    pipe = EaselPipeline.from_pretrained(str(args.model))
    pipe.set_progress_bar_config(disable=True)
    results: dict[str, Any] = {"n": args.n, "seed": args.seed, "steps": args.steps, "cfg_scale": args.cfg_scale,
                               "highlight": args.highlight, "threshold": args.threshold,
                               "keep_largest": args.keep_largest, "torch_threads": torch.get_num_threads(),
                               "model": str(args.model)}
    info_path = args.model / "training.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        results["model_step"], results["model_loss"] = info.get("step"), info.get("loss")
    results["generative"] = score(generative_segmenter(pipe, args.steps, args.cfg_scale, args.seed, args.highlight,
                                                       args.threshold, args.keep_largest), cases)
    clipseg = args.clipseg or find_clipseg([Path("models/clipseg"), Path("models/segmentation")])
    if clipseg is not None:
        results["clipseg"] = score(clipseg_segmenter(clipseg), cases)
        results["clipseg_model"] = str(clipseg)
    else:
        results["clipseg"] = None
        results["clipseg_note"] = "no CLIPSeg weights in models/clipseg or models/segmentation"
    table = markdown(results)
    lines = [f"n = {args.n} ({', '.join(f'{k}: {v}' for k, v in results['generative']['counts'].items())}), "
             f"{args.steps} steps, CFG {args.cfg_scale}, highlight {args.highlight}, ΔE threshold {args.threshold}, "
             f"{results['torch_threads']} torch thread(s)", "", table]
    if "model_step" in results:
        lines.append(f"\nModel: {args.model}, training step {results['model_step']}, loss {results['model_loss']}")
    if results["clipseg"] is None:
        lines.append(f"CLIPSeg baseline: not run ({results['clipseg_note']})")
    print("\n".join(lines))  # noqa: T201 - the CLI's output
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
