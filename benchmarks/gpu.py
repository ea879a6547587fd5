"""Denoising speed on a CUDA GPU: SD 1.5 at 512x512 and SDXL at 1024x1024, eager vs torch.compile, and a LoRA
hot-swap under compile that must not recompile.

The UNets have the real architectures (Easel's shipped configs, configs/sd1 and configs/sdxl) with random weights,
in fp16 on the GPU; batch 1, 20 Euler steps, CFG 7 (two UNet passes a step, as in the published numbers). Prompt
embeddings are passed in and the latents are returned, so only the denoising loop is timed: it/s is the
steps between the first and the last step's end over that time (the GPU synchronised at each step), the median
of `--repeats` runs after one warm-up run (which, compiled, includes the compilation; its time is printed).

* eager: diffusers as loaded (PyTorch's scaled-dot-product attention);
* compiled: channels_last memory, q/k/v projections fused (`fuse_qkv_projections`, fused SDPA), inductor's
  conv-1x1-as-matmul and coordinate-descent tuning, `torch.compile(mode=--compile-mode, fullgraph=True)`;
* LoRA hot-swap: two random rank-8/16 LoRAs on the attention projections, hot-swap enabled before the first
  (`enable_lora_hotswap(target_rank=16)`), the UNet compiled (channels_last, no q/k/v fusion: LoRAs sit on the
  separate projections), then the second swapped in with `load_lora_weights(hotswap=True)`; the graphs dynamo
  compiles during and after the swap (torch._dynamo counters) must be 0.

Printed: the card, it/s per model and mode, compiled/eager, and the ratios to the anchors measured on an H100
(SD 1.5: eager 54.5, compiled 66, stable-fast 104.6 it/s; SDXL: 14.9 / 18.5 / 21.6). Without CUDA it says so and
exits 0; `--cpu-smoke` runs the same code on tiny UNets on the CPU (a few steps at 64x64) to prove the path.

    python benchmarks/gpu.py [--models sd15,sdxl] [--steps 20] [--repeats 3] [--compile-mode max-autotune]
    python benchmarks/gpu.py --cpu-smoke
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common  # noqa: F401  (puts the repository on sys.path, offline settings)
import torch

CONFIGS = Path(__file__).resolve().parent.parent / "webui" / "model_manager" / "configs"
# H100 anchors from the issue: it/s (eager, torch.compile, stable-fast)
ANCHORS = {"sd15": {"eager": 54.5, "compiled": 66.0, "fastest": 104.6},
           "sdxl": {"eager": 14.9, "compiled": 18.5, "fastest": 21.6}}
SIZES = {"sd15": 512, "sdxl": 1024}
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


@dataclass
class Case:
    """One model's pipeline pieces: the UNet config, the text widths its embeddings need, the image side."""

    name: str
    unet_config: dict[str, Any]
    context: int  # width of the prompt embeddings (768 for SD 1.5, 2048 for SDXL)
    pooled: int = 0  # SDXL's pooled text embedding width (0 = none)
    side: int = 512
    results: dict[str, Any] = field(default_factory=dict)


def real_cases(names: list[str]) -> list[Case]:
    """SD 1.5 and SDXL UNets as published (from the shipped configs)."""
    cases = []
    for name in names:
        folder = "sd1" if name == "sd15" else "sdxl"
        config = json.loads((CONFIGS / folder / "unet" / "config.json").read_text(encoding="utf-8"))
        pooled = 1280 if name == "sdxl" else 0
        cases.append(Case(name, config, int(config["cross_attention_dim"]), pooled, SIZES[name]))
    return cases


def smoke_cases(names: list[str]) -> list[Case]:
    """Tiny UNets of the same two kinds (SD 1.x-like; SDXL-like with text_time embeddings), 64x64 images."""
    base = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=8)
    cases = []
    for name in names:
        if name == "sd15":
            cases.append(Case(name, {**base, "cross_attention_dim": 32}, 32, 0, 64))
        else:
            cases.append(Case(name, {**base, "cross_attention_dim": 64, "addition_embed_type": "text_time",
                                     "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 6 * 8 + 32,
                                     "use_linear_projection": True, "transformer_layers_per_block": (1, 1)},
                              64, 32, 64))
    return cases


