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


def _randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator) * 0.3


def _unet_ip_layers(unet: torch.nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """`ip_adapter.{1,3,5,...}.to_k_ip/to_v_ip.weight`, one pair per cross-attention layer of `unet`."""
    cross = int(unet.config.cross_attention_dim)
    state: dict[str, torch.Tensor] = {}
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        to_k = unet.get_submodule(name.removesuffix(".processor")).to_k.weight  # [inner, cross]
        state[f"ip_adapter.{key_id}.to_k_ip.weight"] = _randn(generator, to_k.shape[0], cross)
        state[f"ip_adapter.{key_id}.to_v_ip.weight"] = _randn(generator, to_k.shape[0], cross)
        key_id += 2
    return state


def plus_state_dict(unet: torch.nn.Module, hidden_width: int, seed: int = 0, queries: int = 16,
                    dim: int = 64, depth: int = 4) -> dict[str, torch.Tensor]:
    """Random weights of an IP-Adapter plus / plus-face in the original layout: a perceiver resampler
    (`image_proj.latents`, `proj_in`, `proj_out`, `norm_out`, `layers.i.0` attention with `norm1`, `norm2`, `to_q`,
    `to_kv`, `to_out`, `layers.i.1` feed-forward `0` LayerNorm, `1` and `3` linear) over the encoder's hidden states
    (`hidden_width` wide). `dim` is a multiple of 64 (the resampler's head width)."""
    generator = torch.Generator().manual_seed(seed)
    cross = int(unet.config.cross_attention_dim)
    state = {"image_proj.latents": _randn(generator, 1, queries, dim),
             "image_proj.proj_in.weight": _randn(generator, dim, hidden_width),
             "image_proj.proj_in.bias": _randn(generator, dim),
             "image_proj.proj_out.weight": _randn(generator, cross, dim),
             "image_proj.proj_out.bias": _randn(generator, cross),
             "image_proj.norm_out.weight": torch.ones(cross), "image_proj.norm_out.bias": torch.zeros(cross)}
    inner = dim  # one head of 64
    for i in range(depth):
        at = f"image_proj.layers.{i}"
        state.update({f"{at}.0.norm1.weight": torch.ones(dim), f"{at}.0.norm1.bias": torch.zeros(dim),
                      f"{at}.0.norm2.weight": torch.ones(dim), f"{at}.0.norm2.bias": torch.zeros(dim),
                      f"{at}.0.to_q.weight": _randn(generator, inner, dim),
                      f"{at}.0.to_kv.weight": _randn(generator, 2 * inner, dim),
                      f"{at}.0.to_out.weight": _randn(generator, dim, inner),
                      f"{at}.1.0.weight": torch.ones(dim), f"{at}.1.0.bias": torch.zeros(dim),
                      f"{at}.1.1.weight": _randn(generator, 4 * dim, dim),
                      f"{at}.1.3.weight": _randn(generator, dim, 4 * dim)})
    state.update(_unet_ip_layers(unet, generator))
    return state


def full_face_state_dict(unet: torch.nn.Module, hidden_width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of an IP-Adapter full-face in the original layout: an MLP over the encoder's hidden states
    (`image_proj.proj.0` linear, GELU, `proj.2` linear to the cross-attention width, `proj.3` LayerNorm)."""
    generator = torch.Generator().manual_seed(seed)
    cross = int(unet.config.cross_attention_dim)
    state = {"image_proj.proj.0.weight": _randn(generator, hidden_width, hidden_width),
             "image_proj.proj.0.bias": _randn(generator, hidden_width),
             "image_proj.proj.2.weight": _randn(generator, cross, hidden_width),
             "image_proj.proj.2.bias": _randn(generator, cross),
             "image_proj.proj.3.weight": torch.ones(cross), "image_proj.proj.3.bias": torch.zeros(cross)}
    state.update(_unet_ip_layers(unet, generator))
    return state


def face_id_state_dict(unet: torch.nn.Module, seed: int = 0, id_width: int = 16, tokens: int = 4
                       ) -> dict[str, torch.Tensor]:
    """Random weights of an IP-Adapter Face ID in the original layout (`image_proj.proj.0`, `proj.2`, `norm`): its
    input is an insightface face embedding (512 wide in real files; `id_width` here)."""
    generator = torch.Generator().manual_seed(seed)
    cross = int(unet.config.cross_attention_dim)
    state = {"image_proj.proj.0.weight": _randn(generator, 2 * id_width, id_width),
             "image_proj.proj.0.bias": _randn(generator, 2 * id_width),
             "image_proj.proj.2.weight": _randn(generator, tokens * cross, 2 * id_width),
             "image_proj.proj.2.bias": _randn(generator, tokens * cross),
             "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    state.update(_unet_ip_layers(unet, generator))
    return state


def make_tiny_ip_variant(path: Path, unet_dir: Path, kind: str, hidden_width: int = 32, seed: int = 0) -> Path:
    """An IP-Adapter `.safetensors` of `kind` "plus", "plus-face" (the same resampler, as the real files are),
    "full-face" or "faceid" for the UNet saved in `unet_dir`."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    unet = UNet2DConditionModel.from_pretrained(unet_dir)
    if kind in ("plus", "plus-face"):
        state = plus_state_dict(unet, hidden_width, seed)
    elif kind == "full-face":
        state = full_face_state_dict(unet, hidden_width, seed)
    elif kind == "faceid":
        state = face_id_state_dict(unet, seed)
    else:
        raise ValueError(f"kind: plus, plus-face, full-face or faceid, got {kind!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def flux_ip_adapter_state_dict(transformer: torch.nn.Module, embed_dim: int, seed: int = 0
                               ) -> dict[str, torch.Tensor]:
    """Random weights of a Flux.1 IP-Adapter in the XLabs layout (`ip_adapter.safetensors`) for `transformer`:
    `ip_adapter_proj_model.proj` (image embedding -> 4 tokens of the text width) and `.norm`, and per double-stream
    block `double_blocks.N.processor.ip_adapter_double_stream_{k,v}_proj.{weight,bias}`."""
    generator = torch.Generator().manual_seed(seed)
    width = int(transformer.config.joint_attention_dim)
    inner = int(transformer.config.num_attention_heads) * int(transformer.config.attention_head_dim)
    state = {"ip_adapter_proj_model.proj.weight": _randn(generator, 4 * width, embed_dim),
             "ip_adapter_proj_model.proj.bias": _randn(generator, 4 * width),
             "ip_adapter_proj_model.norm.weight": torch.ones(width),
             "ip_adapter_proj_model.norm.bias": torch.zeros(width)}
    for block in range(int(transformer.config.num_layers)):
        at = f"double_blocks.{block}.processor"
        for kv in ("k", "v"):
            state[f"{at}.ip_adapter_double_stream_{kv}_proj.weight"] = _randn(generator, inner, width) * 3
            state[f"{at}.ip_adapter_double_stream_{kv}_proj.bias"] = _randn(generator, inner)
    return state


def make_tiny_flux_ip_adapter(path: Path, transformer_dir: Path, embed_dim: int = 32, seed: int = 0) -> Path:
    """A Flux.1 IP-Adapter `.safetensors` (XLabs layout) for the transformer saved in `transformer_dir`."""
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    transformer = FluxTransformer2DModel.from_pretrained(transformer_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in flux_ip_adapter_state_dict(transformer, embed_dim, seed).items()},
              str(path))
    return path
