"""Passes on another checkpoint: the refiner (the last part of the steps) and the hires fix's own checkpoint.

A refiner takes the base model's latents as they are, never decoded, so it must share the base's latent space:
SD 1.x and SD 2.x share one, SDXL (base and refiner) another; other families take no refiner. Where both
pipelines can hand over mid-schedule (SDXL: the base stops at `denoising_end`, the refiner's img2img pipeline
starts at `denoising_start` without adding noise), the refiner runs exactly the steps after the switch. SD 1.x and
2.x pipelines cannot stop or start mid-schedule, so there the base runs all its steps and the refiner denoises
its latents again from the switch point (img2img at strength 1 − switch).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from webui.engine.prompts import extract_loras
from webui.engine.samplers import steps_for_strength
from webui.model_manager.identify import ARCH_LABELS, Arch
from webui.requests import GenerationRequest, RequestError

if TYPE_CHECKING:
    from webui.engine.context import ModeContext
    from webui.model_manager.catalogue import CheckpointEntry
    from webui.model_manager.manager import LoadedPipeline

# Families whose latents another family can take over: the same VAE latent space.
LATENT_SPACES: dict[Arch, str] = {Arch.SD1: "SD 1.x/2.x", Arch.SD2: "SD 1.x/2.x", Arch.SDXL: "SDXL"}
# Pipelines that stop (`denoising_end`) and resume (`denoising_start`) mid-schedule.
HANDOVER_ARCHS = {Arch.SDXL}


def find_checkpoint(ctx: ModeContext, name: str, field_name: str) -> CheckpointEntry:
    """The installed checkpoint `name` (a name or "name [hash]"), or a RequestError on `field_name`."""
    try:
        entry = ctx.manager.find_checkpoint(name)
    except LookupError as exc:
        raise RequestError(field_name, str(exc)) from None
    if not entry.supported:
        raise RequestError(field_name, f"model {entry.name!r} cannot be used: {entry.reason}")
    return entry


def same_latent_space(base: Arch, other: Arch) -> bool:
    return base in LATENT_SPACES and LATENT_SPACES.get(other) == LATENT_SPACES[base]


def check_latent_space(base: Arch, entry: CheckpointEntry, field_name: str, why: str) -> None:
    if not same_latent_space(base, entry.arch):
        base_label = ARCH_LABELS.get(base, base.value)
        other_label = ARCH_LABELS.get(entry.arch, entry.arch.value)
        raise RequestError(field_name, f"{entry.name} is {other_label}, the base model is {base_label}: {why} "
                                       "needs a model of the same latent space (SD 1.x with SD 2.x, SDXL with SDXL)")


def check_refiner(ctx: ModeContext, request: Any, base: Arch) -> CheckpointEntry | None:
    """The refiner checkpoint this request runs with, checked against the base's family; None without one."""
    if not getattr(request, "refiner", False):
        return None
    entry = find_checkpoint(ctx, request.refiner_checkpoint, "refiner_checkpoint")
    check_latent_space(base, entry, "refiner_checkpoint", "a refiner")
    return entry


def title(entry: CheckpointEntry) -> str:
    """"name [hash]", as AUTOMATIC1111 writes a checkpoint in the infotext."""
    return f"{entry.name} [{entry.short_hash}]" if entry.short_hash else entry.name


def refiner_request(request: GenerationRequest, entry: CheckpointEntry) -> GenerationRequest:
    """The request the refiner runs: its checkpoint, the prompt without `<lora:…>` tags (the prompt's LoRAs are
    the base model's)."""
    prompt, _ = extract_loras(request.prompt)
    negative, _ = extract_loras(request.negative_prompt)
    return request.replace(checkpoint=entry.name, prompt=prompt, negative_prompt=negative, vae="Automatic")


def load_keeping(ctx: ModeContext, request: GenerationRequest, mode: str) -> LoadedPipeline:
    """`ctx.load` for a pass on another checkpoint, keeping the job's LoRAs and embeddings for its infotext."""
    loras, embeddings, loaded = ctx.loras, ctx.embeddings, ctx.loaded
    try:
        return ctx.load(request, mode)
    finally:
        ctx.loras, ctx.embeddings, ctx.loaded = loras, embeddings, loaded


def base_arguments(loaded: LoadedPipeline, request: Any) -> dict[str, Any]:
    """Extra arguments for the base pass when a refiner takes over: stop at the switch where the pipeline can."""
    if loaded.arch in HANDOVER_ARCHS:
        return {"denoising_end": float(request.refiner_switch_at)}
    return {}


def refiner_schedule(base: Arch, refiner: Arch, request: Any, steps: int) -> tuple[dict[str, Any], int]:
    """The refiner call's schedule arguments for a base schedule of `steps`, and the steps it runs."""
    switch = float(request.refiner_switch_at)
    if base in HANDOVER_ARCHS and refiner in HANDOVER_ARCHS:
        return {"denoising_start": switch, "num_inference_steps": steps}, max(1, steps - int(steps * switch))
    length, strength = steps_for_strength(steps, 1.0 - switch)  # at least one step
    return {"strength": strength, "num_inference_steps": length}, max(1, int(length * strength))


def pass_steps(base: Arch, entry: CheckpointEntry, request: Any, steps: int, base_steps: int) -> tuple[int, int]:
    """(the base's share, the refiner's) of the image's step count: a base that hands over mid-schedule stops
    where the refiner's steps begin; otherwise it runs its `base_steps` and the refiner adds its own."""
    _, refiner_steps = refiner_schedule(base, entry.arch, request, steps)
    if base in HANDOVER_ARCHS and entry.arch in HANDOVER_ARCHS:
        return max(1, base_steps - refiner_steps), refiner_steps
    return base_steps, refiner_steps


def refine(ctx: ModeContext, request: Any, entry: CheckpointEntry, base: LoadedPipeline, latents: torch.Tensor,
           steps: int, gens: list[torch.Generator], output_type: str, extra: dict[str, Any],
           done: int = 0, overall: int = 0) -> Any:
    """The refiner's pass over the base's latents (B, 4, h, w); returns the pipeline's images (`output_type`) and
    writes `Refiner: name [hash]` into the infotext entries `extra`. Its steps count on from `done` of the
    image's `overall` steps (`ModeContext.callback`)."""
    from webui.engine.context import prompt_kwargs

    refined = refiner_request(request, entry)
    loaded = load_keeping(ctx, refined, "img2img")
    extra["Refiner"] = title(loaded.entry)  # its hash is known once it is loaded
    schedule, total = refiner_schedule(base.arch, loaded.arch, request, steps)
    out = ctx.call_pipeline(loaded, refined, "img2img", **prompt_kwargs(loaded, refined), image=latents,
                            num_images_per_prompt=latents.shape[0], **schedule,
                            generator=[g.manual_seed(g.initial_seed()) for g in gens],
                            callback_on_step_end=ctx.callback(loaded.arch, total, done, overall),
                            output_type=output_type)
    return out.images


def decode_latents(loaded: Any, latents: torch.Tensor) -> list[Image.Image]:
    """Latents (B, 4, h, w) of an SD-family pipeline as images (an interrupted job's partial result)."""
    pipe = loaded.pipe
    vae = pipe.vae
    with torch.no_grad():
        pixels = vae.decode(latents.to(vae.device, vae.dtype) / vae.config.scaling_factor).sample  # (B, 3, H, W)
    return pipe.image_processor.postprocess(pixels, output_type="pil")
