"""The model manager: hand the engine the right pipeline, and keep what is loaded in memory.

What exists on disk (listings, names, titles, hashes, lookups) is the catalogue's (webui.model_manager.catalogue,
`manager.catalogue`); the manager keeps the listing methods callers know as thin delegations to it.

`ModelManager.load(spec)` is the engine's one call: a `LoadSpec` (webui.model_manager.spec) says what a job needs
(checkpoint, mode, VAE, LoRAs, embeddings, sampler, adapters such as ControlNets) and the answer is the pipeline
ready to run, with what was applied. `get(checkpoint, mode, vae)` is its first step: it reconciles what is wanted
with what is loaded. Asking for the same thing twice does nothing the second time; another mode of the same
checkpoint is a `from_pipe` view of the same weights; a checkpoint held in RAM is moved to the device, never reread
from disk; a VAE from the VAE folders replaces the checkpoint's own and is undone when a later request asks for
"Automatic". The built-in model is one `EaselPipeline` for every mode. A checkpoint is hashed when it is first
loaded, so its title gains its hash then.

Everything loaded (checkpoints, their VAEs, segmenters, and through `memory` the engine's upscalers and the
extensions' ControlNets) is held by one `MemoryCache` (webui.model_manager.memory): byte budgets for the device
and for RAM, least recently used first out, the running job's models pinned.

LoRAs (`apply_loras`) are named adapters on the loaded denoiser (webui.model_manager.loras). Textual-inversion
embeddings (webui.model_manager.embeddings): `apply_embeddings` adds the ones a prompt names to the loaded
checkpoint's text encoder(s), once per checkpoint and file version.

Just over 500 lines: the listing delegations to the catalogue (about 40 lines) keep callers' names working; the
loading itself is in `load` and its helpers.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from webui.model_manager.cache import Offload, PipelinePlacement, Slot, slot_bytes, slot_report
from webui.model_manager.catalogue import Catalogue, CheckpointEntry, VaeEntry
from webui.model_manager.clip_tokenizer import load_clip_tokenizer
from webui.model_manager.embeddings import (EMBEDDING_ARCHS, AppliedEmbedding, EmbeddingEntry, EmbeddingError,
                                            EmbeddingState, add_embedding, check_fits, encoder_slots, encoder_widths,
                                            own_tokenizers, placeholder_tokens, read_vectors)
from webui.model_manager.errors import ModelLoadError, ModelNotFoundError
from webui.model_manager.formats import apply_storage, check_storage
from webui.model_manager.hashes import SHORT_HASH_LENGTH, HashCache
from webui.model_manager.identify import Arch, identify_file
from webui.model_manager.lora_files import LoraEntry, identify_lora, preview_image
from webui.model_manager.loading import MODES, LoadContext, load_checkpoint, load_vae, mode_pipelines
from webui.model_manager.loras import AppliedLora, LoraError, LoraOptions, LoraStack
from webui.model_manager.memory import Budgets, MemoryCache, process_memory
from webui.model_manager.segmenters import LoadedSegmenter, SegmenterEntry, hold_segmenter
from webui.model_manager.spec import AdapterSpec, LoadSpec, LoadSpecError

__all__ = ["Mode", "Catalogue", "CheckpointEntry", "VaeEntry", "LoraEntry", "LoadedPipeline", "ModelManager",
           "ModelNotFoundError", "ModelLoadError", "identify_lora", "SegmenterEntry", "LoadedSegmenter",
           "AppliedLora", "LoraError", "LoraOptions", "EmbeddingEntry", "AppliedEmbedding", "EmbeddingError",
           "LoadSpec", "AdapterSpec", "LoadSpecError", "MemoryCache", "Budgets"]

log = logging.getLogger(__name__)

Mode = Literal["txt2img", "img2img", "inpaint", "edit"]
AUTOMATIC_VAE = ("", "automatic", "none")
PIPELINE, VAE = "pipeline", "vae"  # kinds this manager holds in `memory` (and segmenters.SEGMENTER)
AdapterLoader = Callable[[AdapterSpec, "LoadedPipeline"], Any]
# (sampler name, family, base config, schedule type, flow shift) -> a fresh scheduler
SchedulerFactory = Callable[[str, Arch, Any, str, float], Any]


@dataclass
class LoadedPipeline:
    """What `get` and `load` hand the engine. `pipe` shares its weights with the other modes of the same
    checkpoint. From `load`, also what was applied for the spec: LoRAs, embeddings, adapter models by spec."""

    pipe: Any  # diffusers.DiffusionPipeline
    entry: CheckpointEntry
    arch: Arch
    mode: Mode
    loras: tuple[AppliedLora, ...] = ()
    embeddings: tuple[AppliedEmbedding, ...] = ()
    adapters: dict[AdapterSpec, Any] = dataclasses.field(default_factory=dict)


def _default_cache_dir(hash_cache_path: Path | None) -> Path:
    if hash_cache_path is not None:
        return Path(hash_cache_path).parent / "cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "easel"


class _OnCatalogue:
    """A manager attribute that is the catalogue's (its folders, its hash cache), read and set through it."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, manager: Any, owner: type | None = None) -> Any:
        return self if manager is None else getattr(manager.catalogue, self.name)

    def __set__(self, manager: Any, value: Any) -> None:
        setattr(manager.catalogue, self.name, value)


