"""The detail fixer's per-request arguments: detection passes, read from the API, the UI and the infotext.

A pass says what to find (`query`: any words, "face", "the red circle") and how to repaint each region found
(prompt, negative prompt, denoising strength, mask dilation and blur, working size, steps, CFG). Clients send a
list of passes under `alwayson_scripts["easel detail"]` (each a dict of the names below), or under
`alwayson_scripts["ADetailer"]` with that extension's `ad_*` keys where they map (`ad_model` names the query; its
YOLO and MediaPipe model names become "face", "hand" or "person"). An unknown key is refused, naming it. Each pass
is written to the infotext as `Detail <n> <key>: <value>` entries, which `passes_from_infotext` reads back.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Mapping

DETAIL_NAME = "easel detail"
ADETAILER_NAME = "ADetailer"
MAX_PASSES = 8


@dataclass(frozen=True)
class DetailPass:
    """One detection pass. Empty text and 0 (or None) for size, steps and CFG mean "the main request's"."""

    query: str
    prompt: str = ""
    negative_prompt: str = ""
    denoising_strength: float = 0.4
    dilate_erode: int = 4  # px: grow (> 0) or shrink (< 0) each region's mask
    mask_blur: int = 4  # px: feather of the blend back into the image
    inpaint_width: int = 0  # working size the region is repainted at (0: the request's)
    inpaint_height: int = 0
    padding: int = 32  # px of context around each region
    steps: int = 0
    cfg_scale: float | None = None
    finder: str = ""  # the model that finds regions: an edit-capable checkpoint or a segmenter ("" = default)
    finder_steps: int = 12  # steps of a generative (edit) finder
    confidence: float = 0.3  # probability threshold of CLIPSeg / SAM 3 finders
    max_regions: int = 0  # keep only the k largest regions (0 = all, at most 64: detail.MAX_REGIONS)
    min_ratio: float = 0.0  # regions smaller than this share of the image are skipped
    max_ratio: float = 1.0  # regions larger than this share are skipped
    skip_img2img: bool = False  # run after txt2img only (ADetailer's switch)


# (name, minimum, maximum) of the numeric fields, checked on every pass.
BOUNDS: dict[str, tuple[float, float]] = {
    "denoising_strength": (0.0, 1.0), "dilate_erode": (-128, 128), "mask_blur": (0, 64),
    "inpaint_width": (0, 2048), "inpaint_height": (0, 2048), "padding": (0, 256), "steps": (0, 150),
    "cfg_scale": (0.0, 30.0), "finder_steps": (1, 150), "confidence": (0.0, 1.0), "max_regions": (0, 64),
    "min_ratio": (0.0, 1.0), "max_ratio": (0.0, 1.0),
}
FIELDS = {f.name: f for f in dataclasses.fields(DetailPass)}

# ADetailer's keys → ours. `ad_use_*` switches decide whether the value next to them counts.
ADETAILER_KEYS = {
    "ad_model": "query", "ad_prompt": "prompt", "ad_negative_prompt": "negative_prompt",
    "ad_denoising_strength": "denoising_strength", "ad_dilate_erode": "dilate_erode", "ad_mask_blur": "mask_blur",
    "ad_inpaint_width": "inpaint_width", "ad_inpaint_height": "inpaint_height",
    "ad_inpaint_only_masked_padding": "padding", "ad_steps": "steps", "ad_cfg_scale": "cfg_scale",
    "ad_confidence": "confidence", "ad_mask_k_largest": "max_regions", "ad_mask_min_ratio": "min_ratio",
    "ad_mask_max_ratio": "max_ratio",
}
ADETAILER_SWITCHES = {"ad_use_inpaint_width_height": ("inpaint_width", "inpaint_height"),
                      "ad_use_steps": ("steps",), "ad_use_cfg_scale": ("cfg_scale",)}
# Keys accepted with the only value Easel does: repainting only the masked region, on the image as it is.
ADETAILER_FIXED = {"ad_inpaint_only_masked": True, "ad_tab_enable": None}
ADETAILER_MODELS = {"face": "face", "mediapipe_face": "face", "hand": "hand", "person": "person"}


def adetailer_query(model: str) -> str:
    """The query an ADetailer model name stands for ("face_yolov8n.pt" → "face"); other text is the query."""
    name = model.strip()
    lowered = name.lower()
    for prefix, query in ADETAILER_MODELS.items():
        if lowered.startswith(prefix) and (lowered.endswith((".pt", ".pth")) or lowered.startswith("mediapipe")):
            return query
    return name


def _number(name: str, value: Any) -> Any:
    field = FIELDS[name]
    kind = field.type if isinstance(field.type, str) else str(field.type)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{name}: expected a number, got {value!r}") from None
        else:
            raise ValueError(f"{name}: expected a number, got {value!r}")
    if kind.startswith("int"):
        if float(value) != int(value):
            raise ValueError(f"{name}: expected a whole number, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    low, high = BOUNDS[name]
    if not low <= value <= high:
        raise ValueError(f"{name}: must be between {low:g} and {high:g}, got {value:g}")
    return value


def make_pass(values: Mapping[str, Any], where: str = "") -> DetailPass:
    """A checked DetailPass from {field: value}; ValueError naming the field and its limits."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"{where}unknown key(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    checked: dict[str, Any] = {}
    for name, value in values.items():
        if name in BOUNDS:
            if value is None and name == "cfg_scale":
                checked[name] = None
                continue
            try:
                checked[name] = _number(name, value)
            except ValueError as exc:
                raise ValueError(f"{where}{exc}") from None
        elif name == "skip_img2img":
            if not isinstance(value, bool):
                raise ValueError(f"{where}{name}: expected true or false, got {value!r}")
            checked[name] = value
        else:
            if not isinstance(value, str):
                raise ValueError(f"{where}{name}: expected text, got {value!r}")
            checked[name] = value.strip() if name in ("query", "finder") else value
    if not checked.get("query"):
        raise ValueError(f"{where}query: say what to find (e.g. \"face\" or \"the red circle\")")
    for side in ("inpaint_width", "inpaint_height"):
        size = checked.get(side, 0)
        if size and (size < 64 or size % 8):
            raise ValueError(f"{where}{side}: must be 0 (the image's) or a multiple of 8 from 64 to 2048, got {size}")
    if checked.get("min_ratio", 0.0) > checked.get("max_ratio", 1.0):
        raise ValueError(f"{where}min_ratio: must not exceed max_ratio")
    return DetailPass(**checked)


def parse_detail_args(raw: Any) -> list[DetailPass]:
    """`alwayson_scripts["easel detail"]`: a dict (one pass) or a list of dicts; already-parsed passes pass."""
    items = raw if isinstance(raw, (list, tuple)) else [raw]
    if len(items) > MAX_PASSES:
        raise ValueError(f"at most {MAX_PASSES} passes, got {len(items)}")
    passes = []
    for index, item in enumerate(items):
        if isinstance(item, DetailPass):
            passes.append(item)
        elif isinstance(item, Mapping):
            if item.get("enabled", True) is False:
                continue
            passes.append(make_pass({k: v for k, v in item.items() if k != "enabled"},
                                    f"pass {index + 1}: " if len(items) > 1 else ""))
        else:
            raise ValueError(f"pass {index + 1}: expected an object of pass settings, got {type(item).__name__}")
    return passes


def parse_adetailer_args(raw: Any) -> list[DetailPass]:
    """ADetailer's arguments: `[enable, skip_img2img, {ad_*...}, ...]` (the two leading switches optional) or one
    dict. A pass whose `ad_model` is "None" is off, as in ADetailer."""
    items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    switches = []
    while items and isinstance(items[0], bool):
        switches.append(items.pop(0))
    if switches and not switches[0]:
        return []
    skip_img2img = len(switches) > 1 and switches[1]
    passes = []
    for index, item in enumerate(items):
        if isinstance(item, DetailPass):
            passes.append(item)
            continue
        if not isinstance(item, Mapping):
            raise ValueError(f"pass {index + 1}: expected an object of ad_* settings, got {type(item).__name__}")
        unknown = sorted(set(item) - set(ADETAILER_KEYS) - set(ADETAILER_SWITCHES) - set(ADETAILER_FIXED))
        if unknown:
            raise ValueError(f"pass {index + 1}: unsupported key(s) {', '.join(unknown)}; Easel's detail fixer "
                             f"takes {', '.join([*ADETAILER_KEYS, *ADETAILER_SWITCHES, *ADETAILER_FIXED])}")
        if item.get("ad_inpaint_only_masked", True) is not True:
            raise ValueError(f"pass {index + 1}: ad_inpaint_only_masked: only true (repaint the masked region) "
                             "is supported")
        if item.get("ad_tab_enable", True) is False or str(item.get("ad_model", "")).strip() in ("", "None"):
            continue
        values = {ADETAILER_KEYS[k]: v for k, v in item.items() if k in ADETAILER_KEYS}
        values["query"] = adetailer_query(str(values["query"]))
        for switch, names in ADETAILER_SWITCHES.items():
            if not item.get(switch, False):
                for name in names:
                    values.pop(name, None)
        passes.append(make_pass({**values, "skip_img2img": skip_img2img}, f"pass {index + 1}: "))
    if len(passes) > MAX_PASSES:
        raise ValueError(f"at most {MAX_PASSES} passes, got {len(passes)}")
    return passes


def request_passes(extension_args: Mapping[str, Any]) -> list[DetailPass]:
    """The passes a request asks for (parsed here when the request was made in code)."""
    passes: list[DetailPass] = []
    for key, value in extension_args.items():
        raw = value["args"] if isinstance(value, Mapping) and "args" in value else value
        if key.lower() == DETAIL_NAME:
            passes += parse_detail_args(raw)
        elif key.lower() == ADETAILER_NAME.lower():
            passes += parse_adetailer_args(raw)
    return passes


def without_passes(extension_args: Mapping[str, Any]) -> dict[str, Any]:
    """The extensions' arguments without the detail fixer's (for parts of an image, as SD upscale's tiles)."""
    return {key: value for key, value in extension_args.items()
            if key.lower() not in (DETAIL_NAME, ADETAILER_NAME.lower())}


# Infotext ---------------------------------------------------------------------------------------------------
INFOTEXT_KEYS = {"query": "query", "prompt": "prompt", "negative_prompt": "negative prompt",
                 "denoising_strength": "denoising", "dilate_erode": "dilate/erode", "mask_blur": "mask blur",
                 "padding": "padding", "steps": "steps", "cfg_scale": "CFG scale", "finder": "finder",
                 "finder_steps": "finder steps", "confidence": "confidence", "max_regions": "max regions",
                 "min_ratio": "min ratio", "max_ratio": "max ratio"}
DEFAULTS = DetailPass(query="-")


def pass_infotext(index: int, detail: DetailPass, finder: str, regions: int, message: str) -> dict[str, Any]:
    """`Detail <n> …` entries: the pass's settings that differ from the defaults (query, denoising, dilation and
    blur always), the finder that ran, the regions repainted and, when none, why."""
    entries: dict[str, Any] = {}
    always = ("query", "denoising_strength", "dilate_erode", "mask_blur")
    for name, key in INFOTEXT_KEYS.items():
        value = getattr(detail, name)
        if name == "finder":
            value = finder
        if name in always or (value != getattr(DEFAULTS, name) and value not in ("", None)):
            entries[f"Detail {index} {key}"] = value
    if detail.inpaint_width or detail.inpaint_height:
        entries[f"Detail {index} size"] = f"{detail.inpaint_width}x{detail.inpaint_height}"
    entries[f"Detail {index} regions"] = regions
    if not regions:
        entries[f"Detail {index} result"] = message
    return entries


_DETAIL_KEY = re.compile(r"^Detail (\d+) (.+)$")


def passes_from_infotext(params: Mapping[str, str]) -> list[dict[str, Any]]:
    """The passes an infotext records, as `alwayson_scripts["easel detail"]` arguments (in pass order)."""
    by_key = {key: name for name, key in INFOTEXT_KEYS.items()}
    found: dict[int, dict[str, Any]] = {}
    for key, value in params.items():
        match = _DETAIL_KEY.match(key)
        if not match:
            continue
        index, what = int(match.group(1)), match.group(2)
        values = found.setdefault(index, {})
        if what == "size":
            width, _, height = str(value).partition("x")
            values["inpaint_width"], values["inpaint_height"] = int(width), int(height)
        elif what in by_key:
            name = by_key[what]
            values[name] = _number(name, value) if name in BOUNDS else str(value)
    return [found[i] for i in sorted(found)]


def register(registry: Any) -> None:
    """Take the detail fixer's arguments in `registry` (every Easel's): under "easel detail" and "ADetailer"."""
    registry.request_args[DETAIL_NAME] = parse_detail_args
    registry.request_args[ADETAILER_NAME] = parse_adetailer_args
