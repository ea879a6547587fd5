"""The StyleGAN pipeline: seeds → latents z → mapping (+ class) → truncation ψ → synthesis → images, and seed walks.

A seed's z is the standard normal noise NumPy's `RandomState(seed)` draws (z_dim values), the convention the published
StyleGAN tools use, so a seed names the same image here as there. A seed walk passes through a list of seeds in
latent space, `frames` pictures from each seed to the next: spherical interpolation of z (the Gaussian latents keep
their norm) or linear interpolation of w (after the mapping network); its first frame is the first seed's image and
each seed's image appears exactly where the walk reaches it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

WALK_SPACES = ("z", "w")


def seed_latents(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """[len(seeds), z_dim]: each seed's standard normal noise (NumPy RandomState, float64 → float32)."""
    rows = [np.random.RandomState(int(seed) % 2**32).randn(z_dim) for seed in seeds]
    return torch.from_numpy(np.stack(rows)).float()


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between rows of a and b ([B, D]); t = 0 gives a and t = 1 gives b exactly."""
    if t <= 0:
        return a
    if t >= 1:
        return b
    a_unit, b_unit = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((a_unit * b_unit).sum(dim=1, keepdim=True).clamp(-1, 1))  # [B, 1]
    sin = torch.sin(omega)
    straight = sin.abs() < 1e-6  # (anti)parallel: a straight line is as good
    safe = sin.where(~straight, torch.ones_like(sin))
    wa = torch.where(straight, torch.full_like(sin, 1 - t), torch.sin((1 - t) * omega) / safe)
    wb = torch.where(straight, torch.full_like(sin, t), torch.sin(t * omega) / safe)
    return wa * a + wb * b


def to_images(x: torch.Tensor) -> list[Image.Image]:
    """[B, C, H, W] in about [-1, 1] → RGB (or L for one channel) PIL images."""
    array = (x.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if array.shape[3] == 1:
        return [Image.fromarray(np.ascontiguousarray(a[:, :, 0]), "L").convert("RGB") for a in array]
    return [Image.fromarray(np.ascontiguousarray(a[:, :, :3]), "RGB") for a in array]


class StyleGANPipeline(DiffusionPipeline):
    """One StyleGAN2/3 generator (`generator`: webui.gan.stylegan2.StyleGAN2 or stylegan3.StyleGAN3)."""

    model_cpu_offload_seq = "generator"

    def __init__(self, generator: torch.nn.Module) -> None:
        super().__init__()
        self.register_modules(generator=generator)

    @property
    def config_of(self) -> Any:
        return self.generator.config

    @property
    def device(self) -> torch.device:
        return self.generator.mapping.w_avg.device

    def class_vector(self, class_index: int | None, batch: int) -> torch.Tensor | None:
        """The one-hot class rows for a conditional generator (None for an unconditional one). ValueError when a
        conditional generator gets no class or one out of range, or an unconditional one gets a class."""
        c_dim = self.config_of.c_dim
        if c_dim == 0:
            if class_index is not None:
                raise ValueError("this generator is unconditional: it takes no class")
            return None
        if class_index is None or not 0 <= class_index < c_dim:
            raise ValueError(f"this generator draws one of {c_dim} classes: give a class from 0 to {c_dim - 1}")
        c = torch.zeros(batch, c_dim, device=self.device)
        c[:, class_index] = 1
        return c

    @torch.no_grad()
    def mapped(self, seeds: Sequence[int], class_index: int | None, psi: float) -> torch.Tensor:
        """w for each seed, truncated by ψ: [B, num_ws, w_dim]. One seed at a time, so an image does not depend on
        the batch it is drawn in (batched kernels round differently)."""
        z = seed_latents(seeds, self.config_of.z_dim).to(self.device)
        c = self.class_vector(class_index, 1)
        return torch.cat([self.generator.mapping(row.unsqueeze(0), c, psi) for row in z])

    @torch.no_grad()
    def synthesize(self, ws: torch.Tensor) -> list[Image.Image]:
        """The images of ws [B, num_ws, w_dim], one sample at a time."""
        return [image for row in ws for image in to_images(self.generator.synthesis(row.unsqueeze(0)))]

    @torch.no_grad()
    def __call__(self, seeds: Sequence[int], class_index: int | None = None, truncation_psi: float = 1.0
                 ) -> list[Image.Image]:
        """One image per seed."""
        return self.synthesize(self.mapped(seeds, class_index, truncation_psi))

    @torch.no_grad()
    def walk(self, seeds: Sequence[int], frames: int, class_index: int | None = None, truncation_psi: float = 1.0,
             space: str = "z", on_frame: Any = None) -> list[Image.Image]:
        """The frames of a walk through `seeds` (at least two), `frames` pictures from each seed to the next, and the
        last seed's picture: (len(seeds) − 1) × frames + 1 images. `on_frame(done, total)` after each one."""
        if len(seeds) < 2:
            raise ValueError("a seed walk needs at least two seeds")
        if frames < 1:
            raise ValueError("a seed walk needs at least one frame per seed")
        if space not in WALK_SPACES:
            raise ValueError(f"the walk space is one of {', '.join(WALK_SPACES)}, not {space!r}")
        c = self.class_vector(class_index, 1)
        z = seed_latents(seeds, self.config_of.z_dim).to(self.device)  # [S, z_dim]
        w = self.generator.mapping(z, None if c is None else c.repeat(len(seeds), 1), truncation_psi) \
            if space == "w" else None
        total = (len(seeds) - 1) * frames + 1
        images: list[Image.Image] = []
        for index in range(total):
            segment, step = divmod(index, frames)
            if segment == len(seeds) - 1:
                segment, step = segment - 1, frames  # the last seed itself
            t = step / frames
            if w is not None:  # linear in w (exact at the ends)
                ws = w[segment: segment + 1] if t == 0 else w[segment + 1: segment + 2] if t == 1 else \
                    torch.lerp(w[segment: segment + 1], w[segment + 1: segment + 2], t)
            else:  # spherical in z, then mapped
                zt = slerp(z[segment: segment + 1], z[segment + 1: segment + 2], t)
                ws = self.generator.mapping(zt, c, truncation_psi)
            images += self.synthesize(ws)
            if on_frame is not None:
                on_frame(index + 1, total)
        return images


def gif_bytes(frames: list[Image.Image], duration_ms: int = 80, loop: bool = True) -> bytes:
    """The frames as an animated GIF (each frame shown `duration_ms`; looping forever when `loop`)."""
    import io

    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms,
                   loop=0 if loop else 1, disposal=1, optimize=False)
    return buffer.getvalue()
