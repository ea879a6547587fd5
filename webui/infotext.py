"""Write and read the "parameters" text that Easel embeds in every PNG.

The layout is AUTOMATIC1111's, so images move freely between Easel, AUTOMATIC1111, Forge and the sites
that read it:

    a red circle on a blue background
    Negative prompt: blurry
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 64x64, Model hash: 0123456789, Model: easel-shapes

The prompt may span lines; the negative prompt starts at the line beginning "Negative prompt:"; the last line
holds `key: value` pairs separated by commas, where values containing a comma, colon or quote are JSON-quoted.

The pairs of a generated image come from its request's field declarations (`FieldSpec.infotext`, with how each
value is written): `generation_parameters` puts AUTOMATIC1111's leading keys first, then the request's other
declared fields in declaration order, then what only the run knows (LoRA hashes, a planned prompt, ...), then
the version. The same declarations let `request_updates` restore a request from a text.
"""
from __future__ import annotations

import dataclasses
import io
import json
import re
from typing import Any, Iterable

from PIL import Image, PngImagePlugin

from webui import __version__
from webui.requests import (
    SCHEDULE_LABELS,
    SCHEDULE_TYPES,
    GenerationRequest,
    InpaintRequest,
    Txt2ImgRequest,
    field_specs,
    split_legacy,
)
from webui.styles import PromptStyle, extract_styles

PARAMETERS_KEY = "parameters"
# key: value, where the value is a JSON-quoted text, a JSON list written unquoted (`Styles array: ["a", "b"]`) or
# plain text up to the next comma
_PAIR = re.compile(r'\s*([\w][\w \-/+.()]*?):\s*("(?:\\.|[^\\"])*"|\[(?:"(?:\\.|[^\\"])*"|[^\]"])*\](?=\s*(?:,|$))|[^,]*)(?:,|$)')
STYLES_KEY = "Styles array"
_NEGATIVE = "Negative prompt:"

# AUTOMATIC1111 writes these keys first, in this order; a request's other declared keys follow.
LEADING_KEYS = ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model", "VAE", "Clip skip")


def quote(value: Any) -> str:
    """A value as it stands after `key: ` — quoted when it holds a separator."""
    text = str(value)
    if "," in text or ":" in text or '"' in text or "\n" in text:
        return json.dumps(text, ensure_ascii=False)
    return text


def unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return str(json.loads(text))
        except json.JSONDecodeError:
            return text[1:-1]
    return text


def format_infotext(prompt: str, negative_prompt: str, params: dict[str, Any]) -> str:
    """Join a prompt, a negative prompt and ordered parameters into the parameters text."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"{_NEGATIVE} {negative_prompt}")
    pairs = ", ".join(f"{k}: {quote(v)}" for k, v in params.items() if v is not None and v != "")
    lines.append(pairs)
    return "\n".join(lines)


def declared_parameters(request: Any) -> dict[str, Any]:
    """{infotext key: value as written} for every field of `request` whose declaration names an infotext key, in
    declaration order; a field whose `infotext_when` attribute is false is left out."""
    params: dict[str, Any] = {}
    for f in dataclasses.fields(request):
        s = f.metadata.get("spec")
        if s is None or s.infotext is None or (s.infotext_when and not getattr(request, s.infotext_when)):
            continue
        value = getattr(request, f.name)
        params[s.infotext] = s.infotext_value(value) if s.infotext_value else value
    return params


def generation_parameters(request: GenerationRequest, actual: dict[str, Any]) -> dict[str, Any]:
    """The ordered parameters of one generated image.

    `actual` holds what only the run knows: the seed drawn, the sampler used, the model loaded and its hash, a
    strength the mode changed, LoRA hashes, a planned prompt. Where it has a key the request declares, its value is
    written in that key's place; its other keys follow the declared ones. Floats are written as AUTOMATIC1111 does
    (7.0 as 7, at most four decimals). None and "" values are left out when the text is formatted.
    """
    values = {**declared_parameters(request), "Size": f"{request.width}x{request.height}", **actual}
    params = {key: values.get(key) for key in LEADING_KEYS}
    params.update((key, value) for key, value in values.items() if key not in params)
    params["Version"] = f"Easel {__version__}"
    return {key: number(value) if isinstance(value, float) else value for key, value in params.items()}


def number(value: float) -> float | int:
    """A float as the infotext writes it: whole numbers without decimals, others to four places."""
    return int(value) if float(value).is_integer() else round(float(value), 4)


def written_text(value: Any) -> str:
    """A parameter's value as a reader of the text gets it back (`parse_infotext`)."""
    text = str(value)
    return text if quote(text) != text else text.strip()


