"""Images in API bodies and answers: base64 in, base64 PNG out.

An uploaded image's size is read from its header and checked before its pixels are decoded; Pillow's refusals
(a decompression bomb, a corrupt or unknown file) become 422s naming the field.
"""
from __future__ import annotations

import base64
import binascii
import io
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

from PIL import Image, ImageOps, UnidentifiedImageError

from webui.api.bounds import IMAGE_FORMATS, base64_bytes
from webui.api.errors import ApiError
from webui.engine.images import binarize, mask_to_l
from webui.infotext import png_bytes


def decode_image(data: Any, field_name: str, max_pixels: int, load: bool = True) -> Image.Image:
    """A base64 image (optionally a data: URL), its size checked before its pixels are decoded.

    With `load=False` only the header is read: call `load_image` before using the pixels."""
    if not isinstance(data, str) or not data.strip():
        raise ApiError(422, field_name, "must be a base64-encoded image")
    try:
        raw = base64_bytes(data)
    except (binascii.Error, ValueError):
        raise ApiError(422, field_name, "is not valid base64") from None
    with _decoding_errors(field_name):
        image = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise ApiError(422, field_name, f"image is {width}x{height}; the limit is {max_pixels} pixels")
    return load_image(image, field_name) if load else image


def load_image(image: Image.Image, field_name: str) -> Image.Image:
    """Decode the pixels of an image `decode_image(..., load=False)` opened; a corrupt one is a 422."""
    with _decoding_errors(field_name):
        image.load()
    return image


@contextmanager
def _decoding_errors(field_name: str) -> Iterator[None]:
    """Pillow's refusals as 422s naming the field."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(422, field_name, f"the image is too large to decode (over the limit of "
                                        f"{Image.MAX_IMAGE_PIXELS} pixels)") from None
    except UnidentifiedImageError:
        raise ApiError(422, field_name, f"is not an image Easel can read ({', '.join(IMAGE_FORMATS)})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ApiError(422, field_name, f"the image could not be decoded ({exc})") from None


def check_mask(mask: Image.Image | None, invert: bool) -> None:
    """Refuse a mask that leaves nothing to repaint (the engine would fail on it after queueing)."""
    if mask is None:
        return
    binary = binarize(mask_to_l(mask))
    if invert:
        binary = ImageOps.invert(binary)
    if binary.getbbox() is None:
        what = "all white, and inpainting_mask_invert is set" if invert else "all black"
        raise ApiError(422, "mask", f"the mask is empty ({what}); paint the area to repaint in white")


def encode_png(image: Image.Image, text: str | None = None) -> str:
    return base64.b64encode(png_bytes(image, text)).decode("ascii")
