"""ControlNet units: what one control input asks for, read from the API, the UI or code, checked field by field.

A unit is the sd-webui-controlnet dictionary (`enabled`, `image`/`input_image`, `mask`, `module`, `model`,
`weight`, `resize_mode`, `processor_res`, `threshold_a`, `threshold_b`, `guidance_start`, `guidance_end`,
`control_mode`, `pixel_perfect`, `hr_option`); AUTOMATIC1111 clients send a list of them as
`alwayson_scripts.ControlNet.args`. `parse_units` turns such a list into `ControlUnit`s, accepting the integer
and legacy spellings those clients use (`control_mode: 2`, `resize_mode: "Scale to Fit (Inner Fit)"`,
`guessmode: true`, `-1` for "the default"), and raises ValueError naming `args[i].key` for anything else.
Keys it does not know (`low_vram`, ...) are ignored, as sd-webui-controlnet ignores them.
`infotext_value` writes a unit the way AUTOMATIC1111 records it in the parameters text.
"""
from __future__ import annotations

import base64
import dataclasses
import binascii
import io
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from PIL import Image, UnidentifiedImageError

from webui.extension_api import RequestError

from .preprocessors import REFERENCE_MODULES

MODEL_FREE_MODULES = REFERENCE_MODULES  # modules that run without a ControlNet model

BALANCED = "Balanced"
PROMPT_MORE_IMPORTANT = "My prompt is more important"
CONTROLNET_MORE_IMPORTANT = "ControlNet is more important"
CONTROL_MODES = (BALANCED, PROMPT_MORE_IMPORTANT, CONTROLNET_MORE_IMPORTANT)

JUST_RESIZE = "Just Resize"
CROP_AND_RESIZE = "Crop and Resize"
RESIZE_AND_FILL = "Resize and Fill"
RESIZE_MODES = (JUST_RESIZE, CROP_AND_RESIZE, RESIZE_AND_FILL)
_RESIZE_ALIASES = {"just resize": JUST_RESIZE, "crop and resize": CROP_AND_RESIZE, "resize and fill": RESIZE_AND_FILL,
                   "scale to fit (inner fit)": CROP_AND_RESIZE, "inner fit": CROP_AND_RESIZE,
                   "envelope (outer fit)": RESIZE_AND_FILL, "outer fit": RESIZE_AND_FILL}

BOTH_PASSES = "Both"
LOW_RES_ONLY = "Low res only"
HIGH_RES_ONLY = "High res only"
HR_OPTIONS = (BOTH_PASSES, LOW_RES_ONLY, HIGH_RES_ONLY)  # which txt2img pass a unit steers when hires fix is on

DEFAULT_PROCESSOR_RES = 512
MAX_UNITS = 10  # units in one request (sd-webui-controlnet's largest unit count), and images in one detect call
MAX_WEIGHT = 10.0
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet unit, checked. `module` and `model` are canonical names; thresholds of None mean the
    preprocessor's own default."""

    image: Image.Image | None = None  # None: img2img and inpaint use their input image
    mask: Image.Image | None = None
    module: str = "none"
    model: str = ""
    weight: float = 1.0
    resize_mode: str = CROP_AND_RESIZE
    processor_res: int = DEFAULT_PROCESSOR_RES
    threshold_a: float | None = None
    threshold_b: float | None = None
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: str = BALANCED
    pixel_perfect: bool = False
    hr_option: str = BOTH_PASSES
    union_control_type: str | None = None  # a union ControlNet's control type (a name or its number), else None
    references: tuple[Image.Image, ...] = ()  # IP-Adapter units given a list of images: all of them (`image` first)
    enabled: bool = True
    index: int = 0  # its place in the client's list (`args[index]`), kept when disabled units are dropped


# Reading values --------------------------------------------------------------------------------------------------
def _number(value: Any, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{key}: must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{key}: must be a number, got {value!r}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{key}: must be between {low:g} and {high:g}, got {value!r}")
    return number


def _flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{key}: must be true or false, got {value!r}")


def _choice(value: Any, key: str, choices: tuple[str, ...], aliases: dict[str, str] | None = None) -> str:
    """A choice by index (0, "1") or by name in any case."""
    numbered = ", ".join(f"{i} = {c}" for i, c in enumerate(choices))
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
        return choices[value]
    if isinstance(value, str):
        lowered = value.strip().lower()
        for choice in choices:
            if choice.lower() == lowered:
                return choice
        if aliases and lowered in aliases:
            return aliases[lowered]
    raise ValueError(f"{key}: must be one of {numbered}; got {value!r}")


def decode_image(data: Any, key: str, max_pixels: int) -> Image.Image | None:
    """A PIL image from base64 (with or without a data: prefix), a PIL image or an HxWxC array; None when empty."""
    if data is None or (isinstance(data, str) and not data.strip()):
        return None
    if isinstance(data, Image.Image):
        image = data
    elif hasattr(data, "__array__") and not isinstance(data, (str, bytes, dict)):
        import numpy as np

        array = np.asarray(data)
        if array.ndim not in (2, 3) or array.dtype != np.uint8:
            raise RequestError(key, f"an image array must be HxW or HxWxC bytes, got {array.shape} {array.dtype}")
        image = Image.fromarray(array)
    elif isinstance(data, str):
        text = data.strip()
        if text.startswith("data:"):
            text = text.partition(",")[2]
        text = "".join(text.split())
        text += "=" * (-len(text) % 4)
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(key, "is not valid base64") from None
        try:
            image = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise RequestError(key, f"image is {width}x{height}; the limit is {max_pixels} pixels")
            image.load()
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, EOFError):
            raise RequestError(key, f"is not an image Easel can read ({', '.join(IMAGE_FORMATS)})") from None
    else:
        raise RequestError(key, f"must be a base64-encoded image, got {type(data).__name__}")
    width, height = image.size
    if width * height > max_pixels:
        raise RequestError(key, f"image is {width}x{height}; the limit is {max_pixels} pixels")
    return image


