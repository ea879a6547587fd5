"""StyleGAN2 (config F) synthesis, as the paper describes it: a learned 4×4 constant, then one block per resolution
doubling (4, 8, …, R), each two 3×3 modulated-and-demodulated convolutions (the first one upsampling ×2) with a
per-pixel noise input, and a 1×1 modulated "toRGB" whose outputs are summed over the resolutions, the running image
upsampled between blocks ("skip" generator). Upsampling is a stride-2 transposed convolution (or zero insertion, for
the image) followed by the [1, 3, 3, 1] FIR low-pass filter.

The noise inputs use the fixed noise maps stored with the generator (`noise_const`), so one seed always gives the
same image. Activations are clamped to ±256, as NVlabs' training configurations do. Everything runs in float32 (the
published generators run their highest resolutions in float16; images differ by rounding only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from webui.gan.ops import Dense, Generator, grouped_conv, lrelu, modulate, upfirdn2d

CONV_CLAMP = 256.0


def fir_filter(taps: tuple[float, ...] = (1, 3, 3, 1)) -> torch.Tensor:
    """The 2-D separable low-pass filter of `taps`, normalised to sum 1: [4, 4]."""
    f = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


@dataclass(frozen=True)
class SG2Config:
    """What a StyleGAN2 generator's tensors say about it."""

    resolution: int
    img_channels: int
    z_dim: int
    c_dim: int
    w_dim: int
    mapping_dims: tuple[int, ...]  # z (+ class embedding) → … → w
    channels: dict[int, int]  # block resolution → its output channels

    @property
    def num_ws(self) -> int:
        return 2 * int(math.log2(self.resolution)) - 2  # one per conv layer, plus the last toRGB


class ConvLayer(nn.Module):
    """A modulated 3×3 convolution (upsampling ×2 when `up`), noise input, bias, leaky ReLU."""

    def __init__(self, w_dim: int, in_ch: int, out_ch: int, resolution: int, up: bool, kernel: int = 3) -> None:
        super().__init__()
        self.up, self.kernel = up, kernel
        self.affine = Dense(w_dim, in_ch)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", fir_filter())

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        weights = modulate(self.weight, self.affine(w), demodulate=True)  # [B, O, I, k, k]
        pad = self.kernel // 2
        if self.up:  # transposed conv, stride 2, then the FIR filter (gain 4 keeps the mean)
            x = grouped_conv(x, weights, transpose=True, stride=2)  # [B, O, 2H + k − 2, …]
            f = self.resample_filter
            fw = f.shape[-1]
            p0 = pad + (fw + 1) // 2 - (self.kernel - 1)
            p1 = pad + (fw - 2) // 2 - (self.kernel - 2)
            x = upfirdn2d(x, f, padding=(p0, p1, p0, p1), gain=4)  # [B, O, 2H, 2W]
        else:
            x = grouped_conv(x, weights, padding=pad)  # [B, O, H, W]
        x = x + self.noise_const * self.noise_strength  # the same noise map for every sample
        return lrelu(x + self.bias[None, :, None, None], clamp=CONV_CLAMP)  # clamped after the gain


