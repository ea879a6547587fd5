"""One memory policy for every model Easel holds: pipelines, VAEs, segmenters, upscalers, ControlNets, adapters.

`MemoryCache` keeps each loaded model as a `Held` entry: its kind, its name, its size in bytes (measured from its
tensors) and its tier, "device" (on the GPU, ready to run) or "ram" (in CPU memory, moved back when next used).
Two budgets bound the tiers (`Budgets`, from the user settings; `budgets_for` fills in the automatic ones). When a
model comes in or is used again, the least recently used others make room for it: demoted from the device to RAM,
dropped from RAM. Everything the running job has used is pinned (`job()`): never moved or dropped while it runs,
even over budget; a model that alone is larger than a budget still runs, and leaves when another one needs its
room. A count limit per kind (`count_limits`; how many checkpoints stay loaded) applies beside the bytes. Entries
can belong to another (`parent`: a VAE loaded for a checkpoint): they move and leave with it.

On a CPU-only machine both tiers are CPU memory: the bookkeeping (tiers, bytes, least-recently-used order, pins)
is the same and moving is a no-op. Importing this module imports no torch.

How a checkpoint runs on the GPU is `choose_offload`'s: "none" (all its weights on the device), "model" (each
model of the pipeline moves to the device when it runs: `--medvram`), "group" (the weights stay in RAM and go to
the device layer by layer, the next one copied on a CUDA stream while the current one runs) or "sequential"
(layer by layer without streams: `--lowvram`). "auto" decides from the free GPU memory and the model's bytes.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

Tier = Literal["device", "ram"]
Place = Callable[[Any, str], None]  # place(value, tier): move the model's tensors to the device or to the CPU
Measure = Callable[[Any], int]  # bytes of the model's tensors
EntryId = tuple[str, Hashable]  # (kind, key)

MIB = 1024 * 1024
AUTO_RAM_SHARE = 0.5  # of the machine's memory
AUTO_DEVICE_SHARE = 0.6  # of the GPU's memory (the rest is for activations)
AUTO_CPU_DEVICE_SHARE = 0.25  # of the machine's memory, when the "device" is the CPU as well


GIB = 1024 * MIB
OFFLOAD_MODES = ("none", "model", "sequential", "group")
OFFLOAD_CHOICES = ("auto", *OFFLOAD_MODES)  # the `offload_mode` setting and the --offload flag
MIN_ACTIVATION_BYTES = GIB  # room kept free for activations, at least ...
ACTIVATION_SHARE = 0.25  # ... or this share of the largest model of the pipeline (the denoiser)


@dataclass(frozen=True)
class OffloadChoice:
    """How one checkpoint runs on the device, and why (for the Models tab, the log and the infotext)."""

    mode: str  # one of OFFLOAD_MODES
    reason: str

    def describe(self) -> str:
        return f"{self.mode} ({self.reason})"


def human(size: int) -> str:
    return f"{size / GIB:.1f} GiB" if size >= GIB else f"{size / MIB:.0f} MiB"


def activation_bytes(largest_bytes: int) -> int:
    return max(MIN_ACTIVATION_BYTES, int(largest_bytes * ACTIVATION_SHARE))


def choose_offload(requested: str, free_bytes: int | None, model_bytes: int, largest_bytes: int,
                   streams: bool = True) -> OffloadChoice:
    """The offload mode for a checkpoint of `model_bytes` (its largest model, the denoiser, `largest_bytes`) with
    `free_bytes` of GPU memory free (None: no GPU). `requested` is "auto" or a mode (a flag or the setting).

    auto: "none" when all the weights and the room for activations fit; "model" when the largest model with that
    room fits (one model on the device at a time); else "group" (layer by layer, prefetched on a CUDA stream), or
    "sequential" without `streams`."""
    if requested not in OFFLOAD_CHOICES:
        raise ValueError(f"offload must be one of {', '.join(OFFLOAD_CHOICES)}, got {requested!r}")
    if free_bytes is None:
        return OffloadChoice("none", "no GPU")
    if requested != "auto":
        return OffloadChoice(requested, "as set")
    room = activation_bytes(largest_bytes)
    if model_bytes + room <= free_bytes:
        return OffloadChoice("none", f"{human(model_bytes)} of weights and {human(room)} for activations fit "
                                     f"{human(free_bytes)} free")
    if largest_bytes + room <= free_bytes:
        return OffloadChoice("model", f"{human(model_bytes)} of weights do not fit {human(free_bytes)} free; its "
                                      f"largest model ({human(largest_bytes)}) does, one model at a time")
    mode = "group" if streams else "sequential"
    return OffloadChoice(mode, f"its largest model ({human(largest_bytes)}) and {human(room)} for activations do "
                               f"not fit {human(free_bytes)} free: layer by layer"
                               + (" with CUDA streams" if streams else ""))


@dataclass(frozen=True)
class Budgets:
    """Bytes the models on the device and those in RAM may take."""

    device: int
    ram: int


def is_accelerator(device: str) -> bool:
    return str(device).split(":", 1)[0] == "cuda"


@functools.lru_cache(maxsize=1)
def total_ram() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


@functools.lru_cache(maxsize=8)
def device_memory(device: str) -> int | None:
    """The accelerator's memory in bytes; None for a CPU device."""
    if not is_accelerator(device):
        return None
    import torch

    index = torch.device(device).index
    return int(torch.cuda.get_device_properties(torch.cuda.current_device() if index is None else index).total_memory)


