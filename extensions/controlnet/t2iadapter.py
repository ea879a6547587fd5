"""T2I-Adapter units: a control map through a small adapter network instead of a ControlNet.

A T2I-Adapter is a diffusers folder (`config.json` with `"_class_name": "T2IAdapter"` beside its weights) in the
ControlNet folders, where sd-webui-controlnet users keep theirs; a unit names it as its model and takes any
preprocessor, like a ControlNet unit. The adapter runs once per generation on the unit's control map and gives one
feature map per UNet down block; `T2IAdapterRunner`, a pipeline wrapper, adds them (times the unit's weight,
summed over units) to the UNet's down blocks on each step of the unit's guidance window, through the UNet's own
`down_intrablock_additional_residuals` argument, set by a forward pre-hook. This is what diffusers'
`StableDiffusionAdapterPipeline` does; doing it on the UNet lets the same units run in txt2img, img2img, inpaint
and beside ControlNet units, on SD 1.x and SDXL checkpoints.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from webui.extension_api import PipelineCall, RequestError

from .ipadapter import active, is_ip_adapter
from .models import FAMILY_LABELS, ControlNetEntry, ControlNetModels
from .units import HIGH_RES_ONLY, LOW_RES_ONLY, ControlUnit

FIELD = "alwayson_scripts.controlnet"
CLASS_NAME = "T2IAdapter"


def is_t2i_adapter(entry: ControlNetEntry) -> bool:
    """Whether a ControlNet-folder model is a diffusers T2I-Adapter folder."""
    if not entry.folder:
        return False
    try:
        config = json.loads((entry.path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return config.get("_class_name") == CLASS_NAME


def adapter_family(config: dict[str, Any]) -> str:
    return "sdxl" if config.get("adapter_type") == "full_adapter_xl" else "sd1"


class T2IAdapterRunner:
    """The pipeline wrapper that runs a request's T2I-Adapter units (see the module docstring)."""

    def __init__(self, models: ControlNetModels, units: Callable[[Any], list[ControlUnit]],
                 prepare: Callable[[PipelineCall, list[ControlUnit]], list[Any]]) -> None:
        self.models = models
        self.units = units
        self.prepare = prepare  # ControlNetRunner.prepare: each unit's control map at the generation size

    def adapter_units(self, call: PipelineCall) -> list[ControlUnit]:
        units = [u for u in self.units(call.request) if not is_ip_adapter(u.module)
                 and u.model and is_t2i_adapter(self.models.find(u.model))]
        hires_pass = getattr(call.request, "mode", "") == "txt2img" and call.task == "img2img"
        hires_on = bool(getattr(call.request, "enable_hr", False))
        skipped = HIGH_RES_ONLY if hires_on and not hires_pass else LOW_RES_ONLY if hires_pass else None
        return [u for u in units if u.hr_option != skipped]

    def __call__(self, call: PipelineCall, run: Callable[[PipelineCall], Any]) -> Any:
        import torch
        import numpy as np

        units = self.adapter_units(call)
        if not units:
            return run(call)
        from .apply import CHECKPOINT_LABELS

        if call.arch not in ("sd1", "sdxl"):
            raise RequestError(FIELD, f"T2I-Adapter units run with SD 1.x and SDXL checkpoints; {call.checkpoint} "
                                      f"is {CHECKPOINT_LABELS.get(call.arch, call.arch)}")
        for unit in units:
            entry = self.models.find(unit.model)
            family = self.models.family(entry)
            if family != call.arch:
                raise RequestError(f"{FIELD}.args[{unit.index}].model",
                                   f"{entry.name} is a T2I-Adapter for {FAMILY_LABELS.get(family, family)}, but the "
                                   f"checkpoint {call.checkpoint} is {CHECKPOINT_LABELS.get(call.arch, call.arch)}")
        pipe = call.pipe
        unet = pipe.unet
        device, dtype = pipe._execution_device, unet.dtype
        features: list[list[Any]] = []  # per unit: one [1, C_i, h_i, w_i] map per down block
        for item in self.prepare(call, units):
            adapter = self.models.load(item.entry, device, dtype)
            control = item.control.convert("L" if adapter.config.in_channels == 1 else "RGB")
            array = np.asarray(control, dtype=np.float32) / 255.0  # [H, W] or [H, W, 3]
            pixels = torch.from_numpy(array.reshape(array.shape[0], array.shape[1], -1)).permute(2, 0, 1)[None]
            with torch.no_grad():
                features.append(list(adapter(pixels.to(device=device, dtype=dtype))))

        kwargs = dict(call.kwargs)
        steps = int(kwargs.get("num_inference_steps") or 1)
        estimate = max(1, min(steps, int(steps * float(kwargs.get("strength", 1.0)))))
        scales = [0.0] * len(units)

        def set_scales(step: int, total: int) -> None:
            scales[:] = [u.weight if active(step, total, u.guidance_start, u.guidance_end) else 0.0 for u in units]

        original = kwargs.get("callback_on_step_end")

        def on_step_end(p: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            out = original(p, step, timestep, tensors) if original is not None else {}
            set_scales(step + 1, int(getattr(p, "_num_timesteps", 0) or estimate))
            return out

        def add_features(module: Any, args: Any, call_kwargs: dict[str, Any]) -> Any:
            if not any(scales):  # weight 0 or outside every window: the UNet runs exactly as without the unit
                return None
            sample = args[0] if args else call_kwargs["sample"]  # [B, C, h, w], B = 2N under guidance
            levels = [sum(scale * maps[level] for scale, maps in zip(scales, features) if scale)
                      for level in range(len(features[0]))]
            # a fresh list each call: the UNet pops its entries
            call_kwargs["down_intrablock_additional_residuals"] = [
                level.repeat(sample.shape[0] // level.shape[0], 1, 1, 1) for level in levels]
            return args, call_kwargs

        set_scales(0, estimate)
        kwargs["callback_on_step_end"] = on_step_end
        handle = unet.register_forward_pre_hook(add_features, with_kwargs=True)
        try:
            return run(call.replace(kwargs=kwargs))
        finally:
            handle.remove()
