"""Regional prompts: per-request arguments, the pipeline wrapper that runs them, and their infotext.

Clients send `alwayson_scripts: {"regional prompter": {"args": [{"base_weight": 0.2, "regions": [{"box": [x0, y0,
x1, y1], "prompt": "...", "weight": 1.0}, ...]}]}}` — boxes as fractions of the image (0..1, left/top first), or
`"mask": <base64 PNG>` in place of `box` for a painted region (white, or opaque where the image has transparency,
is the region; grey is a partial weight) — or the shortcuts `{"divide": "columns" | "rows", "ratios": "1,1",
"prompts": ["left ...", "right ..."]}` that splits the image into strips as Regional Prompter's grid does, and
`{"masks": [...], "prompts": [...]}`, one painted mask per prompt. The request's own prompt is the base prompt.

Where they run: on the built-in model a txt2img request's first pass runs through `webui.builtin.regional`
(masked conditioning; its hires fix and detail fixer passes run on the base prompt). On SD 1.x, SD 2.x and SDXL
txt2img, img2img and inpainting (whole picture) run through `webui.engine.regional_attention` (attention coupling;
the hires fix pass too; detail fixer passes run on the base prompt). Every other family is refused with a
RequestError naming `alwayson_scripts.regional prompter` and the family, never silently ignored. The regions are
written to the infotext as `Regional prompts` (JSON; a painted mask as its size).
"""
from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from webui.requests import RequestError

NAME = "regional prompter"
FIELD = f"alwayson_scripts.{NAME}"
MAX_REGIONS = 8
MAX_WEIGHT = 10.0
MAX_MASK_PIXELS = 4096 * 4096
BUILTIN_MODES = ("txt2img",)  # the built-in model: masked conditioning in txt2img
COUPLED_ARCHS = ("sd1", "sd2", "sdxl")  # attention coupling on the UNet's cross-attention
COUPLED_MODES = ("txt2img", "img2img", "inpaint")
FAMILY_NAMES = {"sd3": "SD3", "flux": "Flux.1", "zimage": "Z-Image", "qwenimage": "Qwen-Image", "dit": "DiT",
                "pixart": "PixArt", "sana": "Sana", "amused": "aMUSEd", "unclip": "unCLIP",
                "deepfloyd_if": "DeepFloyd IF"}


@dataclass(frozen=True)
class RegionalPrompts:
    """Checked arguments: regions as (box, prompt, weight) and the base prompt's weight."""

    regions: tuple[Any, ...]  # webui.builtin.regional.Region
    base_weight: float = 0.2

    def as_json(self) -> str:
        return json.dumps({"base_weight": self.base_weight, "regions": [_region_json(r) for r in self.regions]},
                          ensure_ascii=False, separators=(",", ":"))


def _region_json(region: Any) -> dict[str, Any]:
    where: dict[str, Any] = {"box": [round(v, 4) for v in region.box]}
    if region.mask is not None:  # the painted pixels are not written into the infotext: their size is
        where = {"mask": f"painted {region.mask.shape[-1]}x{region.mask.shape[-2]}"}
    return {**where, "prompt": region.prompt, "weight": region.weight}


def decode_mask(value: Any, where: str) -> Any:
    """A painted mask as a float tensor [h,w] in 0..1: base64 (or a data: URL), a PIL image or an HxW(xC) uint8
    array. The alpha channel is the mask where the image has transparency, else its brightness."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, np.ndarray):
        if value.ndim not in (2, 3) or value.dtype != np.uint8:
            raise ValueError(f"{where}: an array mask must be HxW or HxWxC bytes, got {value.shape} {value.dtype}")
        image = Image.fromarray(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.startswith("data:"):
            text = text.partition(",")[2]
        text = "".join(text.split())
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{where}: is not valid base64") from None
        try:
            image = Image.open(io.BytesIO(raw), formats=("PNG", "JPEG", "WEBP"))
            if image.width * image.height > MAX_MASK_PIXELS:
                raise ValueError(f"{where}: image is {image.width}x{image.height}; the limit is {MAX_MASK_PIXELS} "
                                 "pixels")
            image.load()
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, EOFError):
            raise ValueError(f"{where}: is not a PNG, JPEG or WebP image") from None
    else:
        raise ValueError(f"{where}: must be a base64-encoded PNG mask (white = the region)")
    if image.width * image.height > MAX_MASK_PIXELS:
        raise ValueError(f"{where}: image is {image.width}x{image.height}; the limit is {MAX_MASK_PIXELS} pixels")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA"), np.float32)[..., 3]
        values = alpha if alpha.min() < 255 else np.asarray(image.convert("L"), np.float32)
    else:
        values = np.asarray(image.convert("L"), np.float32)
    mask = torch.from_numpy(values / 255.0)  # [h,w]
    if float(mask.max()) < 0.5 / 255:
        raise ValueError(f"{where}: the mask is empty (all black or transparent); paint the region in white")
    return mask


def _mask_box(mask: Any) -> tuple[float, float, float, float]:
    """The bounding box of a painted mask's non-zero pixels, as fractions of its size."""
    import torch

    rows, cols = torch.nonzero(mask.sum(1)), torch.nonzero(mask.sum(0))
    h, w = mask.shape
    return (int(cols.min()) / w, int(rows.min()) / h, (int(cols.max()) + 1) / w, (int(rows.max()) + 1) / h)


