"""Replicas on Ray Serve (docs/SCALING.md): throughput with 2 replicas versus 1, and one job's time through a
replica versus the in-process engine.

Each replica and the in-process engine use 1 torch thread, so on a 2-core machine 2 replicas can at best double
the throughput (target ≥ 1.7×); the per-job ratio (target ≤ 1.10 on a ~2 s job) is what a replica adds: the
request out, progress back, the images back as pickled PIL images, the PNG written in the main process.

    python benchmarks/scale.py [--runs 5] [--jobs 8] [--size 256] [--steps 20]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import machine, make_small_sd1, median, timed


def request(size: int, steps: int, seed: int):
    from webui.requests import Txt2ImgRequest

    return Txt2ImgRequest(prompt="a red circle on a blue background", checkpoint="small-sd1", seed=seed, steps=steps,
                          width=size, height=size, sampler="Euler")


def run_all(engine, requests) -> None:
    jobs = [engine.submit(r, "api") for r in requests]
    for job in jobs:
        job.wait()
        assert job.state.value == "done", job.error


def easel_over(data: Path, replicas: int):
    from webui.app import build
    from webui.cluster.deployment import start_cluster
    from webui.settings import Settings

    settings = Settings(data_dir=data, device="cpu", precision="full", builtin_dir=data / "none")
    easel = build(settings, with_extensions=False)
    import torch

    torch.set_num_threads(1)  # build() gives a CPU engine every core; here each engine gets one thread
    if replicas:
        start_cluster(easel.engine, workers=replicas, threads=1,
                      init_options={"num_cpus": max(2, replicas), "log_to_driver": False,
                                    "object_store_memory": 200 * 1024 * 1024})
    easel.engine.start()
    return easel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    data = Path(tempfile.mkdtemp(prefix="easel-scale-"))
    make_small_sd1(data / "models" / "diffusers" / "small-sd1")
    one = [request(args.size, args.steps, seed) for seed in range(args.runs)]
    burst = [request(args.size, args.steps, 100 + seed) for seed in range(args.jobs)]
    times: dict[str, list[float]] = {}
    throughput: dict[int, float] = {}

    local = easel_over(data, 0)
    run_all(local.engine, one[:1])  # warm-up: the model loaded
    times["in-process"] = [timed(lambda r=r: run_all(local.engine, [r])) for r in one]
    local.engine.stop()
    for replicas in (1, 2):
        easel = easel_over(data, replicas)
        run_all(easel.engine, [request(args.size, args.steps, 9000 + i) for i in range(replicas * 2)])  # warm-up
        if replicas == 1:
            times["1 replica"] = [timed(lambda r=r: run_all(easel.engine, [r])) for r in one]
        throughput[replicas] = len(burst) / timed(lambda: run_all(easel.engine, burst))
        easel.engine.stop()

    print(f"machine: {machine()}; {args.size}x{args.size}, {args.steps} steps, 1 thread per engine")
    for name, values in times.items():
        print(f"one job, {name}: median {median(values):.3f} s over {len(values)}")
    print(f"per-job overhead, replica / in-process on a {median(times['in-process']):.2f} s job: "
          f"{median(times['1 replica']) / median(times['in-process']):.3f} (target <= 1.10 on a ~2 s job)")
    for replicas, value in throughput.items():
        print(f"throughput, {replicas} replica(s), {len(burst)} jobs at once: {value:.3f} jobs/s")
    print(f"throughput ratio, 2 replicas / 1 (1 thread each): {throughput[2] / throughput[1]:.3f} (target >= 1.7)")


if __name__ == "__main__":
    main()
