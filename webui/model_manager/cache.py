"""Loaded pipelines: an LRU of them in RAM, and exactly one (the active one) on the device.

Each cached checkpoint is a `Slot`: its base pipeline, the per-mode pipelines made from it with `from_pipe`
(they share every module, so the weights exist once), the VAE it currently uses, and where its configs came
from. `PipelineCache` keeps slots in least-recently-used order, evicts the oldest one that is not active when
it is full, and moves weights: activating a slot moves the previously active one back to the CPU and this one
to the device (nothing to move on a CPU device). With CPU offload (CUDA only) the accelerate hooks take the
place of the move. Eviction drops every reference the cache holds, runs the garbage collector and empties the
CUDA cache, so the memory really comes back.
"""
from __future__ import annotations

import gc
import logging
from collections import OrderedDict
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


class PipelineCache:
    """LRU of `Slot`s with at most `capacity` entries and one active slot on `device`."""

    def __init__(self, capacity: int, device: str, offload: Offload = "none") -> None:
        if capacity < 1:
            raise ValueError(f"ram_cache_size must be at least 1, got {capacity}")
        self.capacity = capacity
        self.device = device
        self.offload: Offload = offload if self.device_is_accelerator else "none"
        if offload != "none" and not self.device_is_accelerator:
            log.info("CPU offload %r ignored: it only applies to a CUDA device, not %s", offload, device)
        self._slots: OrderedDict[str, Slot] = OrderedDict()
        self.active: Slot | None = None
        self.evictions = 0

    @property
    def device_is_accelerator(self) -> bool:
        return torch.device(self.device).type == "cuda"

    def __contains__(self, name: str) -> bool:
        return name in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def __iter__(self) -> Iterator[Slot]:
        return iter(list(self._slots.values()))

    def get(self, name: str) -> Slot | None:
        """The slot, marked most recently used; None when not cached."""
        slot = self._slots.get(name)
        if slot is not None:
            self._slots.move_to_end(name)
        return slot

    def make_room(self, incoming: int = 1) -> None:
        """Evict least-recently-used inactive slots until `incoming` more fit (the active one is kept)."""
        while len(self._slots) + incoming > self.capacity:
            victim = next((s for s in self._slots.values() if s is not self.active), None)
            if victim is None:
                return
            self.evict(victim.name)

    def add(self, slot: Slot) -> None:
        self._slots[slot.name] = slot
        self._slots.move_to_end(slot.name)
        while len(self._slots) > self.capacity:
            victim = next((s for s in self._slots.values() if s is not slot and s is not self.active), None)
            if victim is None:
                victim = next(s for s in self._slots.values() if s is not slot)
            self.evict(victim.name)

    def evict(self, name: str) -> None:
        slot = self._slots.pop(name, None)
        if slot is None:
            return
        log.info("unloading %s", name)
        if slot is self.active:
            self._deactivate(slot)
            self.active = None
        slot.pipes.clear()
        slot.results.clear()
        slot.base = slot.own_vae = None
        self.evictions += 1
        release_memory()

    def clear(self) -> None:
        for name in list(self._slots):
            self.evict(name)

    # ----------------------------------------------------------------------------------------- device
    def activate(self, slot: Slot) -> None:
        """Make `slot` the one on the device (no work when it already is)."""
        if self.active is slot:
            return
        if self.active is not None:
            self._deactivate(self.active)
        self.active = slot
        if not self.device_is_accelerator:
            return
        if self.offload == "none":
            slot.base.to(self.device)
        elif not slot.offloaded:
            if self.offload == "model":
                slot.base.enable_model_cpu_offload(device=self.device)
            else:
                slot.base.enable_sequential_cpu_offload(device=self.device)
            slot.offloaded = True

    def _deactivate(self, slot: Slot) -> None:
        if not self.device_is_accelerator or slot.base is None:
            return
        if self.offload == "none":
            slot.base.to("cpu")
        elif self.offload == "model":
            slot.base.maybe_free_model_hooks()  # every model back on the CPU, hooks kept for next time
        # sequential offload keeps weights on the CPU already; only one submodule visits the device at a time
        release_memory(collect=False)

    def place_module(self, slot: Slot, module: torch.nn.Module) -> None:
        """Put a module that joined `slot` (e.g. a VAE) where the slot's other modules are."""
        if slot is not self.active or not self.device_is_accelerator:
            return
        if self.offload == "none":
            module.to(self.device)
        elif self.offload == "sequential":  # give just this module the per-submodule offload hooks
            from accelerate import cpu_offload

            cpu_offload(module, torch.device(self.device), offload_buffers=len(module._parameters) > 0)
        else:  # model offload: re-create the hooks so the new module is part of the offload sequence
            slot.base.remove_all_hooks()
            slot.offloaded = False
            self.active = None
            self.activate(slot)

    @contextmanager
    def hooks_lifted(self, slot: Slot | None) -> Iterator[None]:
        """Take the CPU-offload hooks off `slot` while its modules change shape (new embedding rows), and put them
        back afterwards; nothing to do without offload."""
        if slot is None or not slot.offloaded:
            yield
            return
        slot.base.remove_all_hooks()
        slot.offloaded = False
        try:
            yield
        finally:
            if self.active is slot:
                self.active = None
                self.activate(slot)


def release_memory(collect: bool = True) -> None:
    if collect:
        gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
