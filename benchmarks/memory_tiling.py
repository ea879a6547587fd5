"""Memory against time: untiled vs tiled VAE vs tiled diffusion on the CPU, and each offload mode on a GPU.

    python benchmarks/memory_tiling.py [--size 512] [--steps 3] [--tile 32] [--overlap 16] [--vae-tile 256]

Every configuration runs in its own process (peak resident memory only grows within a process) on the same
random-weight SD 1.x-layout pipeline (benchmarks/common.py: a real 8x VAE, a small UNet): the peak RAM above what
the loaded pipeline already holds, and the seconds per image, with the ratios to the untiled run side by side.
With CUDA present, the same image on the GPU once per offload mode (none, model, sequential, group): peak VRAM
(torch.cuda.max_memory_allocated) and seconds per image, with the ratios to "none".
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, make_small_sd1

CPU_CONFIGS = ("untiled", "tiled VAE", "tiled diffusion", "tiled diffusion + tiled VAE")
OFFLOAD_MODES = ("none", "model", "sequential", "group")


def peak_rss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def current_rss() -> int:
    import os

    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_one(folder: Path, config: str, args: argparse.Namespace) -> dict:
    """One configuration in this process: the pipeline loaded, one warm-up at 64x64, then one timed image."""
    import torch
    from diffusers import StableDiffusionPipeline

    from webui.engine.tiling import TileOptions, tiled_denoiser, vae_tiling
    from webui.model_manager.cache import enable_offload

    torch.set_num_threads(2)
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    cuda = config.startswith("offload ")
    if cuda:
        enable_offload(pipe, config.removeprefix("offload "), "cuda")

    def generate(size: int) -> None:
        pipe(prompt="a red cube on a table", num_inference_steps=args.steps, height=size, width=size,
             generator=torch.Generator("cpu").manual_seed(0), output_type="np")

    generate(64)  # warm-up: lazy initialisation out of the measurement
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = current_rss()
    latent = args.size // pipe.vae_scale_factor
    tile_vae = "tiled VAE" in config
    tiles = TileOptions(args.tile, args.tile, args.overlap) if "tiled diffusion" in config else None
    start = time.perf_counter()
    with vae_tiling(pipe, tile_vae, False, args.vae_tile):
        if tiles is None:
            generate(args.size)
        else:
            with tiled_denoiser(pipe, tiles, (latent, latent)):
                generate(args.size)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {"config": config, "seconds": seconds, "peak_ram_above_loaded": max(0, peak_rss() - base)}
    if cuda:
        result["peak_vram"] = int(torch.cuda.max_memory_allocated())
    return result


def spawn(folder: Path, config: str, argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *argv, "--one", config, "--folder", str(folder)],
                         capture_output=True, text=True, cwd=ROOT, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"config": config, "error": (out.stderr or out.stdout).strip().splitlines()[-1:]}
    return json.loads(lines[-1])


def mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512, help="image side, pixels")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tile", type=int, default=32, help="tiled diffusion tile, latent cells")
    parser.add_argument("--overlap", type=int, default=16, help="tiled diffusion overlap, latent cells")
    parser.add_argument("--vae-tile", type=int, default=256, help="VAE tile, pixels")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.folder, args.one, args)))
        return
    argv = [a for a in sys.argv[1:]]
    folder = make_small_sd1(Path(tempfile.mkdtemp(prefix="easel-bench-")) / "sd1")
    print(f"machine: {machine()}")
    print(f"image {args.size}x{args.size}, {args.steps} steps; tiled diffusion {args.tile}x{args.tile} latent cells, "
          f"overlap {args.overlap}; VAE tiles {args.vae_tile} px", flush=True)
    base: dict = {}
    for config in CPU_CONFIGS:  # each row printed as soon as it is measured
        row = spawn(folder, config, argv)
        if "error" in row:
            print(f"{row['config']:>28}: failed: {row['error']}", flush=True)
            continue
        base = base or row
        print(f"{row['config']:>28}: {row['seconds']:.2f} s/image ({row['seconds'] / base['seconds']:.2f}x), peak RAM "
              f"above the loaded pipeline {mib(row['peak_ram_above_loaded'])} "
              f"({row['peak_ram_above_loaded'] / max(1, base['peak_ram_above_loaded']):.2f}x)", flush=True)
    import torch

    if not torch.cuda.is_available():
        print("offload modes: no CUDA device here (peak VRAM per mode is measured only on a GPU)")
        return
    base = {}
    for mode in OFFLOAD_MODES:
        row = spawn(folder, f"offload {mode}", argv)
        if "error" in row:
            print(f"{row['config']:>28}: failed: {row['error']}", flush=True)
            continue
        base = base or row
        print(f"{row['config']:>28}: {row['seconds']:.2f} s/image ({row['seconds'] / base['seconds']:.2f}x), "
              f"peak VRAM {mib(row['peak_vram'])} ({row['peak_vram'] / max(1, base['peak_vram']):.2f}x)", flush=True)


if __name__ == "__main__":
    main()
