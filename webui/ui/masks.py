"""Turning what the Inpaint tab's editor holds into the image and mask an `InpaintRequest` takes.

The editor gives a background (the picture) and drawing layers. Any pixel painted on any layer (alpha > 0)
becomes white in the mask, everything else black; an uploaded mask, when given, is used instead of the
strokes (white or opaque = repaint).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image


def _as_image(value: Any) -> Image.Image | None:
    if value is None:
        return None
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray):
        return Image.fromarray(value)
    if isinstance(value, str):
        with Image.open(value) as image:
            image.load()
            return image.copy()
    raise ValueError(f"mask: expected an image, got {type(value).__name__}")


def layers_mask(layers: list[Any], size: tuple[int, int]) -> Image.Image | None:
    """White wherever any layer has a painted (non-transparent) pixel; None when nothing is painted."""
    painted = np.zeros((size[1], size[0]), dtype=bool)  # (H, W)
    for layer in layers:
        image = _as_image(layer)
        if image is None:
            continue
        if image.size != size:
            image = image.resize(size, Image.NEAREST)
        if image.mode in ("RGBA", "LA") or "transparency" in image.info:
            alpha = np.asarray(image.convert("RGBA").getchannel("A"))  # (H, W)
            painted |= alpha > 0
        else:
            painted |= np.asarray(image.convert("L")) > 0
    if not painted.any():
        return None
    return Image.fromarray(np.where(painted, 255, 0).astype(np.uint8), mode="L")


def uploaded_mask(value: Any, size: tuple[int, int]) -> Image.Image | None:
    """An uploaded mask as L (white = repaint) at `size`; transparent pixels count as not masked."""
    image = _as_image(value)
    if image is None:
        return None
    if image.mode in ("RGBA", "LA"):
        rgba = np.asarray(image.convert("RGBA"))  # (H, W, 4)
        light = np.asarray(image.convert("L")) >= 128
        mask = light & (rgba[..., 3] > 0)
        image = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L")
    else:
        image = image.convert("L")
    if image.size != size:
        image = image.resize(size, Image.NEAREST)
    return image


def editor_image_and_mask(editor: Any, mask_upload: Any = None) -> tuple[Image.Image | None, Image.Image | None]:
    """(picture as RGB, mask as L or None) from an ImageEditor value and an optional uploaded mask."""
    if editor is None:
        return None, None
    if isinstance(editor, dict):
        background = _as_image(editor.get("background"))
        layers = list(editor.get("layers") or [])
        if background is None:
            background = _as_image(editor.get("composite"))
    else:
        background, layers = _as_image(editor), []
    if background is None:
        return None, None
    picture = background.convert("RGB")
    mask = uploaded_mask(mask_upload, picture.size)
    if mask is None:
        mask = layers_mask(layers, picture.size)
    return picture, mask
