"""Face-restoration models: GFPGAN and CodeFormer weights, read without running code, recognised by spandrel and
built from their own tensors' shapes.

A file in `models/GFPGAN/` or `models/Codeformer/` is read tensors-only (`webui.model_manager.weights.read_weights`:
safetensors, or a pickle through PyTorch's weights-only unpickler; TorchScript archives refused unread), unwrapped
as spandrel unwraps state dicts (`params_ema`, `module.` prefixes), and recognised with spandrel's own key
conditions (GFPGAN in `spandrel.architectures`, CodeFormer in `spandrel_extra_arches`). The network is then built
with the sizes its tensors have, so a published 512-px file and a small test model go through one path:

- GFPGAN: spandrel's `GFPGANv1Clean`, with output size, channel narrowing, channel multiplier, style width, MLP
  depth and SFT layout read from the shapes (a published v1.3/v1.4 file gives spandrel's fixed 512 / 1 / 2 / 512).
- CodeFormer: `ScalableCodeFormer`, spandrel_extra_arches' CodeFormer with its building blocks and parameter names
  unchanged, whose image size, channel widths, latent grid and code width are read from the shapes instead of
  fixed at 512 px (a published file gives exactly spandrel's network).

Both take faces (B, 3, S, S) in [-1, 1] and return them restored in [-1, 1]; `FaceModel.restore` does that.
GFPGAN's decoder uses its stored noise (not fresh noise), so the same face restores the same way every time.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

KINDS = ("GFPGAN", "CodeFormer")


class FaceModelError(ValueError):
    """A face-restoration file was refused or is not GFPGAN / CodeFormer; the message names the file."""


@dataclass
class FaceModel:
    """A loaded restorer: its kind, the square side it works at, and the network (eval mode, on its device). The
    memory cache measures `model` and moves it between the device and RAM with `to`."""

    kind: str
    size: int
    model: nn.Module
    device: torch.device
    dtype: torch.dtype

    def to(self, device: str | torch.device) -> "FaceModel":
        self.model.to(device)
        self.device = torch.device(device)
        return self

    @torch.inference_mode()
    def restore(self, faces: torch.Tensor, fidelity: float = 0.5) -> torch.Tensor:
        """Faces (B, 3, S, S) in [-1, 1] → restored (B, 3, S, S) in [-1, 1]. `fidelity` is CodeFormer's weight w
        (0: the most restored, 1: the closest to the input); GFPGAN has none."""
        x = faces.to(self.device, self.dtype)
        if self.kind == "CodeFormer":
            out = self.model(x, weight=float(fidelity))[0]
        else:
            out = self.model(x, return_rgb=False, randomize_noise=False)[0]
        return out.float().clamp(-1, 1)  # (B, 3, S, S)


# Reading and recognising ------------------------------------------------------------------------------------------
def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors, unwrapped as spandrel does; FaceModelError naming the file when refused."""
    from spandrel.__helpers.canonicalize import canonicalize_state_dict

    from webui.model_manager.weights import ModelFileError, read_weights

    try:
        state = read_weights(path)  # tensors only: nothing in the file runs
    except ModelFileError as exc:
        raise FaceModelError(str(exc)) from None
    if not isinstance(state, dict):
        raise FaceModelError(f"{path.name}: holds a {type(state).__name__}, not a dictionary of tensors")
    return canonicalize_state_dict(state)


def identify(state: dict[str, Any]) -> str | None:
    """"GFPGAN", "CodeFormer" (spandrel's key conditions), or None."""
    from spandrel.architectures.GFPGAN import GFPGANArch
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormerArch

    if GFPGANArch().detect(state):
        return "GFPGAN"
    if CodeFormerArch().detect(state):
        return "CodeFormer"
    return None


def load_face_model(path: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> FaceModel:
    """The restorer in `path`, built to its tensors' sizes and loaded strictly. FaceModelError naming the file
    when it is refused, is neither GFPGAN nor CodeFormer, or its tensors do not fit."""
    path = Path(path)
    state = read_state(path)
    kind = identify(state)
    if kind is None:
        raise FaceModelError(f"{path.name} is not a GFPGAN (v1.3/v1.4, \"clean\") or CodeFormer model")
    try:
        network, size = (build_gfpgan(state) if kind == "GFPGAN" else build_codeformer(state))
        network.load_state_dict(state, strict=True)
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError, AttributeError) as exc:
        raise FaceModelError(f"{path.name}: its weights do not fit the {kind} architecture they look like "
                             f"({type(exc).__name__}: {str(exc).strip()[:200]})") from None
    if dtype == torch.float16:  # as spandrel declares: neither network is reliable in half precision
        dtype = torch.float32
    network.to(device=device, dtype=dtype).eval()
    log.info("face restorer %s loaded (%s, %d px)", path.name, kind, size)
    return FaceModel(kind, size, network, torch.device(device), dtype)