class ToRGB(nn.Module):
    """A modulated 1×1 convolution to the image channels (no demodulation), plus bias."""

    def __init__(self, w_dim: int, in_ch: int, img_channels: int) -> None:
        super().__init__()
        self.affine = Dense(w_dim, in_ch)
        self.weight = nn.Parameter(torch.randn(img_channels, in_ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1 / math.sqrt(in_ch)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        weights = modulate(self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        x = grouped_conv(x, weights) + self.bias[None, :, None, None]  # [B, img_channels, H, W]
        return x.clamp(-CONV_CLAMP, CONV_CLAMP)


class Block(nn.Module):
    """One resolution: (const | upsampling conv0) → conv1 → toRGB added to the upsampled image so far."""

    def __init__(self, w_dim: int, in_ch: int, out_ch: int, resolution: int, img_channels: int) -> None:
        super().__init__()
        self.first = in_ch == 0
        if self.first:
            self.const = nn.Parameter(torch.randn(out_ch, resolution, resolution))
        else:
            self.conv0 = ConvLayer(w_dim, in_ch, out_ch, resolution, up=True)
        self.conv1 = ConvLayer(w_dim, out_ch, out_ch, resolution, up=False)
        self.torgb = ToRGB(w_dim, out_ch, img_channels)
        self.register_buffer("resample_filter", fir_filter())

    @property
    def num_conv(self) -> int:
        return 1 if self.first else 2

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.first:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)  # [B, C, 4, 4]
            x = self.conv1(x, ws[:, 0])
        else:
            x = self.conv1(self.conv0(x, ws[:, 0]), ws[:, 1])  # [B, C, 2H, 2W]
        if img is not None:  # zero insertion + FIR filter, gain 4: [B, 3, H, W] → [B, 3, 2H, 2W]
            img = upfirdn2d(img, self.resample_filter, up=2, padding=(2, 1, 2, 1), gain=4)
        rgb = self.torgb(x, ws[:, self.num_conv])
        return x, rgb if img is None else img + rgb


class SynthesisNetwork(nn.Module):
    def __init__(self, config: SG2Config) -> None:
        super().__init__()
        self.resolutions = [2 ** i for i in range(2, int(math.log2(config.resolution)) + 1)]
        for res in self.resolutions:
            in_ch = 0 if res == 4 else config.channels[res // 2]
            setattr(self, f"b{res}", Block(config.w_dim, in_ch, config.channels[res], res, config.img_channels))

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        x = img = None
        index = 0
        for res in self.resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws[:, index: index + block.num_conv + 1])  # its convs' ws and its toRGB's
            index += block.num_conv
        return img  # [B, img_channels, R, R], about [-1, 1]


class StyleGAN2(Generator):
    """mapping + synthesis; `forward(z, c, psi)` → images [B, C, R, R] in about [-1, 1]."""

    generation = "StyleGAN2"

    def __init__(self, config: SG2Config) -> None:
        super().__init__(config, SynthesisNetwork)


def config_from_shapes(shapes: dict[str, tuple[int, ...]]) -> SG2Config:
    """The generator's hyper-parameters from its tensors' names and shapes (ValueError naming what is missing)."""
    blocks = sorted(int(k.split(".")[1][1:]) for k in shapes
                    if k.startswith("synthesis.b") and k.endswith(".torgb.weight"))
    if not blocks or blocks[0] != 4 or blocks != [2 ** i for i in range(2, 2 + len(blocks))]:
        raise ValueError("the synthesis blocks (synthesis.b4 … synthesis.bR, each with a torgb) are incomplete")
    if any(k.endswith(".skip.weight") for k in shapes):
        raise ValueError("a StyleGAN2 'resnet' generator (synthesis.bN.skip layers): Easel runs the 'skip' "
                         "generator of config F only")
    channels = {res: shapes[f"synthesis.b{res}.conv1.weight"][0] for res in blocks}
    mapping_dims = mapping_dims_of(shapes)
    c_dim = shapes["mapping.embed.weight"][1] if "mapping.embed.weight" in shapes else 0
    embed = shapes["mapping.embed.weight"][0] if c_dim else 0
    return SG2Config(resolution=blocks[-1], img_channels=shapes[f"synthesis.b{blocks[-1]}.torgb.weight"][0],
                     z_dim=mapping_dims[0] - embed, c_dim=c_dim, w_dim=mapping_dims[-1],
                     mapping_dims=tuple(mapping_dims), channels=channels)


def mapping_dims_of(shapes: dict[str, tuple[int, ...]]) -> list[int]:
    count = 0
    while f"mapping.fc{count}.weight" in shapes:
        count += 1
    if count == 0:
        raise ValueError("no mapping network (mapping.fc0.weight)")
    return [shapes["mapping.fc0.weight"][1]] + [shapes[f"mapping.fc{i}.weight"][0] for i in range(count)]
