"""Regional prompts on the built-in model: a prompt per rectangle or painted mask, blended by masked conditioning.

At every step the transformer predicts the clean image once per prompt — the negative prompt, the base prompt
and each region's prompt, in one batch — and the prompted predictions are mixed per pixel: the base prompt with
`base_weight` everywhere, each region's prompt with its `weight` inside its rectangle, normalised by the sum of
weights (so a pixel outside every region follows the base prompt alone). A painted mask is a soft weight (0..1,
resized to the image) in place of a rectangle; `region_masks` and `blend_weights` also give SD 1.x/SDXL's attention
coupling (webui/engine/regional_attention.py) its weights at each attention layer's token grid. Classifier-free guidance then pushes the
mix away from the negative prompt's prediction, and the flow-matching step goes on as in `EaselPipeline`. The
built-in model predicts pixels, so the masks act on the image itself; no attention is changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor


@dataclass(frozen=True)
class Region:
    """One region: a rectangle as fractions of the image (x0, y0, x1, y1), its prompt and its weight; or, with
    `mask` ([h,w] float in 0..1, any size: resized to the image), a painted area (its `box` is its bounding box)."""

    box: tuple[float, float, float, float]
    prompt: str
    weight: float = 1.0
    mask: torch.Tensor | None = field(default=None, compare=False, repr=False)


def region_masks(regions: list[Region], height: int, width: int) -> torch.Tensor:
    """Each region as a mask [R,1,H,W]: a rectangle as 0/1 (at least one pixel), a painted mask resized (area
    average when it shrinks, so a thin stroke still counts a little)."""
    masks = torch.zeros(len(regions), 1, height, width)
    for index, region in enumerate(regions):
        if region.mask is not None:
            painted = region.mask.float()[None, None]  # [1,1,h,w]
            shrink = painted.shape[-2] >= height and painted.shape[-1] >= width
            masks[index] = F.interpolate(painted, size=(height, width), mode="area" if shrink else "bilinear",
                                         align_corners=None if shrink else False)[0].clamp(0, 1)
            continue
        x0, y0, x1, y1 = region.box
        left, top = int(round(x0 * width)), int(round(y0 * height))
        right, bottom = max(left + 1, int(round(x1 * width))), max(top + 1, int(round(y1 * height)))
        masks[index, :, top:bottom, left:right] = 1.0
    return masks


def blend_weights(regions: list[Region], base_weight: float, height: int, width: int) -> torch.Tensor:
    """Per-pixel weights [1+R,1,H,W] of the base prompt and each region's prompt, summing to 1 at every pixel."""
    masks = region_masks(regions, height, width)  # [R,1,H,W]
    weights = torch.tensor([r.weight for r in regions]).view(-1, 1, 1, 1) * masks  # [R,1,H,W]
    base = torch.full((1, 1, height, width), float(base_weight))  # [1,1,H,W]
    uncovered = (weights.sum(0, keepdim=True) + base) <= 0  # base weight 0 outside every region
    base = torch.where(uncovered, torch.ones_like(base), base)
    stacked = torch.cat([base, weights], dim=0)  # [1+R,1,H,W]
    return stacked / stacked.sum(0, keepdim=True)


@torch.no_grad()
def regional_call(pipe: Any, prompt: str, regions: list[Region], *, base_weight: float = 0.2,
                  negative_prompt: str = "", width: int = 64, height: int = 64, num_inference_steps: int = 20,
                  guidance_scale: float = 4.0, num_images_per_prompt: int = 1,
                  generator: torch.Generator | list[torch.Generator] | None = None,
                  latents: torch.Tensor | None = None, output_type: str = "pil",
                  callback_on_step_end: Callable | None = None, **_: Any) -> Any:
    """Text-to-image with `pipe` (an EaselPipeline) where each region follows its own prompt; returns the
    pipeline's output type (`images`, `planned_prompts`). Other keyword arguments of a pipeline call (switches
    such as `plan_layout`) do not apply here and are ignored: prompts are drawn as written."""
    from webui.builtin.pipeline import EaselPipelineOutput

    if not regions:
        raise ValueError("regions: at least one region is needed")
    device, dtype = pipe._execution_device, pipe.transformer.dtype
    batch = num_images_per_prompt
    if isinstance(generator, list) and len(generator) != batch:
        raise ValueError(f"got {len(generator)} generators for {batch} images; pass one per image")
    pipe._guidance_scale, pipe._interrupt = guidance_scale, False
    guided = guidance_scale > 1.0
    k = 1 + len(regions)  # prompted branches: the base prompt, then each region's

    # 1. The text of every branch: [negative] + [base, regions...], each repeated per image.
    prompts = [prompt, *(r.prompt for r in regions)]
    text, text_mask = pipe.encode_prompt(prompts, [negative_prompt] * k, True)  # [2k,L,D], negatives first
    text, text_mask = text[k - 1:].to(dtype), text_mask[k - 1:]  # [1+k,L,D]: one negative row, then the k prompts
    if not guided:
        text, text_mask = text[1:], text_mask[1:]
    rows = text.shape[0]
    text = text.repeat_interleave(batch, dim=0)  # [rows*B,L,D]: branch-major
    text_mask = text_mask.repeat_interleave(batch, dim=0)
    weights = blend_weights(regions, base_weight, height, width).to(device)  # [k,1,H,W]

    # 2. Noise and timesteps.
    if latents is None:
        latents = randn_tensor((batch, 3, height, width), generator=generator, device=device, dtype=torch.float32)
    latents = latents.to(device=device, dtype=torch.float32)  # [B,3,H,W]
    timesteps, n_steps = pipe.get_timesteps(num_inference_steps, 1.0, device)
    pipe._num_timesteps = n_steps

    # 3. Denoise: every branch in one batch, the prompted ones mixed by region, then guided.
    prev = None
    for i, t in enumerate(timesteps):
        if pipe.interrupt:
            break
        sigma = (t.float() / pipe.scheduler.config.num_train_timesteps).clamp(min=1e-4)
        x_in = latents.repeat(rows, 1, 1, 1)  # [rows*B,3,H,W]
        s = sigma.expand(x_in.shape[0]).to(device)
        x0 = pipe.transformer(x_in.to(dtype), s, text, text_mask, None, prev).float()  # [rows*B,3,H,W]
        prev = x0.to(dtype)
        branches = x0.view(rows, batch, 3, height, width)  # [rows,B,3,H,W]
        prompted = branches[1:] if guided else branches  # [k,B,3,H,W]
        mixed = (prompted * weights.unsqueeze(1)).sum(0)  # [B,3,H,W]
        x0 = branches[0] + guidance_scale * (mixed - branches[0]) if guided else mixed
        velocity = (latents - x0) / sigma  # [B,3,H,W]
        latents = pipe.scheduler.step(velocity, t, latents, return_dict=False)[0]
        if callback_on_step_end is not None:
            outputs = callback_on_step_end(pipe, i, t, {"latents": latents}) or {}
            latents = outputs.get("latents", latents)

    images = pipe.postprocess(latents, output_type)
    return EaselPipelineOutput(images=images, planned_prompts=[prompt] * batch)
