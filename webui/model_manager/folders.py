"""Walking model folders: which files and sub-folders of a model folder hold models, and the names they get.

Names follow AUTOMATIC1111: a model's name is its path relative to the folder it was found in, with "/"
separators, without the file's extension (a folder keeps its whole name). Hidden entries (a leading ".") are
skipped. A diffusers pipeline folder (one holding `model_index.json`) is one model and is never descended into;
a `<stem>.config/` folder beside a single-file checkpoint holds its configs, not models. ControlNet and
upscaler (ESRGAN) folders are listed here too, with the rules their loaders have always used: a ControlNet is a
weights file or a folder with a `config.json` (the `annotators` folders hold preprocessor weights and are
skipped); an upscaler is any weights file. Standard library only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CONTROLNET_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
CONTROLNET_SKIPPED = ("annotators",)
UPSCALER_SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt")


@dataclass(frozen=True)
class ModelFile:
    """One ControlNet or upscaler model: its name, the file (or the diffusers folder when `folder`)."""

    name: str
    path: Path
    folder: bool = False


def relative_name(path: Path, root: Path, strip_suffix: bool) -> str:
    """`path` under `root` with "/" separators, without the extension when `strip_suffix`."""
    relative = path.relative_to(root)
    if strip_suffix:
        relative = relative.with_suffix("")
    return relative.as_posix()


def model_files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files under `root` with these suffixes, skipping hidden entries, `<stem>.config/` folders and pipeline
    folders."""
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


def pipeline_folders(root: Path) -> list[Path]:
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


def vae_folders(root: Path) -> list[Path]:
    """Diffusers VAE folders under `root`: those whose config.json names an AutoencoderKL."""
    if not root.is_dir():
        return []
    return [p.parent for p in root.rglob("config.json")
            if '"AutoencoderKL' in p.read_text(encoding="utf-8", errors="replace")[:2000]]


def scan_controlnets(roots: list[Path]) -> list[ModelFile]:
    """ControlNet models under `roots`, by name (any case); the first root wins a name."""
    found: dict[str, ModelFile] = {}
    for root in roots:
        if Path(root).is_dir():
            _controlnets_in(Path(root), Path(root), found)
    return sorted(found.values(), key=lambda e: e.name.lower())


def _controlnets_in(root: Path, folder: Path, found: dict[str, ModelFile]) -> None:
    for child in sorted(folder.iterdir()):
        if child.name.startswith(".") or child.name in CONTROLNET_SKIPPED:
            continue
        if child.is_dir() and not (child / "config.json").is_file():
            _controlnets_in(root, child, found)
        elif child.is_dir():
            name = relative_name(child, root, False)
            found.setdefault(name, ModelFile(name, child, True))
        elif child.suffix.lower() in CONTROLNET_SUFFIXES:
            name = relative_name(child, root, True)
            found.setdefault(name, ModelFile(name, child))


def scan_upscalers(roots: list[Path]) -> list[ModelFile]:
    """Upscaler model files under `roots`, by name (any case); the first root wins a name."""
    found: dict[str, ModelFile] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() not in UPSCALER_SUFFIXES or not path.is_file():
                continue
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            name = relative_name(path, root, True)
            found.setdefault(name, ModelFile(name, path))
    return sorted(found.values(), key=lambda e: e.name.lower())
