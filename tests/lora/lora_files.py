"""Tiny random LoRA files in the layouts people download, made for the tiny test models' own layers.

`random_lora(module, match, rank, seed)` picks the Linear (and, with `conv`, Conv2d) layers whose path matches
and gives each a random down/up pair; the layouts below are diffusers/PEFT, kohya/AUTOMATIC1111 (with `.alpha`),
ai-toolkit/ComfyUI (`diffusion_model.`, no alpha) or Easel files. `save` writes one with Easel's LoRA writer
(webui.model_manager.lora_writer), the metadata as given (as another tool would have written it).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from webui.model_manager.lora_writer import write_lora

Pairs = dict[str, tuple[torch.Tensor, torch.Tensor]]  # module path -> (down [r, in(,k,k)], up [out, r(,1,1)])


def random_lora(module: torch.nn.Module, match: str, rank: int = 4, seed: int = 0, scale: float = 0.3,
                conv: bool = False) -> Pairs:
    gen = torch.Generator().manual_seed(seed)
    pairs: Pairs = {}
    for path, layer in module.named_modules():
        if not re.search(match, path):
            continue
        if isinstance(layer, torch.nn.Linear):
            down = torch.randn(rank, layer.in_features, generator=gen) * scale
            up = torch.randn(layer.out_features, rank, generator=gen) * scale
        elif conv and isinstance(layer, torch.nn.Conv2d):
            k = layer.kernel_size
            down = torch.randn(rank, layer.in_channels, *k, generator=gen) * scale
            up = torch.randn(layer.out_channels, rank, 1, 1, generator=gen) * scale
        else:
            continue
        pairs[path] = (down, up)
    assert pairs, f"no layer matches {match!r}"
    return pairs


def peft_layout(pairs: Pairs, prefix: str) -> dict[str, torch.Tensor]:
    out = {}
    for path, (down, up) in pairs.items():
        out[f"{prefix}.{path}.lora_A.weight"] = down
        out[f"{prefix}.{path}.lora_B.weight"] = up
    return out


def kohya_layout(pairs: Pairs, prefix: str, alpha: float | None = None) -> dict[str, torch.Tensor]:
    """`lora_unet_down_blocks_0_…_to_q.lora_down.weight` / `.lora_up.weight` / `.alpha` (default alpha = rank)."""
    out = {}
    for path, (down, up) in pairs.items():
        stem = f"{prefix}_{path.replace('.', '_')}"
        out[f"{stem}.lora_down.weight"] = down
        out[f"{stem}.lora_up.weight"] = up
        out[f"{stem}.alpha"] = torch.tensor(float(alpha if alpha is not None else down.shape[0]))
    return out


def comfy_layout(pairs: Pairs) -> dict[str, torch.Tensor]:
    return peft_layout(pairs, "diffusion_model")


def save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    return write_lora(path, tensors, metadata)
