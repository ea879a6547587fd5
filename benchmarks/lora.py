"""LoRA switching and per-step cost, as ratios measured in one run on the built-in model.

    python benchmarks/lora.py [--runs 7] [--sizes 64 256] [--steps 8] [--rank 16] [--threads 2]

Prints, with medians over `--runs` repeats (the configurations are interleaved, so a noisy neighbour hits all of
them alike):
  - LoRA switch on a loaded model (A -> B through the model manager: read B, drop A, add B) versus a cold load of
    the base checkpoint (a fresh manager loading the model folder; the files are in the OS page cache after the
    first run, so this is the fastest a cold load gets): target <= 0.1;
  - time per denoising step with one unfused LoRA versus none (target <= 1.15), and fused (target <= 1.02), at
    each size in `--sizes` (the built-in model makes (size/8)^2 image tokens).

The model is a copy of models/builtin/easel-shapes (hidden 256, depth 8, about 7.5M transformer parameters);
the LoRAs are random, rank `--rank`, on every block's qkv, proj and both MLP layers (what a trainer targets).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, median, timed


def make_lora(transformer, path: Path, rank: int, seed: int) -> Path:
    import torch

    from webui.model_manager.loras import save_easel_lora

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("blocks.") and name.endswith(
                ("qkv", "proj", "mlp.0", "mlp.2")):
            state[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=gen) * 0.01
            state[f"transformer.{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=gen) * 0.01
    return save_easel_lora(path, state, base_model="easel-shapes", base_hash="", trigger="", rank=rank, alpha=rank)


def step_time(pipe, size: int, steps: int) -> float:
    """Seconds per denoising step: the whole call timed from the first step's end to the last's."""
    import torch

    marks: list[float] = []

    def on_step(pipe_, i, t, kwargs):
        marks.append(time.perf_counter())
        return {}

    pipe(prompt="a red circle and a blue square", height=size, width=size, num_inference_steps=steps,
         guidance_scale=4.0, generator=torch.Generator().manual_seed(0), output_type="latent",
         callback_on_step_end=on_step)
    return (marks[-1] - marks[0]) / (len(marks) - 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    from webui.model_manager.manager import LoraOptions, ModelManager

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="easel-lora-bench-"))
    builtin = root / "builtin"
    shutil.copytree(ROOT / "models" / "builtin" / "easel-shapes", builtin / "easel-shapes",
                    ignore=shutil.ignore_patterns("*.json.tmp", ".*"))
    loras = root / "Lora"

    def manager() -> ModelManager:
        return ModelManager(checkpoint_dirs=[], diffusers_dirs=[], vae_dirs=[], lora_dirs=[loras],
                            builtin_dirs=[builtin], device="cpu", hash_cache_path=root / "hashes.json")

    m = manager()
    loaded = m.get("easel-shapes", "txt2img")
    make_lora(loaded.pipe.transformer, loras / "a.safetensors", args.rank, seed=1)
    make_lora(loaded.pipe.transformer, loras / "b.safetensors", args.rank, seed=2)
    m.refresh_loras()
    m.apply_loras(loaded, [("a", 1.0)])  # hashes computed once, outside the timings

    cold, switch = [], []
    for _ in range(args.runs):
        fresh = manager()
        cold.append(timed(lambda: fresh.get("easel-shapes", "txt2img")))
        del fresh
        switch.append(timed(lambda: m.apply_loras(loaded, [("b", 1.0)])))
        switch.append(timed(lambda: m.apply_loras(loaded, [("a", 1.0)])))
    print(f"machine: {machine()}")
    print(f"model: built-in easel-shapes (copy), LoRA rank {args.rank} on qkv/proj/mlp of all blocks")
    print(f"cold load of the base checkpoint: median {median(cold) * 1000:.1f} ms")
    print(f"LoRA switch on the loaded model: median {median(switch) * 1000:.1f} ms")
    print(f"ratio switch/cold: {median(switch) / median(cold):.3f} (target <= 0.1)")

    pipe = loaded.pipe
    for size in args.sizes:
        times: dict[str, list[float]] = {"none": [], "unfused": [], "fused": []}
        step_time(pipe, size, 3)  # warm-up
        for _ in range(args.runs):
            m.lora_options = LoraOptions
            m.apply_loras(loaded, [])
            times["none"].append(step_time(pipe, size, args.steps))
            m.apply_loras(loaded, [("a", 1.0)])
            times["unfused"].append(step_time(pipe, size, args.steps))
            m.lora_options = lambda: LoraOptions(fuse=True)
            m.apply_loras(loaded, [("a", 1.0)])  # the same set again: fused
            assert m.lora_stack(loaded).fused is not None
            times["fused"].append(step_time(pipe, size, args.steps))
        none, unfused, fused = (median(times[k]) for k in ("none", "unfused", "fused"))
        print(f"{size}x{size} ({(size // 8) ** 2} image tokens), CFG batch 2, {args.steps} steps: per step none "
              f"{none * 1000:.1f} ms, one LoRA unfused {unfused * 1000:.1f} ms, fused {fused * 1000:.1f} ms")
        print(f"  ratio unfused/none: {unfused / none:.3f} (target <= 1.15); fused/none: {fused / none:.3f} "
              f"(target <= 1.02)")
    m.lora_options = LoraOptions
    m.apply_loras(loaded, [])
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
