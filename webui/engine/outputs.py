"""Saving generated images: `outputs/<mode>-images/YYYY-MM-DD/NNNNN-SEED.png`, never overwriting.

Each PNG is written to a temporary file first and then linked into place under its final name, so a crash
mid-save never leaves a truncated image and an existing file is never replaced: if the number was taken in
the meantime the next one is used.
"""
from __future__ import annotations

import datetime as _dt
import os
import re
import tempfile
from pathlib import Path

from PIL import Image

from webui.infotext import png_info

_NUMBERED = re.compile(r"^(\d+)-")


def mode_folder(outputs_dir: Path, mode: str, when: _dt.date | None = None) -> Path:
    day = (when or _dt.date.today()).isoformat()
    return outputs_dir / f"{mode}-images" / day


def next_number(folder: Path) -> int:
    highest = -1
    if folder.exists():
        for entry in folder.iterdir():
            match = _NUMBERED.match(entry.name)
            if match:
                highest = max(highest, int(match.group(1)))
    return highest + 1


def save_image(image: Image.Image, folder: Path, seed: int, infotext: str | None, digits: int = 5) -> Path:
    """Write one PNG with its parameters text; return its final path."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".saving-", suffix=".png", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            image.save(handle, format="PNG", pnginfo=png_info(infotext) if infotext else None)
            handle.flush()
            os.fsync(handle.fileno())
        number = next_number(folder)
        while True:
            final = folder / f"{number:0{digits}d}-{seed}.png"
            try:
                os.link(tmp_name, final)  # fails if the name exists: never overwrite
                return final
            except FileExistsError:
                number += 1
    finally:
        os.unlink(tmp_name)
