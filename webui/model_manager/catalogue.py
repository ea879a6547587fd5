"""The model catalogue: what exists on disk, and how to find it by the names people and clients use.

`Catalogue` scans the model folders (single-file checkpoints, diffusers pipeline folders, the built-in model,
VAEs, LoRAs, textual-inversion embeddings, segmenters, ControlNet models and upscalers), tells what each file is
from its header alone (webui.model_manager.identify), knows the hashes remembered for it (hashes.py), and finds
an entry by name, title ("name [shorthash]"), short or full hash, file name or path, raising ModelNotFoundError
that names the kind of model and lists close names. It loads no weights and imports no torch, diffusers,
transformers or gradio, so listings cost no more than reading headers. What is loaded, and where, is the model
manager's business (manager.py), which holds one catalogue as `manager.catalogue`.

Names follow AUTOMATIC1111: a checkpoint's `name` is its path relative to the folder it was found in, without
extension, with "/" separators; its `title` is "name [shorthash]" once the hash is known. Checkpoint hashes are
computed when a checkpoint is loaded (or on request with `compute_hash`) and remembered on disk, so until a file
has been loaded once its title is just its name; small LoRAs are hashed while listing, big ones when first used.
The built-in model (folders in `builtin_dirs`) is always listed first. Listings change only on `refresh()` (or
`refresh_loras()` / `refresh_embeddings()`); identification is remembered per file size and mtime, so a rescan
reads only the headers of new or changed files. Safe to share between threads: the UI lists while the worker
loads.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from webui.model_manager.components import ComponentFile, family_needs, scan_components, tokenizer_needs
from webui.model_manager.embeddings import EmbeddingEntry, names_in, scan_embeddings, word_pattern
from webui.model_manager.errors import ModelNotFoundError
from webui.model_manager.folders import (ModelFile, model_files, pipeline_folders, relative_name, scan_controlnets,
                                         scan_upscalers, vae_folders)
from webui.model_manager.gguf_files import GGUF_SUFFIXES
from webui.model_manager.hashes import HashCache
from webui.model_manager.identify import (PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, Arch, Identification,
                                          identify_file, identify_folder)
from webui.model_manager.lora_files import HASH_AT_SCAN_LIMIT, LORA_SUFFIXES, LoraEntry, describe_lora
from webui.model_manager.segmenters import SegmenterEntry, scan_segmenters

__all__ = ["Catalogue", "CheckpointEntry", "VaeEntry", "LoraEntry", "EmbeddingEntry", "SegmenterEntry", "ModelFile",
           "ModelNotFoundError", "title_of"]

log = logging.getLogger(__name__)

Kind = Literal["file", "folder", "hub"]
_TRANSFORMER_ARCHS = (Arch.SD3, Arch.FLUX, Arch.ZIMAGE, Arch.QWEN)  # their single files hold the transformer only
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
    storage: str = ""  # "GGUF Q8_0", "fp8 e4m3fn", ... ("" = float weights)
    denoiser_only: bool = False  # a transformer/UNet alone: text encoders and VAE come from elsewhere


@dataclass(frozen=True)
class VaeEntry:
    name: str
    path: Path
    kind: Literal["file", "folder"] = "file"


def title_of(name: str, short_hash: str | None) -> str:
    """AUTOMATIC1111's checkpoint title: "name [shorthash]", or the name while the hash is unknown."""
    return f"{name} [{short_hash}]" if short_hash else name


def _close_names_hint(text: str, names: list[str], empty: str) -> str:
    close = difflib.get_close_matches(text, names, n=5, cutoff=0.4)
    return f"; close names: {', '.join(close)}" if close else (
        f"; available: {', '.join(names[:10])}" if names else empty)


