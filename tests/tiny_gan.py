"""Tiny random StyleGAN2 / StyleGAN3 generators saved as a user has them: a `.safetensors` of the generator's tensors in
the NVlabs key layout, or a pickle holding only tensors and plain containers (`{"G_ema": {...}, "D": {...},
"training_set_kwargs": {...}}`, written with torch.save), and a malicious pickle that would run code when unpickled.

StyleGAN3's layer schedule (canvas sizes, sampling rates, channels) follows the published formulas for a small
network: `num_layers` layers before the toRGB, the last `critical` critically sampled.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from webui.gan.stylegan2 import SG2Config, StyleGAN2
from webui.gan.stylegan3 import FILTER_TAPS, LayerSpec, SG3Config, StyleGAN3


def sg2_config(resolution: int = 32, c_dim: int = 0, z_dim: int = 16, w_dim: int = 16, channels: int = 16,
               mapping_layers: int = 2) -> SG2Config:
    embed = w_dim if c_dim else 0
    blocks = [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]
    return SG2Config(resolution=resolution, img_channels=3, z_dim=z_dim, c_dim=c_dim, w_dim=w_dim,
                     mapping_dims=(z_dim + embed, *[w_dim] * mapping_layers),
                     channels={res: channels for res in blocks})


def sg3_config(resolution: int = 32, c_dim: int = 0, z_dim: int = 16, w_dim: int = 16, channel_base: int = 64,
               channel_max: int = 16, num_layers: int = 4, critical: int = 2, radial: bool = False,
               mapping_layers: int = 2) -> SG3Config:
    """The published StyleGAN3 schedule, small: cutoffs and stopbands grow geometrically to the last layers."""
    first_cutoff, first_stopband, margin = 2.0, 2 ** 2.1, 10
    last_cutoff = resolution / 2
    last_stopband = last_cutoff * 2 ** 0.3
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, resolution))))
    sizes = rates + margin * 2
    sizes[-2:] = resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = 3
    layers = []
    for index in range(num_layers + 1):
        prev = max(index - 1, 0)
        torgb = index == num_layers
        tmp = max(rates[prev], rates[index]) * (1 if torgb else 2)
        up, down = int(np.rint(tmp / rates[prev])), int(np.rint(tmp / rates[index]))
        up_taps = FILTER_TAPS * up if up > 1 and not torgb else 1
        down_taps = FILTER_TAPS * down if down > 1 and not torgb else 1
        kernel = 1 if torgb or radial else 3
        layers.append(LayerSpec(f"L{index}_{int(sizes[index])}_{int(channels[index])}", int(channels[prev]),
                                int(channels[index]), int(sizes[prev]), int(sizes[index]), kernel, up, down, up_taps,
                                down_taps, radial and index < num_layers - critical, torgb))
    embed = w_dim if c_dim else 0
    return SG3Config(resolution=resolution, img_channels=3, z_dim=z_dim, c_dim=c_dim, w_dim=w_dim,
                     mapping_dims=(z_dim + embed, *[w_dim] * mapping_layers), input_channels=int(channels[0]),
                     input_size=int(sizes[0]), layers=tuple(layers))


def lowpass(taps: int, cutoff: float) -> torch.Tensor:
    """A Hann-windowed sinc low-pass filter (cutoff as a fraction of the Nyquist rate), normalised to sum 1."""
    n = np.arange(taps) - (taps - 1) / 2
    f = np.sinc(cutoff * n) * np.hanning(taps + 2)[1:-1]
    return torch.from_numpy(f / f.sum()).float()


def tiny_state(generation: str = "stylegan2", seed: int = 0, **options) -> dict[str, torch.Tensor]:
    """A random generator's tensors, NVlabs names; w_avg set to a non-zero vector, SG3 filters low-pass."""
    torch.manual_seed(seed)
    if generation == "stylegan2":
        model = StyleGAN2(sg2_config(**options))
    else:
        model = StyleGAN3(sg3_config(radial=generation == "stylegan3-r", **options))
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    state["mapping.w_avg"] = torch.randn_like(state["mapping.w_avg"]) * 0.5
    for key in list(state):
        if key.endswith("noise_strength"):
            state[key] = torch.tensor(0.1)
        if key.endswith(("up_filter", "down_filter")):
            f = lowpass(state[key].shape[0], 0.5)
            state[key] = torch.outer(f, f) if state[key].ndim == 2 else f
    return state


def save_safetensors(path: Path, state: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def save_pickle(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """As NVlabs training pickles hold a generator, a discriminator and the data set's settings, but with plain
    dicts of tensors in place of the networks' classes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"G_ema": state, "G": {k: v + 0.5 for k, v in state.items()},
                "D": {"b4.out.weight": torch.randn(1, 4)},
                "training_set_kwargs": {"resolution": 32, "use_labels": False}}, str(path))
    return path


class _RunsCode:
    """Unpickling this calls os.system: what a malicious pickle does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def save_malicious_pickle(path: Path, marker: Path, state: dict[str, torch.Tensor]) -> Path:
    """A pickle that holds a generator's tensors and, beside them, an object whose unpickling runs a shell command
    (creating `marker`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"G_ema": state, "hook": _RunsCode(marker)}, str(path))
    return path
