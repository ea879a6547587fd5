"""Prompts from file or textbox: one generation per line, run as one job.

A line is a prompt, or, when it starts with `--`, options in AUTOMATIC1111's form (`--prompt "a cat" --steps 10
--cfg_scale 5 --seed 3 --negative_prompt "..." --sampler_name "Euler a"`); an unknown option, or a value of the
wrong type, is a ValueError naming the line. `script_args` in AUTOMATIC1111's order: iterate seed every line (bool),
use the same random seed for all lines (bool), where the line's prompt goes ("start" or "end" of the prompt typed
in the UI; without that argument the line replaces it), the text.
"""
from __future__ import annotations

import shlex
from typing import Any, Callable

from webui.engine.script_job import ScriptJob
from webui.requests import GenerationRequest
from webui.scripts.xyz import random_if_unset

TITLE = "Prompts from file or textbox"
ARG_LABELS = ("Iterate seed every line", "Use same random seed for all lines", "Insert prompts at the",
              "List of prompt inputs")
MAX_LINES = 1000


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"{text!r} is not true or false")


def _str(text: str) -> str:
    return text


# option -> (request field, how its value is read); AUTOMATIC1111's names
OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "prompt": ("prompt", _str), "negative_prompt": ("negative_prompt", _str), "seed": ("seed", int),
    "subseed": ("subseed", int), "subseed_strength": ("subseed_strength", float),
    "seed_resize_from_w": ("seed_resize_from_w", int), "seed_resize_from_h": ("seed_resize_from_h", int),
    "sampler_name": ("sampler", _str), "sampler_index": ("sampler", _str), "scheduler": ("scheduler", _str),
    "batch_size": ("batch_size", int), "n_iter": ("batch_count", int), "steps": ("steps", int),
    "cfg_scale": ("cfg_scale", float), "width": ("width", int), "height": ("height", int),
    "tiling": ("tiling", _bool), "clip_skip": ("clip_skip", int), "sd_model": ("checkpoint", _str),
    "do_not_save_samples": ("save_images", lambda text: not _bool(text)),
    "denoising_strength": ("denoising_strength", float),
}
LIST_OPTIONS = {"styles"}  # take every value up to the next option
IGNORED = {"outpath_samples", "outpath_grids", "prompt_for_display", "do_not_save_grid"}  # no grid is made


def parse_line(line: str, number: int) -> dict[str, Any]:
    """The request changes one line asks for (`number` counts from 1, for errors)."""
    text = line.strip()
    if not text.startswith("--"):
        return {"prompt": text}
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"line {number}: {exc}") from None
    changes: dict[str, Any] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("--"):
            raise ValueError(f"line {number}: {token!r} is not an option (options start with --)")
        name = token[2:]
        values = []
        index += 1
        while index < len(tokens) and not tokens[index].startswith("--"):
            values.append(tokens[index])
            index += 1
        if name in LIST_OPTIONS:
            changes["styles"] = tuple(values)
            continue
        if name in IGNORED:
            continue
        if name not in OPTIONS:
            raise ValueError(f"line {number}: unknown option --{name}; known: "
                             f"{', '.join('--' + n for n in sorted([*OPTIONS, *LIST_OPTIONS]))}")
        if len(values) != 1:
            raise ValueError(f"line {number}: --{name} takes one value, got {len(values)}")
        field, read = OPTIONS[name]
        try:
            changes[field] = read(values[0])
        except ValueError:
            raise ValueError(f"line {number}: --{name}: {values[0]!r} is not a valid value") from None
    return changes


def make_prompts(request: GenerationRequest, args: list[Any]) -> ScriptJob:
    if len(args) == 3:  # the older form, without the prompt position
        iterate, same_seed, text = args
        position = None
    elif len(args) == 4:
        iterate, same_seed, position, text = args
        position = str(position).strip().lower()
        if position not in ("start", "end"):
            raise ValueError(f"Insert prompts at the: 'start' or 'end', got {position!r}")
    else:
        raise ValueError(f"takes 4 arguments ({', '.join(ARG_LABELS)}), got {len(args)}")
    lines = [(n, line) for n, line in enumerate(str(text or "").splitlines(), 1) if line.strip()]
    if not lines:
        raise ValueError("List of prompt inputs: give at least one line")
    if len(lines) > MAX_LINES:
        raise ValueError(f"List of prompt inputs: {len(lines)} lines; the limit is {MAX_LINES}")
    seed = random_if_unset(request.seed) if (iterate or same_seed) else request.seed
    requests: list[GenerationRequest] = []
    labels: list[str] = []
    for index, (number, line) in enumerate(lines):
        changes = parse_line(line, number)
        if "denoising_strength" in changes and not hasattr(request, "denoising_strength"):
            changes["hr_denoising_strength"] = changes.pop("denoising_strength")
        if "prompt" in changes and position is not None and request.prompt:
            ui = request.prompt
            changes["prompt"] = f"{changes['prompt']} {ui}" if position == "start" else f"{ui} {changes['prompt']}"
        if "save_images" in changes and not hasattr(request, "save_images"):
            raise ValueError(f"line {number}: --do_not_save_samples works on API requests only (the UI saves "
                             "as the Settings say)")
        if "seed" not in changes:
            changes["seed"] = seed + index if iterate else seed
        try:
            requests.append(request.replace(**changes))
        except TypeError as exc:
            raise ValueError(f"line {number}: {exc}") from None
        labels.append(f"line {number}")
    return ScriptJob(script=TITLE, base=request, requests=tuple(requests), labels=tuple(labels), grids=(),
                     include_images=True, mode=request.mode)
