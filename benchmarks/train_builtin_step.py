"""Training step of the built-in model on the CPU: what the attention kernel, the OpenMP wait policy and compiling
the transformer blocks (`--compile`) cost.

Each variant runs in its own process (OpenMP reads OMP_WAIT_POLICY at start-up), on the same batches of the real
training stream (batch 32: 16 text-to-image + 16 edits, bf16 autocast, AdamW), variants interleaved over rounds.
Prints the median seconds per step of each and the ratios to the default (explicit attention, spinning threads).

    python benchmarks/train_builtin_step.py [--steps 12] [--rounds 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from common import ROOT, machine, median

VARIANTS = {  # name: (attention kernel, OMP_WAIT_POLICY or None for the OpenMP default)
    "explicit attention, spinning threads": ("explicit", None),
    "explicit attention, OMP_WAIT_POLICY=PASSIVE": ("explicit", "PASSIVE"),
    "torch SDPA, spinning threads": ("sdpa", None),
    "compiled blocks (--compile), OMP_WAIT_POLICY=PASSIVE": ("compiled", "PASSIVE"),
}


def worker(kernel: str, steps: int, threads: int) -> None:
    """Time `steps` training steps after 3 warm-up steps (which include compiling, for the "compiled" variant);
    prints JSON {"step_s": [...]} on stdout."""
    import torch
    import torch.nn.functional as F  # the fused kernel, for the "sdpa" variant

    from webui.builtin import model as M
    from webui.builtin_lab import train as T

    torch.set_num_threads(threads)
    if kernel == "sdpa":
        M.attention = lambda q, k, v, keep: F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    torch.manual_seed(0)
    args = T.parse_args([])  # the training's defaults: batch 32, bf16 autocast
    net = T.build_net(args)
    if kernel == "compiled":
        T.compile_blocks(net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)
    cpu = torch.device("cpu")
    times = []
    for step in range(3 + steps):
        batch = T.make_batch(0, step, args.batch_size)
        start = time.perf_counter()
        T.train_step(net, opt, batch, torch.Generator().manual_seed(step), cpu, args)
        if step >= 3:
            times.append(time.perf_counter() - start)
    print(json.dumps({"step_s": times}))


def run_variant(kernel: str, policy: str | None, steps: int, threads: int) -> list[float]:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, __file__, "--worker", kernel, "--steps", str(steps),
                          "--threads", str(threads)], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["step_s"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=["explicit", "sdpa", "compiled"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.threads)
        return
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, (kernel, policy) in VARIANTS.items():
            results[name] += run_variant(kernel, policy, args.steps, args.threads)
    print(f"machine: {machine()}; {args.threads} threads, batch 32, bf16 autocast, "
          f"{args.steps} steps x {args.rounds} rounds per variant")
    base = median(results[next(iter(VARIANTS))])
    for name, times in results.items():
        print(f"{name:54s} median {median(times):.3f} s/step  ratio {median(times) / base:.2f}")


if __name__ == "__main__":
    main()
