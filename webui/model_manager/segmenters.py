"""Text-prompted segmentation models (CLIPSeg, SAM 3): find them in the model folders and load them, offline.

A segmenter is a transformers folder (`config.json` + weights + the processor's files, as `save_pretrained`
writes them) under one of the segmentation folders, `models/clipseg/` or `models/segmentation/` by default. Its
`config.json` says what it is: `"model_type": "clipseg"` (CLIPSeg, e.g. a download of CIDAS/clipseg-rd64-refined)
or `"sam3"` (SAM 3, e.g. facebook/sam3). Folders are not descended into once they hold a model. Loading returns the
model and its processor; running them is the engine's job (`webui.engine.clipseg`).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from webui.model_manager.errors import ModelLoadError
from webui.model_manager.weights import pickle_folder_reason, pickle_weights_in

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SEGMENTER = "segmenter"  # their kind in the memory cache

SegmenterKind = Literal["clipseg", "sam3"]
KIND_LABELS: dict[str, str] = {"clipseg": "CLIPSeg", "sam3": "SAM 3"}
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class SegmenterEntry:
    """One listed segmenter. `label` is how pickers show it: "name (CLIPSeg)"."""

    name: str
    path: Path
    kind: SegmenterKind

    @property
    def label(self) -> str:
        return f"{self.name} ({KIND_LABELS[self.kind]})"


@dataclass
class LoadedSegmenter:
    entry: SegmenterEntry
    model: Any  # transformers PreTrainedModel, in eval mode, on the manager's device
    processor: Any  # the matching transformers processor
    device: str


def segmenter_kind(folder: Path) -> SegmenterKind | None:
    """The kind of a transformers folder from its config.json, or None when it is not a segmenter Easel runs."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type in ("clipseg", "sam3"):
        return model_type
    return None


def scan_segmenters(roots: list[Path]) -> list[SegmenterEntry]:
    """Segmenter folders under `roots` (each root may itself be one), sorted by name; first root wins a name."""
    found: dict[str, SegmenterEntry] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for folder in _candidate_folders(root):
            kind = segmenter_kind(folder)
            if kind is None:
                continue
            if not any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir()):
                log.warning("ignoring %s: a %s config without weights", folder, KIND_LABELS[kind])
                continue
            name = folder.name if folder == root else folder.relative_to(root).as_posix()
            if name in found:
                log.warning("two segmenters named %r: using %s, ignoring %s", name, found[name].path, folder)
                continue
            found[name] = SegmenterEntry(name, folder, kind)
    return sorted(found.values(), key=lambda e: e.name.lower())


def _candidate_folders(root: Path) -> list[Path]:
    if (root / "config.json").is_file():
        return [root]
    folders = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        if "config.json" in filenames and Path(dirpath) != root:
            folders.append(Path(dirpath))
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return folders


def load_segmenter(entry: SegmenterEntry, device: str, dtype: torch.dtype) -> LoadedSegmenter:
    """Model and processor of `entry` from its folder (never from the hub, never from pickle weights). Raises
    ModelLoadError naming it."""
    import torch

    pickled = pickle_weights_in(entry.path)
    if pickled:
        raise ModelLoadError(f"cannot load the {KIND_LABELS[entry.kind]} model {entry.name}: "
                             f"{pickle_folder_reason(entry.path, pickled)}")
    try:
        if entry.kind == "clipseg":
            from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

            processor = CLIPSegProcessor.from_pretrained(str(entry.path), local_files_only=True)
            model = CLIPSegForImageSegmentation.from_pretrained(str(entry.path), local_files_only=True,
                                                                use_safetensors=True)
        else:
            from transformers import Sam3Model, Sam3Processor

            processor = Sam3Processor.from_pretrained(str(entry.path), local_files_only=True)
            model = Sam3Model.from_pretrained(str(entry.path), local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, ImportError) as exc:
        raise ModelLoadError(f"could not load the {KIND_LABELS[entry.kind]} model {entry.path}: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}") from exc
    # Segmenters are small; half precision only where the device computes in it well.
    model_dtype = dtype if device != "cpu" else torch.float32
    model = model.to(device=device, dtype=model_dtype).eval()
    return LoadedSegmenter(entry, model, processor, device)


def hold_segmenter(memory: Any, entry: SegmenterEntry, device: str, dtype: torch.dtype) -> tuple[LoadedSegmenter, bool]:
    """The segmenter from the memory cache (webui.model_manager.memory), loading and adding it when it is not
    there; True when it was loaded now."""
    found = memory.get(SEGMENTER, entry)
    if found is not None:
        return found, False
    log.info("loading segmenter %s (%s)", entry.name, entry.path)
    segmenter = load_segmenter(entry, device, dtype)

    def place(held: LoadedSegmenter, tier: str) -> None:
        if memory.device_is_accelerator:
            held.model.to(device if tier == "device" else "cpu")

    memory.add(SEGMENTER, entry, segmenter, name=entry.label, place=place, measure=lambda held: _bytes(held.model))
    return segmenter, True


def _bytes(model: Any) -> int:
    from webui.model_manager.memory import model_bytes

    return model_bytes(model)
