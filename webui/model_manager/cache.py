"""Loaded checkpoints (`Slot`) and how their weights move between the CPU and the device.

Each cached checkpoint is a `Slot`: its base pipeline, the per-mode pipelines made from it with `from_pipe`
(they share every module, so the weights exist once), the VAE it currently uses, and where its configs came
from. Which slots stay loaded, and where, is the memory policy's (webui.model_manager.memory); `PipelinePlacement`
does the moving when it decides: to the device, or back to the CPU (nothing to move on a CPU device). With CPU
offload (CUDA only) the accelerate hooks take the place of the move. `release_memory` runs the garbage collector
and empties the CUDA cache, so dropped weights really give their memory back.
"""
from __future__ import annotations

import gc
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

import torch

from webui.model_manager.memory import OFFLOAD_CHOICES, OffloadChoice, choose_offload, module_bytes

log = logging.getLogger(__name__)

Offload = Literal["auto", "none", "model", "sequential", "group"]
_GROUP_HOOKS = ("group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading")


@dataclass
class Slot:
    """One cached checkpoint and everything made from it."""

    name: str
    entry: Any  # the CheckpointEntry it was loaded from (with its hash)
    arch: Any  # Arch
    base: Any  # the DiffusionPipeline as loaded
    pipes: dict[str, Any]  # mode -> pipeline sharing base's modules
    unavailable: dict[str, str]  # mode -> why it cannot run
    config_source: str | None
    own_vae: Any = None
    vae_name: str | None = None  # None: the checkpoint's own VAE
    offloaded: bool = False  # offload hooks are in place
    offload: OffloadChoice | None = None  # how it runs on the device, decided when it first goes there
    results: dict[str, Any] = field(default_factory=dict)  # mode -> LoadedPipeline handed out
    measured_for: Any = None  # the LoRAs and embeddings its size was last measured with
    storage_asked: str = ""  # the weight storage (--precision / weight_precision) it was loaded with

    def all_pipes(self) -> list[Any]:
        unique: dict[int, Any] = {id(self.base): self.base}
        for pipe in self.pipes.values():
            unique.setdefault(id(pipe), pipe)
        return list(unique.values())


def modules_of(pipe: Any) -> list[torch.nn.Module]:
    components = getattr(pipe, "components", None) or {}
    return [m for m in components.values() if isinstance(m, torch.nn.Module)]


def tensor_bytes(pipes: list[Any]) -> dict[str, int]:
    """Bytes of parameters and buffers by device type, each storage counted once."""
    seen: set[tuple[str, int]] = set()
    totals: dict[str, int] = {}
    for pipe in pipes:
        for module in modules_of(pipe):
            for tensor in (*module.parameters(), *module.buffers()):
                device = tensor.device.type
                key = (device, tensor.untyped_storage().data_ptr()) if device != "meta" else (device, id(tensor))
                if key in seen:
                    continue
                seen.add(key)
                totals[device] = totals.get(device, 0) + tensor.numel() * tensor.element_size()
    return totals


def slot_bytes(slot: Slot) -> int:
    """Bytes of a checkpoint's own weights: every module of its pipelines and its own VAE, without a VAE from the
    VAE folders that replaces it (held as its own entry)."""
    from webui.model_manager.memory import module_bytes

    override = None if slot.base is None or slot.vae_name is None else getattr(slot.base, "vae", None)
    modules = {id(m): m for pipe in slot.all_pipes() for m in modules_of(pipe) if m is not override}
    if isinstance(slot.own_vae, torch.nn.Module):
        modules.setdefault(id(slot.own_vae), slot.own_vae)
    return module_bytes(list(modules.values()))


def slot_report(slot: Slot, tier: str, size: int, active: bool) -> dict[str, Any]:
    """One checkpoint for the memory report: where its tensors are (bytes in RAM, on the device), its tier."""
    by_device = tensor_bytes(slot.all_pipes())
    on_cpu = by_device.get("cpu", 0) + by_device.get("meta", 0)
    entry = slot.entry
    return {"name": entry.name, "title": entry.title, "arch": slot.arch.value, "active": active,
            "offload": slot.offload.describe() if slot.offload is not None else None,
            "vae": slot.vae_name or "Automatic", "modes": sorted(m for m in slot.pipes if m not in slot.unavailable),
            "ram_bytes": on_cpu, "device_bytes": sum(v for k, v in by_device.items() if k not in ("cpu", "meta")),
            "tier": tier, "bytes": size}


