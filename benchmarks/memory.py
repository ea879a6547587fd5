"""Memory and speed of a Flux-sized transformer stored as bf16, GGUF Q8_0 and GGUF Q4_K, side by side.

A random-weight FluxTransformer2DModel of Flux.1's full width (24 heads x 128 = 3072, 4096-wide T5 context, 768-wide
pooled CLIP vector, 64 input channels, guidance embedding) is built in bf16 with fewer blocks than the real
19 double + 38 single (`--double`, `--single`) so it fits a small machine. Its weights are written in the original
(community file) key layout as GGUF Q8_0 and Q4_K files (webui.model_manager.gguf_files), loaded back the way Easel
loads them (webui.model_manager.formats: quantized blocks kept, each layer dequantized when it runs, computed in
bf16), and each model runs the same forward pass. Printed per format: resident bytes of the transformer and the
ratio to bf16 (targets: Q8_0 <= 0.55, Q4_K <= 0.32), seconds per forward, and the largest absolute difference of
the output from bf16's (also relative to the output's largest value), plus the process's peak RSS.

    python benchmarks/memory.py [--double 1] [--single 2] [--tokens 256] [--text 64]

Offloading and tiling are measured by benchmarks/memory_tiling.py.
"""
from __future__ import annotations

import argparse
import gc
import platform
import resource
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path, offline settings)
import torch

from tests.tiny_formats import flux_original_state
from webui.model_manager.formats import load_gguf_denoiser, resident_bytes
from webui.model_manager.gguf_files import write_gguf
from webui.model_manager.loading import dtype_kwargs

FLUX_WIDTH = dict(attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                  in_channels=64, patch_size=1, guidance_embeds=True, axes_dims_rope=(16, 56, 56))


def inputs(tokens: int, text: int) -> dict[str, torch.Tensor]:
    """One forward's inputs: `tokens` packed latent tokens (a 512x512 image is 1024), `text` T5 tokens."""
    g = torch.Generator().manual_seed(0)
    side = int(tokens ** 0.5)
    img_ids = torch.stack(torch.meshgrid(torch.arange(1), torch.arange(side), torch.arange(side), indexing="ij"),
                          dim=-1).reshape(-1, 3)                                   # (tokens, 3) positions
    return {"hidden_states": torch.randn(1, side * side, 64, generator=g).bfloat16(),   # (1, tokens, 64)
            "encoder_hidden_states": torch.randn(1, text, 4096, generator=g).bfloat16(),  # (1, text, 4096)
            "pooled_projections": torch.randn(1, 768, generator=g).bfloat16(),      # (1, 768)
            "timestep": torch.tensor([0.5]).bfloat16(), "guidance": torch.tensor([3.5]).bfloat16(),
            "img_ids": img_ids.bfloat16(), "txt_ids": torch.zeros(text, 3).bfloat16()}


def forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
    """(output, seconds) of the second of two forward passes (the first warms caches and allocators)."""
    with torch.inference_mode():
        model(**batch, return_dict=False)
        start = time.perf_counter()
        out = model(**batch, return_dict=False)[0]
        return out.float(), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--double", type=int, default=1, help="double-stream blocks (Flux.1 has 19)")
    parser.add_argument("--single", type=int, default=2, help="single-stream blocks (Flux.1 has 38)")
    parser.add_argument("--tokens", type=int, default=256, help="image tokens (a square number)")
    parser.add_argument("--text", type=int, default=64, help="T5 tokens")
    args = parser.parse_args()
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="easel-memory-"))
    batch = inputs(args.tokens, args.text)
    torch.set_default_dtype(torch.bfloat16)  # built in bf16 directly: no float32 copy of the weights
    model = FluxTransformer2DModel(num_layers=args.double, num_single_layers=args.single, **FLUX_WIDTH).eval()
    torch.set_default_dtype(torch.float32)
    model.save_config(work / "transformer")
    rows = {"bf16": (resident_bytes(model), *forward(model, batch))}  # format -> (bytes, output, seconds)
    reference = rows["bf16"][1]
    print(f"bf16: {rows['bf16'][0] / 2**20:.1f} MiB, {rows['bf16'][2]:.2f} s/forward", flush=True)
    params = sum(p.numel() for p in model.parameters())
    original = flux_original_state(model.state_dict())
    del model
    gc.collect()
    for qtype in ("Q8_0", "Q4_K"):
        path = write_gguf(original, work / f"flux-{qtype}.gguf", qtype, arch="flux")
        quantized = load_gguf_denoiser(path, FluxTransformer2DModel, str(work), "transformer", True, torch.bfloat16,
                                       dtype_kwargs(torch.bfloat16), {})
        rows[qtype] = (resident_bytes(quantized), *forward(quantized, batch))
        print(f"{qtype}: {rows[qtype][0] / 2**20:.1f} MiB, {rows[qtype][2]:.2f} s/forward", flush=True)
        path.unlink()
        del quantized
        gc.collect()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"Flux-width transformer: {args.double} double + {args.single} single blocks, {params / 1e9:.2f} B "
          f"parameters; {args.tokens} image + {args.text} text tokens; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{'format':<6} {'resident MiB':>13} {'x bf16':>7} {'s/forward':>10} {'max |out - bf16|':>17} "
          f"{'relative':>9}")
    base = rows["bf16"][0]
    scale = reference.abs().max().item()
    for name, (size, out, seconds) in rows.items():
        diff = (out - reference).abs().max().item()
        print(f"{name:<6} {size / 2**20:>13.1f} {size / base:>7.3f} {seconds:>10.2f} {diff:>17.4f} {diff / scale:>9.4f}")
    print(f"peak RSS of the process: {peak / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