# GFPGAN --------------------------------------------------------------------------------------------------------
def _unet_channels(unet_narrow: float, multiplier: int) -> dict[int, int]:
    """GFPGANv1Clean's U-Net widths by resolution."""
    wide = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * multiplier, 128: 128 * multiplier,
            256: 64 * multiplier, 512: 32 * multiplier, 1024: 16 * multiplier}
    return {side: int(width * unet_narrow) for side, width in wide.items()}


def build_gfpgan(state: dict[str, torch.Tensor]) -> tuple[nn.Module, int]:
    """spandrel's GFPGANv1Clean with the sizes `state` has, and its output side."""
    from spandrel.architectures.GFPGAN import GFPGAN

    log_size = _count(state, "toRGB.{}.weight") + 2
    out_size = 2 ** log_size
    unet_narrow = state["final_conv.weight"].shape[0] / 512
    first = state["conv_body_first.weight"].shape[0]
    multipliers = [m for m in (2, 1, 4) if _unet_channels(unet_narrow, m)[out_size] == first]
    if not multipliers:
        raise ValueError(f"conv_body_first has {first} channels, which no channel multiplier gives")
    style = state["stylegan_decoder.style_mlp.1.weight"].shape[0]
    num_mlp = _count(state, "stylegan_decoder.style_mlp.{}.weight", start=1, step=2)
    different_w = state["final_linear.weight"].shape[0] == (log_size * 2 - 2) * style
    sft_half = state["condition_scale.0.2.weight"].shape[0] == state["condition_scale.0.0.weight"].shape[0]
    network = GFPGAN(out_size=out_size, num_style_feat=style, channel_multiplier=multipliers[0],
                     decoder_load_path=None, fix_decoder=False, num_mlp=num_mlp, input_is_latent=True,
                     different_w=different_w, narrow=unet_narrow * 2, sft_half=sft_half)
    return network, out_size


def _count(state: dict[str, Any], pattern: str, start: int = 0, step: int = 1) -> int:
    n = 0
    while pattern.format(start + n * step) in state:
        n += 1
    return n