def parse_infotext(text: str) -> dict[str, str]:
    """Split a parameters text into {"Prompt", "Negative prompt", key: value, ...}; all values are strings."""
    text = text.strip()
    lines = text.split("\n")
    result: dict[str, str] = {}
    last = lines[-1] if lines else ""
    pairs = _PAIR.findall(last)
    if len(pairs) >= 3 or (len(lines) > 1 and pairs and last.startswith("Steps:")):
        lines = lines[:-1]
        for key, value in pairs:
            result[key.strip()] = unquote(value)
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in lines:
        if line.startswith(_NEGATIVE):
            target = negative_lines
            line = line[len(_NEGATIVE):].lstrip()
        target.append(line)
    result["Prompt"] = "\n".join(prompt_lines).strip()
    result["Negative prompt"] = "\n".join(negative_lines).strip()
    return result


def read_png_parameters(image: Image.Image) -> str | None:
    """The parameters text of a PNG (tEXt/iTXt) or of a JPEG/WebP's EXIF UserComment, if any."""
    info = getattr(image, "info", {}) or {}
    if isinstance(info.get(PARAMETERS_KEY), str):
        return info[PARAMETERS_KEY]
    exif = image.getexif() if hasattr(image, "getexif") else None
    if exif:
        comment = exif.get_ifd(0x8769).get(0x9286)  # Exif IFD, UserComment
        if isinstance(comment, bytes):
            if comment.startswith(b"UNICODE\x00"):
                return comment[8:].decode("utf-16-be", errors="replace")
            if comment.startswith(b"ASCII\x00\x00\x00"):
                return comment[8:].decode("ascii", errors="replace")
    return None


def png_info(text: str) -> PngImagePlugin.PngInfo:
    meta = PngImagePlugin.PngInfo()
    meta.add_text(PARAMETERS_KEY, text)
    return meta


def png_bytes(image: Image.Image, text: str | None) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_info(text) if text else None)
    return buffer.getvalue()


_CHECKPOINT_HASH = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]\s*$")
_LORA_TAG = re.compile(r"<(lora|lyco):([^:>]+)((?::[^>]*)?)>", re.IGNORECASE)


def lora_hashes(params: dict[str, str]) -> dict[str, str]:
    """`Lora hashes: "name: hash, name2: hash2"` as {name: hash}."""
    result: dict[str, str] = {}
    for part in params.get("Lora hashes", "").split(","):
        name, sep, digest = part.rpartition(":")
        if sep and name.strip() and digest.strip():
            result[name.strip()] = digest.strip()
    return result


def relink_loras(prompt: str, hashes: dict[str, str], local: dict[str, str]) -> str:
    """Point `<lora:name:…>` tags at the local LoRA with the recorded hash when `name` is not installed here.

    `hashes` is the infotext's {name: hash}; `local` maps installed LoRAs' short hashes to their names."""
    installed = set(local.values())

    def swap(match: re.Match[str]) -> str:
        name = match.group(2).strip()
        digest = hashes.get(name)
        if name in installed or not digest or digest not in local:
            return match.group(0)
        return f"<{match.group(1)}:{local[digest]}{match.group(3)}>"

    return _LORA_TAG.sub(swap, prompt)


