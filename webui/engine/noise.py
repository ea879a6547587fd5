"""The starting noise of an image: its seed, a variation seed mixed in, a seed drawn at another size, an RNG source.

Without a variation, a seed resize or a non-CPU random number source, the pipelines draw their own noise from each
image's CPU generator (`webui.engine.context.generators`) and nothing here runs. Otherwise `NoisePlan` builds each
image's noise and hands it to the pipeline as `latents`:

- the seed's noise and the variation seed's noise, of the same shape, are mixed by spherical interpolation with
  the variation strength (0 = the seed's noise exactly, 1 = the variation seed's exactly);
- with "resize seed from" W x H, that noise is drawn at W x H and placed centred in the image's shape (cropped
  where it is larger, the rest filled with a fresh draw of the seed), so the same seed keeps its composition at a
  nearby size;
- the source is the CPU generator (`torch.randn` on the CPU, the default), the device's own generator ("GPU"), or
  "NV", CUDA's `torch.randn` computed on the CPU (`webui.engine.rng_philox`), which gives the noise of an image
  made on an NVIDIA GPU on any machine.

Each image's CPU generator still goes to the pipeline, advanced as if the pipeline had drawn its noise, for what
the pipeline draws later (an ancestral sampler's per-step noise, the built-in model's layout plan).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from webui.engine.rng_philox import PhiloxRandn
from webui.model_manager.identify import ARCH_LABELS, Arch
from webui.requests import GenerationRequest, RequestError

# families whose pipelines take `latents` as unscaled noise of shape [B, C, H / scale, W / scale]
NOISE_ARCHS = (Arch.SD1, Arch.SD2, Arch.SDXL, Arch.EASEL)


def draw(seed: int, shape: tuple[int, ...], source: str, device: str | torch.device = "cpu") -> torch.Tensor:
    """Standard normal noise of `shape` from `seed`, float32 on the CPU, as the source draws it."""
    if source == "NV":
        return torch.from_numpy(PhiloxRandn(seed).randn(shape))
    if source == "GPU" and torch.device(device).type != "cpu":
        generator = torch.Generator(device).manual_seed(int(seed))
        return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).cpu()
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(seed)), dtype=torch.float32)


def slerp(strength: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from `low` (strength 0) to `high` (strength 1), over the whole tensor; exactly `low`
    at 0 and `high` at 1; linear where the two are almost parallel."""
    if strength <= 0.0:
        return low
    if strength >= 1.0:
        return high
    a, b = low.flatten().double(), high.flatten().double()
    dot = torch.clamp(torch.dot(a / a.norm(), b / b.norm()), -1.0, 1.0)
    if dot.abs() > 0.9995:
        mixed = (1.0 - strength) * a + strength * b
    else:
        omega = torch.acos(dot)
        mixed = (torch.sin((1.0 - strength) * omega) * a + torch.sin(strength * omega) * b) / torch.sin(omega)
    return mixed.to(low.dtype).reshape(low.shape)


def place_centred(small: torch.Tensor, big: torch.Tensor) -> torch.Tensor:
    """`big` [..., H, W] with `small` [..., h, w] pasted at its centre (cropped centrally where it is larger)."""
    out = big.clone()
    h, w = small.shape[-2:]
    H, W = big.shape[-2:]
    dy, dx = (H - h) // 2, (W - w) // 2
    ty, tx = max(dy, 0), max(dx, 0)  # where in `big`
    sy, sx = max(-dy, 0), max(-dx, 0)  # where in `small`
    ch, cw = min(h, H), min(w, W)
    out[..., ty:ty + ch, tx:tx + cw] = small[..., sy:sy + ch, sx:sx + cw]
    return out


def resize_from(request: GenerationRequest) -> tuple[int, int] | None:
    """(width, height) the seed's noise is drawn at, or None when the request does not resize it."""
    w, h = request.seed_resize_from_w, request.seed_resize_from_h
    if w <= 0 or h <= 0 or (w, h) == (request.width, request.height):
        return None
    return w, h