class ModelManager:
    """Loads and caches the models its catalogue lists. Thread-safe: the worker loads while the UI lists."""

    # The catalogue's folders and hash cache, readable and settable here as before.
    checkpoint_dirs = _OnCatalogue()
    diffusers_dirs = _OnCatalogue()
    vae_dirs = _OnCatalogue()
    lora_dirs = _OnCatalogue()
    builtin_dirs = _OnCatalogue()
    segmentation_dirs = _OnCatalogue()
    embedding_dirs = _OnCatalogue()
    hashes = _OnCatalogue()
    allow_hub = _OnCatalogue()  # --allow-hub-downloads: "org/repo" names may be fetched from the hub

    def __init__(self, *, checkpoint_dirs: list[Path], diffusers_dirs: list[Path], vae_dirs: list[Path],
                 lora_dirs: list[Path], builtin_dirs: list[Path], device: str = "cpu",
                 dtype: torch.dtype = torch.float32, ram_cache_size: int = 2,
                 offload: Offload | Callable[[], str] = "auto", hash_cache_path: Path | None = None,
                 cache_dir: Path | None = None, segmentation_dirs: list[Path] | None = None,
                 embedding_dirs: list[Path] | None = None, controlnet_dirs: list[Path] | None = None,
                 upscaler_dirs: list[Path] | None = None, allow_hub: bool = False,
                 memory_budgets: Budgets | Callable[[], Budgets] | None = None,
                 storage: str | Callable[[], str] = "",
                 text_encoder_dirs: list[Path] | None = None, gan_dirs: list[Path] | None = None) -> None:
        if not callable(storage):
            check_storage(storage, device)  # --precision nf4/int8 without CUDA: say so now, naming the option
        self.catalogue = Catalogue(
            checkpoint_dirs=checkpoint_dirs, diffusers_dirs=diffusers_dirs, vae_dirs=vae_dirs, lora_dirs=lora_dirs,
            builtin_dirs=builtin_dirs, segmentation_dirs=segmentation_dirs or [], embedding_dirs=embedding_dirs or [],
            controlnet_dirs=controlnet_dirs or [], upscaler_dirs=upscaler_dirs or [],
            text_encoder_dirs=text_encoder_dirs or [], hashes=HashCache(hash_cache_path), allow_hub=allow_hub,
            gan_dirs=gan_dirs or [])
        # --precision fp8 / nf4 / int8 or the weight_precision setting: how each transformer/UNet loaded next is stored
        self._storage: Callable[[], str] = storage if callable(storage) else (lambda: storage)
        self.device = device
        self.dtype = dtype
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir(hash_cache_path)
        self.stats: dict[str, int] = {"disk_loads": 0, "cache_hits": 0, "evictions": 0, "vae_loads": 0}
        if ram_cache_size < 1:
            raise ValueError(f"ram_cache_size must be at least 1, got {ram_cache_size}")
        # every loaded model; at most ram_cache_size checkpoints; budgets None = automatic for this machine
        self.memory = MemoryCache(device, memory_budgets, count_limits={PIPELINE: ram_cache_size})
        self._placement = PipelinePlacement(device, offload)
        self._active: Slot | None = None  # the checkpoint used last
        self._lock = threading.RLock()  # guards loading
        self._lora_stacks: weakref.WeakKeyDictionary[torch.nn.Module, LoraStack] = weakref.WeakKeyDictionary()
        # per checkpoint, keyed by its first text encoder: which embeddings it holds
        self._embedding_states: weakref.WeakKeyDictionary[torch.nn.Module, EmbeddingState] = weakref.WeakKeyDictionary()
        self.lora_options: Callable[[], LoraOptions] = LoraOptions  # app.build reads them from the user settings
        self._tokenizers: dict[str, Any] = {}

    # ================================================================================== the catalogue
    # What exists on disk; see webui.model_manager.catalogue for each method.
    def refresh(self) -> None:
        self.catalogue.refresh()

    def checkpoints(self) -> list[CheckpointEntry]:
        return self.catalogue.checkpoints()

    def _vae_files(self) -> list[Path]:
        return [v.path for v in self.catalogue.vaes() if v.kind == "file"]

    def missing_components(self, entry: CheckpointEntry) -> list[str]:
        return self.catalogue.missing_components(entry)

    def edit_checkpoints(self) -> list[CheckpointEntry]:
        return self.catalogue.edit_checkpoints()

    def find_checkpoint(self, query: str) -> CheckpointEntry:
        return self.catalogue.find_checkpoint(query)

    def compute_hash(self, query: str) -> CheckpointEntry:
        return self.catalogue.compute_hash(query)

    def vaes(self) -> list[VaeEntry]:
        return self.catalogue.vaes()

    def find_vae(self, query: str) -> VaeEntry:
        return self.catalogue.find_vae(query)

    def loras(self) -> list[LoraEntry]:
        return self.catalogue.loras()

    def refresh_loras(self) -> list[LoraEntry]:
        return self.catalogue.refresh_loras()

    def find_lora(self, query: str) -> LoraEntry:
        return self.catalogue.find_lora(query)

    def lora_preview(self, name: str) -> Any:
        """The LoRA's preview image (PIL), from the file beside it or its metadata thumbnail; None if it has none."""
        return preview_image(self.catalogue.find_lora(name))

    def embeddings(self) -> list[EmbeddingEntry]:
        return self.catalogue.embeddings()

    def refresh_embeddings(self) -> list[EmbeddingEntry]:
        return self.catalogue.refresh_embeddings()

    def embeddings_in(self, text: str) -> list[EmbeddingEntry]:
        return self.catalogue.embeddings_in(text)

    def segmenters(self) -> list[SegmenterEntry]:
        return self.catalogue.segmenters()

    def find_segmenter(self, query: str) -> SegmenterEntry | None:
        return self.catalogue.find_segmenter(query)

    # ================================================================================== LoRAs
    def apply_loras(self, loaded: LoadedPipeline, wanted: Sequence[tuple[str, float]]) -> list[AppliedLora]:
        """Make exactly these (name, weight) LoRAs active on the loaded checkpoint, in every mode; () = none.

        Loads only LoRAs not yet on the model, drops the ones no longer wanted, never reloads the base model.
        Raises ModelNotFoundError for an unknown name and LoraError for one that does not fit the model."""
        entries = [(self.catalogue.find_lora(name), float(weight)) for name, weight in wanted]
        with self._lock:
            slot = self._slot(loaded.entry.name)
            pipe = slot.base if slot is not None and hasattr(slot.base, "load_lora_weights") else loaded.pipe
            denoiser = _denoiser_of(pipe)
            if denoiser is None:
                if entries:
                    raise LoraError(f"{loaded.entry.name} takes no LoRAs")
                return []
            stack = self._lora_stacks.get(denoiser)
            if stack is None:
                if not entries:
                    return []
                if not hasattr(pipe, "load_lora_weights"):
                    raise LoraError(f"{loaded.entry.name} ({loaded.arch.value}) cannot load LoRAs")
                stack = self._lora_stacks.setdefault(denoiser, LoraStack())
            hashed = []
            for entry, weight in entries:
                short = self.catalogue.hash_lora(entry)  # hashed now if unknown: the listing shows it from here on
                if short is None:
                    raise LoraError(f"cannot read LoRA {entry.path}")
                hashed.append((entry, weight, short))
            stack.apply(pipe, loaded.arch, loaded.entry.name, hashed, self.lora_options())
            return [AppliedLora(entry.name, short, weight) for entry, weight, short in hashed]

    def lora_stack(self, loaded: LoadedPipeline) -> LoraStack | None:
        """The LoRA state of a loaded checkpoint (for tests and benchmarks), None before any LoRA was used."""
        denoiser = _denoiser_of(loaded.pipe)
        return self._lora_stacks.get(denoiser) if denoiser is not None else None

    # ================================================================================== embeddings
    def apply_embeddings(self, loaded: LoadedPipeline, entries: Sequence[EmbeddingEntry]) -> list[AppliedEmbedding]:
        """Add these embeddings to the loaded checkpoint's text encoder(s) where they are not yet (every mode of the
        checkpoint shares them) and return each with the placeholder tokens that stand for its name.

        Families without CLIP text encoders take none (an empty list). Raises EmbeddingError, naming the
        embedding and both widths, when one does not fit the model, or when its file cannot be read."""
        if not entries or loaded.arch not in EMBEDDING_ARCHS:
            return []
        widths = encoder_widths(loaded.pipe, loaded.arch)
        if not widths:
            return []
        for entry in entries:
            check_fits(entry, widths, loaded.arch, loaded.entry.name)
        applied = []
        with self._lock:
            slot = self._slot(loaded.entry.name)
            if slot is None or not any(p is loaded.pipe for p in slot.all_pipes()):
                slot = None
            pipes = slot.all_pipes() if slot is not None else [loaded.pipe]
            key = getattr(loaded.pipe, encoder_slots(loaded.pipe, loaded.arch)[0][1])
            state = self._embedding_states.get(key)
            for entry in entries:
                try:
                    sha = self.catalogue.hashes.sha256(entry.path)
                except OSError as exc:
                    raise EmbeddingError(f"cannot read embedding {entry.name!r} ({entry.path}): "
                                         f"{exc.strerror or exc}") from None
                tokens = state.tokens.get(sha) if state is not None else None
                if tokens is None:
                    vectors = read_vectors(entry)
                    if state is None:
                        own_tokenizers(pipes, loaded.arch)
                        state = self._embedding_states.setdefault(key, EmbeddingState())
                    tokens = placeholder_tokens(sha, entry.vectors)
                    with self._placement.hooks_lifted(slot, self._on_device(slot)):
                        add_embedding(pipes, loaded.arch, vectors, tokens)
                    state.tokens[sha] = tokens
                    log.info("embedding %s (%d vectors) added to %s", entry.name, entry.vectors, loaded.entry.name)
                applied.append(AppliedEmbedding(entry.name, sha[:SHORT_HASH_LENGTH], tokens))
        return applied

    def embedding_model(self) -> tuple[str, Arch, dict[int, int]] | None:
        """The active checkpoint's name, family and text-encoder widths (what an embedding must match, see
        `embeddings.encoder_widths`); None when no checkpoint is loaded."""
        with self._lock:
            slot = self._active
            if slot is None or slot.base is None:
                return None
            return slot.entry.name, slot.arch, encoder_widths(slot.base, slot.arch)

    # ================================================================================== segmenters
    def get_segmenter(self, name: str) -> LoadedSegmenter:
        """The loaded segmenter `name` (held by the memory policy like every model), loading it when needed."""
        entry = self.catalogue.find_segmenter(name)
        if entry is None:
            known = [e.name for e in self.catalogue.segmenters()]
            hint = f"; available: {', '.join(known)}" if known else "; put a CLIPSeg folder in models/clipseg"
            raise ModelNotFoundError(f"segmentation model {name!r} not found{hint}")
        with self._lock:
            segmenter, loaded_now = hold_segmenter(self.memory, entry, self.device, self.dtype)
            self.stats["disk_loads" if loaded_now else "cache_hits"] += 1
            return segmenter

    # ================================================================================== loading
    def get(self, checkpoint: str, mode: Mode, vae: str | None = None) -> LoadedPipeline:
        """The pipeline for (checkpoint, mode, VAE), loading or moving only what differs from now."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        entry = self.catalogue.find_checkpoint(checkpoint)
        with self._lock:
            slot = self._use(entry.name)
            if slot is not None and slot.storage_asked != self.storage:  # the precision setting changed since
                self.memory.drop(PIPELINE, entry.name)
                slot = None
            if slot is None:
                slot = self._load(entry)
            else:
                self.stats["cache_hits"] += 1
            self._apply_vae(slot, vae)
            return self._result(slot, mode)

    def load(self, spec: LoadSpec, make_scheduler: SchedulerFactory | None = None,
             adapter_loaders: Mapping[str, AdapterLoader] | None = None) -> LoadedPipeline:
        """The pipeline for everything `spec` asks for, ready to run: checkpoint in the mode with the VAE (`get`),
        exactly the spec's LoRAs active, its embeddings added, a fresh scheduler for its sampler (made by
        `make_scheduler`, the Easel's samplers), its adapters loaded by their kind's loader in `adapter_loaders`
        (kind -> `load(spec, loaded)`, the Easel's registry: ControlNet declares one). The same spec twice loads,
        moves and changes nothing the second time.

        Raises LoadSpecError for a LoRA or an embedding that cannot be used, ModelNotFoundError / ModelLoadError
        for the checkpoint or VAE, ValueError for an unknown sampler or adapter kind."""
        if spec.sampler and make_scheduler is None:
            raise ValueError(f"sampler: {spec.sampler!r} asked for, but no scheduler factory was given")
        loaded = self.get(spec.checkpoint, spec.mode, spec.vae)  # type: ignore[arg-type]
        with self._lock:
            try:
                loras = self.apply_loras(loaded, spec.loras)
            except (ModelNotFoundError, LoraError) as exc:
                raise LoadSpecError("loras", "", str(exc)) from None
            embeddings = self._spec_embeddings(loaded, spec.embeddings)
            slot = self._slot(loaded.entry.name)
            state = (tuple((lo.name, lo.weight) for lo in loras), tuple(e.name for e in embeddings))
            if slot is not None and slot.measured_for != state:  # LoRA layers and embedding rows take memory
                slot.measured_for = state
                self.memory.remeasure(PIPELINE, slot.name)
            adapters = {adapter: self._load_adapter(adapter, loaded, adapter_loaders or {})
                        for adapter in spec.adapters}
            if spec.sampler and make_scheduler is not None and hasattr(loaded.pipe, "scheduler"):
                # a fresh one per job: schedulers keep per-run state (unCLIP's three have their own names)
                loaded.pipe.scheduler = make_scheduler(spec.sampler, loaded.arch, loaded.pipe.scheduler.config,
                                                       spec.schedule, spec.shift)
        return dataclasses.replace(loaded, loras=tuple(loras), embeddings=tuple(embeddings), adapters=adapters)

    def _spec_embeddings(self, loaded: LoadedPipeline, names: Sequence[str]) -> list[AppliedEmbedding]:
        by_name = {entry.name: entry for entry in self.catalogue.embeddings()} if names else {}
        applied = []
        for name in names:
            if name not in by_name:
                raise LoadSpecError("embeddings", name, f"embedding {name!r} is not installed (any more); refresh")
            try:
                applied += self.apply_embeddings(loaded, [by_name[name]])
            except EmbeddingError as exc:
                raise LoadSpecError("embeddings", name, str(exc)) from None
        return applied

    @staticmethod
    def _load_adapter(adapter: AdapterSpec, loaded: LoadedPipeline, loaders: Mapping[str, AdapterLoader]) -> Any:
        loader = loaders.get(adapter.kind)
        if loader is None:
            known = ", ".join(sorted(loaders)) or "none"
            raise ValueError(f"adapters: no loader for {adapter.kind!r} adapters (known: {known})")
        return loader(adapter, loaded)

    def _load(self, entry: CheckpointEntry) -> Slot:
        if not entry.supported:
            raise ModelLoadError(f"cannot load {entry.path}: {entry.reason}")
        if entry.kind == "file" and entry.arch != Arch.GAN:  # a GAN file is checked as it is read (loading.load_gan)
            ident = identify_file(entry.path)  # the file may have changed since the scan
            if not ident.supported:
                raise ModelLoadError(f"cannot load {entry.path}: {ident.reason}")
        self.memory.make_room_for(PIPELINE, keep=[self._active.name] if self._active is not None else [])
        log.info("loading %s (%s)", entry.name, entry.path)
        storage = self.storage
        try:
            check_storage(storage, self.device, "the weight precision setting")
        except ValueError as exc:
            raise ModelLoadError(f"cannot load {entry.name}: {exc}") from None
        loaded = load_checkpoint(entry, LoadContext(dtype=self.dtype, clip_tokenizer=self._clip_tokenizer,
                                                    family_folders=self.catalogue.family_folders,
                                                    allow_hub=self.allow_hub, storage=storage,
                                                    components=self.catalogue.components,
                                                    vae_files=self._vae_files,
                                                    text_encoder_dirs=self.catalogue.text_encoder_dirs))
        apply_storage(loaded.pipe, storage, self.dtype)
        self.stats["disk_loads"] += 1
        entry = self.catalogue.with_hash(entry)
        arch = loaded.arch if entry.arch == Arch.UNKNOWN else entry.arch
        if entry.kind == "hub":
            entry = dataclasses.replace(entry, arch=arch)
        if hasattr(loaded.pipe, "set_progress_bar_config"):
            loaded.pipe.set_progress_bar_config(disable=True)
        pipes, unavailable = mode_pipelines(loaded.pipe, arch, entry.variant)
        for pipe in pipes.values():
            if hasattr(pipe, "set_progress_bar_config"):
                pipe.set_progress_bar_config(disable=True)
        slot = Slot(name=entry.name, entry=entry, arch=arch, base=loaded.pipe, pipes=pipes,
                    unavailable=unavailable, config_source=loaded.config_source,
                    own_vae=getattr(loaded.pipe, "vae", None), storage_asked=storage)
        self._demote_others(slot.name)
        self.memory.add(PIPELINE, slot.name, slot, name=entry.name, tier="ram", place=self._placement.place,
                        measure=slot_bytes, on_drop=self._dropped)
        self._active = slot
        return slot

    @property
    def storage(self) -> str:
        """How the next transformer/UNet loaded is stored: "fp8", "nf4", "int8" or "" (the compute dtype)."""
        return self._storage()

    def _slot(self, name: str) -> Slot | None:
        """The held slot, without using it."""
        held = self.memory.find(PIPELINE, name)
        return held.value if held is not None else None

    def _on_device(self, slot: Slot | None) -> bool:
        held = self.memory.find(PIPELINE, slot.name) if slot is not None else None
        return held is not None and held.tier == "device"

    def _use(self, name: str) -> Slot | None:
        """The held slot, now the active one and on the device (pinned while a job runs); None when not held."""
        if self.memory.find(PIPELINE, name) is None:
            return None
        self._demote_others(name)
        slot = self.memory.get(PIPELINE, name)
        self._active = slot
        return slot

    def _demote_others(self, name: str) -> None:
        """With CPU offload, one checkpoint at a time has its hooks on the device (their memory use is not its
        weights' size): the others go back to RAM first."""
        requested = self._placement.offload
        if requested != "none":
            for held in self.memory.entries(PIPELINE):
                if held.key != name and (requested != "auto" or held.value.offloaded):
                    self.memory.demote(PIPELINE, held.key)

    def _dropped(self, slot: Slot) -> None:
        """The memory policy let a checkpoint go: forget every reference to its weights."""
        if self._active is slot:
            self._active = None
        slot.pipes.clear()
        slot.results.clear()
        slot.base = slot.own_vae = None
        self.stats["evictions"] += 1

    def _clip_tokenizer(self, pad_token: str) -> Any:
        if pad_token not in self._tokenizers:
            self._tokenizers[pad_token] = load_clip_tokenizer(self.cache_dir, pad_token)
        return self._tokenizers[pad_token]

    def _result(self, slot: Slot, mode: Mode) -> LoadedPipeline:
        entry: CheckpointEntry = slot.entry
        if mode in slot.unavailable or mode not in slot.pipes:
            reason = slot.unavailable.get(mode, f"no {mode} pipeline")
            raise ModelLoadError(f"{entry.name} cannot run {mode}: {reason}")
        found = slot.results.get(mode)
        if found is None:
            found = LoadedPipeline(pipe=slot.pipes[mode], entry=entry, arch=slot.arch, mode=mode)
            slot.results[mode] = found
        return found

    def _apply_vae(self, slot: Slot, vae: str | None) -> None:
        wanted = None if vae is None or vae.strip().lower() in AUTOMATIC_VAE else vae.strip()
        if wanted is not None:
            wanted = self.catalogue.find_vae(wanted).name
        if wanted == slot.vae_name:
            return
        if slot.own_vae is None:
            log.warning("VAE %r ignored: %s has no VAE", wanted, slot.name)
            return
        if wanted is None:
            module = slot.own_vae
        else:
            entry = self.catalogue.find_vae(wanted)
            module = load_vae(entry.path, slot.own_vae, slot.config_source, self.dtype)
            self.stats["vae_loads"] += 1
            log.info("using VAE %s for %s", entry.name, slot.name)
        previous, previous_name = slot.base.vae, slot.vae_name
        for pipe in slot.all_pipes():
            pipe.vae = module
        slot.vae_name = wanted
        if previous_name is not None:  # the VAE that was in use is no longer referenced
            self.memory.drop(VAE, (slot.name, previous_name))
        if wanted is not None:
            self.memory.add(VAE, (slot.name, wanted), module, name=wanted, parent=(PIPELINE, slot.name))
        self._placement.place_module(slot, module, self._on_device(slot))
        if previous is slot.own_vae and self._placement.device_is_accelerator and self._placement.mode(slot) == "none":
            previous.to("cpu")  # kept in RAM for when "Automatic" is asked for again

    # ================================================================================== state
    def current(self) -> CheckpointEntry | None:
        with self._lock:
            active = self._active
            return active.entry if active is not None else None

    def unload(self, name: str | None = None) -> None:
        """Drop one checkpoint (by any name `find_checkpoint` accepts) or, with None, every model of every kind."""
        with self._lock:
            if name is None:
                self.memory.clear()
            else:
                key = name if self.memory.find(PIPELINE, name) else self.catalogue.find_checkpoint(name).name
                self.memory.drop(PIPELINE, key)

    def loaded_names(self) -> list[str]:
        """Cached checkpoints, least recently used first."""
        return [str(held.key) for held in self.memory.entries(PIPELINE)]

    def offload_choice(self, name: str | None = None) -> str | None:
        """How the checkpoint `name` (None: the active one) runs on the device, as "mode (why)": "none (no GPU)"
        on a CPU device; None when it is not loaded."""
        with self._lock:
            slot = self._active if name is None else self._slot(name)
            if slot is None:
                return None
            choice = slot.offload or self._placement.decide(slot)
            return choice.describe()

    def memory_report(self) -> dict[str, Any]:
        """Loaded checkpoints with their parameter bytes (where their tensors are: RAM vs device), every held model
        with its kind, tier and bytes ("held"), the budgets, plus process and CUDA totals."""
        with self._lock:
            models = [slot_report(held.value, held.tier, held.bytes, held.value is self._active)
                      for held in self.memory.entries(PIPELINE)]
            return {"device": self.device, "dtype": str(self.dtype).removeprefix("torch."),
                    "offload": self._placement.offload, "offload_active": self.offload_choice() or (
                        None if self._placement.device_is_accelerator else "none (no GPU)"),
                    "ram_cache_size": self.memory.count_limits[PIPELINE],
                    "loaded": models, "ram_bytes": sum(m["ram_bytes"] for m in models),
                    "device_bytes": sum(m["device_bytes"] for m in models), **self.memory.report(),
                    **process_memory(self._placement.device_is_accelerator)}


# ====================================================================================== helpers
def _denoiser_of(pipe: Any) -> torch.nn.Module | None:
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    return None