def style_names(value: Any) -> list[str] | None:
    """The names of a `Styles array` value (a JSON list, as text or already decoded), or None when it is not one."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, (list, tuple)) and all(isinstance(name, str) for name in value):
        return list(value)
    return None


def split_styles(params: dict[str, Any], known: Iterable[PromptStyle] = ()) -> dict[str, Any]:
    """Parsed infotext with `Styles array` as a list of style names, as AUTOMATIC1111's readers get it.

    Easel writes the prompts as typed and the styles' names as a JSON list; that list is decoded. A text another
    tool wrote (AUTOMATIC1111 writes the prompts with the styles' texts in them, and no names) has the `known`
    styles found in its prompts taken back out, and their names listed; nothing is changed when none is found."""
    result = dict(params)
    if STYLES_KEY in params:
        names = style_names(params[STYLES_KEY])
        if names is None:
            result.pop(STYLES_KEY)
        else:
            result[STYLES_KEY] = names
        return result
    if str(params.get("Version", "")).startswith("Easel"):
        return result
    names, prompt, negative = extract_styles(params.get("Prompt", ""), params.get("Negative prompt", ""), known)
    if names:
        result.update({STYLES_KEY: names, "Prompt": prompt, "Negative prompt": negative})
    return result


def _convert(value: str, default: Any) -> Any:
    if isinstance(default, tuple):
        names = style_names(value)
        if names is None:
            raise ValueError(f"not a list of names: {value!r}")
        return tuple(names)
    if isinstance(default, bool):
        return value.strip().lower() in ("true", "1", "yes", "on")
    if isinstance(default, int):
        return int(float(value))
    if isinstance(default, float):
        return float(value)
    return value


def restore_schedule(updates: dict[str, Any]) -> None:
    """The schedule type as its own field: an older sampler name that carried it ("DPM++ 2M Karras") is split
    into the sampler and the schedule; a schedule type Easel does not know is left out."""
    if "scheduler" in updates:
        known = {label.lower(): label for label in SCHEDULE_LABELS}
        known.update((name, label) for name, label in SCHEDULE_TYPES)
        label = known.get(str(updates["scheduler"]).strip().lower())
        if label is None:
            updates.pop("scheduler")
        else:
            updates["scheduler"] = label
    if "sampler" in updates:
        base, schedule = split_legacy(updates["sampler"])
        if schedule is not None:
            updates["sampler"] = base
            if updates.get("scheduler", "Automatic") == "Automatic":
                updates["scheduler"] = schedule


def request_updates(params: dict[str, str], cls: type[GenerationRequest] = Txt2ImgRequest,
                    local_loras: dict[str, str] | None = None,
                    known_styles: Iterable[PromptStyle] = ()) -> dict[str, Any]:
    """Field values of `cls` restored from parsed infotext (unknown keys are ignored, bad values skipped).

    The prompt keeps its `<lora:name:weight>` tags, so the same LoRAs apply again; with `local_loras` (short hash ->
    installed name) a tag whose LoRA is installed here under another name is pointed at it by its hash. Styles come
    back from `Styles array`, or, in another tool's text, from the `known_styles` found in its prompts
    (`split_styles`)."""
    params = split_styles(params, known_styles)
    prompt = params.get("Prompt", "")
    if local_loras:
        prompt = relink_loras(prompt, lora_hashes(params), local_loras)
    updates: dict[str, Any] = {"prompt": prompt, "negative_prompt": params.get("Negative prompt", "")}
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for name, s in field_specs(cls).items():
        if s.infotext and s.infotext in params:
            try:
                updates[name] = _convert(params[s.infotext], defaults[name])
            except ValueError:
                continue
    if "Size" in params:
        match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", params["Size"])
        if match:
            updates["width"], updates["height"] = int(match.group(1)), int(match.group(2))
    if "Seed resize from" in params:
        match = re.fullmatch(r"\s*(-?\d+)\s*x\s*(-?\d+)\s*", params["Seed resize from"])
        if match:
            updates["seed_resize_from_w"], updates["seed_resize_from_h"] = int(match.group(1)), int(match.group(2))
    restore_schedule(updates)
    if "styles" in defaults:  # a text without styles clears a selection
        updates["styles"] = tuple(updates.get("styles", ()))
    if "restore_faces" in defaults:  # "Face restoration: GFPGAN" (the restorer's name) means it was on
        value = params.get("Face restoration", "").strip().lower()
        updates["restore_faces"] = bool(value) and value not in ("false", "0", "no", "off", "none")
    if issubclass(cls, Txt2ImgRequest):
        updates["enable_hr"] = "Hires upscale" in params or "Hires resize" in params
    for name in ("hr_checkpoint_name", "refiner_checkpoint"):  # "name [hash]" as AUTOMATIC1111 writes them
        if isinstance(updates.get(name), str):
            updates[name] = _CHECKPOINT_HASH.sub("", updates[name]).strip()
    if issubclass(cls, InpaintRequest):
        if "Inpaint area" in params:
            updates["inpaint_full_res"] = params["Inpaint area"].lower().startswith("only masked")
        if "Mask mode" in params:
            updates["inpainting_mask_invert"] = "not" in params["Mask mode"].lower()
    return updates
