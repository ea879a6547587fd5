"""Bounds on what one API request may make Easel allocate, checked before the work that would allocate it.

The API's route class runs two checks on every route (extension routes included) before a handler sees the
request:

1. While a JSON body streams in, `JsonShape` counts its values (each array and object, and each item after an
   array's or object's first) and how deeply they nest, skipping what is inside strings: more than
   `MAX_JSON_VALUES` values is a 413 and more than `MAX_JSON_DEPTH` levels a 422, naming the top-level field
   it happened in, before the body is parsed. (A few MiB of `[],` would parse into gigabytes of lists.) So is
   more than `MAX_WIDE_TEXT` bytes of strings holding non-ASCII characters or `\\u` escapes, which Python
   stores at up to 4 bytes a character, and more than `MAX_JSON_VALUES` escaped quotes (each costs the scan a
   step; other escapes cost nothing). The scan costs about what parsing the body costs.
2. Once parsed, `check_images` finds every string holding a base64 image in a format Easel reads (recognised
   by Pillow from its first bytes) and reads its size from the header: more than `max_request_images` images,
   or more than `max_request_pixels` pixels together, is a 422 naming the first field over the limit, before
   any image is decoded. Images the route then ignores count too; an image over the per-image limit does not
   (the route's decoder refuses it, naming its field the route's way, before decoding it).

`base64_bytes` is the one way the API turns a base64 field into bytes (data: prefix, whitespace, missing
padding), so an image cannot hide from the count in a form the decoders would still read.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from struct import error as struct_error
from typing import Any, Callable, Iterator

from PIL import Image, UnidentifiedImageError

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
MAX_JSON_VALUES = 100_000  # a generation body with ControlNet units holds a few hundred
MAX_JSON_DEPTH = 32
MAX_JSON_TOKENS = 8 * MAX_JSON_VALUES  # brackets, quotes, commas and colons; more is not a body Easel reads
# Bytes of strings with non-ASCII characters: Python keeps such a string at 2 or 4 bytes a character, so a long
# ASCII string with one emoji would take 4x its size once parsed. Images are ASCII; prompts are far shorter.
MAX_WIDE_TEXT = 4 * 1024 * 1024
_HEAD_CHARS = 4096  # base64 characters looked at to recognise an image
_HEADER_BYTES = 64 * 1024  # bytes decoded to read an image's size (the whole image when its header lies further)
_KEY_BYTES = 200  # longest top-level key kept to name the field


class RequestBoundError(ValueError):
    """A request over one of the bounds; `field` names where, `status` is the HTTP status to answer."""

    def __init__(self, status: int, field: str, message: str, kind: str = "BadRequest") -> None:
        super().__init__(f"{field}: {message}")
        self.status = status
        self.field = field
        self.message = message
        self.kind = kind


@dataclass(frozen=True)
class RequestBounds:
    """The images one request may carry: how many, and how many pixels together. An image over `max_image_pixels`
    (the decoders' own per-image limit) is not counted: the route's decoder refuses it before decoding it."""

    max_request_pixels: int
    max_request_images: int
    max_image_pixels: int


# JSON shape ---------------------------------------------------------------------------------------------
_STRUCTURE = re.compile(rb'[][{}",:]')
_QUOTE, _BACKSLASH, _COMMA, _COLON = ord('"'), ord("\\"), ord(","), ord(":")
_OPEN, _CLOSE = (ord("["), ord("{")), (ord("]"), ord("}"))


class JsonShape:
    """Counts a JSON body's values and nesting chunk by chunk as it arrives, without parsing it.

    Malformed JSON is not this class's business (the parser reports it); it only guarantees that a body it
    accepted parses into at most about `max_values` Python objects nested at most `max_depth` deep, with at
    most `MAX_WIDE_TEXT` bytes of text stored wider than a byte a character.
    """

    def __init__(self, max_values: int = MAX_JSON_VALUES, max_depth: int = MAX_JSON_DEPTH,
                 max_tokens: int = MAX_JSON_TOKENS) -> None:
        self.max_values, self.max_depth, self.max_tokens = max_values, max_depth, max_tokens
        self.values = 0
        self.tokens = 0
        self.depth = 0
        self.deepest = 0
        self.key: str | None = None  # the top-level field being read
        self._in_string = False
        self._escaped = False  # the last chunk ended inside a string with an unpaired backslash
        self._text: bytearray | None = None  # a top-level string being read (a key when a colon follows)
        self._last: str | None = None
        self._ascii_chunk = True
        self._string_bytes = 0  # of the string being read
        self._string_wide = False  # it holds a non-ASCII character or a \u escape
        self.wide_bytes = 0  # of the strings read so far that did
        self.escaped_quotes = 0

    @property
    def field(self) -> str:
        return self.key or "body"

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the body; raises RequestBoundError once a bound is passed."""
        pos, end = 0, len(chunk)
        self._ascii_chunk = chunk.isascii()
        while pos < end:
            if self._in_string:
                pos = self._string(chunk, pos)
                continue
            match = _STRUCTURE.search(chunk, pos)
            if match is None:
                return
            char, pos = chunk[match.start()], match.end()
            self.tokens += 1
            if char == _QUOTE:
                self._in_string = True
                self._text = bytearray() if self.depth == 1 else None
                self._string_bytes, self._string_wide = 0, False
            elif char == _COMMA:
                self.values += 1
            elif char in _OPEN:
                self.values += 1
                self.depth += 1
                self.deepest = max(self.deepest, self.depth)
            elif char in _CLOSE:
                self.depth -= 1
            elif char == _COLON and self.depth == 1:
                self.key = self._last
            self._check()

    def _string(self, chunk: bytes, pos: int) -> int:
        """Skip string content from `pos`: the position after the closing quote, or the chunk's end.

        The string ends at the first quote after an even run of backslashes, so only quotes cost a step here;
        other escapes (a base64 image's line breaks, say) are skipped with the text around them."""
        end = len(chunk)
        if self._escaped:  # the character after a backslash that ended the previous chunk
            self._escaped = False
            self._string_wide = self._string_wide or chunk[pos] == ord("u")
            self._keep(chunk, pos, pos + 1)
            return pos + 1
        scan = pos
        while True:
            close = chunk.find(b'"', scan)
            if close < 0:  # the string goes on in the next chunk; an odd backslash run escapes its first byte
                self._escaped = _backslash_run(chunk, scan, end) % 2 == 1
                self._keep(chunk, pos, end)
                return end
            if _backslash_run(chunk, scan, close) % 2 == 0:
                break
            self.escaped_quotes += 1  # \" inside the string: one step each, so their number is bounded
            if self.escaped_quotes > self.max_values:
                raise RequestBoundError(413, self.field, f"the request body holds more than {self.max_values} "
                                                         "escaped quotes", "PayloadTooLarge")
            scan = close + 1
        self._keep(chunk, pos, close)
        self._in_string = False
        if self._string_wide:
            self.wide_bytes += self._string_bytes
        if self._text is not None:
            self._last = _key_text(self._text)
            self._text = None
        return close + 1

    def _keep(self, chunk: bytes, start: int, stop: int) -> None:
        """Account for string content `chunk[start:stop]`: its size, whether it is wide, a key's text."""
        self._string_bytes += stop - start
        if not self._string_wide and ((chunk.find(b"\\", start, stop) >= 0 and  # memchr first: fast
                                       chunk.find(b"\\u", start, stop) >= 0) or
                                      (not self._ascii_chunk and not chunk[start:stop].isascii())):
            self._string_wide = True
        if self._string_wide and self.wide_bytes + self._string_bytes > MAX_WIDE_TEXT:
            raise RequestBoundError(413, self.field, f"the request body holds more than {MAX_WIDE_TEXT} bytes of "
                                                     "strings with non-ASCII characters or \\u escapes; the limit "
                                                     f"is {MAX_WIDE_TEXT} (images are plain base64)",
                                    "PayloadTooLarge")
        if self._text is None:
            return
        if len(self._text) + stop - start > _KEY_BYTES:
            self._text = None
            self._last = None
        else:
            self._text += chunk[start:stop]

    def _check(self) -> None:
        if self.values > self.max_values or self.tokens > self.max_tokens:
            raise RequestBoundError(413, self.field, f"the request body holds more than {self.max_values} JSON "
                                                     "values (arrays, objects and their items); the limit is "
                                                     f"{self.max_values}", "PayloadTooLarge")
        if self.depth > self.max_depth:
            raise RequestBoundError(422, self.field, f"the request body nests arrays and objects more than "
                                                     f"{self.max_depth} levels deep; the limit is {self.max_depth}")


def _backslash_run(chunk: bytes, low: int, high: int) -> int:
    """How many backslashes end `chunk[low:high]` (galloping back with C-speed counts, then bisecting)."""
    if high <= low or chunk[high - 1] != _BACKSLASH:
        return 0
    inside, size = 1, 2  # chunk[high - inside:high] is all backslashes
    while size <= high - low and chunk.count(b"\\", high - size, high) == size:
        inside, size = size, size * 2
    if size > high - low:
        if chunk.count(b"\\", low, high) == high - low:
            return high - low
        size = high - low
    outside = size  # chunk[high - outside:high] is not all backslashes
    while outside - inside > 1:
        middle = (inside + outside) // 2
        if chunk.count(b"\\", high - middle, high) == middle:
            inside = middle
        else:
            outside = middle
    return inside


def _key_text(raw: bytearray) -> str | None:
    try:
        text = json.loads(b'"' + bytes(raw) + b'"')
    except ValueError:
        return None
    return text if isinstance(text, str) and text else None


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI parses a body with this content type as JSON (it does when there is none)."""
    if not content_type:
        return True
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


# Images -------------------------------------------------------------------------------------------------
def base64_bytes(text: str) -> bytes:
    """The bytes of a base64 field, with or without a data: URL prefix, whitespace and padding; ValueError
    (binascii.Error) when it is not base64."""
    text = text.strip()
    if text.startswith("data:"):
        text = text.partition(",")[2]
    text = "".join(text.split())
    text += "=" * (-len(text) % 4)
    return base64.b64decode(text, validate=True)


@lru_cache(maxsize=1)
def _accepts() -> tuple[Callable[[bytes], Any], ...]:
    """Pillow's own first-bytes tests for the formats Easel reads (what `Image.open` tries)."""
    Image.init()
    return tuple(Image.OPEN[name][1] or (lambda prefix: True) for name in IMAGE_FORMATS if name in Image.OPEN)


def _head(text: str) -> bytes | None:
    """The first bytes `base64_bytes(text)` gives, read from the start of `text` only; None if it cannot tell."""
    if len(text) <= _HEAD_CHARS:
        return base64_bytes(text)
    window = text[:_HEAD_CHARS].lstrip()
    if window.startswith("data:"):
        comma = window.find(",")
        if comma < 0:
            return None
        window = window[comma + 1:]
    chars = "".join(window.split())
    usable = len(chars) // 4 * 4
    if usable < 24:
        return None
    return base64.b64decode(chars[:usable], validate=True)


def _starts_like_image(head: bytes) -> bool:
    prefix = head[:16]
    return any(accept(prefix) for accept in _accepts())


_UNREADABLE = (binascii.Error, ValueError, UnidentifiedImageError, OSError, SyntaxError, EOFError, struct_error)


def _open_size(data: bytes) -> tuple[int, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            return image.size


def image_size(text: str) -> tuple[int, int] | None:
    """The size an image field would decode to, read from its header; None when it is not an image Easel reads.

    Raises `Image.DecompressionBombError` for an image Pillow refuses to open at all (or its warning, where the
    warnings filter makes that an error)."""
    try:
        head = _head(text)
        if head is None:  # a prefix too hidden in whitespace to judge: look at all of it
            head = base64_bytes(text)
        if not _starts_like_image(head):
            return None
        if len(head) < _HEADER_BYTES and len(text) > _HEAD_CHARS:
            head = _decoded_prefix(text)
        try:
            return _open_size(head)
        except _UNREADABLE:
            pass
        return _open_size(base64_bytes(text))  # the header lies past the prefix (JPEG after big metadata, TIFF)
    except _UNREADABLE:  # not base64, or not an image: the route's decoder refuses it if it reads the field
        return None


def _decoded_prefix(text: str) -> bytes:
    """About the first `_HEADER_BYTES` bytes of the image (fewer if whitespace is spread through it)."""
    window = text[:_HEADER_BYTES * 4 // 3 + _HEAD_CHARS].lstrip()
    if window.startswith("data:"):
        window = window.partition(",")[2]
    chars = "".join(window.split())
    return base64.b64decode(chars[:len(chars) // 4 * 4], validate=True)


def strings(data: Any, shortest: int = 16) -> Iterator[tuple[str, str]]:
    """(field path, text) for every string in parsed JSON, in document order; paths read `imageList.2.data`."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            items = [(f"{path}.{key}" if path else str(key), item) for key, item in value.items()]
        elif isinstance(value, list):
            items = [(f"{path}.{index}" if path else str(index), item) for index, item in enumerate(value)]
        else:
            if isinstance(value, str) and len(value) >= shortest:
                yield path or "body", value
            continue
        stack.extend(reversed(items))


def check_images(data: Any, bounds: RequestBounds) -> None:
    """Refuse parsed JSON whose images are too many or too large together, before any is decoded."""
    count, total = 0, 0
    for path, text in strings(data):
        try:
            size = image_size(text)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # over Pillow's limit (the warning
            continue  # is an error while another thread's decoder has made it one): no decoder reads it
        if size is None or size[0] * size[1] > bounds.max_image_pixels:
            continue
        count += 1
        total += size[0] * size[1]
        if count > bounds.max_request_images:
            raise RequestBoundError(422, path, f"more than {bounds.max_request_images} images in one request; the "
                                               f"limit is {bounds.max_request_images} (max_request_images)")
        if total > bounds.max_request_pixels:
            raise RequestBoundError(422, path, f"with this {size[0]}x{size[1]} image the request's images add up "
                                               f"to {total} pixels; the limit is {bounds.max_request_pixels} "
                                               "pixels per request (max_request_pixels)")

