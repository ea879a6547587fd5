"""What a job needs loaded, as one value: the engine fills a `LoadSpec` and `ModelManager.load(spec)` hands back the
pipeline ready to run (checkpoint in the mode, VAE, exactly these LoRAs, the embeddings added, a fresh scheduler
for the sampler, the adapter models loaded). Asking for the same spec twice loads, moves and changes nothing the
second time. Adapters are small `AdapterSpec` values whose `kind` picks the loader declared for it (the Easel's
`Registry.adapter_loaders`, handed to `load`; ControlNet declares one), so new adapter kinds plug in without changing
this.
Importing this module imports no torch.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AdapterSpec:
    """One adapter model a job runs beside its checkpoint (a ControlNet; later IP-Adapters, T2I-Adapters, ...).

    `name` is the model as its kind's lookup accepts it; `weight` its strength where the kind has one; `copy` > 0
    asks for another instance of the same model (two ControlNet units using one model each get their own)."""

    kind: str
    name: str
    weight: float = 1.0
    copy: int = 0


@dataclass(frozen=True)
class LoadSpec:
    """Everything one pipeline call of a job needs loaded."""

    checkpoint: str  # any name `find_checkpoint` accepts
    mode: str = "txt2img"  # txt2img, img2img, inpaint or edit
    vae: str | None = None  # a VAE's name; None (or "Automatic") is the checkpoint's own
    loras: tuple[tuple[str, float], ...] = ()  # (name, weight): exactly these are active, () = the base model
    embeddings: tuple[str, ...] = ()  # textual-inversion embeddings the prompts name
    sampler: str = ""  # AUTOMATIC1111's sampler name ("DPM++ 2M"; older "DPM++ 2M Karras"); "" keeps the scheduler
    schedule: str = "Automatic"  # the schedule type the sampler runs ("Karras", ...); Automatic = its own
    shift: float = 0.0  # flow models' timestep shift; 0 = the model's own
    adapters: tuple[AdapterSpec, ...] = ()


class LoadSpecError(ValueError):
    """A LoRA or an embedding of a spec could not be used; `part` says which ("loras", "embeddings") and `name`
    which one, so the engine can name the request field that asked for it."""

    def __init__(self, part: str, name: str, message: str) -> None:
        super().__init__(message)
        self.part = part
        self.name = name
