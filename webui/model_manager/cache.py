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
from typing import Any, Iterator, Literal

import torch

log = logging.getLogger(__name__)

Offload = Literal["none", "model", "sequential"]


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
    offloaded: bool = False
    results: dict[str, Any] = field(default_factory=dict)  # mode -> LoadedPipeline handed out
    measured_for: Any = None  # the LoRAs and embeddings its size was last measured with

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
            "vae": slot.vae_name or "Automatic", "modes": sorted(m for m in slot.pipes if m not in slot.unavailable),
            "ram_bytes": on_cpu, "device_bytes": sum(v for k, v in by_device.items() if k not in ("cpu", "meta")),
            "tier": tier, "bytes": size}


class PipelinePlacement:
    """Moves a slot's weights to the device or back to the CPU, with or without CPU offload."""

    def __init__(self, device: str, offload: Offload = "none") -> None:
        self.device = device
        self.offload: Offload = offload if self.device_is_accelerator else "none"
        if offload != "none" and not self.device_is_accelerator:
            log.info("CPU offload %r ignored: it only applies to a CUDA device, not %s", offload, device)

    @property
    def device_is_accelerator(self) -> bool:
        return torch.device(self.device).type == "cuda"

    def place(self, slot: Slot, tier: str) -> None:
        """Put the slot where the memory policy wants it: "device" (ready to run) or "ram"."""
        if tier == "device":
            self._to_device(slot)
        else:
            self._to_ram(slot)

    def _to_device(self, slot: Slot) -> None:
        if not self.device_is_accelerator or slot.base is None:
            return
        if self.offload == "none":
            slot.base.to(self.device)
        elif not slot.offloaded:
            if self.offload == "model":
                slot.base.enable_model_cpu_offload(device=self.device)
            else:
                slot.base.enable_sequential_cpu_offload(device=self.device)
            slot.offloaded = True

    def _to_ram(self, slot: Slot) -> None:
        if not self.device_is_accelerator or slot.base is None:
            return
        if self.offload == "none":
            slot.base.to("cpu")
        elif self.offload == "model":
            slot.base.maybe_free_model_hooks()  # every model back on the CPU, hooks kept for next time
        # sequential offload keeps weights on the CPU already; only one submodule visits the device at a time
        release_memory(collect=False)

    def place_module(self, slot: Slot, module: torch.nn.Module, on_device: bool) -> None:
        """Put a module that joined `slot` (e.g. a VAE) where the slot's other modules are."""
        if not on_device or not self.device_is_accelerator:
            return
        if self.offload == "none":
            module.to(self.device)
        elif self.offload == "sequential":  # give just this module the per-submodule offload hooks
            from accelerate import cpu_offload

            cpu_offload(module, torch.device(self.device), offload_buffers=len(module._parameters) > 0)
        else:  # model offload: re-create the hooks so the new module is part of the offload sequence
            slot.base.remove_all_hooks()
            slot.offloaded = False
            self._to_device(slot)

    @contextmanager
    def hooks_lifted(self, slot: Slot | None, on_device: bool) -> Iterator[None]:
        """Take the CPU-offload hooks off `slot` while its modules change shape (new embedding rows), and put them
        back afterwards when it is on the device; nothing to do without offload."""
        if slot is None or not slot.offloaded:
            yield
            return
        slot.base.remove_all_hooks()
        slot.offloaded = False
        try:
            yield
        finally:
            if on_device:
                self._to_device(slot)


def release_memory(collect: bool = True) -> None:
    if collect:
        gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
