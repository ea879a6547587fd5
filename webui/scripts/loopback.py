"""Loopback (img2img): the image goes through img2img `loops` times, each loop's output the next loop's input,
the denoising strength moving from the request's own towards a final strength along a curve.

`script_args` in AUTOMATIC1111's order: loops, final denoising strength, denoising curve ("Aggressive", "Linear",
"Lazy"), append interrogated prompt (only "None": Easel has no interrogator). AUTOMATIC1111's older form,
`[loops, denoising_strength_change_factor, "None"]`, multiplies the strength by the factor each loop instead (kept
between 0.1 and 1).

Each of batch count × batch size chains starts from the input image; the loops' seeds count up from the request's
seed across every chain. Skip ends a loop early; the next starts from what it made. The job returns a grid (one
row per chain) and then every loop's image, each with its own infotext (its denoising strength, the loop number,
the schedule).
"""
from __future__ import annotations

import math
from typing import Any

from webui.engine.script_job import GridPlan, ScriptJob
from webui.requests import GenerationRequest, Img2ImgRequest, InpaintRequest
from webui.scripts.xyz import random_if_unset

TITLE = "Loopback"
ARG_LABELS = ("Loops", "Final denoising strength", "Denoising strength curve",
              "Append interrogated prompt at each iteration")
ARG_DEFAULTS: tuple[Any, ...] = (4, 0.5, "Linear", "None")
CURVES = ("Aggressive", "Linear", "Lazy")
INTERROGATORS = ("None", "CLIP", "DeepBooru")
MAX_LOOPS = 100


def strength_schedule(initial: float, loops: int, final: float | None = None, curve: str = "Linear",
                      factor: float | None = None) -> list[float]:
    """The denoising strength of each loop: from `initial` to `final` along `curve`, or (`factor` given) the
    strength multiplied by the factor after each loop, kept between 0.1 and 1."""
    strengths = [float(initial)]
    for loop in range(1, loops):
        if factor is not None:
            strengths.append(min(max(strengths[-1] * factor, 0.1), 1.0))
            continue
        assert final is not None
        progress = loop / (loops - 1)
        if curve == "Aggressive":
            eased = math.sin(progress * math.pi / 2)
        elif curve == "Lazy":
            eased = 1 - math.cos(progress * math.pi / 2)
        else:
            eased = progress
        strengths.append(initial + (final - initial) * eased)
    return strengths


def _number(value: Any, label: str, low: float, high: float) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{label}: {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{label}: {value!r} is not a number") from None
    if not low <= number <= high:
        raise ValueError(f"{label}: must be between {low:g} and {high:g}, got {number:g}")
    return number


def make_loopback(request: GenerationRequest, args: list[Any]) -> ScriptJob:
    if not isinstance(request, Img2ImgRequest):
        raise ValueError("Loopback runs on img2img (an input image), not txt2img")
    if len(args) > len(ARG_DEFAULTS):
        raise ValueError(f"takes at most {len(ARG_DEFAULTS)} arguments ({', '.join(ARG_LABELS)}), got {len(args)}")
    legacy = len(args) == 3 and (args[2] is None or str(args[2]).strip().lower() in {i.lower() for i in INTERROGATORS})
    if legacy:  # [loops, denoising_strength_change_factor, append_interrogation]
        args = [args[0], args[1], "Linear", args[2]]
    loops_arg, second, curve_arg, interrogate = list(args) + list(ARG_DEFAULTS[len(args):])
    loops = _number(loops_arg, "Loops", 1, MAX_LOOPS)
    if not loops.is_integer():
        raise ValueError(f"Loops: {loops_arg!r} is not a whole number")
    loops = int(loops)
    if interrogate not in (None, "") and str(interrogate).strip().lower() != "none":
        raise ValueError(f"Append interrogated prompt: Easel has no interrogator; only 'None' is accepted, got "
                         f"{interrogate!r}")
    curve = next((c for c in CURVES if c.lower() == str(curve_arg).strip().lower()), None)
    if curve is None:
        raise ValueError(f"Denoising strength curve: one of {', '.join(CURVES)}, got {curve_arg!r}")
    if isinstance(request, InpaintRequest) and request.outpainting:
        raise ValueError("Loopback does not outpaint: each loop would extend the image again")
    if legacy:
        factor = _number(second, "Denoising strength change factor", 0.0, 10.0)
        strengths = strength_schedule(request.denoising_strength, loops, factor=factor)
        schedule: tuple[tuple[str, Any], ...] = (("Denoising strength change factor", factor),)
    else:
        final = _number(second, "Final denoising strength", 0.0, 1.0)
        strengths = strength_schedule(request.denoising_strength, loops, final=final, curve=curve)
        schedule = (("Final denoising strength", final), ("Denoising curve", curve))
    chains = request.batch_count * request.batch_size
    seed = random_if_unset(request.seed)
    fixed = {"subseed": random_if_unset(request.subseed)} if request.variation else {}
    requests: list[GenerationRequest] = []
    labels: list[str] = []
    extras: list[tuple[tuple[str, Any], ...]] = []
    for chain in range(chains):
        for loop, strength in enumerate(strengths):
            requests.append(request.replace(seed=seed + len(requests), denoising_strength=round(strength, 6),
                                            batch_size=1, batch_count=1, **fixed))
            labels.append(f"chain {chain + 1}, loop {loop + 1}" if chains > 1 else f"loop {loop + 1}")
            extras.append((("Loopback", f"{loop + 1}/{loops}"), *schedule))

    def prepare(engine: Any, index: int, planned: GenerationRequest,
                parts: list[Any]) -> GenerationRequest | None:
        if index % loops == 0:  # a chain's first loop: the input image
            return planned
        before = parts[index - 1]
        if before is None or not before.images:  # the loop before made no image: the chain ends
            return None
        changes: dict[str, Any] = {"init_image": before.images[0]}
        if isinstance(planned, InpaintRequest):
            changes["inpainting_fill"] = "original"  # later loops repaint the image made so far
        return planned.replace(**changes)

    grids = (GridPlan(tuple(range(len(requests))), loops, params=(("Script", TITLE),)),) if len(requests) > 1 else ()
    return ScriptJob(script=TITLE, base=request, requests=tuple(requests), labels=tuple(labels), grids=grids,
                     include_images=True, draw_legend=False, mode=request.mode, prepare=prepare,
                     extras=tuple(extras))
