"""Model files Easel lists but does not load itself: hypernetworks and face-restoration weights.

`hypernetwork_files` finds the files in `models/hypernetworks/`, `face_restorer_files` those in `models/GFPGAN/`
and `models/Codeformer/` (AUTOMATIC1111's folder names). Listing only reads folder entries, never a file's
contents, so a pickle found here is never opened. `find_hypernetwork_tags` finds the names the
`<hypernet:name:weight>` tags of a text ask for (`webui.engine.hypernetworks` applies those of the prompt).
"""
from __future__ import annotations

import re
from pathlib import Path

MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
HYPERNETWORK_FOLDER = "hypernetworks"
FACE_RESTORER_FOLDERS: dict[str, str] = {"GFPGAN": "GFPGAN", "CodeFormer": "Codeformer"}  # name -> folder
_HYPERNET = re.compile(r"<hypernet:([^:>]*)(?::[^>]*)?>", re.IGNORECASE)


def model_files(folder: Path, suffixes: tuple[str, ...] = MODEL_SUFFIXES) -> list[Path]:
    """The model files under `folder` (sub-folders included, hidden entries skipped), sorted by path; none when
    the folder is missing."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in suffixes and path.is_file():
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix().lower())


def hypernetwork_files(models_dir: Path) -> dict[str, Path]:
    """The hypernetworks in `models_dir/hypernetworks`, by name (the file name without its suffix, which is what
    `<hypernet:name:weight>` uses); the first of two files with one name wins."""
    named: dict[str, Path] = {}
    for path in model_files(models_dir / HYPERNETWORK_FOLDER):
        named.setdefault(path.stem, path)
    return named


def face_restorer_files(models_dir: Path) -> dict[str, list[Path]]:
    """The face-restoration weights in `models_dir/GFPGAN` and `models_dir/Codeformer`, by restorer; a restorer
    with no file is left out."""
    found = {name: model_files(models_dir / folder) for name, folder in FACE_RESTORER_FOLDERS.items()}
    return {name: files for name, files in found.items() if files}


def find_hypernetwork_tags(prompt: str) -> list[str]:
    """The names of the hypernetworks a prompt's `<hypernet:name:weight>` tags ask for, in order."""
    return [match.group(1).strip() for match in _HYPERNET.finditer(prompt or "")]
