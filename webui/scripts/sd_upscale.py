"""SD upscale (img2img): the input image is enlarged by an upscaler, cut into overlapping tiles of the request's
width × height, each tile repainted by img2img, and the tiles blended back into one picture.

`script_args` in AUTOMATIC1111's order: an unused first value, the tile overlap (px), the upscaler (its index in
AUTOMATIC1111's list, None first, then Lanczos, Nearest and the installed models; or its name) and the scale
factor. The upscaler "None" leaves the image at its size (the tiles repaint it as it is).

Tiles are spread evenly so that neighbours overlap by at least the overlap; across the band where two tiles
overlap, the picture fades linearly from one to the other (first along each row, then between rows), so no seam
shows. Tile n of an upscale has the seed + n; with a batch count above 1, upscale k starts at the seed + k. The
tiles run one at a time (batch size does not group them) and are neither saved nor returned: the job returns the
blended picture(s), each with the first tile's infotext and the SD upscale entries, saved as img2img images.
The detail fixer's passes (`alwayson_scripts`) run once on each blended picture, never on the tiles.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

from webui.engine.context import Generated
from webui.engine.detail import units
from webui.engine.detail_args import without_passes
from webui.engine.script_job import MAX_GRID_PIXELS, ScriptJob, with_params
from webui.requests import GenerationRequest, Img2ImgRequest, InpaintRequest
from webui.scripts.xyz import random_if_unset

TITLE = "SD upscale"
ARG_LABELS = ("(unused)", "Tile overlap", "Upscaler", "Scale Factor")
ARG_DEFAULTS: tuple[Any, ...] = (None, 64, "Lanczos", 2.0)
NONE = "None"
MAX_SCALE = 8.0


def tile_positions(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of `tile` px start along `length` px so that neighbours overlap by at least `overlap`."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _fade(canvas: np.ndarray, tile: np.ndarray, start: int, end_before: int, axis: int) -> None:
    """Put `tile` into `canvas` at `start` along `axis`, fading in over the part already filled (up to
    `end_before`)."""
    size = tile.shape[axis]
    band = max(0, min(end_before - start, size))
    index = [slice(None)] * canvas.ndim
    if band:
        ramp = (np.arange(band, dtype=np.float32) + 0.5) / band  # the new tile's weight across the band
        shape = [1] * canvas.ndim
        shape[axis] = band
        ramp = ramp.reshape(shape)
        index[axis] = slice(start, start + band)
        tile_index = [slice(None)] * canvas.ndim
        tile_index[axis] = slice(0, band)
        canvas[tuple(index)] = canvas[tuple(index)] * (1 - ramp) + tile[tuple(tile_index)] * ramp
    index[axis] = slice(start + band, start + size)
    tile_index = [slice(None)] * canvas.ndim
    tile_index[axis] = slice(band, size)
    canvas[tuple(index)] = tile[tuple(tile_index)]


def blend_tiles(size: tuple[int, int], xs: list[int], ys: list[int],
                tiles: list[list[Image.Image]]) -> Image.Image:
    """One picture of `size` from tiles (row by row) placed at `xs` × `ys`, faded across their overlaps."""
    width, height = size
    out = np.zeros((height, width, 3), dtype=np.float32)
    filled_y = 0
    for y, row_tiles in zip(ys, tiles):
        tile_h = row_tiles[0].height
        row = np.zeros((tile_h, width, 3), dtype=np.float32)
        filled_x = 0
        for x, tile in zip(xs, row_tiles):
            _fade(row, np.asarray(tile.convert("RGB"), dtype=np.float32), x, filled_x, axis=1)
            filled_x = x + tile.width
        _fade(out, row, y, filled_y, axis=0)
        filled_y = y + tile_h
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def upscaler_name(value: Any, names: list[str]) -> str:
    """The upscaler an argument names: its index in [None, *names] or its name (any case)."""
    choices = [NONE, *names]
    if isinstance(value, bool):
        raise ValueError(f"Upscaler: {value!r} is neither an index nor a name")
    if isinstance(value, (int, float)) and float(value).is_integer():
        if not 0 <= int(value) < len(choices):
            raise ValueError(f"Upscaler: index {int(value)} is not between 0 and {len(choices) - 1} "
                             f"({', '.join(choices)})")
        return choices[int(value)]
    text = str(value).strip()
    found = next((name for name in choices if name.lower() == text.lower()), None)
    if found is None and text.isdigit():
        return upscaler_name(int(text), names)
    if found is None:
        raise ValueError(f"Upscaler: no upscaler named {text!r}; installed: {', '.join(choices)}")
    return found


def make_sd_upscale(request: GenerationRequest, args: list[Any], upscalers: Any) -> ScriptJob:
    """The tiles' requests, made with `upscalers` (webui.engine.upscalers.Upscalers) while the job runs."""
    if not isinstance(request, Img2ImgRequest) or isinstance(request, InpaintRequest):
        raise ValueError("SD upscale runs on img2img's input image (not txt2img, not inpainting)")
    if request.init_image is None:
        raise ValueError("SD upscale needs an input image")
    if len(args) > len(ARG_DEFAULTS):
        raise ValueError(f"takes at most {len(ARG_DEFAULTS)} arguments ({', '.join(ARG_LABELS)}), got {len(args)}")
    _, overlap_arg, upscaler_arg, scale_arg = list(args) + list(ARG_DEFAULTS[len(args):])
    tile_w, tile_h = request.width, request.height
    try:
        overlap = int(overlap_arg)
    except (TypeError, ValueError):
        raise ValueError(f"Tile overlap: {overlap_arg!r} is not a whole number") from None
    if isinstance(overlap_arg, bool) or float(overlap_arg) != overlap:
        raise ValueError(f"Tile overlap: {overlap_arg!r} is not a whole number")
    if not 0 <= overlap < min(tile_w, tile_h):
        raise ValueError(f"Tile overlap: must be at least 0 and less than the tile size ({tile_w}x{tile_h}: the "
                         f"width and height), got {overlap}")
    name = upscaler_name(upscaler_arg, upscalers.names())
    try:
        scale = float(scale_arg)
    except (TypeError, ValueError):
        raise ValueError(f"Scale Factor: {scale_arg!r} is not a number") from None
    if isinstance(scale_arg, bool) or not 0 < scale <= MAX_SCALE:
        raise ValueError(f"Scale Factor: must be above 0 and at most {MAX_SCALE:g}, got {scale_arg!r}")
    source = request.init_image
    size = source.size if name == NONE else (int(source.width * scale) // 8 * 8, int(source.height * scale) // 8 * 8)
    if size[0] < tile_w or size[1] < tile_h:
        raise ValueError(f"the upscaled image ({size[0]}x{size[1]}) is smaller than a tile ({tile_w}x{tile_h}, the "
                         "width and height): raise the scale factor or lower the width and height")
    if size[0] * size[1] > MAX_GRID_PIXELS:
        raise ValueError(f"the upscaled image ({size[0]}x{size[1]}) is larger than {MAX_GRID_PIXELS} pixels")
    xs, ys = tile_positions(size[0], tile_w, overlap), tile_positions(size[1], tile_h, overlap)
    per_upscale = len(xs) * len(ys)
    seed = random_if_unset(request.seed)
    fixed = {"subseed": random_if_unset(request.subseed)} if request.variation else {}
    entries = (("SD upscale overlap", overlap), ("SD upscale upscaler", name))
    tile_args = without_passes(request.extension_args)  # the detail passes run on the blended picture
    requests: list[GenerationRequest] = []
    labels: list[str] = []
    for upscale in range(request.batch_count):
        for tile in range(per_upscale):
            requests.append(request.replace(seed=seed + upscale + tile, batch_size=1, batch_count=1,
                                            resize_mode="Just resize", extension_args=tile_args, **fixed))
            labels.append(f"tile {tile + 1}" if request.batch_count == 1 else f"upscale {upscale + 1}, tile {tile + 1}")
    state: dict[str, Image.Image] = {}

    def upscaled(engine: Any) -> Image.Image:
        if "image" not in state:  # once, on the worker (a model upscaler runs on the device)
            state["image"] = engine.upscalers.upscale(source.convert("RGB"), name, size) if name != NONE \
                else source.convert("RGB")
        return state["image"]

    def box(tile: int) -> tuple[int, int, int, int]:
        row, column = divmod(tile, len(xs))
        return xs[column], ys[row], xs[column] + tile_w, ys[row] + tile_h

    def prepare(engine: Any, index: int, planned: GenerationRequest, parts: list[Any]) -> GenerationRequest:
        return planned.replace(init_image=upscaled(engine).crop(box(index % per_upscale)))

    def finish(engine: Any, parts: list[Any], job: Any) -> list[tuple[Image.Image, str, dict[str, Any], int]]:
        if "image" not in state:  # interrupted before the first tile
            return []
        made = []
        for upscale in range(request.batch_count):
            results = parts[upscale * per_upscale:(upscale + 1) * per_upscale]
            first = next((r for r in results if r is not None and r.images), None)
            if first is None:
                continue
            # a tile not made (an interrupted job) keeps the upscaled image there
            tiles = [r.images[0] if r is not None and r.images else state["image"].crop(box(i))
                     for i, r in enumerate(results)]
            rows = [tiles[r * len(xs):(r + 1) * len(xs)] for r in range(len(ys))]
            image = blend_tiles(size, xs, ys, rows)
            made.append((image, first.infotexts[0], first.parameters[0] if first.parameters else {},
                         first.seeds[0]))
        pictures = [Generated(image, seed) for image, _, _, seed in made]
        engine.run_detail(job, request, pictures)  # the passes (if asked), recorded in the picture's infotext
        return [(picture.image, *with_params(text, params, tuple(picture.extra.items())), seed)
                for picture, (_, text, params, seed) in zip(pictures, made)]

    return ScriptJob(script=TITLE, base=request, requests=tuple(requests), labels=tuple(labels),
                     include_images=False, mode=request.mode, prepare=prepare, finish=finish,
                     extras=(entries,) * len(requests), save_parts=False,
                     finish_units=units(request.replace(batch_size=1)))