def _number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{where}: must be a number, got {value!r}"[:200])
    if not low <= float(value) <= high:
        raise ValueError(f"{where}: must be between {low:g} and {high:g}, got {value}")
    return float(value)


def _prompt(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: must be a non-empty prompt")
    if len(value) > 2000:
        raise ValueError(f"{where}: is {len(value)} characters long; the limit is 2000")
    return value.strip()


def _painted(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Regions from the painted shortcut: one mask per prompt, in order."""
    masks, prompts = raw.get("masks"), raw.get("prompts")
    if not isinstance(masks, list):
        raise ValueError("masks: must be a list with one painted mask per prompt")
    if not isinstance(prompts, list) or len(prompts) != len(masks):
        count = len(prompts) if isinstance(prompts, list) else 0
        raise ValueError(f"masks: needs one mask per prompt ({count} prompts, {len(masks)} masks)")
    return [{"mask": mask, "prompt": prompt} for mask, prompt in zip(masks, prompts)]


def _strips(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Regions from the grid shortcut: the image cut into columns or rows by `ratios`, one prompt each."""
    divide = raw.get("divide", "columns")
    if divide not in ("columns", "rows"):
        raise ValueError(f"divide: must be 'columns' or 'rows', got {divide!r}")
    prompts = raw.get("prompts")
    if not isinstance(prompts, list) or not prompts:
        raise ValueError("prompts: must be a list with one prompt per strip")
    ratios_text = raw.get("ratios", ",".join("1" for _ in prompts))
    try:
        ratios = [float(part) for part in str(ratios_text).split(",")]
    except ValueError:
        raise ValueError(f"ratios: must be numbers separated by commas, got {ratios_text!r}") from None
    if len(ratios) != len(prompts) or any(r <= 0 for r in ratios):
        raise ValueError(f"ratios: needs one positive number per prompt ({len(prompts)}), got {ratios_text!r}")
    total, start, regions = sum(ratios), 0.0, []
    for ratio, prompt in zip(ratios, prompts):
        end = start + ratio / total
        box = [start, 0.0, end, 1.0] if divide == "columns" else [0.0, start, 1.0, end]
        regions.append({"box": box, "prompt": prompt})
        start = end
    return regions


def parse_regional_args(raw: Any) -> RegionalPrompts | None:
    """`alwayson_scripts["regional prompter"]` as RegionalPrompts (None when it holds no region); ValueError
    names the part that is wrong (`regions[1].box`)."""
    from webui.builtin.regional import Region

    if isinstance(raw, RegionalPrompts):
        return raw
    if isinstance(raw, list):
        if not raw:
            return None
        if len(raw) != 1 or not isinstance(raw[0], Mapping):
            raise ValueError("args: must hold one object: {\"regions\": [...], \"base_weight\": ...}")
        raw = raw[0]
    if not isinstance(raw, Mapping):
        raise ValueError("args: must be an object with `regions` (or `prompts` to divide into strips)")
    known = {"regions", "base_weight", "divide", "ratios", "prompts", "masks", "enabled"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{unknown[0]}: is not a regional prompts argument; known: {', '.join(sorted(known))}")
    if raw.get("enabled") is False:
        return None
    forms = ("regions", "masks", "divide")  # each form's own keys: a key of another form would go unused
    clash = [key for key in ("masks", "divide", "ratios", "prompts") if key in raw and "regions" in raw] or \
        [key for key in ("divide", "ratios") if key in raw and "masks" in raw]
    if clash:
        form = next(f for f in forms if f in raw)
        raise ValueError(f"{clash[0]}: does not go with `{form}`; give regions, masks + prompts, or divide + "
                         "ratios + prompts")
    items = raw.get("regions") if "regions" in raw else _painted(raw) if "masks" in raw else _strips(raw)
    if not isinstance(items, list):
        raise ValueError("regions: must be a list of {\"box\": [x0, y0, x1, y1], \"prompt\": ..., \"weight\": ...}")
    if not items:
        return None
    if len(items) > MAX_REGIONS:
        raise ValueError(f"regions: {len(items)} regions; the limit is {MAX_REGIONS}")
    regions = []
    for index, item in enumerate(items):
        where = f"regions[{index}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: must be an object with box (or mask), prompt and weight")
        extra = sorted(set(item) - {"box", "mask", "prompt", "weight"})
        if extra:
            raise ValueError(f"{where}.{extra[0]}: is not a region field (box, mask, prompt, weight)")
        weight = _number(item.get("weight", 1.0), f"{where}.weight", 0.0, MAX_WEIGHT)
        if "mask" in item:
            if "box" in item:
                raise ValueError(f"{where}.mask: give a box or a mask, not both")
            where_mask = f"masks[{index}]" if "masks" in raw else f"{where}.mask"
            mask = decode_mask(item["mask"], where_mask)
            regions.append(Region(_mask_box(mask), _prompt(item.get("prompt"), f"{where}.prompt"), weight, mask))
            continue
        box = item.get("box")
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise ValueError(f"{where}.box: must be [x0, y0, x1, y1] as fractions of the image (or give a mask)")
        x0, y0, x1, y1 = (_number(v, f"{where}.box", 0.0, 1.0) for v in box)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"{where}.box: x1 must be above x0 and y1 above y0, got {list(box)}")
        regions.append(Region((x0, y0, x1, y1), _prompt(item.get("prompt"), f"{where}.prompt"), weight))
    base_weight = _number(raw.get("base_weight", 0.2), "base_weight", 0.0, MAX_WEIGHT)
    return RegionalPrompts(tuple(regions), base_weight)


def wanted(request: Any) -> RegionalPrompts | None:
    args = getattr(request, "extension_args", None) or {}
    value = args.get(NAME)
    return value if isinstance(value, RegionalPrompts) else None


def wrapper(call: Any, run: Callable[[Any], Any]) -> Any:
    """Run a pipeline call with the request's regions: masked conditioning on the built-in model, attention
    coupling on SD 1.x/2.x/SDXL; refuse them on any other family, naming it."""
    regional = wanted(call.request)
    if regional is None:
        return run(call)
    mode = getattr(call.request, "mode", call.task)
    if call.arch == "easel":
        return _builtin(call, run, regional, mode)
    if call.arch in COUPLED_ARCHS:
        return _coupled(call, run, regional, mode)
    family = FAMILY_NAMES.get(call.arch, call.arch)
    raise RequestError(FIELD, f"regional prompts run on SD 1.x, SD 2.x, SDXL and the built-in model; "
                              f"{call.checkpoint} is a {family} model, which Easel cannot run them on (its "
                              f"transformer has no region-masked conditioning in Easel yet)")


def _builtin(call: Any, run: Callable[[Any], Any], regional: RegionalPrompts, mode: str) -> Any:
    if mode not in BUILTIN_MODES:
        raise RequestError(FIELD, f"regional prompts run on the built-in model in txt2img only; {call.checkpoint} "
                                  f"cannot run them in {mode}")
    if call.task != "txt2img":  # a later pass of a txt2img job (hires fix, detail fixer): the base prompt alone
        return run(call)
    from webui.builtin.regional import regional_call

    return regional_call(call.pipe, call.kwargs.get("prompt", ""), list(regional.regions),
                         base_weight=regional.base_weight, **{k: v for k, v in call.kwargs.items() if k != "prompt"})


def _coupled(call: Any, run: Callable[[Any], Any], regional: RegionalPrompts, mode: str) -> Any:
    if mode not in COUPLED_MODES:
        raise RequestError(FIELD, f"regional prompts run in txt2img, img2img and inpaint; not in {mode}")
    if mode == "inpaint" and getattr(call.request, "inpaint_full_res", False):
        raise RequestError(FIELD, "regional prompts need the whole picture: set inpaint_full_res (Inpaint area) "
                                  "to the whole picture, not only the masked area")
    pipe = call.pipe
    if getattr(pipe, "unet", None) is None or getattr(pipe, "text_encoder", None) is None:
        return run(call)  # a refiner pass (SDXL's refiner has no first text encoder): the base prompt alone
    from webui.engine.regional_attention import regions_coupled

    with regions_coupled(pipe, list(regional.regions), regional.base_weight,
                         int(getattr(call.request, "clip_skip", 1) or 1), call.arch == "sdxl"):
        return run(call)


def infotext(request: Any, generated: list[Any]) -> list[Any] | None:
    """Write the regions into each image's infotext."""
    regional = wanted(request)
    if regional is None:
        return None
    for item in generated:
        item.extra = {**item.extra, "Regional prompts": regional.as_json()}
    return generated


def register(registry: Any) -> None:
    """Take regional prompts' arguments in `registry` (every Easel's) and run them around each pipeline call."""
    registry.request_args[NAME] = parse_regional_args
    registry.pipeline_wrappers.append(wrapper)
    registry.after_generate.append(infotext)
