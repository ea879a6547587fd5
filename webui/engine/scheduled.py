"""diffusers schedulers that run a schedule type of `webui.engine.schedules`, and multistep flow solvers that take
the sigmas flow pipelines pass.

`scheduled(cls)` is a subclass of a diffusers scheduler whose `set_timesteps(n)` computes the n-step schedule
named by `easel_schedule` from the scheduler's own training noise levels and hands it over the way that scheduler
takes one: custom `sigmas` (Euler), custom training `timesteps` (Heun: each sigma's continuous timestep), or its
sigma table replaced once it set its own for that many steps (Euler a, LMS, the DPM++ samplers; their timesteps,
which only condition the model, rounded where the scheduler keeps whole ones). A call that already names sigmas or timesteps runs unchanged. Pipelines keep calling `set_timesteps(n)`,
so img2img's strength cuts the computed schedule as it cuts the default one.

`flow_solver(cls)` lets DPM++ 2M and UniPC (with flow sigmas) run in pipelines that pass their own `sigmas` and
`mu`: the solver keeps its own flow sigmas for that step count and takes `mu` as the dynamic shift.
"""
from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from webui.engine.schedules import schedule_sigmas, sigma_to_t, training_sigmas

_SCHEDULED: dict[type, type] = {}
_FLOW: dict[type, type] = {}


def scheduled(cls: type) -> type:
    """The subclass of diffusers scheduler `cls` that runs `easel_schedule` = (label, way, sdxl)."""
    if cls in _SCHEDULED:
        return _SCHEDULED[cls]

    def set_timesteps(self: Any, num_inference_steps: int | None = None, device: Any = None, *args: Any,
                      **kwargs: Any) -> Any:
        schedule = getattr(self, "easel_schedule", None)
        if schedule is None or num_inference_steps is None or args or any(
                kwargs.get(k) is not None for k in ("sigmas", "timesteps")):
            return cls.set_timesteps(self, num_inference_steps, device, *args, **kwargs)
        label, way, sdxl = schedule
        table = training_sigmas(self.alphas_cumprod.cpu().numpy())
        sigmas = decreasing(schedule_sigmas(label, int(num_inference_steps), table, sdxl))  # (n + 1,)
        steps = len(sigmas) - 1
        timesteps = sigma_to_t(sigmas[:-1], table)  # (n,)
        if way == "sigmas":
            cls.set_timesteps(self, device=device, sigmas=sigmas.tolist(), **kwargs)
        elif way == "timesteps":
            cls.set_timesteps(self, device=device, timesteps=timesteps.astype(np.float32).tolist(), **kwargs)
        else:  # "table": let the scheduler set up for this many steps, then give it these sigmas
            cls.set_timesteps(self, steps, device, **kwargs)
            kind = self.timesteps.dtype
            values = np.round(timesteps) if not kind.is_floating_point else timesteps
            self.sigmas = torch.from_numpy(sigmas.astype(np.float32)).to(self.sigmas.device)
            self.timesteps = torch.from_numpy(values).to(device=device or self.timesteps.device, dtype=kind)
        if hasattr(self, "set_begin_index"):
            self.set_begin_index(0)  # step from the first sigma, even where timesteps repeat; img2img moves it
        return None

    set_timesteps.__signature__ = inspect.signature(cls.set_timesteps)  # type: ignore[attr-defined]
    sub = type(cls.__name__, (cls,), {"set_timesteps": set_timesteps, "easel_schedule": None,
                                      "__module__": __name__, "__doc__": cls.__doc__})
    _SCHEDULED[cls] = sub
    return sub


def decreasing(sigmas: np.ndarray) -> np.ndarray:
    """The sigmas without repeats: at high step counts Beta, Simple and DDIM land on one training sigma more than
    once, and a step between two equal sigmas does nothing in theory and divides by zero in the solvers."""
    kept = [sigmas[0]]
    for value in sigmas[1:]:
        if value < kept[-1]:
            kept.append(value)
    return np.asarray(kept, dtype=np.float64)


def flow_solver(cls: type) -> type:
    """The subclass of a multistep solver (DPM++ 2M, UniPC) configured with flow sigmas that accepts the
    `sigmas` and `mu` a flow pipeline passes."""
    if cls in _FLOW:
        return _FLOW[cls]
    native = inspect.signature(cls.set_timesteps).parameters

    def set_timesteps(self: Any, num_inference_steps: int | None = None, device: Any = None,
                      sigmas: list[float] | None = None, mu: float | None = None, timesteps: Any = None,
                      **kwargs: Any) -> Any:
        if num_inference_steps is None:
            if sigmas is None and timesteps is None:
                raise ValueError("set_timesteps needs num_inference_steps, sigmas or timesteps")
            num_inference_steps = len(sigmas if sigmas is not None else timesteps)
        if self.config.get("use_dynamic_shifting"):
            if mu is None:
                raise ValueError("mu: this model shifts its timesteps by image size and needs mu")
            if "mu" in native:
                kwargs["mu"] = mu
        return cls.set_timesteps(self, num_inference_steps, device, **kwargs)

    sub = type(cls.__name__, (cls,), {"set_timesteps": set_timesteps, "__module__": __name__,
                                      "__doc__": cls.__doc__})
    _FLOW[cls] = sub
    return sub
