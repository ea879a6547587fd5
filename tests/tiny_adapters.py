"""Tiny random-weight IP-Adapters and image encoders for tests, built in process.

`make_tiny_clip_vision` saves a small transformers `CLIPVisionModelWithProjection` folder (as `models/clip_vision/`
holds them). `make_tiny_ip_adapter` writes a `.safetensors` IP-Adapter in the community layout diffusers'
`load_ip_adapter` reads (`image_proj.*`, `ip_adapter.{1,3,5,...}.to_k_ip/to_v_ip.weight`), shaped for a given
UNet: one pair of key/value projections per cross-attention layer, in the UNet's processor order.
"""
from __future__ import annotations

from pathlib import Path

import torch


def make_tiny_clip_vision(folder: Path, seed: int = 0, width: int = 32, projection: int = 32) -> Path:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=width, intermediate_size=37, projection_dim=projection,
                              num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)
    CLIPVisionModelWithProjection(config).eval().save_pretrained(folder, safe_serialization=True)
    return folder


def ip_adapter_state_dict(unet: torch.nn.Module, embed_dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of a plain IP-Adapter for `unet`; `embed_dim` is the image encoder's projection_dim."""
    generator = torch.Generator().manual_seed(seed)
    cross = int(unet.config.cross_attention_dim)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.3

    state: dict[str, torch.Tensor] = {}
    # diffusers' ImageProjection: image_embeds -> 4 tokens
    state.update({"image_proj.proj.weight": randn(4 * cross, embed_dim), "image_proj.proj.bias": randn(4 * cross),
                  "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)})
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        to_k = unet.get_submodule(name.removesuffix(".processor")).to_k.weight  # [inner, cross]
        state[f"ip_adapter.{key_id}.to_k_ip.weight"] = randn(to_k.shape[0], cross)
        state[f"ip_adapter.{key_id}.to_v_ip.weight"] = randn(to_k.shape[0], cross)
        key_id += 2
    return state


def make_tiny_ip_adapter(path: Path, unet_dir: Path, embed_dim: int = 32, seed: int = 0) -> Path:
    """An IP-Adapter .safetensors file for the UNet saved in `unet_dir`."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    unet = UNet2DConditionModel.from_pretrained(unet_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ip_adapter_state_dict(unet, embed_dim, seed).items()}, str(path))
    return path


def make_tiny_t2i_adapter(folder: Path, seed: int = 0, channels: tuple[int, ...] = (16, 32), xl: bool = False) -> Path:
    """A diffusers T2I-Adapter folder whose feature maps fit a tiny UNet: for SD 1.x ("full_adapter") the first at
    half the image size (the tiny VAE's latents), the next halved; for the tiny SDXL ("full_adapter_xl", which
    keeps the size across its first two levels) both at a quarter, the size after SDXL's first down block."""
    from diffusers import T2IAdapter

    torch.manual_seed(seed)
    adapter = T2IAdapter(in_channels=3, channels=list(channels), num_res_blocks=1, downscale_factor=4 if xl else 2,
                         adapter_type="full_adapter_xl" if xl else "full_adapter")
    adapter.save_pretrained(folder, safe_serialization=True)
    return folder
