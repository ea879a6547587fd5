"""A LoRA training dataset: a folder of images with same-name `.txt` captions, sorted into resolution buckets.

`scan_dataset(folder, buckets, trigger)` checks everything but the pixels: the images are counted, their
captions read and their sizes taken from their headers, and the limits below are checked before a single pixel
is decoded. `load_dataset(folder, buckets, trigger)` scans, then reads every image once (datasets for a LoRA are
a few dozen images), picks the bucket whose aspect ratio is closest to the image's, resizes it to cover the
bucket and centre-crops it, and keeps it as a tensor in [-1,1]. A bad dataset fails before training starts,
with the file named: an empty folder, an image that cannot be read, an image without its caption file, an empty
caption, a file that is a link leading out of the folder. `Dataset.batch(step_generator, batch_size)` draws one
batch, all from one bucket, so tensors stack.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from webui.security import resolve_inside
from webui.training.config import ConfigError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_IMAGES = 10_000  # images in one dataset
MAX_IMAGE_PIXELS = 8192 * 8192  # one image, read from its header before it is decoded
MAX_DECODED_PIXELS = 2**32  # all images together, as stored (about 4.3 gigapixels)
MAX_TRAIN_PIXELS = 2**29  # all images once resized to their buckets, kept in memory at 12 bytes a pixel (6 GiB)
MAX_CAPTION_BYTES = 64 * 1024


class DatasetError(ValueError):
    """A dataset that cannot be trained on; `path` is the file or folder at fault."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True)
class Item:
    path: Path
    caption: str
    pixels: torch.Tensor  # [3,H,W] in [-1,1], H x W = its bucket


@dataclass(frozen=True)
class Dataset:
    folder: Path
    items: tuple[Item, ...]
    buckets: dict[tuple[int, int], tuple[int, ...]]  # (width, height) -> indices into items

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, gen: torch.Generator, batch_size: int) -> tuple[list[str], torch.Tensor]:
        """(captions, pixels [B,3,H,W]) from one bucket picked in proportion to its size; B <= batch_size."""
        keys = sorted(self.buckets)
        sizes = torch.tensor([len(self.buckets[k]) for k in keys], dtype=torch.float32)
        key = keys[int(torch.multinomial(sizes, 1, generator=gen))]
        members = self.buckets[key]
        take = min(batch_size, len(members))
        order = torch.randperm(len(members), generator=gen)[:take].tolist()
        chosen = [self.items[members[i]] for i in order]
        return [c.caption for c in chosen], torch.stack([c.pixels for c in chosen])  # [B,3,H,W]


@dataclass(frozen=True)
class Entry:
    """An image as the scan found it: caption, size from its header, and its bucket."""

    path: Path
    caption: str
    size: tuple[int, int]  # (width, height)
    bucket: tuple[int, int]


def find_images(folder: Path) -> list[Path]:
    """The folder's image files (not its subfolders'); more than MAX_IMAGES is an error, found without listing
    further."""
    found: list[Path] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES and entry.is_file():
                found.append(Path(entry.path))
                if len(found) > MAX_IMAGES:
                    raise ConfigError("dataset", f"{folder.name} holds more than {MAX_IMAGES:,} images; the limit "
                                                 f"is {MAX_IMAGES:,}")
    return sorted(found)


def inside(folder: Path, path: Path) -> None:
    """A file of the dataset must be in its folder, not a link leading out of it."""
    try:
        resolve_inside(folder, path.name, "dataset")
    except ValueError:
        raise DatasetError(path, f"is a link leading out of the dataset folder {folder.name}") from None


def read_caption(image: Path, trigger: str) -> str:
    caption_path = image.with_suffix(".txt")
    if not caption_path.is_file():
        raise DatasetError(image, f"caption missing: expected {caption_path.name} beside the image")
    inside(image.parent, caption_path)
    if caption_path.stat().st_size > MAX_CAPTION_BYTES:
        raise DatasetError(caption_path, f"caption is over the limit of {MAX_CAPTION_BYTES // 1024} KiB")
    try:
        text = caption_path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(caption_path, f"cannot read the caption: {exc}") from exc
    if not text:
        raise DatasetError(caption_path, "caption is empty")
    if "[trigger]" in text and not trigger:
        raise DatasetError(caption_path, "caption uses [trigger] but the config sets no trigger word")
    return " ".join(text.replace("[trigger]", trigger).split())


