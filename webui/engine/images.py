"""Pixel helpers shared by the modes: AUTOMATIC1111's resize modes, masks, canvas extension and paste-back."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from webui.requests import RequestError


def resize_image(image: Image.Image, width: int, height: int, mode: str = "Just resize") -> Image.Image:
    """Resize to width x height: stretch, cover-and-crop, or fit-and-fill the borders with stretched edges."""
    image = image.convert("RGB")
    if mode == "Just resize" or image.size == (width, height):
        return image.resize((width, height), Image.LANCZOS)
    if mode == "Crop and resize":
        return ImageOps.fit(image, (width, height), Image.LANCZOS)
    if mode == "Resize and fill":
        scale = min(width / image.width, height / image.height)
        w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        inner = image.resize((w, h), Image.LANCZOS)
        canvas = image.resize((width, height), Image.LANCZOS).filter(ImageFilter.GaussianBlur(8))
        canvas.paste(inner, ((width - w) // 2, (height - h) // 2))
        return canvas
    raise RequestError("resize_mode", f"unknown mode {mode!r}; choose Just resize, Crop and resize or Resize and fill")


def mask_to_l(mask: Image.Image) -> Image.Image:
    """A mask as 8-bit grayscale, white = repaint. An RGBA drawing layer counts by its alpha."""
    if mask.mode == "RGBA":
        alpha = mask.getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha
    return mask.convert("L")


def binarize(mask: Image.Image, threshold: int = 128) -> Image.Image:
    return mask.point(lambda v: 255 if v >= threshold else 0)


def extend_canvas(image: Image.Image, mask: Image.Image | None, left: int, right: int, top: int,
                  bottom: int) -> tuple[Image.Image, Image.Image]:
    """Grow the canvas for outpainting: new borders are filled with stretched edge pixels and masked white."""
    w, h = image.size
    new_w, new_h = w + left + right, h + top + bottom
    arr = np.asarray(image.convert("RGB"))
    padded = np.pad(arr, ((top, bottom), (left, right), (0, 0)), mode="edge")
    canvas = Image.fromarray(padded).filter(ImageFilter.GaussianBlur(4))
    canvas.paste(image.convert("RGB"), (left, top))
    new_mask = Image.new("L", (new_w, new_h), 255)
    inner = mask if mask is not None else Image.new("L", (w, h), 0)
    new_mask.paste(inner, (left, top))
    return canvas, new_mask


def fill_masked(image: Image.Image, mask: Image.Image, how: str) -> Image.Image:
    """Pre-fill the masked area: 'fill' with blurred surrounding colours, 'latent nothing' with gray."""
    if how == "fill":
        blurred = image
        for radius in (64, 32, 16, 8):
            blurred = Image.composite(image, blurred.filter(ImageFilter.GaussianBlur(radius)), ImageOps.invert(mask))
        return Image.composite(blurred.filter(ImageFilter.GaussianBlur(4)), image, mask)
    if how == "latent nothing":
        return Image.composite(Image.new("RGB", image.size, (127, 127, 127)), image, mask)
    return image


def masked_bbox(mask: Image.Image, padding: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The mask's bounding box grown by `padding` and to the aspect ratio of width:height, inside the image."""
    box = mask.getbbox()
    W, H = mask.size
    if box is None:
        return 0, 0, W, H
    x0, y0, x1, y1 = box
    x0, y0, x1, y1 = max(0, x0 - padding), max(0, y0 - padding), min(W, x1 + padding), min(H, y1 + padding)
    bw, bh = x1 - x0, y1 - y0
    target = width / height
    if bw / bh < target:
        grow = round(bh * target) - bw
        x0, x1 = x0 - grow // 2, x1 + grow - grow // 2
    else:
        grow = round(bw / target) - bh
        y0, y1 = y0 - grow // 2, y1 + grow - grow // 2
    if x0 < 0:
        x1, x0 = x1 - x0, 0
    if y0 < 0:
        y1, y0 = y1 - y0, 0
    if x1 > W:
        x0, x1 = max(0, x0 - (x1 - W)), W
    if y1 > H:
        y0, y1 = max(0, y0 - (y1 - H)), H
    return x0, y0, x1, y1


def paste_back(original: Image.Image, generated: Image.Image, mask: Image.Image) -> Image.Image:
    """Blend `generated` over `original` by `mask`: where the mask is 0 the original pixel is kept exactly."""
    return Image.composite(generated.convert("RGB"), original.convert("RGB"), mask)