def build_pipeline(case: Case, device: str, dtype: torch.dtype) -> Any:
    """A pipeline around a random-weight UNet (no text encoders, no VAE: embeddings in, latents out)."""
    from diffusers import (EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline,
                           UNet2DConditionModel)

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(case.unet_config).to(dtype).eval()
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    if case.pooled:
        pipe = StableDiffusionXLPipeline(vae=None, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                         tokenizer_2=None, unet=unet, scheduler=scheduler)
    else:
        pipe = StableDiffusionPipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.vae_scale_factor = 8  # no VAE to read it from
    pipe.set_progress_bar_config(disable=True)
    return pipe


def embeddings(case: Case, device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    out = {"prompt_embeds": torch.randn(1, 77, case.context, generator=g),          # (1, 77, context)
           "negative_prompt_embeds": torch.randn(1, 77, case.context, generator=g)}
    if case.pooled:
        out["pooled_prompt_embeds"] = torch.randn(1, case.pooled, generator=g)       # (1, pooled)
        out["negative_pooled_prompt_embeds"] = torch.randn(1, case.pooled, generator=g)
    return {k: v.to(device, dtype) for k, v in out.items()}


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_once(pipe: Any, case: Case, inputs: dict[str, torch.Tensor], steps: int, device: str) -> float:
    """it/s of one generation's denoising loop (first to last step end)."""
    stamps: list[float] = []

    def on_step(pipeline: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        synchronize(device)
        stamps.append(time.perf_counter())
        return kwargs

    extra = {"original_size": (case.side, case.side), "target_size": (case.side, case.side)} if case.pooled else {}
    with torch.inference_mode():
        pipe(**inputs, num_inference_steps=steps, guidance_scale=7.0, height=case.side, width=case.side,
             output_type="latent", generator=torch.Generator(device).manual_seed(0), callback_on_step_end=on_step,
             **extra)
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def timed(pipe: Any, case: Case, inputs: dict[str, torch.Tensor], steps: int, repeats: int,
          device: str) -> tuple[float, float]:
    """(median it/s over `repeats`, seconds of the warm-up run)."""
    start = time.perf_counter()
    run_once(pipe, case, inputs, steps, device)
    warmup = time.perf_counter() - start
    return statistics.median(run_once(pipe, case, inputs, steps, device) for _ in range(repeats)), warmup


def compile_unet(pipe: Any, mode: str, backend: str, fuse: bool) -> None:
    """channels_last, optionally fused q/k/v (fused SDPA), inductor's conv and tuning flags, torch.compile."""
    pipe.unet.to(memory_format=torch.channels_last)
    if fuse:
        pipe.unet.fuse_qkv_projections()  # the UNet's alone: these pipelines have no VAE
    if backend == "inductor":
        import torch._inductor.config as inductor

        inductor.conv_1x1_as_mm = True
        inductor.coordinate_descent_tuning = True
        inductor.epilogue_fusion = False
        inductor.coordinate_descent_check_all_directions = True
    options = {"mode": mode} if backend == "inductor" and mode != "default" else {}
    pipe.unet.compile(backend=backend, fullgraph=True, **options)


def random_lora(unet: Any, rank: int, seed: int) -> dict[str, torch.Tensor]:
    """A LoRA state dict (diffusers/peft names under `unet.`) with random A and B for the attention projections."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS, init_lora_weights=False),
                     adapter_name="scratch")
    state = get_peft_model_state_dict(unet, adapter_name="scratch")
    unet.delete_adapters("scratch")
    return {f"unet.{k}": (v * 0.1).contiguous() for k, v in state.items()}


def graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def lora_hotswap(case: Case, args: argparse.Namespace, device: str, dtype: torch.dtype) -> dict[str, Any]:
    """Compile with one LoRA, hot-swap a second (another rank) in: it/s after the swap and graphs compiled."""
    import torch._dynamo

    torch._dynamo.reset()
    pipe = build_pipeline(case, device, dtype)
    inputs = embeddings(case, device, dtype)
    first, second = random_lora(pipe.unet, 8, 1), random_lora(pipe.unet, 16, 2)
    pipe.enable_lora_hotswap(target_rank=16)
    pipe.load_lora_weights(first, adapter_name="style")
    compile_unet(pipe, args.compile_mode, args.backend, fuse=False)
    before_swap, warmup = timed(pipe, case, inputs, args.steps, 1, device)
    graphs = graphs_compiled()
    start = time.perf_counter()
    pipe.load_lora_weights(second, adapter_name="style", hotswap=True)
    swap_seconds = time.perf_counter() - start
    after_swap, first_run = timed(pipe, case, inputs, args.steps, args.repeats, device)
    return {"it_s_before_swap": before_swap, "it_s_after_swap": after_swap, "swap_s": swap_seconds,
            "first_run_after_swap_s": first_run, "compile_warmup_s": warmup,
            "recompiles": graphs_compiled() - graphs}


def measure(case: Case, args: argparse.Namespace, device: str, dtype: torch.dtype) -> None:
    import torch._dynamo

    pipe = build_pipeline(case, device, dtype)
    inputs = embeddings(case, device, dtype)
    case.results["eager"], _ = timed(pipe, case, inputs, args.steps, args.repeats, device)
    torch._dynamo.reset()
    compile_unet(pipe, args.compile_mode, args.backend, fuse=True)
    case.results["compiled"], case.results["compile_warmup_s"] = timed(pipe, case, inputs, args.steps, args.repeats,
                                                                     device)
    del pipe
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    if not args.no_lora:
        case.results["lora"] = lora_hotswap(case, args, device, dtype)


def report(cases: list[Case], card: str, smoke: bool) -> list[str]:
    lines = [f"card: {card}" + ("  (CPU smoke run on tiny UNets: the ratios to the H100 anchors mean nothing)"
                                if smoke else "")]
    lines.append(f"{'model':6} {'size':>5} {'eager it/s':>11} {'compiled':>9} {'x eager':>8} "
                 f"{'eager/anchor':>13} {'compiled/anchor':>16} {'compiled/fastest':>17}")
    for case in cases:
        r, anchor = case.results, ANCHORS[case.name]
        lines.append(f"{case.name:6} {case.side:>5} {r['eager']:>11.2f} {r['compiled']:>9.2f} "
                     f"{r['compiled'] / r['eager']:>8.2f} {r['eager'] / anchor['eager']:>13.2f} "
                     f"{r['compiled'] / anchor['compiled']:>16.2f} {r['compiled'] / anchor['fastest']:>17.2f}")
    for case in cases:
        lora = case.results.get("lora")
        if lora:
            lines.append(f"{case.name} LoRA hot-swap under compile: {lora['it_s_before_swap']:.2f} it/s before, "
                         f"{lora['it_s_after_swap']:.2f} after, swap {lora['swap_s']:.2f}s, recompiles "
                         f"{lora['recompiles']}" + ("" if lora["recompiles"] == 0 else "  <- RECOMPILED"))
        lines.append(f"{case.name} compile warm-up: {case.results['compile_warmup_s']:.1f}s")
    lines.append("anchors (H100 it/s, eager / compiled / fastest): "
                 + "; ".join(f"{k} {v['eager']} / {v['compiled']} / {v['fastest']}" for k, v in ANCHORS.items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sd15,sdxl", help="comma-separated: sd15, sdxl")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile-mode", default="max-autotune",
                        help="torch.compile mode with inductor: default, reduce-overhead, max-autotune, "
                             "max-autotune-no-cudagraphs")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (inductor; eager to test)")
    parser.add_argument("--no-lora", action="store_true", help="skip the LoRA hot-swap measurement")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny UNets on the CPU, 3 steps at 64x64: proves the code path without a GPU")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in ANCHORS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)} (known: {', '.join(ANCHORS)})")
    if args.cpu_smoke:
        device, dtype, card = "cpu", torch.float32, "CPU"
        args.steps, args.repeats = min(args.steps, 3), 1
        cases = smoke_cases(names)
    elif not torch.cuda.is_available():
        print("benchmarks/gpu.py measures CUDA GPUs and this machine has none (torch.cuda.is_available() is False); "
              "nothing to measure. `--cpu-smoke` runs the same code on tiny UNets on the CPU.")
        return 0
    else:
        device, dtype, card = "cuda", torch.float16, torch.cuda.get_device_name(0)
        torch.backends.cuda.matmul.allow_tf32 = True
        cases = real_cases(names)
    for case in cases:
        print(f"measuring {case.name} at {case.side}x{case.side}, {args.steps} steps ...", flush=True)
        measure(case, args, device, dtype)
    lines = report(cases, card, args.cpu_smoke)
    print("\n".join(lines))
    if args.json is not None:
        args.json.write_text(json.dumps({"card": card, "torch": torch.__version__, "steps": args.steps,
                                         "results": {c.name: c.results for c in cases}}, indent=2))
    return 1 if any(c.results.get("lora", {}).get("recompiles", 0) for c in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