def budgets_for(device: str, ram_mb: int = 0, device_mb: int = 0) -> Budgets:
    """Budgets from the settings' MiB; 0 = automatic: RAM half of the machine's memory, the device 60% of the GPU's
    memory (a CPU "device" is RAM as well: a quarter of the machine's memory)."""
    ram = ram_mb * MIB if ram_mb > 0 else int(total_ram() * AUTO_RAM_SHARE)
    if device_mb > 0:
        return Budgets(device_mb * MIB, ram)
    total = device_memory(device)
    return Budgets(int(total * AUTO_DEVICE_SHARE) if total else int(total_ram() * AUTO_CPU_DEVICE_SHARE), ram)


def modules_in(value: Any) -> list[Any]:
    """The torch modules a loaded model is made of: itself, a pipeline's components, or a wrapper's `.model`."""
    import torch

    if isinstance(value, torch.nn.Module):
        return [value]
    components = getattr(value, "components", None)
    if isinstance(components, dict):
        return [m for m in components.values() if isinstance(m, torch.nn.Module)]
    inner = getattr(value, "model", None)
    return [inner] if isinstance(inner, torch.nn.Module) else []


def module_bytes(modules: Collection[Any]) -> int:
    """Bytes of the modules' parameters and buffers, each storage counted once (meta tensors hold none)."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.device.type == "meta":
                continue
            pointer = tensor.untyped_storage().data_ptr()
            if pointer in seen:
                continue
            seen.add(pointer)
            total += tensor.untyped_storage().nbytes()
    return total


def model_bytes(value: Any) -> int:
    return module_bytes(modules_in(value))


def module_placer(device: str) -> Place:
    """Move a model with `.to()` to `device` or to the CPU; nothing to move when the device is the CPU."""
    def place(value: Any, tier: str) -> None:
        if is_accelerator(device):
            value.to(device if tier == "device" else "cpu")

    return place


def process_memory(cuda: bool) -> dict[str, int]:
    """The process's resident memory, and CUDA's allocated and reserved bytes when `cuda`."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        rss = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    totals = {"process_rss_bytes": rss}
    if cuda:
        import torch

        if torch.cuda.is_available():
            totals |= {"cuda_allocated_bytes": int(torch.cuda.memory_allocated()),
                       "cuda_reserved_bytes": int(torch.cuda.memory_reserved())}
    return totals


@dataclass(eq=False)
class Held:
    """One model in memory."""

    kind: str  # "pipeline", "vae", "segmenter", "upscaler", "controlnet", ...
    key: Hashable  # what identifies it within its kind
    name: str  # for people
    value: Any
    bytes: int
    tier: Tier
    place: Place | None = None
    measure: Measure | None = None
    on_drop: Callable[[Any], None] | None = None
    parent: EntryId | None = None
    pinned: bool = False

    @property
    def id(self) -> EntryId:
        return (self.kind, self.key)