# Parsing ---------------------------------------------------------------------------------------------------------
def parse_unit(raw: Any, index: int, find_module: Callable[[str], str], find_model: Callable[[str, str], str],
               max_pixels: int) -> ControlUnit:
    """One unit from its dictionary (or an already checked `ControlUnit`)."""
    if isinstance(raw, ControlUnit):
        return dataclasses.replace(raw, index=index)
    at = f"args[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{at}: a ControlNet unit must be an object with keys such as image, module, model; "
                         f"got {type(raw).__name__}")
    enabled = _flag(raw.get("enabled", True), f"{at}.enabled")
    if not enabled:
        return ControlUnit(enabled=False, index=index)

    image_data = raw.get("image", None)
    if image_data in (None, "") and raw.get("input_image") not in (None, ""):
        image_data = raw.get("input_image")
    mask_data = raw.get("mask", raw.get("mask_image"))
    image_key = f"{at}.image" if raw.get("image") not in (None, "") else f"{at}.input_image"
    references: list[Image.Image] = []
    if isinstance(image_data, (list, tuple)) and not hasattr(image_data, "__array__"):
        # several reference images (IP-Adapter units; the module is checked below), each base64 or {"image": ...}
        if not image_data or len(image_data) > MAX_UNITS:
            raise ValueError(f"{image_key}: a list of images holds 1 to {MAX_UNITS} images, got {len(image_data)}")
        for j, item in enumerate(image_data):
            item = item.get("image") if isinstance(item, dict) else item
            decoded = decode_image(item, f"{image_key}[{j}]", max_pixels)
            if decoded is None:
                raise ValueError(f"{image_key}[{j}]: is empty")
            references.append(decoded)
        image_data = references[0]
    if isinstance(image_data, dict):  # {"image": ..., "mask": ...}, as the sd-webui-controlnet UI sends it
        mask_data = image_data.get("mask", mask_data)
        image_data = image_data.get("image")
    image = decode_image(image_data, image_key, max_pixels)
    mask = decode_image(mask_data, f"{at}.mask", max_pixels)

    module_name = raw.get("module", "none")
    if module_name is None or (isinstance(module_name, str) and module_name.strip() in ("", "None")):
        module_name = "none"
    if not isinstance(module_name, str):
        raise ValueError(f"{at}.module: must be a preprocessor name, got {module_name!r}")
    try:
        module = find_module(module_name.strip())
    except LookupError as exc:
        raise ValueError(f"{at}.module: {exc}") from None

    if len(references) > 1 and not module.startswith("ip-adapter"):
        raise ValueError(f"{image_key}: several images are for IP-Adapter units (an ip-adapter_* module); "
                         f"a {module} unit takes one image")

    model_name = raw.get("model", "")
    if model_name is None or (isinstance(model_name, str) and model_name.strip() in ("", "None", "none")):
        # No model: a reference unit, or the control image of a Flux.1 Depth/Canny checkpoint; any other use is
        # refused when the job runs, where the checkpoint is known ("choose a ControlNet model").
        model = ""
    elif module in MODEL_FREE_MODULES:
        raise ValueError(f"{at}.model: {module} uses no ControlNet model (it steers the checkpoint's own UNet); "
                         f"send model \"None\", got {model_name!r}")
    elif not isinstance(model_name, str):
        raise ValueError(f"{at}.model: choose a ControlNet model (GET /controlnet/model_list lists them)")
    else:
        try:
            model = find_model(model_name.strip(), module)  # the module tells a ControlNet from an IP-Adapter
        except LookupError as exc:
            raise ValueError(f"{at}.model: {exc}") from None

    weight = _number(raw.get("weight", 1.0), f"{at}.weight", 0.0, MAX_WEIGHT)
    start = _number(raw.get("guidance_start", 0.0), f"{at}.guidance_start", 0.0, 1.0)
    end = _number(raw.get("guidance_end", 1.0), f"{at}.guidance_end", 0.0, 1.0)
    if start >= end:
        raise ValueError(f"{at}.guidance_start: must be below guidance_end ({start:g} >= {end:g})")

    if "control_mode" in raw:
        control_mode = _choice(raw["control_mode"], f"{at}.control_mode", CONTROL_MODES)
    elif raw.get("guessmode") or raw.get("guess_mode"):  # sd-webui-controlnet's first API spelling
        control_mode = CONTROLNET_MORE_IMPORTANT
    else:
        control_mode = BALANCED
    resize_mode = _choice(raw.get("resize_mode", CROP_AND_RESIZE), f"{at}.resize_mode", RESIZE_MODES,
                          _RESIZE_ALIASES)

    processor_res = raw.get("processor_res", -1)
    if processor_res is None or (not isinstance(processor_res, bool) and isinstance(processor_res, (int, float))
                                 and processor_res < 0):
        processor_res = DEFAULT_PROCESSOR_RES
    processor_res = _number(processor_res, f"{at}.processor_res", 64, 4096)
    if not processor_res.is_integer():
        raise ValueError(f"{at}.processor_res: must be a whole number, got {processor_res:g}")

    thresholds: list[float | None] = []
    for key in ("threshold_a", "threshold_b"):
        value = raw.get(key, -1)
        if value is None or (not isinstance(value, bool) and isinstance(value, (int, float)) and value == -1):
            thresholds.append(None)
        else:
            thresholds.append(_number(value, f"{at}.{key}", -1e6, 1e6))

    return ControlUnit(image=image, mask=mask, module=module, model=model, weight=weight, resize_mode=resize_mode,
                       processor_res=int(processor_res), threshold_a=thresholds[0], threshold_b=thresholds[1],
                       guidance_start=start, guidance_end=end, control_mode=control_mode,
                       pixel_perfect=_flag(raw.get("pixel_perfect", False), f"{at}.pixel_perfect"),
                       hr_option=_choice(raw.get("hr_option", BOTH_PASSES), f"{at}.hr_option", HR_OPTIONS),
                       union_control_type=_union_type(raw.get("union_control_type"), f"{at}.union_control_type"),
                       references=tuple(references), index=index)