# CodeFormer ----------------------------------------------------------------------------------------------------
def build_codeformer(state: dict[str, torch.Tensor]) -> tuple[nn.Module, int]:
    """A ScalableCodeFormer with the sizes `state` has, and its image side."""
    nf = state["encoder.blocks.0.weight"].shape[0]
    levels: list[tuple[int, int, int]] = []  # per resolution level: (width, residual blocks, attention blocks)
    index, width, blocks, attention = 1, nf, 0, 0
    while True:
        key = f"encoder.blocks.{index}"
        if f"{key}.conv1.weight" in state:  # a ResBlock
            width, blocks = state[f"{key}.conv1.weight"].shape[0], blocks + 1
        elif f"{key}.q.weight" in state:  # an AttnBlock
            attention += 1
        elif f"{key}.conv.weight" in state:  # a Downsample ends the level
            levels.append((width, blocks, attention))
            blocks, attention = 0, 0
        else:
            break
        index += 1
    # the last level is followed by ResBlock, AttnBlock, ResBlock (non-local) and norm + conv: 3 blocks of its own
    levels.append((width, blocks - 2, attention - 1))
    res_blocks = levels[0][1]
    ch_mult = [w // nf for w, _, _ in levels]
    latent_cells, dim_embd = state["position_emb"].shape
    latent_side = math.isqrt(latent_cells)
    if latent_side * latent_side != latent_cells:
        raise ValueError(f"position_emb has {latent_cells} rows, not a square grid")
    img_size = latent_side * 2 ** (len(levels) - 1)
    attn = [img_size >> i for i, (_, _, count) in enumerate(levels) if count]
    codebook_size, emb_dim = state["quantize.embedding.weight"].shape
    connect = sorted({key.split(".")[1] for key in state if key.startswith("fuse_convs_dict.")}, key=int)
    network = ScalableCodeFormer(img_size=img_size, nf=nf, ch_mult=ch_mult, res_blocks=res_blocks,
                                 attn_resolutions=attn, emb_dim=emb_dim, codebook_size=codebook_size,
                                 dim_embd=dim_embd, n_head=8 if dim_embd % 8 == 0 else 1,
                                 n_layers=_count(state, "ft_layers.{}.linear1.weight"), connect_list=connect)
    return network, img_size


class ScalableCodeFormer(nn.Module):
    """CodeFormer (a VQ autoencoder whose codes a transformer predicts from the degraded face, fused back with
    weight w) at any image size: spandrel_extra_arches' blocks and parameter names, sizes as arguments."""

    def __init__(self, *, img_size: int, nf: int, ch_mult: list[int], res_blocks: int, attn_resolutions: list[int],
                 emb_dim: int, codebook_size: int, dim_embd: int, n_head: int, n_layers: int,
                 connect_list: list[str]) -> None:
        super().__init__()
        from spandrel_extra_arches.architectures.CodeFormer.__arch import codeformer as cf

        base = cf.VQAutoEncoder(img_size, nf, list(ch_mult), "nearest", res_blocks, list(attn_resolutions),
                                codebook_size, emb_dim)
        self.encoder, self.quantize, self.generator = base.encoder, base.quantize, base.generator
        self.emb_dim = emb_dim
        self.latent_side = img_size // 2 ** (len(ch_mult) - 1)
        self.position_emb = nn.Parameter(torch.zeros(self.latent_side ** 2, dim_embd))
        self.feat_emb = nn.Linear(emb_dim, dim_embd)
        self.ft_layers = nn.Sequential(*[cf.TransformerSALayer(embed_dim=dim_embd, nhead=n_head,
                                                               dim_mlp=dim_embd * 2, dropout=0.0)
                                         for _ in range(n_layers)])
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(dim_embd), nn.Linear(dim_embd, codebook_size, bias=False))
        widths = {img_size >> i: nf * m for i, m in enumerate(ch_mult)}  # resolution -> channels
        self.fuse_convs_dict = nn.ModuleDict({size: cf.Fuse_sft_block(widths[int(size)], widths[int(size)])
                                              for size in connect_list})
        self.connect_list = list(connect_list)
        self.encoder_taps, self.generator_taps = _taps(img_size, len(ch_mult), res_blocks, attn_resolutions)
        self._adain = cf.adaptive_instance_normalization

    def forward(self, x: torch.Tensor, weight: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, S, S) in [-1, 1] → (restored (B, 3, S, S), code logits (B, L², codebook))."""
        features: dict[str, torch.Tensor] = {}
        taps = {self.encoder_taps[int(size)]: size for size in self.connect_list}
        for i, block in enumerate(self.encoder.blocks):
            x = block(x)
            if i in taps:
                features[taps[i]] = x.clone()  # (B, C_r, r, r)
        latent = x  # (B, emb_dim, L, L)
        pos = self.position_emb.unsqueeze(1).repeat(1, x.shape[0], 1)  # (L², B, dim)
        query = self.feat_emb(latent.flatten(2).permute(2, 0, 1))  # (L², B, dim)
        for layer in self.ft_layers:
            query = layer(query, query_pos=pos)
        logits = self.idx_pred_layer(query).permute(1, 0, 2)  # (B, L², codebook)
        top = torch.topk(torch.softmax(logits, dim=2), 1, dim=2)[1]  # (B, L², 1)
        side = self.latent_side
        quant = self.quantize.get_codebook_feat(top, shape=[x.shape[0], side, side, self.emb_dim])  # (B, e, L, L)
        x = self._adain(quant.detach(), latent)
        fuse_at = {self.generator_taps[int(size)]: size for size in self.connect_list}
        for i, block in enumerate(self.generator.blocks):
            x = block(x)
            if i in fuse_at and weight > 0:
                size = fuse_at[i]
                x = self.fuse_convs_dict[size](features[size].detach(), x, weight)
        return x, logits


def _taps(img_size: int, levels: int, res_blocks: int, attn: list[int]) -> tuple[dict[int, int], dict[int, int]]:
    """Block indices whose output CodeFormer fuses, by resolution: in the encoder, the last residual block of each
    level; in the generator, the first residual block of a level (the last one at an attention resolution)."""
    encoder: dict[int, int] = {}
    index = 0  # conv_in
    for level in range(levels):
        side = img_size >> level
        for _ in range(res_blocks):
            index += 1
            encoder[side] = index
            if side in attn:
                index += 1
        if level != levels - 1:
            index += 1  # Downsample
    generator: dict[int, int] = {}
    index = 3  # conv_in, ResBlock, AttnBlock, ResBlock
    for level in reversed(range(levels)):
        side = img_size >> level
        for block in range(res_blocks):
            index += 1
            if block == 0 or side in attn:
                generator[side] = index
            if side in attn:
                index += 1
        if level != 0:
            index += 1  # Upsample
    return encoder, generator
