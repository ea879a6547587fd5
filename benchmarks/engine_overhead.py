"""Engine overhead: the same request through Easel's HTTP API versus calling the diffusers pipeline directly.

Runs both side by side, interleaved, and prints the median ratio (target ≤ 1.10 at 256×256, 20 steps, CPU).
Easel's side includes everything a client pays for: HTTP, JSON, the queue, prompt encoding, saving the PNG
with its infotext and returning it as base64.

    python benchmarks/engine_overhead.py [--runs 7] [--size 256] [--steps 20]
"""
from __future__ import annotations

import argparse
import socket
import tempfile
from pathlib import Path

from common import machine, make_small_sd1, median, timed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import httpx
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from webui.app import build, create_server
    from webui.settings import Settings

    torch.set_num_threads(2)
    data = Path(tempfile.mkdtemp(prefix="easel-bench-"))
    model = make_small_sd1(data / "models" / "diffusers" / "small-sd1")
    settings = Settings(data_dir=data, device="cpu", precision="full", api=True, nowebui=True, port=free_port(),
                        builtin_dir=data / "none")
    easel = build(settings, with_extensions=False)
    easel.engine.start()
    _, url = create_server(easel, block=False)

    direct = StableDiffusionPipeline.from_pretrained(str(model), local_files_only=True)
    direct.set_progress_bar_config(disable=True)
    body = {"prompt": "a red circle on a blue background", "negative_prompt": "", "steps": args.steps,
            "width": args.size, "height": args.size, "cfg_scale": 7, "seed": 1, "sampler_name": "Euler",
            "override_settings": {"sd_model_checkpoint": "small-sd1"}}

    def via_api() -> None:
        response = httpx.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=600)
        response.raise_for_status()

    def via_diffusers() -> None:
        direct.scheduler = EulerDiscreteScheduler.from_config(direct.scheduler.config)
        direct(body["prompt"], negative_prompt="", num_inference_steps=args.steps, width=args.size,
               height=args.size, guidance_scale=7, generator=torch.Generator("cpu").manual_seed(1))

    import time
    deadline = time.time() + 30
    while True:  # wait for the server socket
        try:
            httpx.get(f"{url}/sdapi/v1/samplers", timeout=2)
            break
        except httpx.TransportError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    via_api(), via_diffusers()  # warm-up: loads and first-call costs
    api_times, direct_times = [], []
    for run in range(args.runs):
        direct_times.append(timed(via_diffusers))
        api_times.append(timed(via_api))
        print(f"run {run + 1}: diffusers {direct_times[-1] * 1000:.0f} ms, Easel API {api_times[-1] * 1000:.0f} ms",
              flush=True)
    ratio = median(api_times) / median(direct_times)
    print(f"machine: {machine()}")
    print(f"{args.size}x{args.size}, {args.steps} steps, {args.runs} runs each, interleaved")
    print(f"diffusers direct: median {median(direct_times) * 1000:.0f} ms")
    print(f"Easel API:        median {median(api_times) * 1000:.0f} ms")
    print(f"ratio Easel/diffusers: {ratio:.3f} (target <= 1.10)")
    easel.engine.stop()


if __name__ == "__main__":
    main()
