"""EaselTransformer: a small single-stream diffusion transformer in pixel space that predicts the clean image.

One token sequence holds the text tokens, the noisy image's patch tokens and, when editing or inpainting, the
source image's patch tokens (RGB + an inpainting-mask channel). Every block is full self-attention over that
sequence with adaLN-Zero modulation from the timestep (plus pooled text). Image and source tokens carry 2-D
rotary positions (the same grid for both; a learned type embedding tells them apart); text tokens carry none
(the text encoder already placed them). Patches enter through a bottleneck linear embedding and the head
predicts x0 patches, as in JiT ("Back to Basics: Let Denoising Generative Models Denoise", arXiv 2511.13720).

An optional pixel decoder (`pixel_decoder` = its channels; 0 = none) refines that prediction at full resolution:
three 3x3 convolutions over the transformer's x0, the noisy input and the source, modulated by the conditioning
vector, add a correction: meant to place an edge where the noisy input shows one, which an 8x8 patch head draws
softly. Its last layer starts at zero, so adding it to trained weights changes nothing until it is trained.

Optional self-conditioning (`self_condition`, as in "Analog Bits", arXiv 2208.04202): the model's own previous x0
prediction enters through a second bottleneck embedding added to the image tokens. The sampler passes the last
step's prediction, so a layout committed to at high noise (one object, here) carries on to the next step instead of
being re-read from the noise alone; training passes a detached prediction of the same x_t half of the time and
zeros otherwise. Its output layer starts at zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0,1]: [B] -> [B,dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]  # [B,half]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # [B,dim]


def rope_2d(rows: torch.Tensor, cols: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [N,head_dim/2] for positions (rows, cols) [N]: half the pairs rotate by row, half by col."""
    quarter = head_dim // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32, device=rows.device) / quarter))  # [q]
    angles = torch.cat([rows.float()[:, None] * freqs, cols.float()[:, None] * freqs], dim=-1)  # [N,head_dim/2]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of x [B,H,N,D] by the angles in cos/sin [N,D/2]."""
    x1, x2 = x[..., 0::2], x[..., 1::2]  # [B,H,N,D/2] each
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # [B,H,N,D/2,2]
    return out.flatten(-2)  # [B,H,N,D]


def pool_text(text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real (unmasked) text features: text [B,L,dim], mask [B,L] bool -> [B,dim]."""
    m = mask.to(text.dtype)[..., None]  # [B,L,1]
    return (text * m).sum(1) / m.sum(1).clamp(min=1.0)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Softmax attention written out: q, k, v [B,H,N,Dh], keep [B,1,1,N] bool (False = masked key) or None.
    Same result as F.scaled_dot_product_attention; at these sizes (N ~ 100-200) its CPU backward is the slowest
    op of a training step, and three plain kernels train a step about 25% faster. Other devices keep the fused
    kernel."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)  # [B,H,N,N]
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    return scores.softmax(dim=-1) @ v  # [B,H,N,Dh]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    """Pre-norm attention + MLP, both gated and modulated by the conditioning vector (adaLN-Zero)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_text: int,
                attn_mask: torch.Tensor | None) -> torch.Tensor:
        B, N, D = x.shape
        s1, g1, b1, s2, g2, b2 = self.ada(F.silu(c)).chunk(6, dim=-1)  # 6 x [B,D]
        h = modulate(self.norm1(x), s1, g1)  # [B,N,D]
        q, k, v = self.qkv(h).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3 x [B,H,N,Dh]
        q, k = self.q_norm(q), self.k_norm(k)  # [B,H,N,Dh]
        q = torch.cat([q[:, :, :n_text], apply_rope(q[:, :, n_text:], cos, sin)], dim=2)  # [B,H,N,Dh]
        k = torch.cat([k[:, :, :n_text], apply_rope(k[:, :, n_text:], cos, sin)], dim=2)  # [B,H,N,Dh]
        a = attention(q, k, v, attn_mask)  # [B,H,N,Dh]
        x = x + b1[:, None] * self.proj(a.transpose(1, 2).reshape(B, N, D))  # [B,N,D]
        x = x + b2[:, None] * self.mlp(modulate(self.norm2(x), s2, g2))  # [B,N,D]
        return x


class PixelDecoder(nn.Module):
    """Full-resolution refinement of an x0 prediction: [x0, x_t, source] -> x0 + correction (zero at init)."""

    def __init__(self, channels: int, cond_dim: int, in_channels: int = 3, source_channels: int = 4) -> None:
        super().__init__()
        self.source_channels = source_channels
        self.conv_in = nn.Conv2d(2 * in_channels + source_channels, channels, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * channels)
        self.conv_mid = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_out = nn.Conv2d(channels, in_channels, 3, padding=1)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x0: torch.Tensor, x_t: torch.Tensor, source: torch.Tensor | None, c: torch.Tensor
                ) -> torch.Tensor:
        if source is None:
            source = x0.new_zeros(x0.shape[0], self.source_channels, *x0.shape[2:])  # [B,4,H,W]
        h = self.conv_in(torch.cat([x0, x_t.to(x0.dtype), source.to(x0.dtype)], dim=1))  # [B,C,H,W]
        scale, shift = self.film(F.silu(c)).chunk(2, dim=-1)  # [B,C] each
        h = F.silu(h * (1 + scale[:, :, None, None]) + shift[:, :, None, None])  # [B,C,H,W]
        h = F.silu(self.conv_mid(h))  # [B,C,H,W]
        return x0 + self.conv_out(h)  # [B,3,H,W]


