"""AUTOMATIC1111 sampler names mapped to diffusers schedulers, and `Samplers`, one Easel's table of them.

Users pick samplers by the names they know ("DPM++ 2M") and a schedule type beside them ("Karras"; older names
like "DPM++ 2M Karras" still work); each generation gets a fresh scheduler built from the loaded pipeline's own
scheduler config, so jobs never share scheduler state. Flow-matching models (SD3, Flux, Z-Image, Qwen-Image,
Easel's built-in model) have their own, shorter list, per family, and run their own schedule.

The tables below are the built-in samplers and never change. Each Easel holds a `Samplers` (in its registry,
`easel.registry.samplers`) that starts from them and gains the samplers its extensions add; the engine, the
request checks, the API and the UI all ask that object, so two Easels in one process never see each other's.
"""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Mapping

from webui.model_manager.identify import Arch
from webui.requests import SCHEDULE_LABELS, RequestError, split_legacy

FLOW_ARCHS = {Arch.SD3, Arch.FLUX, Arch.ZIMAGE, Arch.QWEN, Arch.EASEL}

SamplerTable = Mapping[str, tuple[str, Mapping[str, Any]]]  # name -> (scheduler class name, config overrides)

DIFFUSION_SAMPLERS: SamplerTable = MappingProxyType({
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ SDE": ("DPMSolverSinglestepScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "DEIS": ("DEISMultistepScheduler", {}),
})

_FLOW_SOLVER = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
FLOW_SAMPLERS: SamplerTable = MappingProxyType({
    "Euler": ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": False}),
    "Euler a": ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}),
    "Heun": ("FlowMatchHeunDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", _FLOW_SOLVER),
    "UniPC": ("UniPCMultistepScheduler", _FLOW_SOLVER),
})

# The flow samplers each family's pipeline runs (each checked on a tiny model of the family): Heun needs a
# pipeline that passes neither custom sigmas nor mu, and the multistep solvers take the pipelines' own sigmas
# only through `FlowSolver` below.
FLOW_FAMILY_SAMPLERS: Mapping[Arch, tuple[str, ...]] = MappingProxyType({
    Arch.SD3: ("Euler", "Euler a", "Heun", "DPM++ 2M", "UniPC"),
    Arch.FLUX: ("Euler", "Euler a", "DPM++ 2M", "UniPC"),
    Arch.ZIMAGE: ("Euler", "Euler a", "DPM++ 2M", "UniPC"),
    Arch.QWEN: ("Euler", "Euler a", "DPM++ 2M", "UniPC"),
    Arch.EASEL: ("Euler", "Euler a", "Heun", "DPM++ 2M", "UniPC"),
})
EASEL_SAMPLERS: SamplerTable = MappingProxyType({n: FLOW_SAMPLERS[n] for n in FLOW_FAMILY_SAMPLERS[Arch.EASEL]})
# DiT, PixArt, Sana, aMUSEd, unCLIP and DeepFloyd IF run the scheduler their folder names, fresh for each job: one
# sampler, "Default" (its class name "" means the config's own `_class_name`).
# StyleGAN generators have no sampler at all: "Default" stands for their one forward pass.
OWN_SCHEDULER_ARCHS = frozenset({Arch.DIT, Arch.PIXART, Arch.SANA, Arch.AMUSED, Arch.UNCLIP, Arch.IF, Arch.GAN})
OWN_SCHEDULER: SamplerTable = MappingProxyType({"Default": ("", MappingProxyType({}))})

# How a schedule reaches each diffusers scheduler: custom sigmas, custom (training) timesteps, the scheduler's own
# sigma table replaced after it set its timesteps, or (only Karras and Exponential) its own config flags.
_BY_SIGMAS = {"EulerDiscreteScheduler"}
_BY_TIMESTEPS = {"HeunDiscreteScheduler"}
_BY_TABLE = {"EulerAncestralDiscreteScheduler", "LMSDiscreteScheduler", "DPMSolverMultistepScheduler",
             "DPMSolverSinglestepScheduler"}
_FLAGS = {"Karras": "use_karras_sigmas", "Exponential": "use_exponential_sigmas"}