class Catalogue:
    """The models in some folders: listings, lookups and remembered hashes. Loads nothing."""

    def __init__(self, *, checkpoint_dirs: Sequence[Path] = (), diffusers_dirs: Sequence[Path] = (),
                 vae_dirs: Sequence[Path] = (), lora_dirs: Sequence[Path] = (), builtin_dirs: Sequence[Path] = (),
                 embedding_dirs: Sequence[Path] = (), segmentation_dirs: Sequence[Path] = (),
                 controlnet_dirs: Sequence[Path] = (), upscaler_dirs: Sequence[Path] = (),
                 text_encoder_dirs: Sequence[Path] = (), hashes: HashCache | None = None,
                 allow_hub: bool = False, gan_dirs: Sequence[Path] = ()) -> None:
        self.allow_hub = allow_hub  # --allow-hub-downloads: "org/repo" names may be fetched from the hub
        self.checkpoint_dirs = [Path(p) for p in checkpoint_dirs]
        self.diffusers_dirs = [Path(p) for p in diffusers_dirs]
        self.vae_dirs = [Path(p) for p in vae_dirs]
        self.lora_dirs = [Path(p) for p in lora_dirs]
        self.builtin_dirs = [Path(p) for p in builtin_dirs]
        self.embedding_dirs = [Path(p) for p in embedding_dirs]
        self.segmentation_dirs = [Path(p) for p in segmentation_dirs]
        self.controlnet_dirs = [Path(p) for p in controlnet_dirs]
        self.upscaler_dirs = [Path(p) for p in upscaler_dirs]
        self.text_encoder_dirs = [Path(p) for p in text_encoder_dirs]
        self.gan_dirs = [Path(p) for p in gan_dirs]  # StyleGAN generators (models/GAN)
        self.hashes = hashes if hashes is not None else HashCache(None)
        self._lock = threading.Lock()  # guards the listings below
        self._checkpoints: dict[str, CheckpointEntry] = {}
        self._folders: list[tuple[Path, Identification]] = []
        self._vaes: list[VaeEntry] = []
        self._loras: list[LoraEntry] = []
        self._embeddings: list[EmbeddingEntry] = []
        self._embedding_pattern: re.Pattern[str] | None = None
        self._embeddings_by_name: dict[str, EmbeddingEntry] = {}
        self._segmenters: list[SegmenterEntry] = []
        self._controlnets: list[ModelFile] = []
        self._upscalers: list[ModelFile] = []
        self._idents: dict[tuple[Any, ...], Identification] = {}
        self._scanned = False

    # ================================================================================== scanning
    def refresh(self) -> None:
        """Rescan every folder (identification is remembered per file size and mtime)."""
        builtin = self._scan_builtin()
        folders = self._scan_folders(self.diffusers_dirs)
        files = self._scan_files()
        gans = self._scan_gans()
        entries: dict[str, CheckpointEntry] = {}
        for entry in [*builtin, *folders, *files, *gans]:
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
        controlnets = scan_controlnets(self.controlnet_dirs)
        upscalers = scan_upscalers(self.upscaler_dirs)
        with self._lock:
            self._checkpoints = entries
            self._folders = [(e.path, self._identify(e.path, folder=True)) for e in folders]
            self._vaes, self._loras = vaes, loras
            self._segmenters = segmenters
            self._set_embeddings(embeddings)
            self._controlnets, self._upscalers = controlnets, upscalers
            self._scanned = True

    def refresh_loras(self) -> list[LoraEntry]:
        """Rescan only the LoRA folders."""
        loras = self._scan_loras()
        with self._lock:
            self._loras = loras
        return loras

    def refresh_embeddings(self) -> list[EmbeddingEntry]:
        """Rescan only the embeddings folders."""
        entries = scan_embeddings(self.embedding_dirs)
        with self._lock:
            self._set_embeddings(entries)
        return entries

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
        return CheckpointEntry(name=name, title=title_of(name, short), path=path, kind=kind, arch=ident.arch,
                               supported=ident.supported, reason=ident.reason, short_hash=short,
                               variant=ident.variant, builtin=builtin, storage=ident.storage,
                               denoiser_only=ident.denoiser_only
                               or (kind == "file" and ident.arch in _TRANSFORMER_ARCHS))

    def _scan_builtin(self) -> list[CheckpointEntry]:
        entries = []
        for root in self.builtin_dirs:
            for folder in pipeline_folders(root):
                ident = self._identify(folder, folder=True)
                if ident.arch != Arch.EASEL:
                    log.warning("ignoring %s in the built-in folder: not an EaselPipeline (%s)", folder, ident.reason)
                    continue
                name = folder.name if folder == root else relative_name(folder, root, False)
                entries.append(self._entry(name, folder, "folder", ident, builtin=True))
        return entries

    def _scan_folders(self, roots: list[Path]) -> list[CheckpointEntry]:
        entries = []
        for root in roots:
            for folder in sorted(pipeline_folders(root)):
                if folder == root:
                    continue
                ident = self._identify(folder, folder=True)
                entries.append(self._entry(relative_name(folder, root, False), folder, "folder", ident))
        return entries

    def _scan_files(self) -> list[CheckpointEntry]:
        entries = []
        suffixes = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES + GGUF_SUFFIXES
        for root in self.checkpoint_dirs:
            for path in sorted(model_files(root, suffixes)):
                ident = self._identify(path, folder=False)
                entries.append(self._entry(relative_name(path, root, True), path, "file", ident))
        return entries

    def _scan_gans(self) -> list[CheckpointEntry]:
        """StyleGAN generator files (safetensors, tensors-only pickles) in the GAN folders."""
        from webui.gan.build import GAN_SUFFIXES

        entries = []
        for root in self.gan_dirs:
            for path in sorted(model_files(root, GAN_SUFFIXES)):
                entries.append(self._entry(relative_name(path, root, True), path, "file", self._identify_gan(path)))
        return entries

    def _identify_gan(self, path: Path) -> Identification:
        """What a file in a GAN folder is (webui.gan.build.describe), remembered per file size and mtime."""
        from webui.gan.build import GeneratorFileError, describe

        try:
            stat = path.stat()
        except OSError as exc:
            return Identification(Arch.UNKNOWN, f"cannot read: {exc.strerror or exc}")
        key = ("gan", str(path), stat.st_size, stat.st_mtime_ns)
        found = self._idents.get(key)
        if found is None:
            try:
                info = describe(path)
                found = Identification(Arch.GAN, info.label, info.variant, True, "nvlabs")
            except GeneratorFileError as exc:
                found = Identification(Arch.GAN, str(exc), "", False)
            self._idents[key] = found
        return found

    def _scan_vaes(self) -> list[VaeEntry]:
        found: dict[str, VaeEntry] = {}
        for root in self.vae_dirs:
            folders = sorted(vae_folders(root))
            for folder in folders:
                name = relative_name(folder, root, False)
                found.setdefault(name, VaeEntry(name, folder, "folder"))
            for path in sorted(model_files(root, SAFETENSORS_SUFFIXES)):
                if any(folder in path.parents for folder in folders):
                    continue  # the weights of a VAE folder listed above
                name = relative_name(path, root, True)
                found.setdefault(name, VaeEntry(name, path))
        return sorted(found.values(), key=lambda v: v.name.lower())

    def _scan_loras(self) -> list[LoraEntry]:
        found: dict[str, LoraEntry] = {}
        for root in self.lora_dirs:
            for path in sorted(model_files(root, LORA_SUFFIXES)):
                name = relative_name(path, root, True)
                if name in found:
                    log.warning("two LoRAs named %r: using %s, ignoring %s", name, found[name].path, path)
                    continue
                found[name] = describe_lora(name, path, self._lora_hash(path, compute=False))
        return sorted(found.values(), key=lambda v: v.name.lower())

    def _set_embeddings(self, entries: list[EmbeddingEntry]) -> None:  # under _lock
        self._embeddings = entries
        usable = [e for e in entries if e.usable]
        self._embedding_pattern = word_pattern(e.name for e in usable)
        self._embeddings_by_name = {}
        for entry in usable:
            self._embeddings_by_name.setdefault(entry.name.lower(), entry)

    # ================================================================================== listings
    def _snapshot(self, attribute: str) -> list[Any]:
        """A copy of one of the scanned lists (named by its attribute), scanning first when nothing was scanned
        yet (a scan replaces the lists, so they are looked up after it)."""
        self._ensure_scanned()
        with self._lock:
            return list(getattr(self, attribute))

    def checkpoints(self) -> list[CheckpointEntry]:
        """Built-in model(s) first, then the rest by name; unsupported ones are included with their reason."""
        self._ensure_scanned()
        with self._lock:
            entries = list(self._checkpoints.values())
        builtin = [e for e in entries if e.builtin]
        rest = sorted((e for e in entries if not e.builtin), key=lambda e: (e.name.lower(), e.name))
        return builtin + rest

    def edit_checkpoints(self) -> list[CheckpointEntry]:
        """Checkpoints that run the "edit" mode: the built-in model and instruction-editing pipelines."""
        return [e for e in self.checkpoints() if e.supported and (e.arch == Arch.EASEL or e.variant == "edit")]

    def vaes(self) -> list[VaeEntry]:
        """VAE files and diffusers VAE folders, by name."""
        return self._snapshot("_vaes")

    def loras(self) -> list[LoraEntry]:
        """LoRA files, by name (any case)."""
        return self._snapshot("_loras")

    def embeddings(self) -> list[EmbeddingEntry]:
        """Every file in the embeddings folders, usable or not (with the reason), by name."""
        return self._snapshot("_embeddings")

    def embeddings_in(self, text: str) -> list[EmbeddingEntry]:
        """The usable embeddings whose names stand as words in `text` (any case), in order of first appearance."""
        self._ensure_scanned()
        with self._lock:
            pattern, by_name = self._embedding_pattern, self._embeddings_by_name
        return [by_name[name] for name in names_in(text, pattern)]

    def segmenters(self) -> list[SegmenterEntry]:
        """Text-prompted segmenters (CLIPSeg, SAM 3) found in the segmentation folders."""
        return self._snapshot("_segmenters")

    def controlnets(self) -> list[ModelFile]:
        """ControlNet files and folders, by name (any case)."""
        return self._snapshot("_controlnets")

    def upscalers(self) -> list[ModelFile]:
        """Upscaler (ESRGAN-family) model files, by name (any case)."""
        return self._snapshot("_upscalers")

    def components(self) -> list[ComponentFile]:
        """Separate text encoder files (models/text_encoders, models/clip), identified from their headers."""
        return scan_components(self.text_encoder_dirs)

    def missing_components(self, entry: CheckpointEntry) -> list[str]:
        """What a transformer/UNet-only checkpoint still lacks on disk, one sentence each (empty when complete
        or when a diffusers folder of its family supplies the rest)."""
        if entry.kind != "file" or not entry.supported or not entry.denoiser_only:
            return []
        sidecar = entry.path.with_name(entry.path.stem + ".config")
        if self.family_folders(entry.arch) or any(sidecar.glob("text_encoder*/*.safetensors")):
            return []  # a diffusers folder, or a complete one beside the file, supplies the rest
        needs = family_needs(entry.arch, self.components(), [v.path for v in self.vaes() if v.kind == "file"],
                             sidecar if sidecar.is_dir() else None)
        return needs + tokenizer_needs(entry.arch, [*self.text_encoder_dirs, sidecar])

    def family_folders(self, arch: Arch) -> list[Path]:
        """Supported diffusers folders of one family (where a single file's missing components can come from)."""
        self._ensure_scanned()
        with self._lock:
            return [path for path, ident in self._folders if ident.arch == arch and ident.supported]

    # ================================================================================== lookups
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
        """By name, file name, stem or path. Raises ModelNotFoundError listing close names."""
        vaes = self.vaes()
        for vae in vaes:
            if query in (vae.name, vae.path.name, vae.path.stem, str(vae.path)):
                return vae
        hint = _close_names_hint(query, [v.name for v in vaes], "; the VAE folders are empty")
        raise ModelNotFoundError(f"VAE {query!r} not found{hint}")

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
        hint = _close_names_hint(text, [e.name for e in loras], "; the LoRA folders (models/Lora) are empty")
        raise ModelNotFoundError(f"LoRA {text!r} not found{hint}")

    def find_segmenter(self, query: str) -> SegmenterEntry | None:
        """A segmenter by name, picker label ("name (CLIPSeg)") or folder path; None when nothing matches."""
        text = (query or "").strip()
        if not text:
            return None
        for entry in self.segmenters():
            if text in (entry.name, entry.label, entry.path.name, str(entry.path)):
                return entry
        return None

    # ================================================================================== hashes
    def compute_hash(self, query: str) -> CheckpointEntry:
        """Hash a checkpoint now (normally done when it is first loaded); returns the updated entry."""
        return self.with_hash(self.find_checkpoint(query))

    def with_hash(self, entry: CheckpointEntry) -> CheckpointEntry:
        """`entry` with its short hash (computed if unknown); the listing shows it from here on."""
        if entry.kind == "hub" or entry.short_hash:
            return entry
        try:
            short = self.hashes.short_hash(entry.path)
        except OSError as exc:
            log.warning("cannot hash %s: %s", entry.path, exc)
            return entry
        updated = dataclasses.replace(entry, short_hash=short, title=title_of(entry.name, short))
        with self._lock:
            if self._checkpoints.get(entry.name) == entry:
                self._checkpoints[entry.name] = updated
        return updated

    def hash_lora(self, entry: LoraEntry) -> str | None:
        """The LoRA's short hash, computed now if unknown (None when the file cannot be read); the listing shows
        it from here on."""
        short = self._lora_hash(entry.path, compute=True)
        if short is not None and entry.short_hash != short:
            with self._lock:
                self._loras = [dataclasses.replace(e, short_hash=short) if e == entry else e for e in self._loras]
        return short

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