def read_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image's header; nothing is decoded."""
    try:
        with Image.open(path) as image:
            size = image.size
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(path, f"unreadable image ({type(exc).__name__}: {exc})") from exc
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise DatasetError(path, f"{size[0]}x{size[1]} is over the limit of {MAX_IMAGE_PIXELS:,} pixels per image")
    return size


def read_image(path: Path, size: tuple[int, int] | None = None) -> Image.Image:
    """The image as RGB; with `size`, only when its header still says that size (checked before decoding)."""
    try:
        with Image.open(path) as image:
            if size is not None and image.size != size:
                raise DatasetError(path, f"changed while the dataset was read ({size[0]}x{size[1]} before, "
                                         f"{image.width}x{image.height} now)")
            image.load()
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(path, f"unreadable image ({type(exc).__name__}: {exc})") from exc


def nearest_bucket(width: int, height: int, buckets: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    ratio = np.log(width / height)
    return min(buckets, key=lambda b: (abs(np.log(b[0] / b[1]) - ratio), -b[0] * b[1]))


def fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to cover `size` (width, height), then centre-crop to it."""
    w, h = size
    scale = max(w / image.width, h / image.height)
    rw, rh = max(w, round(image.width * scale)), max(h, round(image.height * scale))
    if (rw, rh) != image.size:
        image = image.resize((rw, rh), Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
    left, top = (rw - w) // 2, (rh - h) // 2
    return image.crop((left, top, left + w, top + h))


def to_tensor(image: Image.Image) -> torch.Tensor:
    arr = np.asarray(image, dtype=np.float32) / 127.5 - 1.0  # [H,W,3] in [-1,1]
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # [3,H,W]


def scan_dataset(folder: Path, buckets: tuple[tuple[int, int], ...], trigger: str = "") -> list[Entry]:
    """Check `folder` without decoding a pixel: its images, their captions, their sizes, the limits."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(folder, "dataset folder not found")
    images = find_images(folder)
    if not images:
        raise DatasetError(folder, f"no images in the dataset folder (looked for {', '.join(IMAGE_SUFFIXES)})")
    entries: list[Entry] = []
    decoded = kept = 0
    for path in images:
        inside(folder, path)
        caption = read_caption(path, trigger)
        width, height = read_size(path)
        bucket = nearest_bucket(width, height, buckets)
        decoded += width * height
        kept += bucket[0] * bucket[1]
        if decoded > MAX_DECODED_PIXELS:
            raise ConfigError("dataset", f"{folder.name}: the images hold more than {MAX_DECODED_PIXELS:,} pixels in "
                                         "all (the limit); use fewer or smaller images")
        if kept > MAX_TRAIN_PIXELS:
            raise ConfigError("dataset", f"{folder.name}: the images resized to their buckets hold more than "
                                         f"{MAX_TRAIN_PIXELS:,} pixels in all (the limit: they are kept in memory); "
                                         "use fewer images or a smaller resolution")
        entries.append(Entry(path, caption, (width, height), bucket))
    return entries


def load_dataset(folder: Path, buckets: tuple[tuple[int, int], ...], trigger: str = "") -> Dataset:
    """Read and check every image + caption of `folder` (see the module docstring)."""
    folder = Path(folder)
    items: list[Item] = []
    groups: dict[tuple[int, int], list[int]] = {}
    for entry in scan_dataset(folder, buckets, trigger):
        image = read_image(entry.path, entry.size)
        groups.setdefault(entry.bucket, []).append(len(items))
        items.append(Item(entry.path, entry.caption, to_tensor(fit(image, entry.bucket))))
    log.info("dataset %s: %d images in buckets %s", folder, len(items),
             ", ".join(f"{w}x{h}: {len(v)}" for (w, h), v in sorted(groups.items())))
    return Dataset(folder, tuple(items), {k: tuple(v) for k, v in groups.items()})
