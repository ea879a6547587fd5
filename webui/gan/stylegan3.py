"""StyleGAN3 ("alias-free") synthesis, as the paper describes it: Fourier-feature input, then layers that each
modulate a convolution (3×3 in config T, 1×1 in config R), and apply the leaky ReLU between an upsampling and a
downsampling low-pass filter so that the non-linearity does not alias ("filtered leaky ReLU"), on a canvas with a
margin that the last layers crop away; a 1×1 toRGB ends it, and the image is scaled by 1/4.

The input layer's style gives each sample a rotation and a translation of the Fourier features (`transform` is the
user transform, identity by default). Each layer's low-pass filters are the ones stored with the generator
(`up_filter`, `down_filter`: 1-D separable, or 2-D radial in config R), so nothing is re-designed here; the
up/down factors come from the filters' lengths (6 taps per factor) and the canvas sizes from the layer names
(`L{index}_{size}_{channels}`). Two numbers of the input layer are not stored and take the published defaults: the
canvas margin (10 samples, so its sampling rate is its size − 20) and its bandwidth (2).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from webui.gan.ops import Dense, Generator, grouped_conv, lrelu, modulate, upfirdn2d
from webui.gan.stylegan2 import mapping_dims_of

CONV_CLAMP = 256.0
FILTER_TAPS = 6  # taps per up/down factor
MARGIN = 10
FIRST_CUTOFF = 2.0
OUTPUT_SCALE = 0.25
LAYER_NAME = re.compile(r"^synthesis\.L(\d+)_(\d+)_(\d+)\.weight$")


@dataclass(frozen=True)
class LayerSpec:
    name: str
    in_ch: int
    out_ch: int
    in_size: int
    out_size: int
    kernel: int
    up: int
    down: int
    up_taps: int
    down_taps: int
    down_radial: bool
    torgb: bool

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """(x0, x1, y0, y1) so the output has exactly `out_size` samples, centred the symmetric way."""
        total = (self.out_size - 1) * self.down + 1 - (self.in_size + self.kernel - 1) * self.up
        total += self.up_taps + self.down_taps - 2
        low = (total + self.up) // 2
        return low, total - low, low, total - low


@dataclass(frozen=True)
class SG3Config:
    resolution: int
    img_channels: int
    z_dim: int
    c_dim: int
    w_dim: int
    mapping_dims: tuple[int, ...]
    input_channels: int
    input_size: int
    layers: tuple[LayerSpec, ...]

    @property
    def num_ws(self) -> int:
        return len(self.layers) + 1  # the input's, then one per layer

    @property
    def variant(self) -> str:
        """"R" (1×1 convolutions, radial filters) or "T"."""
        return "R" if any(spec.kernel == 1 and not spec.torgb for spec in self.layers) else "T"


class SynthesisInput(nn.Module):
    """Fourier features on a canvas of `size`², rotated and translated per sample by its style → [B, C, size, size]."""

    def __init__(self, w_dim: int, channels: int, size: int) -> None:
        super().__init__()
        self.size, self.channels = size, channels
        self.sampling_rate, self.bandwidth = size - 2 * MARGIN, FIRST_CUTOFF
        self.affine = Dense(w_dim, 4)
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.register_buffer("transform", torch.eye(3))
        freqs = torch.randn(channels, 2)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        self.register_buffer("freqs", freqs / (radii * radii.square().exp().pow(0.25)) * self.bandwidth)
        self.register_buffer("phases", torch.rand(channels) - 0.5)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        batch = w.shape[0]
        t = self.affine(w)  # [B, 4]: rotation (cos, sin) and translation (x, y)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        rotate = torch.eye(3, device=w.device).repeat(batch, 1, 1)  # [B, 3, 3]
        rotate[:, 0, 0], rotate[:, 0, 1], rotate[:, 1, 0], rotate[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        shift = torch.eye(3, device=w.device).repeat(batch, 1, 1)
        shift[:, 0, 2], shift[:, 1, 2] = -t[:, 2], -t[:, 3]
        transforms = rotate @ shift @ self.transform.unsqueeze(0)  # [B, 3, 3]
        phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ transforms[:, :2, 2:]).squeeze(2)  # [B, C]
        freqs = self.freqs.unsqueeze(0) @ transforms[:, :2, :2]  # [B, C, 2]
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth)
                      / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)  # [B, C]: fade out what aliases
        theta = torch.eye(2, 3, device=w.device)
        theta[0, 0] = theta[1, 1] = 0.5 * self.size / self.sampling_rate
        grid = F.affine_grid(theta.unsqueeze(0), [1, 1, self.size, self.size], align_corners=False)  # [1, H, W, 2]
        x = (grid.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)  # [B, H, W, C]
        x = torch.sin((x + phases[:, None, None, :]) * (2 * np.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()  # [B, H, W, C]
        return x.permute(0, 3, 1, 2)  # [B, C, H, W]


class SynthesisLayer(nn.Module):
    """Modulated conv → bias → ↑up (filter) → leaky ReLU → (filter) ↓down; the last one a linear 1×1 toRGB."""

    def __init__(self, w_dim: int, spec: LayerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.affine = Dense(w_dim, spec.in_ch)
        self.weight = nn.Parameter(torch.randn(spec.out_ch, spec.in_ch, spec.kernel, spec.kernel))
        self.bias = nn.Parameter(torch.zeros(spec.out_ch))
        self.register_buffer("magnitude_ema", torch.ones([]))
        if spec.up_taps > 1:
            self.register_buffer("up_filter", torch.ones(spec.up_taps) / spec.up_taps)
        else:
            self.up_filter = None
        if spec.down_taps > 1:
            shape = (spec.down_taps, spec.down_taps) if spec.down_radial else (spec.down_taps,)
            self.register_buffer("down_filter", torch.ones(shape) / math.prod(shape))
        else:
            self.down_filter = None

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        styles = self.affine(w)  # [B, in]
        if spec.torgb:
            styles = styles / math.sqrt(spec.in_ch * spec.kernel ** 2)
        weights = modulate(self.weight, styles, demodulate=not spec.torgb,
                           input_gain=self.magnitude_ema.rsqrt())  # [B, O, I, k, k]
        x = grouped_conv(x, weights, padding=spec.kernel - 1)  # [B, O, in + k − 1, …]
        x = x + self.bias[None, :, None, None]
        x = upfirdn2d(x, self.up_filter, up=spec.up, padding=spec.padding, gain=spec.up ** 2)
        x = lrelu(x, gain=1.0, slope=1.0, clamp=CONV_CLAMP) if spec.torgb else lrelu(x, clamp=CONV_CLAMP)
        return upfirdn2d(x, self.down_filter, down=spec.down)  # [B, O, out_size, out_size]


class SynthesisNetwork(nn.Module):
    def __init__(self, config: SG3Config) -> None:
        super().__init__()
        self.input = SynthesisInput(config.w_dim, config.input_channels, config.input_size)
        self.layer_names = [spec.name for spec in config.layers]
        for spec in config.layers:
            setattr(self, spec.name, SynthesisLayer(config.w_dim, spec))

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        x = self.input(ws[:, 0])
        for index, name in enumerate(self.layer_names):
            x = getattr(self, name)(x, ws[:, index + 1])
        return x * OUTPUT_SCALE  # [B, img_channels, R, R], about [-1, 1]


class StyleGAN3(Generator):
    """mapping + alias-free synthesis; `forward(z, c, psi)` → images [B, C, R, R] in about [-1, 1]."""

    generation = "StyleGAN3"

    def __init__(self, config: SG3Config) -> None:
        super().__init__(config, SynthesisNetwork)


def config_from_shapes(shapes: dict[str, tuple[int, ...]]) -> SG3Config:
    """The generator's hyper-parameters from its tensors' names and shapes (ValueError saying what does not fit)."""
    found = sorted((int(m.group(1)), int(m.group(2)), int(m.group(3)), key[: -len(".weight")].split(".", 1)[1])
                   for key in shapes if (m := LAYER_NAME.match(key)))
    if not found or [index for index, *_ in found] != list(range(len(found))):
        raise ValueError("the synthesis layers (synthesis.L0_… to synthesis.LN_…) are incomplete")
    if "synthesis.input.weight" not in shapes or "synthesis.input.freqs" not in shapes:
        raise ValueError("no Fourier-feature input (synthesis.input.weight, synthesis.input.freqs)")
    input_channels = shapes["synthesis.input.weight"][0]
    layers: list[LayerSpec] = []
    prev_size, prev_ch = found[0][1], input_channels
    for index, size, channels, name in found:
        key = f"synthesis.{name}"
        out_ch, in_ch, kernel, _ = shapes[f"{key}.weight"]
        up_taps = shapes.get(f"{key}.up_filter", (1,))[0]
        down_shape = shapes.get(f"{key}.down_filter", (1,))
        torgb = index == len(found) - 1
        for taps, what in ((up_taps, "up_filter"), (down_shape[0], "down_filter")):
            if taps > 1 and taps % FILTER_TAPS:
                raise ValueError(f"{key}.{what} has {taps} taps, not a multiple of {FILTER_TAPS}")
        if in_ch != prev_ch or out_ch != channels:
            raise ValueError(f"{key}.weight is {out_ch}×{in_ch}, the layers around it say {channels}×{prev_ch}")
        spec = LayerSpec(name, in_ch, out_ch, prev_size, size, kernel, max(1, up_taps // FILTER_TAPS),
                         max(1, down_shape[0] // FILTER_TAPS), up_taps, down_shape[0], len(down_shape) == 2, torgb)
        if (spec.up, spec.down) != (1, 1) and spec.up * spec.down == 1:
            raise ValueError(f"{key}: cannot tell its sampling factors")
        layers.append(spec)
        prev_size, prev_ch = size, out_ch
    mapping_dims = mapping_dims_of(shapes)
    c_dim = shapes["mapping.embed.weight"][1] if "mapping.embed.weight" in shapes else 0
    embed = shapes["mapping.embed.weight"][0] if c_dim else 0
    return SG3Config(resolution=layers[-1].out_size, img_channels=layers[-1].out_ch, z_dim=mapping_dims[0] - embed,
                     c_dim=c_dim, w_dim=mapping_dims[-1], mapping_dims=tuple(mapping_dims),
                     input_channels=input_channels, input_size=found[0][1], layers=tuple(layers))
