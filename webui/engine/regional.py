"""Regional prompts: per-request arguments, the pipeline wrapper that runs them, and their infotext.

Clients send `alwayson_scripts: {"regional prompter": {"args": [{"base_weight": 0.2, "regions": [{"box": [x0, y0,
x1, y1], "prompt": "...", "weight": 1.0}, ...]}]}}` — boxes as fractions of the image (0..1, left/top first) —
or the shortcut `{"divide": "columns" | "rows", "ratios": "1,1", "prompts": ["left ...", "right ..."]}` that
splits the image into strips as Regional Prompter's grid does. The request's own prompt is the base prompt. On
the built-in model a txt2img request's first pass runs through `webui.builtin.regional` (masked conditioning;
its hires fix and detail fixer passes run on the base prompt); every other family, and img2img and inpainting
requests, are refused with a RequestError naming `alwayson_scripts.regional prompter`, never silently ignored. The
regions are written to the infotext as `Regional prompts` (JSON).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from webui.requests import RequestError

NAME = "regional prompter"
FIELD = f"alwayson_scripts.{NAME}"
MAX_REGIONS = 8
MAX_WEIGHT = 10.0
SUPPORTED = {("easel", "txt2img")}  # (family, request mode) pairs that run regional prompts


@dataclass(frozen=True)
class RegionalPrompts:
    """Checked arguments: regions as (box, prompt, weight) and the base prompt's weight."""

    regions: tuple[Any, ...]  # webui.builtin.regional.Region
    base_weight: float = 0.2

    def as_json(self) -> str:
        return json.dumps({"base_weight": self.base_weight, "regions": [
            {"box": list(r.box), "prompt": r.prompt, "weight": r.weight} for r in self.regions]},
            ensure_ascii=False, separators=(",", ":"))


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
    known = {"regions", "base_weight", "divide", "ratios", "prompts", "enabled"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{unknown[0]}: is not a regional prompts argument; known: {', '.join(sorted(known))}")
    if raw.get("enabled") is False:
        return None
    items = raw.get("regions") if "regions" in raw else _strips(raw)
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
            raise ValueError(f"{where}: must be an object with box, prompt and weight")
        extra = sorted(set(item) - {"box", "prompt", "weight"})
        if extra:
            raise ValueError(f"{where}.{extra[0]}: is not a region field (box, prompt, weight)")
        box = item.get("box")
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise ValueError(f"{where}.box: must be [x0, y0, x1, y1] as fractions of the image")
        x0, y0, x1, y1 = (_number(v, f"{where}.box", 0.0, 1.0) for v in box)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"{where}.box: x1 must be above x0 and y1 above y0, got {list(box)}")
        weight = _number(item.get("weight", 1.0), f"{where}.weight", 0.0, MAX_WEIGHT)
        regions.append(Region((x0, y0, x1, y1), _prompt(item.get("prompt"), f"{where}.prompt"), weight))
    base_weight = _number(raw.get("base_weight", 0.2), "base_weight", 0.0, MAX_WEIGHT)
    return RegionalPrompts(tuple(regions), base_weight)


def wanted(request: Any) -> RegionalPrompts | None:
    args = getattr(request, "extension_args", None) or {}
    value = args.get(NAME)
    return value if isinstance(value, RegionalPrompts) else None


def wrapper(call: Any, run: Callable[[Any], Any]) -> Any:
    """Run a built-in txt2img call with its regions; refuse regions on any other family or task."""
    regional = wanted(call.request)
    if regional is None:
        return run(call)
    mode = getattr(call.request, "mode", call.task)
    if (call.arch, mode) not in SUPPORTED:
        what = "the built-in model" if call.arch == "easel" else f"{call.checkpoint} ({call.arch})"
        raise RequestError(FIELD, f"regional prompts run in txt2img on the built-in model only; {what} cannot "
                                  f"run them in {mode}")
    if call.task != "txt2img":  # a later pass of a txt2img job (hires fix, detail fixer): the base prompt alone
        return run(call)
    from webui.builtin.regional import regional_call

    return regional_call(call.pipe, call.kwargs.get("prompt", ""), list(regional.regions),
                         base_weight=regional.base_weight, **{k: v for k, v in call.kwargs.items() if k != "prompt"})


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
