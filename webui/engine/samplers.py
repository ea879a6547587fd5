"""AUTOMATIC1111 sampler names mapped to diffusers schedulers.

Users pick samplers by the names they know ("DPM++ 2M Karras"); each generation gets a fresh scheduler built
from the loaded pipeline's own scheduler config, so jobs never share scheduler state. Flow-matching models
(SD3, Flux, Z-Image, Qwen-Image, Easel's built-in model) have their own, shorter list.
"""
from __future__ import annotations

from typing import Any

import diffusers

from webui.model_manager.identify import Arch

FLOW_ARCHS = {Arch.SD3, Arch.FLUX, Arch.ZIMAGE, Arch.QWEN, Arch.EASEL}

# name -> (scheduler class name, config overrides)
DIFFUSION_SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "LMS Karras": ("LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    "DPM++ SDE": ("DPMSolverSinglestepScheduler", {}),
    "DPM++ SDE Karras": ("DPMSolverSinglestepScheduler", {"use_karras_sigmas": True}),
    "DDIM": ("DDIMScheduler", {}),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "DEIS": ("DEISMultistepScheduler", {}),
}

FLOW_SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler": ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": False}),
    "Euler a": ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}),
}

# Heun needs a pipeline that passes neither custom sigmas nor mu; Easel's own pipeline does.
EASEL_SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    **FLOW_SAMPLERS,
    "Heun": ("FlowMatchHeunDiscreteScheduler", {}),
}


def sampler_table(arch: Arch | None) -> dict[str, tuple[str, dict[str, Any]]]:
    if arch == Arch.EASEL:
        return EASEL_SAMPLERS
    if arch in FLOW_ARCHS:
        return FLOW_SAMPLERS
    return DIFFUSION_SAMPLERS


def sampler_names(arch: Arch | None = None) -> list[str]:
    """Names offered for a model family (all diffusion samplers when no family is given)."""
    if arch is None:
        return list(DIFFUSION_SAMPLERS)
    return list(sampler_table(arch))


def all_sampler_names() -> list[str]:
    return list(dict.fromkeys([*DIFFUSION_SAMPLERS, *EASEL_SAMPLERS]))


def resolve_sampler(name: str, arch: Arch) -> str:
    """The sampler name that will run for `arch`; raises ValueError naming the choices when none fits.

    Schedule suffixes (" Karras") from other tools are dropped for flow models, whose schedules are fixed.
    """
    table = sampler_table(arch)
    if name in table:
        return name
    if arch in FLOW_ARCHS:
        base = name.replace(" Karras", "").strip()
        if base in table:
            return base
        if base.startswith(("DPM", "UniPC", "DDIM", "LMS", "DEIS", "PLMS")):
            return "Euler"
    raise ValueError(f"sampler_name: unknown sampler {name!r} for {arch.value} models; choose one of {', '.join(table)}")


def make_scheduler(name: str, arch: Arch, base_config: Any) -> Any:
    """A fresh scheduler for one job, built from the pipeline's scheduler config."""
    resolved = resolve_sampler(name, arch)
    class_name, overrides = sampler_table(arch)[resolved]
    cls = getattr(diffusers, class_name)
    config = dict(base_config)
    if class_name in ("DPMSolverSinglestepScheduler",) and config.get("algorithm_type") not in (None, "dpmsolver++"):
        config["algorithm_type"] = "dpmsolver++"
    if class_name == "DPMSolverMultistepScheduler" and config.get("algorithm_type") not in (None, "dpmsolver++", "sde-dpmsolver++"):
        config["algorithm_type"] = "dpmsolver++"
    return cls.from_config(config, **overrides)


def steps_for_strength(steps: int, strength: float) -> tuple[int, float]:
    """(num_inference_steps, strength) for an img2img-style call such that at least one step runs.

    diffusers runs `int(steps * strength)` steps of a `steps`-long schedule, none at all for 1 step at 0.75 or
    for a strength of 0 (and then fails). Like AUTOMATIC1111, Easel always runs at least one step: the schedule
    is lengthened until one falls inside the strength, which is at least 0.01 (one step at the lowest noise)."""
    strength = max(0.01, float(strength))
    total = max(1, int(steps))
    while int(total * strength) < 1:
        total += 1
    return total, strength