def _union_type(value: Any, key: str) -> str | None:
    """A union ControlNet's control type: None or "Unknown" for none, else a name or a number (checked against the
    model when the job runs)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "unknown")):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{key}: must be a control type name (such as \"canny\" or \"depth\") or its number, "
                         f"got {value!r}")
    return str(value).strip().lower()


def parse_units(raw: Any, find_module: Callable[[str], str], find_model: Callable[[str, str], str],
                max_pixels: int) -> list[ControlUnit]:
    """The enabled units of an `args` list (None or [] → none)."""
    if raw is None:
        return []
    if isinstance(raw, dict) and "args" in raw:
        raw = raw["args"]
    if isinstance(raw, (dict, ControlUnit)):
        raw = [raw]
    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"args: must be a list of ControlNet units, got {type(raw).__name__}")
    if len(raw) > MAX_UNITS:
        raise ValueError(f"args: at most {MAX_UNITS} ControlNet units in one request (disabled ones included), "
                         f"got {len(raw)}")
    units = [parse_unit(item, i, find_module, find_model, max_pixels) for i, item in enumerate(raw)]
    return [unit for unit in units if unit.enabled]


def unit_to_dict(unit: ControlUnit) -> dict[str, Any]:
    """A checked unit back in dictionary form (images stay PIL images)."""
    return {"enabled": unit.enabled, "image": unit.image, "mask": unit.mask, "module": unit.module,
            "model": unit.model, "weight": unit.weight, "resize_mode": unit.resize_mode,
            "processor_res": unit.processor_res,
            "threshold_a": -1 if unit.threshold_a is None else unit.threshold_a,
            "threshold_b": -1 if unit.threshold_b is None else unit.threshold_b,
            "guidance_start": unit.guidance_start, "guidance_end": unit.guidance_end,
            "control_mode": unit.control_mode, "pixel_perfect": unit.pixel_perfect, "hr_option": unit.hr_option}


# Infotext ---------------------------------------------------------------------------------------------------------
def _short(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def infotext_value(unit: ControlUnit, model_title: str, thresholds: Sequence[float | None]) -> str:
    """`Module: canny, Model: name [hash], Weight: 1, ...` — AUTOMATIC1111's `ControlNet N` entry."""
    a, b = thresholds
    parts = [("Module", unit.module), ("Model", model_title), ("Weight", _short(unit.weight)),
             ("Resize Mode", unit.resize_mode), ("Processor Res", str(unit.processor_res)),
             ("Threshold A", "-1" if a is None else _short(a)), ("Threshold B", "-1" if b is None else _short(b)),
             ("Guidance Start", _short(unit.guidance_start)), ("Guidance End", _short(unit.guidance_end)),
             ("Pixel Perfect", str(unit.pixel_perfect)), ("Control Mode", unit.control_mode)]
    if unit.union_control_type is not None:
        parts.append(("Union Control Type", unit.union_control_type))
    return ", ".join(f"{key}: {value}" for key, value in parts)
