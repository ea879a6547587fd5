"""The model manager: scan model folders, identify what is there, and hand the engine the right pipeline.

`ModelManager.get(checkpoint, mode, vae)` reconciles what is wanted with what is loaded. Asking for the same
thing twice does nothing the second time; another mode of the same checkpoint is a `from_pipe` view of the same
weights; a checkpoint in the RAM cache is moved to the device, never reread from disk; a VAE from the VAE folders
replaces the checkpoint's own and is undone when a later request asks for "Automatic". The built-in model
(folders in `builtin_dirs`) is always listed first and is one `EaselPipeline` for every mode.

Names follow AUTOMATIC1111: a checkpoint's `name` is its path relative to the folder it was found in, without
extension, with "/" separators; its `title` is "name [shorthash]" once the hash is known. Hashes are computed
when a checkpoint is loaded (or on request with `compute_hash`) and remembered on disk, so until a file has
been loaded once its title is just its name.

Textual-inversion embeddings (webui.model_manager.embeddings) are listed from `embedding_dirs`; `apply_embeddings`
adds the ones a prompt names to the loaded checkpoint's text encoder(s), once per checkpoint and file version.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from webui.model_manager.cache import Offload, PipelineCache, Slot, release_memory, tensor_bytes
from webui.model_manager.clip_tokenizer import load_clip_tokenizer
from webui.model_manager.embeddings import (EMBEDDING_ARCHS, AppliedEmbedding, EmbeddingEntry, EmbeddingError,
                                            EmbeddingState, add_embedding, check_fits, encoder_slots, encoder_widths,
                                            names_in, own_tokenizers, placeholder_tokens, read_vectors,
                                            scan_embeddings, word_pattern)
from webui.model_manager.errors import ModelLoadError, ModelNotFoundError
from webui.model_manager.hashes import SHORT_HASH_LENGTH, HashCache
from webui.model_manager.identify import (PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, Arch, Identification,
                                          identify_file, identify_folder)
from webui.model_manager.loras import (HASH_AT_SCAN_LIMIT, LORA_SUFFIXES, AppliedLora, LoraEntry, LoraError,
                                       LoraOptions, LoraStack, describe_lora, lora_arch, preview_image,
                                       read_lora_header)
from webui.model_manager.loading import (MODES, LoadContext, Loaded, load_builtin, load_folder, load_hub,
                                         load_single_file, load_vae, mode_pipelines)
from webui.model_manager.segmenters import LoadedSegmenter, SegmenterEntry, load_segmenter, scan_segmenters

__all__ = ["Mode", "CheckpointEntry", "VaeEntry", "LoraEntry", "LoadedPipeline", "ModelManager",
           "ModelNotFoundError", "ModelLoadError", "identify_lora", "SegmenterEntry", "LoadedSegmenter",
           "AppliedLora", "LoraError", "LoraOptions", "EmbeddingEntry", "AppliedEmbedding", "EmbeddingError"]

log = logging.getLogger(__name__)

Mode = Literal["txt2img", "img2img", "inpaint", "edit"]
Kind = Literal["file", "folder", "hub"]
AUTOMATIC_VAE = ("", "automatic", "none")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TITLE_WITH_HASH = re.compile(r"^(?P<name>.*?)\s*\[(?P<hash>[0-9a-fA-F]{8,64})\]$")
_HEX = re.compile(r"^[0-9a-fA-F]{8,64}$")


@dataclass(frozen=True)
class CheckpointEntry:
    """One listed checkpoint. `kind` "hub" is a repository id that is only loadable online."""

    name: str
    title: str
    path: Path
    kind: Kind
    arch: Arch
    supported: bool
    reason: str
    short_hash: str | None
    variant: str = ""
    builtin: bool = False


@dataclass(frozen=True)
class VaeEntry:
    name: str
    path: Path
    kind: Literal["file", "folder"] = "file"


@dataclass
class LoadedPipeline:
    """What `get` hands the engine. `pipe` shares its weights with the other modes of the same checkpoint."""

    pipe: Any  # diffusers.DiffusionPipeline
    entry: CheckpointEntry
    arch: Arch
    mode: Mode


def _title(name: str, short_hash: str | None) -> str:
    return f"{name} [{short_hash}]" if short_hash else name


def _relative_name(path: Path, root: Path, strip_suffix: bool) -> str:
    relative = path.relative_to(root)
    if strip_suffix:
        relative = relative.with_suffix("")
    return relative.as_posix()


def _default_cache_dir(hash_cache_path: Path | None) -> Path:
    if hash_cache_path is not None:
        return Path(hash_cache_path).parent / "cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "easel"


class ModelManager:
    """Lists, identifies, loads and caches models. Thread-safe: the worker loads while the UI lists."""

    def __init__(self, *, checkpoint_dirs: list[Path], diffusers_dirs: list[Path], vae_dirs: list[Path],
                 lora_dirs: list[Path], builtin_dirs: list[Path], device: str = "cpu",
                 dtype: torch.dtype = torch.float32, ram_cache_size: int = 2,
                 offload: Offload = "none", hash_cache_path: Path | None = None,
                 cache_dir: Path | None = None, segmentation_dirs: list[Path] | None = None,
                 embedding_dirs: list[Path] | None = None, allow_hub: bool = False) -> None:
        if offload not in ("none", "model", "sequential"):
            raise ValueError(f"offload must be 'none', 'model' or 'sequential', got {offload!r}")
        self.checkpoint_dirs = [Path(p) for p in checkpoint_dirs]
        self.diffusers_dirs = [Path(p) for p in diffusers_dirs]
        self.vae_dirs = [Path(p) for p in vae_dirs]
        self.lora_dirs = [Path(p) for p in lora_dirs]
        self.builtin_dirs = [Path(p) for p in builtin_dirs]
        self.segmentation_dirs = [Path(p) for p in segmentation_dirs or []]
        self.embedding_dirs = [Path(p) for p in embedding_dirs or []]
        self.device = device
        self.dtype = dtype
        self.allow_hub = allow_hub  # --allow-hub-downloads: "org/repo" names may be fetched from the hub
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir(hash_cache_path)
        self.hashes = HashCache(hash_cache_path)
        self.stats: dict[str, int] = {"disk_loads": 0, "cache_hits": 0, "evictions": 0, "vae_loads": 0}
        self._cache = PipelineCache(ram_cache_size, device, offload)
        self._lock = threading.RLock()  # guards the cache and loading
        self._scan_lock = threading.Lock()  # guards the listings
        self._checkpoints: dict[str, CheckpointEntry] = {}
        self._folders: list[tuple[Path, Identification]] = []
        self._vaes: list[VaeEntry] = []
        self._loras: list[LoraEntry] = []
        self._segmenters: list[SegmenterEntry] = []
        self._segmenter: LoadedSegmenter | None = None  # at most one loaded; they are small and rarely swapped
        self._lora_stacks: weakref.WeakKeyDictionary[torch.nn.Module, LoraStack] = weakref.WeakKeyDictionary()
        self._embeddings: list[EmbeddingEntry] = []
        self._embedding_pattern: re.Pattern[str] | None = None
        self._embeddings_by_name: dict[str, EmbeddingEntry] = {}
        # per checkpoint, keyed by its first text encoder: which embeddings it holds
        self._embedding_states: weakref.WeakKeyDictionary[torch.nn.Module, EmbeddingState] = weakref.WeakKeyDictionary()
        self.lora_options: Callable[[], LoraOptions] = LoraOptions  # app.build reads them from the user settings
        self._idents: dict[tuple[Any, ...], Identification] = {}
        self._tokenizers: dict[str, Any] = {}
        self._scanned = False

    # ================================================================================== scanning
    def refresh(self) -> None:
        """Rescan every folder (identification is remembered per file size and mtime)."""
        builtin = self._scan_builtin()
        folders = self._scan_folders(self.diffusers_dirs)
        files = self._scan_files()
        entries: dict[str, CheckpointEntry] = {}
        for entry in [*builtin, *folders, *files]:
            kept = entries.get(entry.name)
            if kept is not None and (kept.supported or not entry.supported):
                log.warning("two checkpoints named %r: using %s, ignoring %s", entry.name, kept.path, entry.path)
                continue
            if kept is not None:  # a .safetensors beside the pickle checkpoint it was converted from
                log.info("two checkpoints named %r: using %s, not the pickle %s", entry.name, entry.path, kept.path)
            entries[entry.name] = entry
        vaes = self._scan_vaes()
        loras = self._scan_loras()
        segmenters = scan_segmenters(self.segmentation_dirs)
        embeddings = scan_embeddings(self.embedding_dirs)
        with self._scan_lock:
            self._checkpoints = entries
            self._folders = [(e.path, self._identify(e.path, folder=True)) for e in folders]
            self._vaes, self._loras = vaes, loras
            self._segmenters = segmenters
            self._set_embeddings(embeddings)
            self._scanned = True

    def _ensure_scanned(self) -> None:
        if not self._scanned:
            self.refresh()

    def _identify(self, path: Path, folder: bool) -> Identification:
        try:
            stat = (path / "model_index.json").stat() if folder else path.stat()
            key: tuple[Any, ...] = (str(path), stat.st_size, stat.st_mtime_ns)
            if folder:  # converting a component's weights changes its folder, not model_index.json
                key += tuple(sorted((p.name, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_dir()))
        except OSError as exc:
            return Identification(Arch.UNKNOWN, f"cannot read: {exc.strerror or exc}")
        found = self._idents.get(key)
        if found is None:
            found = identify_folder(path) if folder else identify_file(path)
            self._idents[key] = found
        return found

    def _entry(self, name: str, path: Path, kind: Kind, ident: Identification, builtin: bool = False
               ) -> CheckpointEntry:
        short = self.hashes.cached_short_hash(path)
        return CheckpointEntry(name=name, title=_title(name, short), path=path, kind=kind, arch=ident.arch,
                               supported=ident.supported, reason=ident.reason, short_hash=short,
                               variant=ident.variant, builtin=builtin)

    def _scan_builtin(self) -> list[CheckpointEntry]:
        entries = []
        for root in self.builtin_dirs:
            for folder in _model_folders(root):
                ident = self._identify(folder, folder=True)
                if ident.arch != Arch.EASEL:
                    log.warning("ignoring %s in the built-in folder: not an EaselPipeline (%s)", folder, ident.reason)
                    continue
                name = folder.name if folder == root else _relative_name(folder, root, False)
                entries.append(self._entry(name, folder, "folder", ident, builtin=True))
        return entries

    def _scan_folders(self, roots: list[Path]) -> list[CheckpointEntry]:
        entries = []
        for root in roots:
            for folder in sorted(_model_folders(root)):
                if folder == root:
                    continue
                ident = self._identify(folder, folder=True)
                entries.append(self._entry(_relative_name(folder, root, False), folder, "folder", ident))
        return entries

    def _scan_files(self) -> list[CheckpointEntry]:
        entries = []
        suffixes = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES
        for root in self.checkpoint_dirs:
            for path in sorted(_files(root, suffixes)):
                ident = self._identify(path, folder=False)
                entries.append(self._entry(_relative_name(path, root, True), path, "file", ident))
        return entries

    def _scan_vaes(self) -> list[VaeEntry]:
        found: dict[str, VaeEntry] = {}
        for root in self.vae_dirs:
            folders = sorted(_vae_folders(root))
            for folder in folders:
                name = _relative_name(folder, root, False)
                found.setdefault(name, VaeEntry(name, folder, "folder"))
            for path in sorted(_files(root, SAFETENSORS_SUFFIXES)):
                if any(folder in path.parents for folder in folders):
                    continue  # the weights of a VAE folder listed above
                name = _relative_name(path, root, True)
                found.setdefault(name, VaeEntry(name, path))
        return sorted(found.values(), key=lambda v: v.name.lower())

    def _scan_loras(self) -> list[LoraEntry]:
        found: dict[str, LoraEntry] = {}
        for root in self.lora_dirs:
            for path in sorted(_files(root, LORA_SUFFIXES)):
                name = _relative_name(path, root, True)
                if name in found:
                    log.warning("two LoRAs named %r: using %s, ignoring %s", name, found[name].path, path)
                    continue
                found[name] = describe_lora(name, path, self._lora_hash(path, compute=False))
        return sorted(found.values(), key=lambda v: v.name.lower())

    def _lora_hash(self, path: Path, compute: bool) -> str | None:
        """The LoRA's short hash: remembered, else computed when asked or when the file is small enough."""
        cached = self.hashes.cached_lora_short_hash(path)
        if cached is not None:
            return cached
        try:
            if compute or path.stat().st_size <= HASH_AT_SCAN_LIMIT:
                return self.hashes.lora_short_hash(path)
        except (OSError, ValueError) as exc:
            log.warning("cannot hash LoRA %s: %s", path, exc)
        return None

    # ================================================================================== listings
    def checkpoints(self) -> list[CheckpointEntry]:
        """Built-in model(s) first, then the rest by name; unsupported ones are included with their reason."""
        self._ensure_scanned()
        with self._scan_lock:
            entries = list(self._checkpoints.values())
        builtin = [e for e in entries if e.builtin]
        rest = sorted((e for e in entries if not e.builtin), key=lambda e: (e.name.lower(), e.name))
        return builtin + rest

    def vaes(self) -> list[VaeEntry]:
        self._ensure_scanned()
        with self._scan_lock:
            return list(self._vaes)

    def loras(self) -> list[LoraEntry]:
        self._ensure_scanned()
        with self._scan_lock:
            return list(self._loras)

    def refresh_loras(self) -> list[LoraEntry]:
        """Rescan only the LoRA folders."""
        loras = self._scan_loras()
        with self._scan_lock:
            self._loras = loras
        return loras

    def find_lora(self, query: str) -> LoraEntry:
        """A LoRA by the name `<lora:name:w>` uses (case as listed, else any case), file name or alias.
        Raises ModelNotFoundError listing close names."""
        text = (query or "").strip()
        loras = self.loras()
        for test in (lambda e: e.name == text, lambda e: e.name.lower() == text.lower(),
                     lambda e: text in (e.path.name, e.path.stem, str(e.path)), lambda e: e.alias == text):
            for entry in loras:
                if test(entry):
                    return entry
        names = [e.name for e in loras]
        close = difflib.get_close_matches(text, names, n=5, cutoff=0.4)
        hint = f"; close names: {', '.join(close)}" if close else (
            f"; available: {', '.join(names[:10])}" if names else "; the LoRA folders (models/Lora) are empty")
        raise ModelNotFoundError(f"LoRA {text!r} not found{hint}")

    def lora_preview(self, name: str) -> Any:
        """The LoRA's preview image (PIL), from the file beside it or its metadata thumbnail; None if it has none."""
        return preview_image(self.find_lora(name))

    def apply_loras(self, loaded: LoadedPipeline, wanted: Sequence[tuple[str, float]]) -> list[AppliedLora]:
        """Make exactly these (name, weight) LoRAs active on the loaded checkpoint, in every mode; () = none.

        Loads only LoRAs not yet on the model, drops the ones no longer wanted, never reloads the base model.
        Raises ModelNotFoundError for an unknown name and LoraError for one that does not fit the model."""
        entries = [(self.find_lora(name), float(weight)) for name, weight in wanted]
        with self._lock:
            slot = self._cache.get(loaded.entry.name)
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
                short = self._lora_hash(entry.path, compute=True)
                if short is None:
                    raise LoraError(f"cannot read LoRA {entry.path}")
                hashed.append((entry, weight, short))
                if entry.short_hash != short:  # hashed just now: the listing shows it from here on
                    self._remember_lora_hash(entry, short)
            stack.apply(pipe, loaded.arch, loaded.entry.name, hashed, self.lora_options())
            return [AppliedLora(entry.name, short, weight) for entry, weight, short in hashed]

    def _remember_lora_hash(self, entry: LoraEntry, short: str) -> None:
        with self._scan_lock:
            self._loras = [dataclasses.replace(e, short_hash=short) if e == entry else e for e in self._loras]

    def lora_stack(self, loaded: LoadedPipeline) -> LoraStack | None:
        """The LoRA state of a loaded checkpoint (for tests and benchmarks), None before any LoRA was used."""
        denoiser = _denoiser_of(loaded.pipe)
        return self._lora_stacks.get(denoiser) if denoiser is not None else None

    # ================================================================================== embeddings
    def _set_embeddings(self, entries: list[EmbeddingEntry]) -> None:  # under _scan_lock
        self._embeddings = entries
        usable = [e for e in entries if e.usable]
        self._embedding_pattern = word_pattern(e.name for e in usable)
        self._embeddings_by_name = {}
        for entry in usable:
            self._embeddings_by_name.setdefault(entry.name.lower(), entry)

    def embeddings(self) -> list[EmbeddingEntry]:
        """Every file in the embeddings folders, usable or not (with the reason), by name."""
        self._ensure_scanned()
        with self._scan_lock:
            return list(self._embeddings)

    def refresh_embeddings(self) -> list[EmbeddingEntry]:
        """Rescan only the embeddings folders."""
        entries = scan_embeddings(self.embedding_dirs)
        with self._scan_lock:
            self._set_embeddings(entries)
        return entries

    def embeddings_in(self, text: str) -> list[EmbeddingEntry]:
        """The usable embeddings whose names stand as words in `text` (any case), in order of first appearance."""
        self._ensure_scanned()
        with self._scan_lock:
            pattern, by_name = self._embedding_pattern, self._embeddings_by_name
        return [by_name[name] for name in names_in(text, pattern)]

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
            slot = self._cache.get(loaded.entry.name)
            if slot is None or not any(p is loaded.pipe for p in slot.all_pipes()):
                slot = None
            pipes = slot.all_pipes() if slot is not None else [loaded.pipe]
            key = getattr(loaded.pipe, encoder_slots(loaded.pipe, loaded.arch)[0][1])
            state = self._embedding_states.get(key)
            for entry in entries:
                try:
                    sha = self.hashes.sha256(entry.path)
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
                    with self._cache.hooks_lifted(slot):
                        add_embedding(pipes, loaded.arch, vectors, tokens)
                    state.tokens[sha] = tokens
                    log.info("embedding %s (%d vectors) added to %s", entry.name, entry.vectors, loaded.entry.name)
                applied.append(AppliedEmbedding(entry.name, sha[:SHORT_HASH_LENGTH], tokens))
        return applied

    def embedding_model(self) -> tuple[str, Arch, dict[int, int]] | None:
        """The active checkpoint's name, family and text-encoder widths (what an embedding must match, see
        `embeddings.encoder_widths`); None when no checkpoint is loaded."""
        with self._lock:
            slot = self._cache.active
            if slot is None or slot.base is None:
                return None
            return slot.entry.name, slot.arch, encoder_widths(slot.base, slot.arch)

    def edit_checkpoints(self) -> list[CheckpointEntry]:
        """Checkpoints that run the "edit" mode: the built-in model and instruction-editing pipelines."""
        return [e for e in self.checkpoints() if e.supported and (e.arch == Arch.EASEL or e.variant == "edit")]

    def segmenters(self) -> list[SegmenterEntry]:
        """Text-prompted segmenters (CLIPSeg, SAM 3) found in the segmentation folders."""
        self._ensure_scanned()
        with self._scan_lock:
            return list(self._segmenters)

    def find_segmenter(self, query: str) -> SegmenterEntry | None:
        """A segmenter by name, picker label ("name (CLIPSeg)") or folder path; None when nothing matches."""
        text = (query or "").strip()
        if not text:
            return None
        for entry in self.segmenters():
            if text in (entry.name, entry.label, entry.path.name, str(entry.path)):
                return entry
        return None

    def get_segmenter(self, name: str) -> LoadedSegmenter:
        """The loaded segmenter `name`, loading it (and dropping the one loaded before) when needed."""
        entry = self.find_segmenter(name)
        if entry is None:
            known = [e.name for e in self.segmenters()]
            hint = f"; available: {', '.join(known)}" if known else "; put a CLIPSeg folder in models/clipseg"
            raise ModelNotFoundError(f"segmentation model {name!r} not found{hint}")
        with self._lock:
            if self._segmenter is not None and self._segmenter.entry == entry:
                self.stats["cache_hits"] += 1
                return self._segmenter
            self._segmenter = None
            release_memory()
            log.info("loading segmenter %s (%s)", entry.name, entry.path)
            self._segmenter = load_segmenter(entry, self.device, self.dtype)
            self.stats["disk_loads"] += 1
            return self._segmenter

    def find_checkpoint(self, query: str) -> CheckpointEntry:
        """By name, title ("name [hash]"), short or full hash, file name, or path; an "org/repo" id that
        matches nothing local is returned as a hub entry when hub downloads are allowed (`allow_hub`). Raises
        ModelNotFoundError listing close names."""
        self._ensure_scanned()
        text = (query or "").strip()
        if not text:
            raise ModelNotFoundError("checkpoint: no name given")
        entries = self.checkpoints()
        found = self._match(text, entries)
        if found is not None:
            return found
        names = [e.name for e in entries]
        typo_of = difflib.get_close_matches(text, names, n=5, cutoff=0.8)
        hub_id = _HUB_ID.match(text) and not typo_of and not Path(text).exists()
        if hub_id and self.allow_hub:
            return CheckpointEntry(name=text, title=text, path=Path(text), kind="hub", arch=Arch.UNKNOWN,
                                   supported=True, reason="Hugging Face repository id (needs a connection once)",
                                   short_hash=None)
        close = typo_of or difflib.get_close_matches(text, names, n=5, cutoff=0.4)
        hint = f"; close names: {', '.join(close)}" if close else (
            f"; available: {', '.join(names[:10])}" if names else "; no checkpoints are installed")
        if hub_id:
            hint += ("; Hugging Face repository ids are downloaded only when Easel is started with "
                     "--allow-hub-downloads")
        raise ModelNotFoundError(f"checkpoint {text!r} not found{hint}")

    def _match(self, text: str, entries: list[CheckpointEntry]) -> CheckpointEntry | None:
        for test in (lambda e: e.name == text, lambda e: e.title == text):
            for entry in entries:
                if test(entry):
                    return entry
        titled = _TITLE_WITH_HASH.match(text)
        if titled:
            by_hash = self._match_hash(titled.group("hash"), entries)
            return by_hash or self._match(titled.group("name"), entries)
        if _HEX.match(text):
            by_hash = self._match_hash(text, entries)
            if by_hash is not None:
                return by_hash
        lowered = text.lower()
        for entry in entries:
            names = {entry.path.name, entry.path.stem, entry.name + entry.path.suffix, str(entry.path)}
            if text in names or entry.name.lower() == lowered:
                return entry
        return None

    def _match_hash(self, digest: str, entries: list[CheckpointEntry]) -> CheckpointEntry | None:
        digest = digest.lower()
        for entry in entries:
            if entry.kind == "hub":
                continue
            full = self.hashes.cached_sha256(entry.path)
            if full and full.startswith(digest) and len(digest) >= 8:
                return entry
        return None

    def find_vae(self, query: str) -> VaeEntry:
        vaes = self.vaes()
        for vae in vaes:
            if query in (vae.name, vae.path.name, vae.path.stem, str(vae.path)):
                return vae
        close = difflib.get_close_matches(query, [v.name for v in vaes], n=5, cutoff=0.4)
        hint = f"; close names: {', '.join(close)}" if close else (
            f"; available: {', '.join(v.name for v in vaes[:10])}" if vaes else "; the VAE folders are empty")
        raise ModelNotFoundError(f"VAE {query!r} not found{hint}")

    def compute_hash(self, query: str) -> CheckpointEntry:
        """Hash a checkpoint now (normally done when it is first loaded); returns the updated entry."""
        entry = self.find_checkpoint(query)
        return self._with_hash(entry)

    def _with_hash(self, entry: CheckpointEntry) -> CheckpointEntry:
        if entry.kind == "hub" or entry.short_hash:
            return entry
        try:
            short = self.hashes.short_hash(entry.path)
        except OSError as exc:
            log.warning("cannot hash %s: %s", entry.path, exc)
            return entry
        updated = dataclasses.replace(entry, short_hash=short, title=_title(entry.name, short))
        with self._scan_lock:
            if self._checkpoints.get(entry.name) == entry:
                self._checkpoints[entry.name] = updated
        return updated

    # ================================================================================== loading
    def get(self, checkpoint: str, mode: Mode, vae: str | None = None) -> LoadedPipeline:
        """The pipeline for (checkpoint, mode, VAE), loading or moving only what differs from now."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        entry = self.find_checkpoint(checkpoint)
        with self._lock:
            slot = self._cache.get(entry.name)
            if slot is None:
                slot = self._load(entry)
            else:
                self.stats["cache_hits"] += 1
            self._cache.activate(slot)
            self._apply_vae(slot, vae)
            return self._result(slot, mode)

    def _load(self, entry: CheckpointEntry) -> Slot:
        if not entry.supported:
            raise ModelLoadError(f"cannot load {entry.path}: {entry.reason}")
        if entry.kind == "file":
            ident = identify_file(entry.path)  # the file may have changed since the scan
            if not ident.supported:
                raise ModelLoadError(f"cannot load {entry.path}: {ident.reason}")
        self._cache.make_room(1)
        self.stats["evictions"] = self._cache.evictions
        log.info("loading %s (%s)", entry.name, entry.path)
        loaded = self._load_pipeline(entry)
        self.stats["disk_loads"] += 1
        entry = self._with_hash(entry)
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
                    own_vae=getattr(loaded.pipe, "vae", None))
        self._cache.add(slot)
        self.stats["evictions"] = self._cache.evictions
        return slot

    def _load_pipeline(self, entry: CheckpointEntry) -> Loaded:
        context = LoadContext(dtype=self.dtype, clip_tokenizer=self._clip_tokenizer,
                              family_folders=self._family_folders, allow_hub=self.allow_hub)
        if entry.kind == "hub":
            return load_hub(entry.name, context)
        if entry.kind == "folder":
            if not (entry.path / "model_index.json").is_file():
                raise ModelLoadError(f"cannot load {entry.path}: the folder is gone or has no model_index.json")
            if entry.builtin or entry.arch == Arch.EASEL:
                return load_builtin(entry.path, context)
            return load_folder(entry.path, identify_folder(entry.path), context)
        return load_single_file(entry.path, identify_file(entry.path), context)

    def _clip_tokenizer(self, pad_token: str) -> Any:
        if pad_token not in self._tokenizers:
            self._tokenizers[pad_token] = load_clip_tokenizer(self.cache_dir, pad_token)
        return self._tokenizers[pad_token]

    def _family_folders(self, arch: Arch) -> list[Path]:
        self._ensure_scanned()
        with self._scan_lock:
            return [path for path, ident in self._folders if ident.arch == arch and ident.supported]

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
            wanted = self.find_vae(wanted).name
        if wanted == slot.vae_name:
            return
        if slot.own_vae is None:
            log.warning("VAE %r ignored: %s has no VAE", wanted, slot.name)
            return
        if wanted is None:
            module = slot.own_vae
        else:
            entry = self.find_vae(wanted)
            module = load_vae(entry.path, slot.own_vae, slot.config_source, self.dtype)
            self.stats["vae_loads"] += 1
            log.info("using VAE %s for %s", entry.name, slot.name)
        previous = slot.base.vae
        for pipe in slot.all_pipes():
            pipe.vae = module
        slot.vae_name = wanted
        self._cache.place_module(slot, module)
        if previous is slot.own_vae and self._cache.device_is_accelerator and self._cache.offload == "none":
            previous.to("cpu")  # kept in RAM for when "Automatic" is asked for again
        elif previous is not slot.own_vae:
            previous = None  # the override VAE that was in use is no longer referenced
            release_memory()

    # ================================================================================== state
    def current(self) -> CheckpointEntry | None:
        with self._lock:
            active = self._cache.active
            return active.entry if active is not None else None

    def unload(self, name: str | None = None) -> None:
        """Drop one checkpoint (by any name `find_checkpoint` accepts) or, with None, everything."""
        with self._lock:
            if name is None:
                self._cache.clear()
                self._segmenter = None
            else:
                key = name if name in self._cache else self.find_checkpoint(name).name
                self._cache.evict(key)
            self.stats["evictions"] = self._cache.evictions

    def loaded_names(self) -> list[str]:
        """Cached checkpoints, least recently used first."""
        with self._lock:
            return [slot.name for slot in self._cache]

    def memory_report(self) -> dict[str, Any]:
        """Loaded models with their parameter bytes (RAM vs device), plus process and CUDA totals."""
        with self._lock:
            models = []
            ram = device_bytes = 0
            for slot in self._cache:
                by_device = tensor_bytes(slot.all_pipes())
                on_cpu = by_device.get("cpu", 0) + by_device.get("meta", 0)
                elsewhere = sum(v for k, v in by_device.items() if k not in ("cpu", "meta"))
                ram += on_cpu
                device_bytes += elsewhere
                entry: CheckpointEntry = slot.entry
                models.append({"name": entry.name, "title": entry.title, "arch": slot.arch.value,
                               "active": slot is self._cache.active, "vae": slot.vae_name or "Automatic",
                               "modes": sorted(m for m in slot.pipes if m not in slot.unavailable),
                               "ram_bytes": on_cpu, "device_bytes": elsewhere})
            report: dict[str, Any] = {
                "device": self.device, "dtype": str(self.dtype).removeprefix("torch."),
                "offload": self._cache.offload, "ram_cache_size": self._cache.capacity, "loaded": models,
                "ram_bytes": ram, "device_bytes": device_bytes, "process_rss_bytes": _rss_bytes(),
            }
            if torch.cuda.is_available() and self._cache.device_is_accelerator:
                report["cuda_allocated_bytes"] = int(torch.cuda.memory_allocated())
                report["cuda_reserved_bytes"] = int(torch.cuda.memory_reserved())
            return report


# ====================================================================================== helpers
def _files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files under `root` with these suffixes, skipping hidden entries and `<stem>.config/` folders."""
    if not root.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not d.endswith(".config")
                       and not (Path(dirpath) / d / "model_index.json").is_file()]
        for filename in filenames:
            if not filename.startswith(".") and filename.lower().endswith(suffixes):
                found.append(Path(dirpath) / filename)
    return found


def _model_folders(root: Path) -> list[Path]:
    """Folders under `root` (or `root` itself) holding a model_index.json, not descending into them."""
    if not root.is_dir():
        return []
    if (root / "model_index.json").is_file():
        return [root]
    found = []
    for dirpath, dirnames, _ in os.walk(root, followlinks=True):
        keep = []
        for d in dirnames:
            if d.startswith("."):
                continue
            if (Path(dirpath) / d / "model_index.json").is_file():
                found.append(Path(dirpath) / d)
            else:
                keep.append(d)
        dirnames[:] = keep
    return found


def _vae_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [p.parent for p in root.rglob("config.json")
            if '"AutoencoderKL' in p.read_text(encoding="utf-8", errors="replace")[:2000]]


def _denoiser_of(pipe: Any) -> torch.nn.Module | None:
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    return None


def identify_lora(path: Path) -> Arch:
    """Best-effort family of a LoRA file from its metadata and key names."""
    try:
        shapes, metadata = read_lora_header(path)
    except (ValueError, OSError):
        return Arch.UNKNOWN
    return lora_arch(shapes, metadata)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024

