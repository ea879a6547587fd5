"""A LoRA training dataset: a folder of images with same-name `.txt` captions, sorted into resolution buckets.

`load_dataset(folder, buckets, trigger)` reads every image once (datasets for a LoRA are a few dozen images),
checks it, picks the bucket whose aspect ratio is closest to the image's, resizes it to cover the bucket and
centre-crops it, and keeps it as a tensor in [-1,1]. A bad dataset fails before training starts, with the file
named: an empty folder, an image that cannot be read, an image without its caption file, an empty caption.
`Dataset.batch(step_generator, batch_size)` draws one batch, all from one bucket, so tensors stack.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


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


def find_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_caption(image: Path, trigger: str) -> str:
    caption_path = image.with_suffix(".txt")
    if not caption_path.is_file():
        raise DatasetError(image, f"caption missing: expected {caption_path.name} beside the image")
    try:
        text = caption_path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(caption_path, f"cannot read the caption: {exc}") from exc
    if not text:
        raise DatasetError(caption_path, "caption is empty")
    if "[trigger]" in text and not trigger:
        raise DatasetError(caption_path, "caption uses [trigger] but the config sets no trigger word")
    return " ".join(text.replace("[trigger]", trigger).split())


def read_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
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


def load_dataset(folder: Path, buckets: tuple[tuple[int, int], ...], trigger: str = "") -> Dataset:
    """Read and check every image + caption of `folder` (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(folder, "dataset folder not found")
    images = find_images(folder)
    if not images:
        raise DatasetError(folder, f"no images in the dataset folder (looked for {', '.join(IMAGE_SUFFIXES)})")
    items: list[Item] = []
    groups: dict[tuple[int, int], list[int]] = {}
    for path in images:
        caption = read_caption(path, trigger)
        image = read_image(path)
        bucket = nearest_bucket(image.width, image.height, buckets)
        groups.setdefault(bucket, []).append(len(items))
        items.append(Item(path, caption, to_tensor(fit(image, bucket))))
    log.info("dataset %s: %d images in buckets %s", folder, len(items),
             ", ".join(f"{w}x{h}: {len(v)}" for (w, h), v in sorted(groups.items())))
    return Dataset(folder, tuple(items), {k: tuple(v) for k, v in groups.items()})