@dataclass(frozen=True)
class NoisePlan:
    """How the images of one request get their starting noise (see the module's docstring)."""

    strength: float  # variation strength, 0..1
    resize: tuple[int, int] | None  # (width, height) the noise is drawn at
    source: str  # one of RNG_SOURCES
    channels: int
    scale: int  # pixels per latent cell
    device: str | torch.device = "cpu"
    dtype: torch.dtype = torch.float32

    def shape(self, width: int, height: int) -> tuple[int, int, int, int]:
        return (1, self.channels, height // self.scale, width // self.scale)

    def image_noise(self, seed: int, subseed: int, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(the noise [1,C,h,w] of one image, the noise its seed gives at its own size on the same source)."""
        target = self.shape(width, height)
        own = draw(seed, target, self.source, self.device)
        drawn_at = self.shape(*self.resize) if self.resize else target
        noise = own if drawn_at == target else draw(seed, drawn_at, self.source, self.device)
        if self.strength > 0:
            noise = slerp(self.strength, noise, draw(subseed, drawn_at, self.source, self.device))
        if drawn_at != target:
            noise = place_centred(noise, own)
        return noise, own

    def latents(self, seeds: list[int], subseeds: list[int], generators: list[torch.Generator],
                width: int, height: int) -> torch.Tensor:
        """The batch's noise [B,C,h,w] in the pipeline's dtype; each CPU generator is advanced by one draw of its
        image's shape, as the pipeline would have advanced it drawing the noise itself."""
        target = self.shape(width, height)
        rows = []
        for seed, subseed, generator in zip(seeds, subseeds, generators):
            rows.append(self.image_noise(seed, subseed, width, height)[0])
            torch.randn(target, generator=generator, dtype=self.dtype)
        return torch.cat(rows).to(self.dtype)  # [B,C,h,w]

    def infotext(self, subseed: int) -> dict[str, Any]:
        entries: dict[str, Any] = {}
        if self.strength > 0:
            entries["Variation seed"] = subseed
            entries["Variation seed strength"] = self.strength
        if self.resize:
            entries["Seed resize from"] = f"{self.resize[0]}x{self.resize[1]}"
        if self.source != "CPU":
            entries["RNG"] = self.source
        return entries


def noise_plan(request: GenerationRequest, arch: Arch, pipe: Any, source: str) -> NoisePlan | None:
    """The request's noise plan on this pipeline, or None when the pipeline draws its own (no variation, no
    resize, the CPU source). A variation or a resize asked of a family whose noise Easel does not build is refused
    on the field that asks for it; a non-CPU source there falls back to the CPU (and the infotext says nothing)."""
    variation, resize = request.subseed_strength > 0, resize_from(request)
    if not variation and resize is None and source == "CPU":
        return None
    if arch not in NOISE_ARCHS:
        if variation or resize:
            field = "subseed_strength" if variation else "seed_resize_from_w"
            supported = ", ".join(ARCH_LABELS[a] for a in NOISE_ARCHS)
            raise RequestError(field, f"variation seeds and seed resize are not available for {ARCH_LABELS[arch]} "
                                      f"models "
                                      f"yet (they are for {supported})")
        return None
    if arch == Arch.EASEL:
        channels, scale, dtype = 3, 1, torch.float32
    else:
        channels, scale, dtype = pipe.unet.config.in_channels, pipe.vae_scale_factor, pipe.unet.dtype
    device = getattr(pipe, "_execution_device", "cpu")
    return NoisePlan(float(request.subseed_strength), resize, source, channels, scale, device, dtype)


def refuse_variation(request: GenerationRequest, mode: str) -> None:
    """Modes that start from an input image do not build their noise yet: a variation or a seed resize asked of
    them is refused on the field that asks for it."""
    if request.subseed_strength > 0:
        raise RequestError("subseed_strength", f"variation seeds apply to txt2img only, not to {mode} yet")
    if resize_from(request) is not None:
        raise RequestError("seed_resize_from_w", f"seed resize applies to txt2img only, not to {mode} yet")
