"""Measure the example LoRA: does the trigger word draw the new concept, and does the model keep what it knew?

    python -m webui.training.evaluate_example --lora models/Lora/easel-example-heart.safetensors

Three numbers, each with and without the LoRA on the same seeds: the concept detector's accuracy on rendered
truth (`example_dataset.validate_detector`); the share of images prompted with the trigger word ("a red heart on
a blue background", ...) in which the detector finds the concept; and the built-in model's own evaluation
(webui/builtin_lab/evaluate.py, prompts without the trigger) so a drop in its scores shows.
The LoRA is applied the way Easel's loader applies a built-in-model LoRA: PEFT adapters on the transformer
with alpha / rank folded into lora_B.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

from webui.builtin import data as D

log = logging.getLogger(__name__)

SCORES = ("single_object", "single_object_position", "relation", "inpaint_inside", "img2img_keeps_scene")


def apply_lora(pipe, path: Path, weight: float = 1.0) -> None:
    """Add the LoRA file (with its learned trigger vector, if it has one) to the pipeline as adapter "example" at
    `weight`, its alpha folded in as Easel's LoRA loader does."""
    from webui.model_manager.identify import Arch
    from webui.model_manager.loras import load_lora_state_dict, normalize_state_dict

    state, metadata = load_lora_state_dict(path)
    pipe.load_lora_weights(normalize_state_dict(state, metadata, pipe, Arch.EASEL), adapter_name="example")
    pipe.set_adapters(["example"], [weight])


def concept_prompts(n: int, seed: int, trigger: str) -> list[str]:
    """Prompts in the dataset's caption style with the trigger word, on held-out seeds."""
    rng = random.Random(10_000 + seed)
    prompts = []
    for _ in range(n):
        background = rng.choice(D.COLORS)
        color = rng.choice([c for c in D.COLORS if c != background])
        text = f"a {color} {trigger}"
        if rng.random() < 0.4:
            text += " " + rng.choice(D.POSITION_PHRASES[rng.choice(list(D.POSITIONS))])
        prompts.append(f"{text} on a {background} background")
    return prompts


def concept_rate(pipe, n: int, seed: int, trigger: str, steps: int, guidance: float) -> float:
    from webui.builtin_lab.evaluate import Runner
    from webui.training.example_dataset import detect_heart

    images = Runner(pipe, steps, guidance, 16, seed)(concept_prompts(n, seed, trigger))
    return sum(detect_heart(image) for image in images) / n


def main(argv: list[str] | None = None) -> int:
    import torch

    from webui.builtin_lab.evaluate import evaluate
    from webui.builtin.pipeline import EaselPipeline
    from webui.training.example_dataset import validate_detector

    p = argparse.ArgumentParser(prog="python -m webui.training.evaluate_example", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=Path("models/builtin/easel-shapes"))
    p.add_argument("--lora", type=Path, default=Path("models/Lora/easel-example-heart.safetensors"))
    p.add_argument("--trigger", default="heart")
    p.add_argument("--n", type=int, default=100, help="trigger prompts")
    p.add_argument("--eval-n", type=int, default=100, help="cases per row of the built-in evaluation (0 = skip)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=Path("outputs/lora-example-eval.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    results: dict = {"detector": validate_detector()}
    log.info("detector on rendered truth: %s", results["detector"])
    pipe = EaselPipeline.from_pretrained(str(args.model))
    pipe.set_progress_bar_config(disable=True)
    results["concept_rate_base"] = concept_rate(pipe, args.n, 0, args.trigger, args.steps, args.guidance)
    log.info("trigger prompts without the LoRA: %.1f%% show the concept", 100 * results["concept_rate_base"])
    if args.eval_n:
        results["eval_base"] = evaluate(pipe, args.eval_n, 0, args.steps, args.guidance)
    apply_lora(pipe, args.lora)
    results["concept_rate_lora"] = concept_rate(pipe, args.n, 0, args.trigger, args.steps, args.guidance)
    log.info("trigger prompts with the LoRA: %.1f%% show the concept", 100 * results["concept_rate_lora"])
    if args.eval_n:
        results["eval_lora"] = evaluate(pipe, args.eval_n, 0, args.steps, args.guidance)
        results["eval_drop_points"] = {k: round(100 * (results["eval_base"][k] - results["eval_lora"][k]), 1)
                                       for k in SCORES}
    results["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps({k: v for k, v in results.items() if not k.startswith("eval_")}, indent=2))  # noqa: T201
    if "eval_drop_points" in results:
        print("built-in evaluation, base -> with LoRA (points dropped):")  # noqa: T201
        for k in SCORES:
            print(f"  {k}: {100 * results['eval_base'][k]:.1f}% -> {100 * results['eval_lora'][k]:.1f}% "  # noqa: T201
                  f"({results['eval_drop_points'][k]:+.1f})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
