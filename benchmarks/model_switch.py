"""Warm switch versus cold load: switching to a checkpoint held in the RAM cache against loading it from disk.

    python benchmarks/model_switch.py [--runs 5]

Prints the median of each and their ratio (target ≤ 0.2).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import machine, make_small_sd1, median, timed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import torch

    from webui.model_manager.manager import ModelManager

    torch.set_num_threads(2)
    root = Path(tempfile.mkdtemp(prefix="easel-bench-"))
    folders = root / "diffusers"
    for name, seed in (("a", 0), ("b", 1)):
        make_small_sd1(folders / name, seed=seed)

    def manager() -> ModelManager:
        return ModelManager(checkpoint_dirs=[], diffusers_dirs=[folders], vae_dirs=[], lora_dirs=[], builtin_dirs=[],
                            device="cpu", ram_cache_size=2, hash_cache_path=root / "hashes.json")

    cold, warm = [], []
    for _ in range(args.runs):
        m = manager()
        cold.append(timed(lambda: m.get("a", "txt2img")))
        m.get("b", "txt2img")
        warm.append(timed(lambda: m.get("a", "txt2img")))
        assert m.stats["disk_loads"] == 2, m.stats
    ratio = median(warm) / median(cold)
    print(f"machine: {machine()}")
    print(f"cold load (disk): median {median(cold) * 1000:.1f} ms")
    print(f"warm switch (RAM cache): median {median(warm) * 1000:.2f} ms")
    print(f"ratio warm/cold: {ratio:.4f} (target <= 0.2)")


if __name__ == "__main__":
    main()