class PipelinePlacement:
    """Moves a slot's weights to the device or back to the CPU, with or without offloading. `requested` is the
    offload setting ("auto" or a mode), or a function reading it when a checkpoint first goes to the device."""

    def __init__(self, device: str, offload: str | Callable[[], str] = "auto") -> None:
        self.device = device
        if isinstance(offload, str) and offload not in OFFLOAD_CHOICES:
            raise ValueError(f"offload must be one of {', '.join(repr(c) for c in OFFLOAD_CHOICES)}, got {offload!r}")
        self.requested = offload
        if isinstance(offload, str) and offload not in ("auto", "none") and not self.device_is_accelerator:
            log.info("offload %r ignored: it only applies to a CUDA device, not %s", offload, device)

    @property
    def device_is_accelerator(self) -> bool:
        return torch.device(self.device).type == "cuda"

    @property
    def offload(self) -> str:
        """The offload setting now ("auto" or a mode); "none" on a CPU device."""
        if not self.device_is_accelerator:
            return "none"
        return self.requested() if callable(self.requested) else self.requested

    def decide(self, slot: Slot) -> OffloadChoice:
        """How `slot` runs on the device: the setting, or for "auto" the free GPU memory and its models' bytes."""
        if not self.device_is_accelerator or slot.base is None:
            return OffloadChoice("none", "no GPU")
        sizes = [module_bytes([m]) for m in modules_of(slot.base)] or [0]
        free = free_device_bytes(self.device)
        choice = choose_offload(self.offload, free, sum(sizes), max(sizes), streams=True)
        log.info("%s runs with offload %s", slot.name, choice.describe())
        return choice

    def place(self, slot: Slot, tier: str) -> None:
        """Put the slot where the memory policy wants it: "device" (ready to run) or "ram"."""
        if tier == "device":
            self._to_device(slot)
        else:
            self._to_ram(slot)

    def mode(self, slot: Slot) -> str:
        return slot.offload.mode if slot.offload is not None else "none"

    def _to_device(self, slot: Slot) -> None:
        if slot.base is None:
            return
        if slot.offload is None:
            slot.offload = self.decide(slot)
        if not self.device_is_accelerator:
            return
        mode = self.mode(slot)
        if mode == "none":
            slot.base.to(self.device)
        elif not slot.offloaded:
            enable_offload(slot.base, mode, self.device)
            slot.offloaded = True

    def _to_ram(self, slot: Slot) -> None:
        if not self.device_is_accelerator or slot.base is None:
            return
        mode = self.mode(slot)
        if mode == "none":
            slot.base.to("cpu")
        elif mode == "model":
            slot.base.maybe_free_model_hooks()  # every model back on the CPU, hooks kept for next time
        # sequential and group offload keep the weights on the CPU already; a layer visits the device as it runs
        release_memory(collect=False)

    def place_module(self, slot: Slot, module: torch.nn.Module, on_device: bool) -> None:
        """Put a module that joined `slot` (e.g. a VAE) where the slot's other modules are."""
        if not on_device or not self.device_is_accelerator:
            return
        mode = self.mode(slot)
        if mode == "none":
            module.to(self.device)
        elif mode == "sequential":  # give just this module the per-submodule offload hooks
            from accelerate import cpu_offload

            cpu_offload(module, torch.device(self.device), offload_buffers=len(module._parameters) > 0)
        elif mode == "group":
            from diffusers.hooks import apply_group_offloading

            apply_group_offloading(module, onload_device=torch.device(self.device), offload_type="leaf_level",
                                   use_stream=True)
        else:  # model offload: re-create the hooks so the new module is part of the offload sequence
            slot.base.remove_all_hooks()
            slot.offloaded = False
            self._to_device(slot)

    @contextmanager
    def hooks_lifted(self, slot: Slot | None, on_device: bool) -> Iterator[None]:
        """Take the offload hooks off `slot` while its modules change shape (new embedding rows), and put them
        back afterwards when it is on the device; nothing to do without offload."""
        if slot is None or not slot.offloaded:
            yield
            return
        disable_offload(slot.base)
        slot.offloaded = False
        try:
            yield
        finally:
            if on_device:
                self._to_device(slot)


def enable_offload(pipe: Any, mode: str, device: str) -> None:
    """Run `pipe` on `device` with offload `mode`: "none" moves it there; "model" and "sequential" are diffusers'
    model and sequential CPU offload (accelerate hooks); "group" is diffusers' group offload at leaf level, the
    next layer copied on a CUDA stream while the current one runs (no stream on a CPU device)."""
    if mode == "none":
        pipe.to(device)
    elif mode == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif mode == "group":
        onload = torch.device(device)
        pipe.enable_group_offload(onload_device=onload, offload_device=torch.device("cpu"),
                                  offload_type="leaf_level", use_stream=onload.type == "cuda")
    else:
        raise ValueError(f"unknown offload mode {mode!r}")


def disable_offload(pipe: Any) -> None:
    """Take every offload hook off `pipe` (accelerate's and diffusers' group offload); the weights stay where
    they are (in RAM)."""
    from diffusers.hooks import HookRegistry

    pipe.remove_all_hooks()
    for module in modules_of(pipe):
        if not any(hasattr(m, "_diffusers_hook") for m in module.modules()):
            continue
        registry = HookRegistry.check_if_exists_or_initialize(module)
        for name in _GROUP_HOOKS:
            registry.remove_hook(name, recurse=True)


def free_device_bytes(device: str) -> int | None:
    """Free memory on a CUDA device, in bytes; None for any other device."""
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return None
    index = torch.device(device).index
    free, _ = torch.cuda.mem_get_info(torch.cuda.current_device() if index is None else index)
    return int(free)


def release_memory(collect: bool = True) -> None:
    if collect:
        gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
