"""The generation modes of the other diffusers families (DiT, PixArt-α/Σ, Sana, aMUSEd, unCLIP, DeepFloyd IF).

PixArt, Sana and aMUSEd run through the ordinary txt2img / img2img / inpaint modes: their pipelines take a prompt,
a size and steps like the others, and `adapt_call` turns the modes' arguments into what each pipeline accepts
(an older `callback` for the step callback, no size for aMUSEd's image modes). DiT (a class name, not a prompt),
unCLIP (a prior, image variations) and DeepFloyd IF (a three-stage cascade) have their own runners.

`dispatch` is the one call the modes make: it refuses what a family cannot do, on the field that asks for it
(hires fix, refiner, variation seeds, seamless tiling, LoRAs), then either runs the family's own runner or lets
the mode go on.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

from webui.engine.prompts import extract_loras
from webui.engine.worker import JobInterrupted
from webui.model_manager.families import FAMILY_ARCHS
from webui.model_manager.identify import ARCH_LABELS, Arch
from webui.requests import NO_REFINER, GenerationRequest, RequestError

OWN_RUNNERS = {Arch.DIT: "webui.engine.families.dit", Arch.UNCLIP: "webui.engine.families.unclip",
               Arch.IF: "webui.engine.families.deepfloyd"}


def family_of(ctx: Any, request: GenerationRequest) -> Arch | None:
    """The family of the checkpoint `request` runs on, when it is one of these (None otherwise, or when the
    checkpoint is unknown: the mode then reports that)."""
    try:
        name = request.checkpoint or ctx.default_checkpoint()
        entry = ctx.manager.find_checkpoint(name)
    except (LookupError, RequestError):
        return None
    return entry.arch if entry.arch in FAMILY_ARCHS else None


def check_request(request: GenerationRequest, arch: Arch) -> None:
    """Refuse, on the field that asks for it, what the families' pipelines cannot do."""
    label = ARCH_LABELS[arch]
    if getattr(request, "enable_hr", False):
        raise RequestError("enable_hr", f"hires fix runs on latent diffusion models, not on {label} models")
    refiner = getattr(request, "refiner_checkpoint", NO_REFINER)
    if refiner not in ("", NO_REFINER) and float(getattr(request, "refiner_switch_at", 1.0)) < 1.0:
        raise RequestError("refiner_checkpoint", f"{label} models run without a refiner")
    if request.subseed_strength > 0:
        raise RequestError("subseed_strength", f"variation seeds are not available for {label} models")
    if request.seed_resize_from_w > 0 or request.seed_resize_from_h > 0:
        raise RequestError("seed_resize_from_w", f"seed resize is not available for {label} models")
    if request.tiling:
        raise RequestError("tiling", f"seamless tiling is not available for {label} models")
    _, tags = extract_loras(request.prompt)
    if tags:
        raise RequestError("prompt", f"<lora:{tags[0].name}:…>: Easel does not apply LoRAs to {label} models "
                                     "(see docs/FAMILIES.md); remove the tag")


def dispatch(ctx: Any, request: GenerationRequest, mode: str) -> list[Any] | None:
    """For a request on one of these families: check it, then run the family's own runner (its images) or return
    None for the mode to run it as usual. None at once for every other family."""
    arch = family_of(ctx, request)
    if arch is None:
        return None
    check_request(request, arch)
    module = OWN_RUNNERS.get(arch)
    if module is None:
        return None
    return importlib.import_module(module).run(ctx, request, mode)


# ------------------------------------------------------------------------------------------------ pipeline calls
def legacy_callback(pipe: Any, on_step_end: Callable[..., Any]) -> Callable[[int, Any, Any], None]:
    """An older-style `callback(step, timestep, latents)` from a `callback_on_step_end`: progress and previews the
    same; an interrupt or skip stops the pipeline at once (these pipelines read no interrupt flag)."""
    def callback(step: int, timestep: Any, latents: Any) -> None:
        on_step_end(pipe, step, timestep, {"latents": latents})
        if getattr(pipe, "_interrupt", False):
            pipe._interrupt = False
            raise JobInterrupted()

    return callback


def adapt_call(pipe: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The mode's arguments as this family pipeline takes them (other pipelines: unchanged)."""
    name = type(pipe).__name__
    if not name.startswith(("PixArt", "Amused", "Sana")):
        return kwargs
    accepted = inspect.signature(type(pipe).__call__).parameters
    adapted = dict(kwargs)
    on_step_end = adapted.pop("callback_on_step_end", None)
    if on_step_end is not None and "callback_on_step_end" in accepted:
        adapted["callback_on_step_end"] = on_step_end
    elif on_step_end is not None and "callback" in accepted:
        adapted.update(callback=legacy_callback(pipe, on_step_end), callback_steps=1)
    if name.startswith("Amused") and "image" in adapted:
        adapted.pop("width", None)  # the image modes take the input image's size
        adapted.pop("height", None)
    unknown = [key for key in adapted if key not in accepted]
    if unknown:  # a mode passing something this family cannot honour: a bug, not a user error
        raise TypeError(f"{name} does not take {', '.join(unknown)}")
    return adapted
