"""`webui.api.bounds`: the streaming JSON shape count agrees with the parsed JSON however the body is cut into
chunks, strings (escapes, brackets inside them) do not count, and image fields are found and sized from their
headers in every form the decoders read. The routes' use of them is in tests/security/test_memory_bombs.py."""
from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from webui.api.bounds import JsonShape, RequestBoundError, RequestBounds, check_images, image_size, is_json

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | \
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.sampled_from(['a"b', "\\", "\\\"", "[{,:}]", "\\" * 70 + '"', "\\" * 129, 'x\\"' * 40, "é\u4e00🐈"])
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5) |
                      st.dictionaries(st.text(max_size=6) | st.sampled_from(['k"', "k\\", "{,}"]), inner, max_size=5),
                      max_leaves=40)


def reference(value: Any, depth: int = 0) -> tuple[int, int]:
    """(values as JsonShape counts them: each array/object plus each item after its first, deepest nesting)."""
    if isinstance(value, (list, dict)):
        items = list(value.values()) if isinstance(value, dict) else value
        counted, deepest = 1 + max(0, len(items) - 1), depth + 1
        for item in items:
            more, nested = reference(item, depth + 1)
            counted, deepest = counted + more, max(deepest, nested)
        return counted, deepest
    return 0, depth


def fed(body: bytes, cuts: list[int], **limits: int) -> JsonShape:
    shape = JsonShape(**limits)
    points = sorted({0, len(body), *[c % (len(body) + 1) for c in cuts]})
    for start, stop in zip(points, points[1:]):
        shape.feed(body[start:stop])
    return shape


@settings(max_examples=150, deadline=None)
@given(VALUES, st.lists(st.integers(min_value=0), max_size=12), st.booleans())
def test_shape_count_matches_the_parsed_json_however_it_is_chunked(value, cuts, ascii_only) -> None:
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    shape = fed(body, cuts)
    assert (shape.values, shape.deepest) == reference(value)
    assert shape.depth == 0 and not shape._in_string


def test_a_bomb_is_refused_naming_its_top_level_field_and_strings_do_not_count() -> None:
    text = "a, [b] {c}: \\\"quoted\\\" " * 10_000  # 50 000 commas and brackets inside one string
    body = json.dumps({"prompt": text, "ok": [1, 2, 3]}).encode()
    shape = fed(body, list(range(7, len(body), 4093)))
    assert shape.values == 5 and shape.key == "ok"  # {, the comma between fields, [ and its two commas
    bomb = b'{"image": "x", "junk \\"1\\"": [' + b"[]," * 200_000
    with pytest.raises(RequestBoundError) as caught:
        fed(bomb, list(range(0, len(bomb), 65536)))
    assert caught.value.status == 413 and caught.value.field == 'junk "1"'
    assert "more than 100000 JSON values" in caught.value.message
    with pytest.raises(RequestBoundError) as caught:
        fed(b"[" * 40, [])
    assert caught.value.status == 422 and caught.value.field == "body" and "32 levels" in caught.value.message
    with pytest.raises(RequestBoundError):  # closing brackets and colons are bounded too
        fed(b"]" * 900_000, [])
    with pytest.raises(RequestBoundError, match="escaped quotes"):  # each costs a step: bounded as well
        fed(b'{"a": "' + b'\\"' * 100_100 + b'"}', list(range(0, 300_000, 65536)))
    long_key = b'{"' + b"k" * 300 + b'": ' + b"[[]," * 100_001
    with pytest.raises(RequestBoundError) as caught:
        fed(long_key, [])
    assert caught.value.field == "body"  # a key too long to keep is not echoed


def test_long_strings_with_wide_characters_are_refused_but_ascii_ones_are_not() -> None:
    ascii_body = json.dumps({"image": "A" * (6 * 2**20), "prompt": "un café, 一只猫, 🐈" * 100}).encode()
    assert fed(ascii_body, list(range(0, len(ascii_body), 65536))).wide_bytes < 10_000
    for tail in ("é", "\\u00e9", "\\ud83d\\ude00"):  # raw UTF-8, and escapes split or not across chunks
        body = b'{"image": "x", "junk": "' + b"a" * (5 * 2**20) + tail.encode() + b'"}'
        for cuts in ([], [len(body) - 4], [len(body) - 5], list(range(0, len(body), 65536))):
            with pytest.raises(RequestBoundError) as caught:
                fed(body, cuts)
            assert caught.value.status == 413 and caught.value.field == "junk", (tail, cuts)
            assert "non-ASCII" in caught.value.message


def test_json_content_types() -> None:
    assert is_json(None) and is_json("application/json; charset=utf-8") and is_json("application/vnd.api+json")
    assert not is_json("text/plain") and not is_json("multipart/form-data; boundary=x")


def png(size: tuple[int, int], **save: Any) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, format=save.pop("format", "PNG"), **save)
    return buffer.getvalue()


def test_images_are_sized_from_their_headers_in_every_form_the_decoders_read() -> None:
    raw = png((300, 200))
    b64 = base64.b64encode(raw).decode()
    spaced = " \n".join(b64[i:i + 3] for i in range(0, len(b64), 3))  # whitespace the decoders remove
    for text in (b64, "data:image/png;base64," + b64, b64.rstrip("="), "\n" * 5000 + b64, spaced):
        assert image_size(text) == (300, 200)
    # a JPEG whose size comes after 200 kB of metadata (an ICC profile), past the prefix read first
    jpeg = base64.b64encode(png((64, 48), format="JPEG", icc_profile=b"\0" * 200_000)).decode()
    assert image_size(jpeg) == (64, 48)
    tiff = base64.b64encode(png((40, 30), format="TIFF")).decode()
    assert image_size(tiff) == (40, 30)
    for text in ("a cabin in the woods, highly detailed", "Qk" + "A" * 40, base64.b64encode(b"\x89PNG" + b"0" * 40)
                 .decode(), "not base64 at all!" * 10):
        assert image_size(text) is None

    bounds = RequestBounds(max_request_pixels=100_000, max_request_images=3, max_image_pixels=80_000)
    check_images({"init_images": [b64], "prompt": "x" * 100}, bounds)
    big = base64.b64encode(png((300, 300))).decode()  # over the per-image limit: left to the route's decoder
    check_images([big, big, b64], bounds)
    with pytest.raises(RequestBoundError) as caught:
        check_images({"a": {"b": [b64, spaced]}}, bounds)
    assert caught.value.field == "a.b.1" and "120000 pixels" in caught.value.message
    small = base64.b64encode(png((8, 8))).decode()
    with pytest.raises(RequestBoundError) as caught:
        check_images([small, "text", small, small, small], bounds)
    assert caught.value.field == "4" and "more than 3 images" in caught.value.message
