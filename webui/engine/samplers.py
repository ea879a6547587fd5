"""AUTOMATIC1111 sampler names mapped to diffusers schedulers, and `Samplers`, one Easel's table of them.

Users pick samplers by the names they know ("DPM++ 2M Karras"); each generation gets a fresh scheduler built
from the loaded pipeline's own scheduler config, so jobs never share scheduler state. Flow-matching models
(SD3, Flux, Z-Image, Qwen-Image, Easel's built-in model) have their own, shorter list.

The tables below are the built-in samplers and never change. Each Easel holds a `Samplers` (in its registry,
`easel.registry.samplers`) that starts from them and gains the samplers its extensions add; the engine, the
request checks, the API and the UI all ask that object, so two Easels in one process never see each other's.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from webui.model_manager.identify import Arch
from webui.requests import RequestError

FLOW_ARCHS = {Arch.SD3, Arch.FLUX, Arch.ZIMAGE, Arch.QWEN, Arch.EASEL}

SamplerTable = Mapping[str, tuple[str, Mapping[str, Any]]]  # name -> (scheduler class name, config overrides)

DIFFUSION_SAMPLERS: SamplerTable = MappingProxyType({
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
})

FLOW_SAMPLERS: SamplerTable = MappingProxyType({
    "Euler": ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": False}),
    "Euler a": ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}),
})

# Heun needs a pipeline that passes neither custom sigmas nor mu; Easel's own pipeline does.
EASEL_SAMPLERS: SamplerTable = MappingProxyType({
    **FLOW_SAMPLERS,
    "Heun": ("FlowMatchHeunDiscreteScheduler", {}),
})


class Samplers:
    """One Easel's samplers: the built-in tables, plus those its extensions added (for the SD family).

    `add` puts one in and `merge` takes over another table's additions (an extension's, once its setup
    succeeded); nothing else changes it, and nothing here is shared between Easels.
    """

    def __init__(self) -> None:
        self.diffusion: dict[str, tuple[str, Mapping[str, Any]]] = dict(DIFFUSION_SAMPLERS)
        self.flow: dict[str, tuple[str, Mapping[str, Any]]] = dict(FLOW_SAMPLERS)
        self.easel: dict[str, tuple[str, Mapping[str, Any]]] = dict(EASEL_SAMPLERS)
        self.owners: dict[str, str] = {}  # sampler name -> the extension that added it

    def table(self, arch: Arch | None) -> Mapping[str, tuple[str, Mapping[str, Any]]]:
        if arch == Arch.EASEL:
            return self.easel
        if arch in FLOW_ARCHS:
            return self.flow
        return self.diffusion

    def names(self, arch: Arch | None = None) -> list[str]:
        """Names offered for a model family (all diffusion samplers when no family is given)."""
        return list(self.table(arch))

    def all_names(self) -> list[str]:
        return list(dict.fromkeys([*self.diffusion, *self.easel]))

    def resolve(self, name: str, arch: Arch) -> str:
        """The sampler name that will run for `arch`; raises RequestError on `sampler_name` naming the choices
        when none fits.

        Schedule suffixes (" Karras") from other tools are dropped for flow models, whose schedules are fixed.
        """
        table = self.table(arch)
        if name in table:
            return name
        if arch in FLOW_ARCHS:
            base = name.replace(" Karras", "").strip()
            if base in table:
                return base
            if base.startswith(("DPM", "UniPC", "DDIM", "LMS", "DEIS", "PLMS")):
                return "Euler"
        raise RequestError("sampler_name", f"unknown sampler {name!r} for {arch.value} models; choose one of "
                                           f"{', '.join(table)}")

    def make_scheduler(self, name: str, arch: Arch, base_config: Any) -> Any:
        """A fresh scheduler for one job, built from the pipeline's scheduler config."""
        import diffusers

        class_name, overrides = self.table(arch)[self.resolve(name, arch)]
        cls = getattr(diffusers, class_name)
        config = dict(base_config)
        algorithm = config.get("algorithm_type")
        if class_name == "DPMSolverSinglestepScheduler" and algorithm not in (None, "dpmsolver++"):
            config["algorithm_type"] = "dpmsolver++"
        if class_name == "DPMSolverMultistepScheduler" and algorithm not in (None, "dpmsolver++", "sde-dpmsolver++"):
            config["algorithm_type"] = "dpmsolver++"
        return cls.from_config(config, **overrides)

    def check_free(self, name: str, owner: str) -> None:
        """Raise ValueError on `name` when a built-in sampler or another extension's already uses it."""
        taken_by = self.owners.get(name)
        if (name in self.diffusion or name in self.easel) and taken_by != owner:
            raise ValueError(f"name: a sampler named {name!r} already exists"
                             f"{f' (added by the extension {taken_by})' if taken_by else ''}")

    def add(self, name: str, scheduler_class: str, overrides: Mapping[str, Any] | None, owner: str) -> None:
        """Offer a diffusers scheduler under `name` for SD-family models, on behalf of the extension `owner`
        (which may replace its own). Raises ValueError naming the argument that is wrong."""
        import diffusers

        name = name.strip()
        if not name:
            raise ValueError("name: a sampler needs a name")
        self.check_free(name, owner)
        if not scheduler_class.endswith("Scheduler") or not hasattr(diffusers, scheduler_class):
            raise ValueError(f"scheduler_class: diffusers has no scheduler {scheduler_class!r}")
        self.diffusion[name] = (scheduler_class, MappingProxyType(dict(overrides or {})))
        self.owners[name] = owner

    def added(self) -> dict[str, tuple[str, str, Mapping[str, Any]]]:
        """What extensions added: name -> (extension, scheduler class name, overrides)."""
        return {name: (owner, *self.diffusion[name]) for name, owner in self.owners.items()}

    def merge(self, other: "Samplers") -> None:
        """Take over the samplers extensions added to `other`; checks every name first, so a clash (a
        ValueError) changes nothing."""
        incoming = other.added()
        for name, (owner, _, _) in incoming.items():
            self.check_free(name, owner)
        for name, (owner, class_name, overrides) in incoming.items():
            self.diffusion[name] = (class_name, overrides)
            self.owners[name] = owner


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
