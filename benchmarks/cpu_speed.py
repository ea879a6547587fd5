"""CPU speed: Easel's CPU paths against calling diffusers directly (and InvokeAI), on the full-size SD 1.5
architecture with random weights, side by side in one run.

Every path runs the same request (txt2img, Euler, CFG 7, fp32, a fixed seed) on the same model: "diffusers" is a
plain `StableDiffusionPipeline` over the very modules Easel loaded (so both share one copy of the weights);
"plain", "openvino", "compile" are Easel's engine with that CPU backend (Settings "CPU backend");
"openvino+taesd" adds the tiny VAE for the final decode (a random-weight TAESD decoder costs what a trained one
does; its images differ from the full VAE's); "invokeai" is InvokeAI in its own virtual environment
(benchmarks/peers/invokeai_peer.py, skipped with a message when that module or its venv is missing). Each path
is warmed up first (one 1-step request at the size: conversions, compilation, allocations); then the timed
requests run interleaved, one per path per round, so a machine whose load changes slows every path alike. The
median per path and its ratio to diffusers (and to InvokeAI) are printed. `--restart` also times the first request
of a fresh process (model load included) for plain and openvino, with the conversion already on disk.

    python benchmarks/cpu_speed.py [--sizes 256 512] [--steps 10] [--runs 3] [--paths diffusers,plain,openvino]
                                   [--model-dir /work/peers/sd15-random] [--data-dir /tmp/easel-cpu-speed] [--restart]

The model folder is built when missing (benchmarks/peers/sd15_random.py; about 2 GB, fp16 files loaded as fp32).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, machine, median

PATHS = ("diffusers", "plain", "openvino", "compile", "openvino+taesd", "invokeai")
PROMPT, NEGATIVE, SEED, CFG = "a lighthouse on a cliff at sunset, oil painting", "blurry", 1, 7.0


def model_folder(path: Path) -> Path:
    if (path / "model_index.json").is_file():
        return path
    try:
        from peers.sd15_random import make_sd15_random
    except ImportError:
        sys.exit(f"{path} has no model and benchmarks/peers/sd15_random.py is missing to build one")
    print(f"building the random SD 1.5 folder in {path} ...", flush=True)
    return make_sd15_random(path)


def build_easel(data: Path, model: Path):
    from webui.app import build
    from webui.settings import Settings

    folder = data / "models" / "diffusers"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "sd15-random"
    if not link.exists():
        link.symlink_to(model.resolve(), target_is_directory=True)
    settings = Settings(data_dir=data, device="cpu", precision="full", nowebui=True, builtin_dir=data / "none")
    easel = build(settings, with_extensions=False)
    easel.engine.start()
    return easel


def install_tiny_vae(data: Path) -> None:
    target = data / "models" / "VAE-approx" / "taesd"
    if not (target / "config.json").is_file():
        import torch
        from diffusers import AutoencoderTiny

        torch.manual_seed(0)
        AutoencoderTiny().save_pretrained(target)


def easel_run(easel, backend: str, size: int, steps: int) -> None:
    from webui.requests import Txt2ImgRequest

    taesd = backend.endswith("+taesd")
    easel.settings.user = dataclasses.replace(easel.settings.user, cpu_backend=backend.removesuffix("+taesd"),
                                              tiny_vae_decode=taesd, save_images=False, live_preview_every=0)
    job = easel.engine.generate(Txt2ImgRequest(prompt=PROMPT, negative_prompt=NEGATIVE, seed=SEED, steps=steps,
                                               width=size, height=size, cfg_scale=CFG, sampler="Euler",
                                               checkpoint="sd15-random"), timeout=7200)
    if job.error:
        raise RuntimeError(f"{backend}: {job.error}")
    ran = easel.engine.cpu_path.status()
    if ran["backend"] != backend.removesuffix("+taesd"):
        print(f"  note: {backend} ran as {ran['backend']} ({ran['reason']})", flush=True)


def first_request(args: argparse.Namespace) -> None:
    """Child process for --restart: build an Easel, time its first request (model load included), print JSON."""
    start = time.perf_counter()
    easel = build_easel(Path(args.data_dir), model_folder(Path(args.model_dir)))
    easel_run(easel, args.first_request, args.sizes[0], args.steps)
    print(json.dumps({"seconds": time.perf_counter() - start}))
    easel.engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--paths", default="diffusers,plain,openvino,openvino+taesd,invokeai")
    parser.add_argument("--model-dir", default="/work/peers/sd15-random")
    parser.add_argument("--data-dir", default="/tmp/easel-cpu-speed")
    parser.add_argument("--restart", action="store_true", help="also time a fresh process's first request")
    parser.add_argument("--first-request", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_request:
        return first_request(args)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        sys.exit(f"--paths: unknown {unknown}; known: {', '.join(PATHS)}")

    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    data, model = Path(args.data_dir), model_folder(Path(args.model_dir))
    easel = build_easel(data, model)
    if "openvino+taesd" in paths:
        install_tiny_vae(data)
    loaded = easel.manager.get("sd15-random", "txt2img")
    direct = StableDiffusionPipeline(**{k: v for k, v in loaded.pipe.components.items()
                                        if k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")},
                                     safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    direct.set_progress_bar_config(disable=True)
    peer = None
    if "invokeai" in paths:
        try:
            from peers.invokeai_peer import InvokeAIPeer

            peer = InvokeAIPeer(model).start()
        except Exception as exc:  # noqa: BLE001 -- the peer is optional: say why and go on without it
            print(f"invokeai skipped: {type(exc).__name__}: {exc}", flush=True)
            paths.remove("invokeai")

    def run(path: str, size: int, steps: int) -> None:
        if path == "diffusers":
            direct.scheduler = EulerDiscreteScheduler.from_config(direct.scheduler.config)
            direct(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, width=size, height=size,
                   guidance_scale=CFG, generator=torch.Generator("cpu").manual_seed(SEED))
        elif path == "invokeai":
            peer.generate(PROMPT, seed=SEED, width=size, height=size, steps=steps, cfg=CFG)
        else:
            easel_run(easel, path, size, steps)

    print(f"machine: {machine()}; paths: {', '.join(paths)}; {args.steps} steps, Euler, CFG {CFG}, fp32", flush=True)
    try:
        for size in args.sizes:
            for path in paths:  # warm-up: conversions and compilation for this shape
                start = time.perf_counter()
                run(path, size, 1)
                print(f"{size}px warm-up {path}: {time.perf_counter() - start:.1f} s", flush=True)
            times: dict[str, list[float]] = {p: [] for p in paths}
            for round_ in range(args.runs):
                for path in paths:
                    start = time.perf_counter()
                    run(path, size, args.steps)
                    times[path].append(time.perf_counter() - start)
                print(f"{size}px round {round_ + 1}: " + ", ".join(f"{p} {times[p][-1]:.1f} s" for p in paths),
                      flush=True)
            report(size, times)
        if args.restart:
            for backend in ("plain", "openvino"):
                out = subprocess.run([sys.executable, __file__, "--first-request", backend, "--sizes",
                                      str(args.sizes[0]), "--steps", str(args.steps), "--model-dir", args.model_dir,
                                      "--data-dir", args.data_dir], capture_output=True, text=True, cwd=ROOT)
                lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
                seconds = json.loads(lines[-1])["seconds"] if lines else float("nan")
                print(f"first request after a restart ({backend}, {args.sizes[0]}px, model load included): "
                      f"{seconds:.1f} s" + ("" if lines else f"  [failed: {out.stderr[-300:]}]"), flush=True)
    finally:
        if peer is not None:
            peer.stop()
        easel.engine.stop()
        print("openvino:", easel.engine.cpu_path.status()["stats"].get("openvino"), flush=True)


def report(size: int, times: dict[str, list[float]]) -> None:
    medians = {p: median(t) for p, t in times.items()}
    for path, value in medians.items():
        ratios = [f"{value / medians[ref]:.2f}x {ref}" for ref in ("diffusers", "invokeai")
                  if ref in medians and ref != path]
        print(f"{size}px {path:15s} median {value:7.1f} s  " + "  ".join(ratios), flush=True)


if __name__ == "__main__":
    main()
