"""X/Y/Z plot: one image per combination of up to three axes' values, drawn as labelled grids.

Clients pass `script_args` in AUTOMATIC1111's positional order (`ARG_LABELS`); an axis type is its index in
AUTOMATIC1111's axis list for the mode (`axes_for`; txt2img and img2img lists differ) or its label ("Steps",
any case). Axes AUTOMATIC1111 has and Easel does not honour are in the list, so indices match, and refused by
name. Easel's own axes (Size, LoRA weight) come after AUTOMATIC1111's.
"""
from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass
from typing import Any, Callable

from webui.engine.script_job import GridPlan, ScriptJob, SuperGrid
from webui.requests import NO_REFINER, GenerationRequest, Txt2ImgRequest, schedule_label, split_legacy
from webui.scripts.values import float_values, int_values, split_values

TITLE = "X/Y/Z plot"
ARG_LABELS = ("X type", "X values", "X values (list)", "Y type", "Y values", "Y values (list)", "Z type", "Z values",
              "Z values (list)", "Draw legend", "Include Sub Images", "Include Sub Grids", "Keep -1 for seeds",
              "Vary seeds for X", "Vary seeds for Y", "Vary seeds for Z", "Grid margins (px)",
              "Use text inputs instead of dropdowns")
ARG_DEFAULTS: tuple[Any, ...] = (0, "", [], 0, "", [], 0, "", [], True, False, False, False, False, False, False, 0,
                                 False)
BOTH, TXT2IMG, IMG2IMG = "both", "txt2img", "img2img"
MAX_MARGIN = 500

Apply = Callable[[GenerationRequest, Any], dict[str, Any]]


@dataclass(frozen=True)
class Axis:
    label: str
    kind: str  # "int", "float", "str", "order" (permutations), "none"
    apply: Apply | None  # None: AUTOMATIC1111 has it, Easel does not
    modes: str = BOTH
    cost: float = 0.0  # > 0: changing it loads a model
    show_label: bool = True  # "Steps: 10" rather than "10"

    def text(self, value: Any) -> str:
        if self.kind == "none":
            return ""
        if self.kind == "order":
            return ", ".join(value)
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        return f"{self.label}: {shown}" if self.show_label else shown