def bottleneck_embedding(patch_dim: int, bottleneck: int, dim: int) -> nn.Sequential:
    """Patch embedding through a low-rank bottleneck, as in JiT: [.., patch_dim] -> [.., bottleneck] -> [.., dim]."""
    return nn.Sequential(nn.Linear(patch_dim, bottleneck, bias=False), nn.Linear(bottleneck, dim))


class EaselTransformer(ModelMixin, ConfigMixin):
    """forward(x_t [B,3,H,W], t [B] in [0,1] (1 = noise), text [B,L,text_dim], text_mask [B,L] bool,
    source [B,4,H,W] | None, x0_prev [B,3,H,W] | None) -> x0 prediction [B,3,H,W]. H and W must be multiples of
    `patch_size`. x0_prev (the previous prediction) is read only by self-conditioned models; None = zeros."""

    @register_to_config
    def __init__(self, sample_size: int = 64, patch_size: int = 8, in_channels: int = 3, source_channels: int = 4,
                 hidden_size: int = 256, depth: int = 8, num_heads: int = 4, mlp_ratio: float = 4.0,
                 bottleneck: int = 32, text_dim: int = 256, source_residual: bool = False,
                 pixel_decoder: int = 0, self_condition: bool = False) -> None:
        super().__init__()
        p, D = patch_size, hidden_size
        self.patch_in = bottleneck_embedding(in_channels * p * p, bottleneck, D)
        self.source_in = bottleneck_embedding(source_channels * p * p, bottleneck, D)
        self.text_in = nn.Linear(text_dim, D)
        self.prev_in = None
        if self_condition:
            self.prev_in = bottleneck_embedding(in_channels * p * p, bottleneck, D)
            nn.init.zeros_(self.prev_in[1].weight)
            nn.init.zeros_(self.prev_in[1].bias)
        self.type_embed = nn.Parameter(torch.zeros(3, D))  # text, image, source
        self.t_embed = nn.Sequential(nn.Linear(D, D), nn.SiLU(), nn.Linear(D, D))
        self.pool_in = nn.Linear(text_dim, D)
        self.blocks = nn.ModuleList(Block(D, num_heads, mlp_ratio) for _ in range(depth))
        self.norm_out = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(D, 2 * D)
        self.head = nn.Linear(D, in_channels * p * p)
        self.decoder = PixelDecoder(pixel_decoder, D, in_channels, source_channels) if pixel_decoder else None
        nn.init.normal_(self.type_embed, std=0.02)
        for m in (self.ada_out, self.head):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B,C,H,W] -> [B,(H/p)*(W/p),C*p*p]"""
        p = self.config.patch_size
        B, C, H, W = x.shape
        x = x.view(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)  # [B,H/p,W/p,C,p,p]
        return x.reshape(B, (H // p) * (W // p), C * p * p)

    def unpatchify(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """[B,(H/p)*(W/p),C*p*p] -> [B,C,H,W]"""
        p = self.config.patch_size
        B = x.shape[0]
        x = x.view(B, H // p, W // p, -1, p, p).permute(0, 3, 1, 4, 2, 5)  # [B,C,H/p,p,W/p,p]
        return x.reshape(B, -1, H, W)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                source: torch.Tensor | None = None, x0_prev: torch.Tensor | None = None) -> torch.Tensor:
        B, _, H, W = x_t.shape
        p = self.config.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p}")
        gh, gw = H // p, W // p
        L = text.shape[1]
        txt = self.text_in(text) + self.type_embed[0]  # [B,L,D]
        img = self.patch_in(self.patchify(x_t)) + self.type_embed[1]  # [B,N,D], N = gh*gw
        if self.prev_in is not None:
            prev = torch.zeros_like(x_t) if x0_prev is None else x0_prev.to(x_t.dtype)  # [B,3,H,W]
            img = img + self.prev_in(self.patchify(prev))  # [B,N,D]
        tokens = [txt, img]
        rows = torch.arange(gh, device=x_t.device).repeat_interleave(gw)  # [N]
        cols = torch.arange(gw, device=x_t.device).repeat(gh)  # [N]
        keep = [text_mask, torch.ones(B, gh * gw, dtype=torch.bool, device=x_t.device)]
        if source is not None:
            tokens.append(self.source_in(self.patchify(source)) + self.type_embed[2])  # [B,N,D]
            rows, cols = rows.repeat(2), cols.repeat(2)  # [2N]: source tokens share the image's grid
            keep.append(keep[1])
        x = torch.cat(tokens, dim=1)  # [B,L+N(+N),D]
        cos, sin = rope_2d(rows, cols, self.config.hidden_size // self.config.num_heads)  # [N',Dh/2] each
        keep_all = torch.cat(keep, dim=1)  # [B,L+N(+N)]
        attn_mask = None if bool(keep_all.all()) else keep_all[:, None, None, :]  # [B,1,1,N_total] or None
        pooled = pool_text(text, text_mask)  # [B,text_dim]
        c = self.t_embed(timestep_embedding(t, self.config.hidden_size).to(x.dtype)) + self.pool_in(pooled)  # [B,D]
        for block in self.blocks:
            x = block(x, c, cos.to(x.dtype), sin.to(x.dtype), L, attn_mask)  # [B,L+N(+N),D]
        shift, scale = self.ada_out(F.silu(c)).chunk(2, dim=-1)  # [B,D] each
        out = self.head(modulate(self.norm_out(x[:, L:L + gh * gw]), shift, scale))  # [B,N,3*p*p]
        x0 = self.unpatchify(out, H, W)  # [B,3,H,W]
        if source is not None and self.config.source_residual:
            x0 = x0 + source[:, :3].to(x0.dtype)  # edits predict the change to the source; copying is free
        if self.decoder is not None:
            x0 = self.decoder(x0, x_t, source, c)  # [B,3,H,W]
        return x0
