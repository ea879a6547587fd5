"""Prompt matrix: `a photo | in the rain | at night` makes every combination of the `|` parts after the first
(2^n images for n parts), drawn as one grid with a row or column label per part (+ used, - left out).

`script_args` in AUTOMATIC1111's order: put variable parts at start (bool), different seeds (bool), prompt type
("positive" or "negative": which prompt holds the `|` parts), variations delimiter ("comma" or "space"),
grid margins (px).
"""
from __future__ import annotations

from typing import Any

from webui.engine.script_job import GridPlan, ScriptJob
from webui.requests import GenerationRequest
from webui.scripts.xyz import grid_margin, random_if_unset

TITLE = "Prompt matrix"
ARG_LABELS = ("Put variable parts at start of prompt", "Use different seed for each picture", "Select prompt",
              "Select joining char", "Grid margins (px)")
ARG_DEFAULTS: tuple[Any, ...] = (False, False, "positive", "comma", 0)
MAX_PARTS = 7  # 128 images


def make_matrix(request: GenerationRequest, args: list[Any]) -> ScriptJob:
    if len(args) > len(ARG_DEFAULTS):
        raise ValueError(f"takes at most {len(ARG_DEFAULTS)} arguments ({', '.join(ARG_LABELS)}), got {len(args)}")
    at_start, different_seeds, prompt_type, delimiter, margin = list(args) + list(ARG_DEFAULTS[len(args):])
    prompt_type = str(prompt_type).strip().lower()
    if prompt_type not in ("positive", "negative"):
        raise ValueError(f"Select prompt: 'positive' or 'negative', got {prompt_type!r}")
    delimiter = str(delimiter).strip().lower()
    if delimiter not in ("comma", "space"):
        raise ValueError(f"Select joining char: 'comma' or 'space', got {delimiter!r}")
    margin = grid_margin(margin)
    field = "prompt" if prompt_type == "positive" else "negative_prompt"
    parts = [part.strip() for part in getattr(request, field).split("|")]
    base, options = parts[0], parts[1:]
    if not options:
        raise ValueError(f"the {prompt_type} prompt has no '|' parts to combine (write: base | part 1 | part 2)")
    if len(options) > MAX_PARTS:
        raise ValueError(f"{len(options)} '|' parts make {2 ** len(options)} images; the limit is {MAX_PARTS} parts")
    joiner = ", " if delimiter == "comma" else " "
    seed = random_if_unset(request.seed)
    requests: list[GenerationRequest] = []
    labels: list[str] = []
    for combination in range(2 ** len(options)):
        chosen = [option for bit, option in enumerate(options) if combination >> bit & 1]
        pieces = [*chosen, base] if at_start else [base, *chosen]
        text = joiner.join(piece for piece in pieces if piece)
        requests.append(request.replace(**{field: text, "seed": seed + combination if different_seeds else seed}))
        labels.append(f"prompt {text!r}")
    # low bits along the columns, high bits down the rows
    row_bits = len(options) // 2
    column_bits = len(options) - row_bits
    columns = 2 ** column_bits

    def label(bits: range, value: int) -> str:
        return "\n".join(("+ " if value >> i & 1 else "- ") + options[bit] for i, bit in enumerate(bits))

    column_labels = tuple(label(range(column_bits), c) for c in range(columns))
    row_labels = tuple(label(range(column_bits, len(options)), r) for r in range(2 ** row_bits)) if row_bits else ()
    plan = GridPlan(tuple(range(len(requests))), columns, column_labels, row_labels, (("Script", TITLE),))
    return ScriptJob(script=TITLE, base=request, requests=tuple(requests), labels=tuple(labels), grids=(plan,),
                     include_images=True, draw_legend=True, margin=margin, mode=request.mode)