class Plot:
    """The axes over one Easel's models, samplers, styles and upscalers (names checked as the plot is made)."""

    def __init__(self, easel: Any) -> None:
        self.easel = easel
        field = lambda name: (lambda r, v: {name: v})  # noqa: E731
        self.axes: list[Axis] = [
            Axis("Nothing", "none", lambda r, v: {}),
            Axis("Seed", "int", field("seed")),
            Axis("Var. seed", "int", field("subseed")),
            Axis("Var. strength", "float", field("subseed_strength")),
            Axis("Steps", "int", field("steps")),
            Axis("Hires steps", "int", self.hires(field("hr_second_pass_steps")), TXT2IMG),
            Axis("CFG Scale", "float", field("cfg_scale")),
            Axis("Image CFG Scale", "float", None, IMG2IMG),
            Axis("Prompt S/R", "str", self.prompt_sr, show_label=False),
            Axis("Prompt order", "order", self.prompt_order),
            Axis("Sampler", "str", self.sampler, TXT2IMG, show_label=False),
            Axis("Hires sampler", "str", self.hires(self.hires_sampler), TXT2IMG),
            Axis("Sampler", "str", self.sampler, IMG2IMG, show_label=False),
            Axis("Checkpoint name", "str", self.checkpoint, cost=1.0, show_label=False),
            *(Axis(name, "float", None) for name in ("Negative Guidance minimum sigma", "Sigma Churn", "Sigma min",
                                                     "Sigma max", "Sigma noise")),
            Axis("Schedule type", "str", lambda r, v: {"scheduler": schedule_label(v, "scheduler")}),
            *(Axis(name, "float", None) for name in ("Schedule min sigma", "Schedule max sigma", "Schedule rho",
                                                     "Eta")),
            Axis("Clip skip", "int", field("clip_skip")),
            Axis("Denoising", "float", self.denoising),
            Axis("Initial noise multiplier", "float", None),
            Axis("Extra noise", "float", None),
            Axis("Hires upscaler", "str", self.hires(self.hires_upscaler), TXT2IMG),
            Axis("Cond. Image Mask Weight", "float", None, IMG2IMG),
            Axis("VAE", "str", self.vae, cost=0.7),
            Axis("Styles", "str", self.styles),
            Axis("UniPC Order", "int", None),
            Axis("Face restore", "str", self.face_restore),
            Axis("Token merging ratio", "float", None),
            Axis("Token merging ratio high-res", "float", None),
            Axis("Always discard next-to-last sigma", "str", None),
            Axis("SGM noise multiplier", "str", None),
            Axis("Refiner checkpoint", "str", self.refiner, cost=1.0),
            Axis("Refiner switch at", "float", self.refiner_switch),
            Axis("RNG source", "str", None),
            # Easel's own
            Axis("Size", "str", self.size),
            Axis("LoRA weight", "str", self.lora_weight),
        ]

    def axes_for(self, mode: str) -> list[Axis]:
        """The axis list of a mode, in AUTOMATIC1111's order (its indices are the API's axis types)."""
        kind = TXT2IMG if mode == "txt2img" else IMG2IMG
        return [axis for axis in self.axes if axis.modes in (BOTH, kind)]

    def choices(self, mode: str) -> dict[str, list[str]]:
        """The axis types Easel runs, for the UI's X, Y and Z dropdowns (the API also takes the others' indices)."""
        labels = [axis.label for axis in self.axes_for(mode) if axis.apply is not None]
        return {"X type": labels, "Y type": labels, "Z type": labels}

    # Applying values ------------------------------------------------------------------------------------------
    @staticmethod
    def hires(apply: Apply) -> Apply:
        """An axis of the hires fix's second pass: refused while the fix is off (it would change nothing)."""
        def run(request: GenerationRequest, value: Any) -> dict[str, Any]:
            if isinstance(request, Txt2ImgRequest) and not request.enable_hr:
                raise ValueError("enable Hires. fix (enable_hr) to plot a hires setting")
            return apply(request, value)
        return run

    @staticmethod
    def prompt_sr(request: GenerationRequest, value: str) -> dict[str, Any]:
        return {}  # needs the axis's first value as well: done in `apply`

    @staticmethod
    def prompt_order(request: GenerationRequest, order: tuple[str, ...]) -> dict[str, Any]:
        """The prompt with the listed phrases put in this order, where they stand in it."""
        prompt = request.prompt
        found = sorted((prompt.find(token), token) for token in order)
        missing = [token for position, token in found if position < 0]
        if missing:
            raise ValueError(f"Prompt order: {missing[0]!r} is not in the prompt")
        parts, last = [], 0
        for position, token in found:
            parts.append(prompt[last:position])
            last = position + len(token)
        tail = prompt[last:]
        rebuilt = "".join(part + token for part, token in zip(parts, order)) + tail
        return {"prompt": rebuilt}

    def sampler(self, request: GenerationRequest, value: str) -> dict[str, Any]:
        names = {n.lower(): n for n in self.easel.registry.samplers.all_names()}
        base, legacy = split_legacy(value)
        name = names.get(value.lower()) or names.get(base.lower())
        if name is None:
            raise ValueError(f"Sampler: no sampler named {value!r}; choose one of {', '.join(names.values())}")
        return {"sampler": name, **({"scheduler": legacy} if legacy and name.lower() != value.lower() else {})}

    def hires_sampler(self, request: GenerationRequest, value: str) -> dict[str, Any]:
        return {"hr_sampler_name": self.sampler(request, value)["sampler"]}

    def checkpoint(self, request: GenerationRequest, value: str) -> dict[str, Any]:
        try:
            return {"checkpoint": self.easel.manager.find_checkpoint(value).name}
        except LookupError:
            raise ValueError(f"Checkpoint name: no checkpoint named {value!r}") from None

    def refiner(self, request: GenerationRequest, value: str) -> dict[str, Any]:
        if value in ("", NO_REFINER):
            return {"refiner_checkpoint": NO_REFINER}
        try:
            return {"refiner_checkpoint": self.easel.manager.find_checkpoint(value).name}
        except LookupError:
            raise ValueError(f"Refiner checkpoint: no checkpoint named {value!r}") from None

    def vae(self, request: GenerationRequest, value: str) -> dict[str, Any]:
        if value in ("Automatic", "None"):
            return {"vae": value}
        try:
            return {"vae": self.easel.manager.find_vae(value).name}
        except LookupError:
            raise ValueError(f"VAE: no VAE named {value!r}") from None

    def hires_upscaler(self, request: GenerationRequest, value: str) -> dict[str, Any]:
        try:
            return {"hr_upscaler": self.easel.engine.upscalers.check_hires(value)}
        except LookupError as exc:
            raise ValueError(f"Hires upscaler: {exc}") from None

    @staticmethod
    def denoising(request: GenerationRequest, value: float) -> dict[str, Any]:
        """img2img's denoising strength; txt2img's is the hires fix's."""
        if isinstance(request, Txt2ImgRequest):
            return Plot.hires(lambda r, v: {"hr_denoising_strength": v})(request, value)
        return {"denoising_strength": value}

    @staticmethod
    def refiner_switch(request: GenerationRequest, value: float) -> dict[str, Any]:
        if getattr(request, "refiner_checkpoint", NO_REFINER) in ("", NO_REFINER):
            raise ValueError("pick a refiner checkpoint to plot where it takes over")
        return {"refiner_switch_at": value}

    @staticmethod
    def styles(request: GenerationRequest, value: str) -> dict[str, Any]:
        names = tuple(name.strip() for name in value.split(",") if name.strip())
        return {"styles": tuple(request.styles) + names}

    @staticmethod
    def face_restore(request: GenerationRequest, value: str) -> dict[str, Any]:
        """CodeFormer or GFPGAN: restore faces with it; true / false: with the settings' restorer, or not."""
        key = str(value).strip().lower()
        for name in ("CodeFormer", "GFPGAN"):
            if key == name.lower():
                return {"restore_faces": True, "face_restoration_model": name}
        if key in ("true", "yes", "y", "1", "false", "no", "n", "0", "none", "off", "on"):
            return {"restore_faces": key in ("true", "yes", "y", "1", "on")}
        raise ValueError(f"Face restore: {value!r} is not CodeFormer, GFPGAN, true or false")

    @staticmethod
    def size(request: GenerationRequest, value: str) -> dict[str, Any]:
        match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", value)
        if match is None:
            raise ValueError(f"Size: {value!r} is not a size like 512x768")
        return {"width": int(match.group(1)), "height": int(match.group(2))}

    @staticmethod
    def lora_weight(request: GenerationRequest, value: str) -> dict[str, Any]:
        """`0.5` sets the weight of every `<lora:name:w>` in the prompt; `name:0.5` that LoRA's (added when the
        prompt has none of it)."""
        name, _, weight = value.rpartition(":")
        try:
            float(weight)
        except ValueError:
            raise ValueError(f"LoRA weight: {value!r} is not a weight (0.5) or a LoRA and its weight (name:0.5)") \
                from None
        tags = re.compile(r"<lora:([^:>]+)(?::[^>]*)?>")
        prompt = request.prompt
        if name:
            if not any(m.group(1) == name for m in tags.finditer(prompt)):
                return {"prompt": f"{prompt} <lora:{name}:{weight}>".strip()}
            return {"prompt": tags.sub(lambda m: f"<lora:{name}:{weight}>" if m.group(1) == name else m.group(0),
                                       prompt)}
        if not tags.search(prompt):
            raise ValueError("LoRA weight: the prompt has no <lora:name:weight> to change; give values as name:0.5")
        return {"prompt": tags.sub(lambda m: f"<lora:{m.group(1)}:{weight}>", prompt)}

    # Reading the arguments ---------------------------------------------------------------------------------
    def axis(self, value: Any, mode: str, which: str) -> Axis:
        axes = self.axes_for(mode)
        if isinstance(value, bool):
            raise ValueError(f"{which} type: {value!r} is not an axis index or label")
        if isinstance(value, (int, float)) and float(value).is_integer():
            index = int(value)
            if not 0 <= index < len(axes):
                raise ValueError(f"{which} type: {index} is not an axis index (0 to {len(axes) - 1} for {mode})")
            axis = axes[index]
        else:
            text = str(value).strip()
            if text.isdigit():
                return self.axis(int(text), mode, which)
            axis = next((a for a in axes if a.label.lower() == text.lower()), None)  # type: ignore[assignment]
            if axis is None:
                raise ValueError(f"{which} type: no {mode} axis named {text!r}")
        if axis.apply is None:
            raise ValueError(f"{which} type: the axis {axis.label!r} is not supported by Easel")
        return axis

    def values(self, axis: Axis, text: Any, listed: Any, which: str) -> list[Any]:
        if axis.kind == "none":
            return [None]
        if isinstance(listed, (list, tuple)) and listed:  # the dropdown's values, when sent
            text = ",".join('"' + str(v).replace('"', '""') + '"' for v in listed)
        try:
            if axis.kind == "int":
                values: list[Any] = int_values(text)
            elif axis.kind == "float":
                values = float_values(text)
            elif axis.kind == "order":
                values = list(itertools.permutations(split_values(text)))
            else:
                values = split_values(text)
        except ValueError as exc:
            raise ValueError(f"{which} axis ({axis.label}): {exc}") from None
        if not values:
            raise ValueError(f"{which} axis ({axis.label}): give at least one value")
        return values


