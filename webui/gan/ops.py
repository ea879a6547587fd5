"""The layers both StyleGAN generations share, written from the papers' equations.

* `Dense`: a fully connected layer with the equalized learning rate (weights scaled by lr / sqrt(fan-in) when used,
  biases by lr), as the generators' mapping networks and style affines use it.
* `MappingNetwork`: z (and a class embedding) → w, each input normalised to unit second moment, a stack of leaky-ReLU
  dense layers; `w_avg` (the running mean of w kept while training) is where truncation pulls w towards.
* `upfirdn2d`: upsample by zero insertion, pad (or crop), convolve with a FIR filter (1-D separable or 2-D), keep every
  `down`-th sample: the resampling both generators build on.
* `modulate`: a convolution weight scaled per sample by its style, optionally demodulated (each output channel
  rescaled to unit norm), ready for one grouped convolution over the batch.

Module attribute names follow the key layout NVlabs generators are published in (`mapping.fc0.weight`,
`mapping.w_avg`, `...affine.weight`), so a file's state dict loads by name.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2.0)
LRELU_SLOPE = 0.2


def lrelu(x: torch.Tensor, gain: float = LRELU_GAIN, slope: float = LRELU_SLOPE,
          clamp: float | None = None) -> torch.Tensor:
    """Leaky ReLU scaled by `gain` (keeps the signal's magnitude), then clamped to ±clamp when given."""
    x = F.leaky_relu(x, slope) * gain if slope != 1 else x * gain
    return x.clamp(-clamp, clamp) if clamp is not None else x


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each row scaled to unit mean square: [B, D] → [B, D]."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class Dense(nn.Module):
    """y = x · (W · lr/√in)ᵀ + b · lr, then leaky ReLU when `activation`."""

    def __init__(self, in_features: int, out_features: int, activation: bool = False, lr_multiplier: float = 1.0
                 ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.activation = activation
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)  # [B, out]
        return lrelu(x) if self.activation else x


class MappingNetwork(nn.Module):
    """z [B, z_dim] (+ one-hot class c [B, c_dim]) → w [B, num_ws, w_dim], truncated towards `w_avg` by ψ."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, layer_dims: list[int],
                 lr_multiplier: float = 0.01) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        embed_dim = 0
        if c_dim > 0:
            embed_dim = layer_dims[0] - z_dim
            self.embed = Dense(c_dim, embed_dim)
        self.num_layers = len(layer_dims) - 1
        for index, (fan_in, fan_out) in enumerate(zip(layer_dims[:-1], layer_dims[1:])):
            setattr(self, f"fc{index}", Dense(fan_in, fan_out, activation=True, lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None, psi: float = 1.0) -> torch.Tensor:
        x = normalize_2nd_moment(z.float())  # [B, z_dim]
        if self.c_dim > 0:
            if c is None:
                raise ValueError("this generator is class-conditional: a class is needed")
            x = torch.cat([x, normalize_2nd_moment(self.embed(c.float()))], dim=1)  # [B, z_dim + embed]
        for index in range(self.num_layers):
            x = getattr(self, f"fc{index}")(x)  # [B, w_dim]
        return self.truncate(x, psi).unsqueeze(1).repeat(1, self.num_ws, 1)  # [B, num_ws, w_dim]

    def truncate(self, w: torch.Tensor, psi: float) -> torch.Tensor:
        """w pulled towards the average: w_avg + ψ (w − w_avg); ψ = 0 gives w_avg, ψ = 1 leaves w as it is."""
        return w if psi == 1 else self.w_avg.lerp(w, psi)


class Generator(nn.Module):
    """A StyleGAN generator: the mapping network, then the synthesis network `make_synthesis(config)` builds
    (ws → images); `forward(z, c, psi)` → images [B, C, R, R] in about [-1, 1]."""

    generation = ""

    def __init__(self, config: Any, make_synthesis: Callable[[Any], nn.Module]) -> None:
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config.z_dim, config.c_dim, config.w_dim, config.num_ws,
                                      list(config.mapping_dims))
        self.synthesis = make_synthesis(config)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, psi: float = 1.0) -> torch.Tensor:
        return self.synthesis(self.mapping(z, c, psi))


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1,
              padding: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Upsample by inserting up−1 zeros after each sample, pad (negative pads crop) by (x0, x1, y0, y1), convolve with
    FIR filter `f` (1-D: applied along both axes; 2-D: as is; None: identity) scaled so the total gain is `gain`, and
    keep every `down`-th sample. x: [B, C, H, W]."""
    if f is None:
        f = torch.ones(1, 1, dtype=x.dtype, device=x.device)
    batch, channels, height, width = x.shape
    if up > 1:  # [B, C, H, 1, W, 1] padded with zeros → [B, C, H·up, W·up]
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(batch, channels, height * up, width * up)
    x0, x1, y0, y1 = padding
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    f = (f * gain ** (f.ndim / 2)).to(x.dtype).flip(list(range(f.ndim)))  # true convolution: the filter flipped
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].repeat(channels, 1, 1, 1), groups=channels)
    else:  # separable: along x, then along y
        x = F.conv2d(x, f[None, None, None, :].repeat(channels, 1, 1, 1), groups=channels)
        x = F.conv2d(x, f[None, None, :, None].repeat(channels, 1, 1, 1), groups=channels)
    return x[:, :, ::down, ::down]


def modulate(weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
             input_gain: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample weights: weight [O, I, k, k] × styles [B, I] (over input channels), each output channel rescaled to
    unit norm when `demodulate`, input channels divided by `input_gain` when given → [B, O, I, k, k]."""
    w = weight.unsqueeze(0) * styles[:, None, :, None, None]  # [B, O, I, k, k]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    if input_gain is not None:
        w = w * input_gain
    return w


def grouped_conv(x: torch.Tensor, w: torch.Tensor, padding: int = 0, transpose: bool = False,
                 stride: int = 1) -> torch.Tensor:
    """One convolution over the batch with a weight per sample: x [B, I, H, W], w [B, O, I, k, k] → [B, O, H', W']."""
    batch, out_ch, in_ch, kh, kw = w.shape
    x = x.reshape(1, batch * in_ch, *x.shape[2:])  # the batch as groups
    if transpose:  # conv_transpose2d's weight is [in, out/groups, k, k]
        w = w.transpose(1, 2).reshape(batch * in_ch, out_ch, kh, kw)
        x = F.conv_transpose2d(x, w.to(x.dtype), stride=stride, padding=padding, groups=batch)
    else:
        x = F.conv2d(x, w.reshape(batch * out_ch, in_ch, kh, kw).to(x.dtype), padding=padding, groups=batch)
    return x.reshape(batch, out_ch, *x.shape[2:])