class MemoryCache:
    """Every loaded model, least recently used first, within a device budget and a RAM budget. Thread-safe."""

    def __init__(self, device: str = "cpu", budgets: Budgets | Callable[[], Budgets] | None = None,
                 count_limits: dict[str, int] | None = None) -> None:
        self.device = device
        self.budgets = budgets  # None: automatic for this machine
        self.count_limits = dict(count_limits or {})
        self.stats: dict[str, int] = {"loads": 0, "hits": 0, "promotions": 0, "demotions": 0, "evictions": 0}
        self._entries: OrderedDict[EntryId, Held] = OrderedDict()
        self._lock = threading.RLock()
        self._job_thread: int | None = None

    @property
    def device_is_accelerator(self) -> bool:
        return is_accelerator(self.device)

    def limits(self) -> Budgets:
        budgets = self.budgets
        if budgets is None:
            return budgets_for(self.device)
        return budgets() if callable(budgets) else budgets

    # ------------------------------------------------------------------------------------------ using
    def get(self, kind: str, key: Hashable) -> Any | None:
        """The model, marked most recently used (pinned while a job runs), on the device; None when not held."""
        with self._lock:
            held = self._entries.get((kind, key))
            if held is None:
                return None
            self.stats["hits"] += 1
            self._use(held)
            return held.value

    def add(self, kind: str, key: Hashable, value: Any, *, name: str, tier: Tier = "device",
            place: Place | None = None, measure: Measure | None = None, on_drop: Callable[[Any], None] | None = None,
            parent: EntryId | None = None) -> Held:
        """Hold a model that was just loaded, in `tier` (where its tensors are now), and use it: it goes to the
        device if it is not there, and older models make room. `place` moves it between tiers (default: `.to()`
        on an accelerator), `measure` counts its bytes (default: its modules' tensors). An entry with a `parent`
        follows it: same tier, never moved or dropped alone, dropped with it."""
        with self._lock:
            self._drop(self._entries.get((kind, key)))
            held = Held(kind, key, name, value, 0, tier, place or module_placer(self.device), measure, on_drop,
                        parent)
            if parent is not None:
                owner = self._entries.get(parent)
                if owner is None:
                    raise KeyError(f"{name}: its {parent[0]} {parent[1]!r} is not held")
                held.tier = owner.tier
            held.bytes = self._measure(held)
            self._entries[held.id] = held
            self.stats["loads"] += 1
            self._limit_count(kind, keep={held})
            self._use(held)
            return held

    def remeasure(self, kind: str, key: Hashable) -> int:
        """Measure a model again after it changed (LoRAs, embeddings added) and keep its tier within budget."""
        with self._lock:
            held = self._entries.get((kind, key))
            if held is None:
                return 0
            held.bytes = self._measure(held)
            root = self._root(held)
            self._make_room(root.tier, 0, keep={root})
            return held.bytes

    def make_room_for(self, kind: str, keep: Collection[Hashable] = ()) -> None:
        """Before loading one more model of `kind`: drop the least recently used of that kind while the count limit
        is reached (the keys in `keep` and pinned ones stay)."""
        with self._lock:
            kept = {self._entries[(kind, k)] for k in keep if (kind, k) in self._entries}
            self._limit_count(kind, keep=kept, incoming=1)

    def demote(self, kind: str, key: Hashable) -> bool:
        """Move a model (not pinned) from the device to RAM; False when it is not on the device."""
        with self._lock:
            held = self._entries.get((kind, key))
            if held is None or held.tier != "device" or held.pinned or held.parent is not None:
                return False
            self._demote(held)
            return True

    # ------------------------------------------------------------------------------------------ dropping
    def drop(self, kind: str, key: Hashable) -> bool:
        """Forget one model (and what belongs to it); False when it was not held."""
        with self._lock:
            held = self._entries.get((kind, key))
            self._drop(held)
        if held is not None:
            _release()
        return held is not None

    def clear(self, kind: str | None = None, where: Callable[[Hashable], bool] | None = None) -> int:
        """Forget every model (of `kind`, whose key `where` accepts); returns how many left."""
        with self._lock:
            victims = [h for h in self._entries.values() if (kind is None or h.kind == kind)
                       and (where is None or where(h.key)) and h.parent is None]
            for held in victims:
                self._drop(held)
        if victims:
            _release()
        return len(victims)

    # ------------------------------------------------------------------------------------------ jobs
    @contextmanager
    def job(self) -> Iterator[None]:
        """While the block runs, whatever this thread uses is pinned; afterwards the budgets hold again for the
        rest (what the job used stays until another model needs its room)."""
        with self._lock:
            self._job_thread = threading.get_ident()
        try:
            yield
        finally:
            with self._lock:
                self._job_thread = None
                used = {h for h in self._entries.values() if h.pinned}
                for held in used:
                    held.pinned = False
                self._make_room("device", 0, keep=used)
                self._make_room("ram", 0, keep=used)

    def release_pins(self) -> None:
        """Within a job: stop pinning what it has used so far (a script job moving on to its next checkpoint), so
        the budgets can make room from those models again; what it uses next is pinned as before."""
        with self._lock:
            for held in self._entries.values():
                held.pinned = False

    # ------------------------------------------------------------------------------------------ reading
    def find(self, kind: str, key: Hashable) -> Held | None:
        """The entry, without using it."""
        with self._lock:
            return self._entries.get((kind, key))

    def entries(self, kind: str | None = None) -> list[Held]:
        """Held models (of `kind`), least recently used first."""
        with self._lock:
            return [h for h in self._entries.values() if kind is None or h.kind == kind]

    def used(self, tier: Tier) -> int:
        with self._lock:
            return sum(h.bytes for h in self._entries.values() if h.tier == tier)

    def report(self) -> dict[str, Any]:
        """What is held, where, and the budgets (bytes), for /sdapi/v1/memory and the Models tab."""
        with self._lock:
            budgets = self.limits()
            held = [{"kind": h.kind, "name": h.name, "tier": h.tier, "bytes": h.bytes, "pinned": h.pinned,
                     "part_of": self._entries[h.parent].name if h.parent in self._entries else None}
                    for h in self._entries.values()]
            return {"held": held, "budgets": {"device": budgets.device, "ram": budgets.ram},
                    "tiers": {"device": self.used("device"), "ram": self.used("ram")},
                    "count_limits": dict(self.count_limits), "stats": dict(self.stats)}

    # ------------------------------------------------------------------------------------------ internals
    def _measure(self, held: Held) -> int:
        return int(held.measure(held.value) if held.measure is not None else model_bytes(held.value))

    def _root(self, held: Held) -> Held:
        return self._entries.get(held.parent, held) if held.parent is not None else held

    def _children(self, held: Held) -> list[Held]:
        return [h for h in self._entries.values() if h.parent == held.id]

    def _group_bytes(self, held: Held) -> int:
        return held.bytes + sum(child.bytes for child in self._children(held))

    def _use(self, held: Held) -> None:
        root = self._root(held)
        for entry in (root, *self._children(root)):
            self._entries.move_to_end(entry.id)
        if self._job_thread == threading.get_ident():
            root.pinned = held.pinned = True
        promote = root.tier == "ram"
        for entry in (root, *self._children(root)):  # counted on the device from now: RAM lets it go
            entry.tier = "device"
        self._make_room("device", 0, keep={root})  # the others leave first, then it moves in
        if promote:
            if root.place is not None:
                root.place(root.value, "device")
            self.stats["promotions"] += 1

    def _move(self, held: Held, tier: Tier) -> None:
        if held.tier != tier and held.place is not None:
            held.place(held.value, tier)
        for entry in (held, *self._children(held)):
            entry.tier = tier

    def _victim(self, tier: Tier | None, keep: Collection[Held], kind: str | None = None) -> Held | None:
        """The least recently used entry (in `tier`, of `kind`) that may leave."""
        return next((h for h in self._entries.values() if (tier is None or h.tier == tier) and h.parent is None
                     and not h.pinned and h not in keep and (kind is None or h.kind == kind)), None)

    def _make_room(self, tier: Tier, incoming: int, keep: Collection[Held]) -> None:
        """Demote (device) or drop (RAM) the least recently used until `incoming` more bytes fit the tier."""
        budget = getattr(self.limits(), tier)
        while self.used(tier) + incoming > budget:
            victim = self._victim(tier, keep)
            if victim is None:
                log.info("%s memory over budget: %d bytes held, %d incoming, budget %d (what is left is in use)",
                         tier, self.used(tier), incoming, budget)
                return
            if tier == "device":
                self._demote(victim)
            else:
                self._drop(victim)
                _release()

    def _demote(self, held: Held) -> None:
        size = self._group_bytes(held)
        self._make_room("ram", size, keep={held})
        if self.used("ram") + size > self.limits().ram:
            log.info("dropping %s %s: it does not fit the RAM budget", held.kind, held.name)
            self._drop(held)
            _release()
            return
        log.info("moving %s %s to RAM", held.kind, held.name)
        self._move(held, "ram")
        self.stats["demotions"] += 1
        _release(collect=False)

    def _limit_count(self, kind: str, keep: Collection[Held], incoming: int = 0) -> None:
        limit = self.count_limits.get(kind)
        if limit is None:
            return
        while sum(h.kind == kind for h in self._entries.values()) + incoming > limit:
            victim = self._victim(None, keep, kind)
            if victim is None:
                return
            self._drop(victim)
            _release()

    def _drop(self, held: Held | None) -> None:
        if held is None or held.id not in self._entries:
            return
        for child in self._children(held):
            self._drop(child)
        del self._entries[held.id]
        log.info("unloading %s %s", held.kind, held.name)
        self.stats["evictions"] += 1
        if held.on_drop is not None:
            held.on_drop(held.value)
        held.value = None


def _release(collect: bool = True) -> None:
    """The model manager's `release_memory` (garbage collection, CUDA cache), imported when first needed."""
    from webui.model_manager.cache import release_memory

    release_memory(collect)