def args_of(args: list[Any]) -> list[Any]:
    if len(args) > len(ARG_DEFAULTS):
        raise ValueError(f"takes at most {len(ARG_DEFAULTS)} arguments ({', '.join(ARG_LABELS)}), got {len(args)}")
    return list(args) + list(ARG_DEFAULTS[len(args):])


def make_plot(plot: Plot, request: GenerationRequest, args: list[Any]) -> ScriptJob:
    """The script job of an X/Y/Z plot of `request` (ValueError naming the axis for a bad type or value)."""
    (x_type, x_text, x_list, y_type, y_text, y_list, z_type, z_text, z_list, legend, lone, sub_grids, keep_random,
     vary_x, vary_y, vary_z, margin, _csv) = args_of(args)
    mode = "txt2img" if isinstance(request, Txt2ImgRequest) else "img2img"
    axes = [plot.axis(x_type, mode, "X"), plot.axis(y_type, mode, "Y"), plot.axis(z_type, mode, "Z")]
    texts = [x_text, y_text, z_text]
    values = [plot.values(axis, text, listed, which) for axis, text, listed, which
              in zip(axes, texts, (x_list, y_list, z_list), "XYZ")]
    margin = grid_margin(margin)
    fixed: dict[str, str] = {}
    if not keep_random:  # one seed for every cell, so the axes are all that changes
        request = request.replace(seed=random_if_unset(request.seed), subseed=random_if_unset(request.subseed))
        for i, axis in enumerate(axes):
            if axis.label in ("Seed", "Var. seed"):
                values[i] = [random_if_unset(v) for v in values[i]]
                fixed["XYZ"[i]] = ", ".join(str(v) for v in values[i])
    xs, ys, zs = values
    requests: list[GenerationRequest] = []
    labels: list[str] = []
    for iz, z in enumerate(zs):
        for iy, y in enumerate(ys):
            for ix, x in enumerate(xs):
                cell = request
                parts = []
                for axis, value, axis_values in ((axes[0], x, xs), (axes[1], y, ys), (axes[2], z, zs)):
                    if axis.kind == "none":
                        continue
                    cell = cell.replace(**apply(axis, cell, value, axis_values))
                    parts.append(f"{axis.label} = {axis.text(value) if axis.kind == 'order' else value}")
                seed_step = (ix if vary_x else 0) + (iy * len(xs) if vary_y else 0) + \
                    (iz * len(xs) * len(ys) if vary_z else 0)
                if seed_step and cell.seed >= 0:
                    cell = cell.replace(seed=(cell.seed + seed_step) % 2**32)
                requests.append(cell)
                labels.append(", ".join(parts) or "the plot")
    axis_params: list[tuple[str, Any]] = [("Script", TITLE)]
    for i, which in enumerate("XY"):
        if axes[i].kind != "none":
            axis_params += [(f"{which} Type", axes[i].label), (f"{which} Values", str(texts[i]))]
            if which in fixed:
                axis_params.append((f"Fixed {which} Values", fixed[which]))
    per_grid = len(xs) * len(ys)
    x_labels = tuple(axes[0].text(x) for x in xs)
    y_labels = tuple(axes[1].text(y) for y in ys)
    grids = tuple(GridPlan(tuple(range(iz * per_grid, (iz + 1) * per_grid)), len(xs), x_labels, y_labels,
                           tuple(axis_params)) for iz in range(len(zs)))
    super_grid = None
    if len(zs) > 1:
        z_params = list(axis_params) + [("Z Type", axes[2].label), ("Z Values", str(z_text))]
        if "Z" in fixed:
            z_params.append(("Fixed Z Values", fixed["Z"]))
        super_grid = SuperGrid(tuple(range(len(zs))), tuple(axes[2].text(z) for z in zs), tuple(z_params))
    return ScriptJob(script=TITLE, base=request, requests=tuple(requests), labels=tuple(labels), grids=grids,
                     super_grid=super_grid, include_sub_grids=bool(sub_grids), include_images=bool(lone),
                     draw_legend=bool(legend), margin=margin, mode=request.mode)


def apply(axis: Axis, request: GenerationRequest, value: Any, values: list[Any]) -> dict[str, Any]:
    if axis.label == "Prompt S/R":  # the first value is what the others replace
        search = values[0]
        if search not in request.prompt and search not in request.negative_prompt:
            raise ValueError(f"Prompt S/R: {search!r} is in neither the prompt nor the negative prompt")
        return {"prompt": request.prompt.replace(search, value),
                "negative_prompt": request.negative_prompt.replace(search, value)}
    assert axis.apply is not None
    try:
        return axis.apply(request, value)
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if message.startswith(axis.label) else f"{axis.label}: {message}") from None


def grid_margin(margin: Any) -> int:
    """The "Grid margins (px)" argument as a whole number from 0 to MAX_MARGIN, or ValueError naming it."""
    try:
        margin = int(margin)
    except (TypeError, ValueError):
        raise ValueError(f"Grid margins: {margin!r} is not a whole number") from None
    if not 0 <= margin <= MAX_MARGIN:
        raise ValueError(f"Grid margins: must be between 0 and {MAX_MARGIN}, got {margin}")
    return margin


def random_if_unset(seed: int | None) -> int:
    return random.randrange(2**32 - 1) if seed is None or int(seed) == -1 else int(seed)