def schedules_for(class_name: str, flow: bool) -> tuple[str, ...]:
    """The schedule types a diffusers scheduler class runs (Automatic always)."""
    if flow:
        return ("Automatic",)
    if class_name in _BY_SIGMAS | _BY_TIMESTEPS | _BY_TABLE:
        return SCHEDULE_LABELS
    import diffusers
    import inspect

    params = inspect.signature(getattr(diffusers, class_name).__init__).parameters
    return ("Automatic", *(label for label, flag in _FLAGS.items() if flag in params))


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
        if arch in OWN_SCHEDULER_ARCHS:
            return OWN_SCHEDULER
        if arch in FLOW_ARCHS:
            return {name: self.flow[name] for name in FLOW_FAMILY_SAMPLERS.get(arch, tuple(self.flow))}
        return self.diffusion

    def names(self, arch: Arch | None = None) -> list[str]:
        """Names offered for a model family (all diffusion samplers when no family is given)."""
        return list(self.table(arch))

    def all_names(self) -> list[str]:
        return list(dict.fromkeys([*self.diffusion, *self.easel]))

    def resolve(self, name: str, arch: Arch) -> str:
        """The sampler name that will run for `arch`; raises RequestError on `sampler_name` naming the choices
        when none fits. An older name with the schedule in it ("DPM++ 2M Karras") is its sampler ("DPM++ 2M")."""
        table = self.table(arch)
        if name in table:
            return name
        base, _ = split_legacy(name)
        if base in table:
            return base
        raise RequestError("sampler_name", f"unknown sampler {name!r} for {arch.value} models; choose one of "
                                           f"{', '.join(table)}")

    def schedule(self, name: str, schedule: str, arch: Arch) -> str:
        """The schedule type that runs: `schedule`, or for "Automatic" the one an older sampler name carries
        (none for flow models, whose schedule is their own)."""
        if schedule in ("", "Automatic") and arch not in FLOW_ARCHS and name not in self.table(arch):
            return split_legacy(name)[1] or "Automatic"
        return schedule or "Automatic"

    def check_schedule(self, name: str, schedule: str, arch: Arch) -> str:
        """The schedule type that runs `name` on `arch`; RequestError on `scheduler` naming those that can."""
        sampler = self.resolve(name, arch)
        wanted = self.schedule(name, schedule, arch)
        if wanted not in SCHEDULE_LABELS:
            raise RequestError("scheduler", f"unknown schedule type {wanted!r}; choose one of "
                                            f"{', '.join(SCHEDULE_LABELS)}")
        class_name = self.table(arch)[sampler][0]
        usable = ("Automatic",) if arch in OWN_SCHEDULER_ARCHS else schedules_for(class_name, arch in FLOW_ARCHS)
        if wanted not in usable:
            raise RequestError("scheduler", f"the sampler {sampler} cannot run the schedule type {wanted} on "
                                            f"{arch.value} models; choose one of {', '.join(usable)}")
        return wanted

    def make_scheduler(self, name: str, arch: Arch, base_config: Any, schedule: str = "Automatic",
                       shift: float = 0.0) -> Any:
        """A fresh scheduler for one job, built from the pipeline's scheduler config, running `schedule`; for
        flow models `shift` > 0 replaces the model's own timestep shift."""
        import diffusers

        from webui.engine.scheduled import flow_solver, scheduled

        sampler = self.resolve(name, arch)
        label = self.check_schedule(name, schedule, arch)
        class_name, overrides = self.table(arch)[sampler]
        if arch in OWN_SCHEDULER_ARCHS:  # the model's own scheduler, new
            return getattr(diffusers, dict(base_config)["_class_name"]).from_config(base_config)
        cls = getattr(diffusers, class_name)
        config = dict(base_config)
        overrides = dict(overrides)
        algorithm = config.get("algorithm_type")
        if class_name == "DPMSolverSinglestepScheduler" and algorithm not in (None, "dpmsolver++"):
            config["algorithm_type"] = "dpmsolver++"
        if class_name == "DPMSolverMultistepScheduler" and algorithm not in (None, "dpmsolver++", "sde-dpmsolver++"):
            config["algorithm_type"] = "dpmsolver++"
        if arch in FLOW_ARCHS:
            if shift > 0:
                config.update(shift=float(shift), use_dynamic_shifting=False)
            if overrides.get("use_flow_sigmas"):
                overrides["flow_shift"] = float(config.get("shift", 1.0))
                for key in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"):
                    config.pop(key, None)
                return flow_solver(cls).from_config(config, **overrides)
            return cls.from_config(config, **overrides)
        if label == "Automatic":  # the scheduler exactly as the model's config (and the sampler) make it
            return cls.from_config(config, **overrides)
        for flag in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"):
            config.pop(flag, None)  # the schedule type decides the sigmas, not the model's config
        if label in _FLAGS and class_name not in _BY_SIGMAS | _BY_TIMESTEPS | _BY_TABLE:
            overrides[_FLAGS[label]] = True  # DPM2, DPM2 a, UniPC, DEIS: their own Karras / exponential sigmas
            return cls.from_config(config, **overrides)
        way = "sigmas" if class_name in _BY_SIGMAS else "timesteps" if class_name in _BY_TIMESTEPS else "table"
        scheduler = scheduled(cls).from_config(config, **overrides)
        scheduler.easel_schedule = (label, way, arch == Arch.SDXL)
        return scheduler

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


def steps_for_strength(steps: int, strength: float, exact: bool = False) -> tuple[int, float]:
    """(num_inference_steps, strength) for an img2img-style call such that at least one step runs.

    diffusers runs `int(steps * strength)` steps of a `steps`-long schedule, none at all for 1 step at 0.75 or
    for a strength of 0 (and then fails). Like AUTOMATIC1111, Easel always runs at least one step: the schedule
    is lengthened until one falls inside the strength, which is at least 0.01 (one step at the lowest noise).
    `exact` (the setting img2img_fix_steps): the schedule is lengthened until `steps` steps run."""
    strength = max(0.01, float(strength))
    wanted = max(1, int(steps)) if exact else 1
    total = max(1, int(steps), math.ceil(wanted / strength) if exact else 1)
    while int(total * strength) < wanted:
        total += 1
    return total, strength
