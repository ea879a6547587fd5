"""A script's many generations run as one job: an X/Y/Z plot, a prompt matrix, prompts from a file.

`ScriptJob` is queued like any request (`Engine.submit` checks every one of its requests first), so the worker
stays the only place work runs. On the worker it runs its requests one after another through the engine's own
generation path (extension hooks, the mode, infotext, saving), in an order that loads each checkpoint once, while
its progress counts the whole plot: `batch_index`/`batch_total` run over every batch of every request (and the
batches the detail fixer's passes add to it). Interrupt
stops the plot (the grid keeps the cells made so far); Skip ends the current image and goes on with the next.
Then it draws its grids (`GridPlan`), saves them under `outputs/<mode>-grids/`, and returns the grids first, then
the images when asked.

A job whose requests depend on the images made before them (Loopback feeds each loop's image to the next; SD
upscale crops its tiles from an image upscaled on the worker) sets `prepare`, which makes each request just
before it runs from the results so far, and runs its requests in their own order. `finish` makes the job's own
images from its requests' results (SD upscale's tiles blended into one picture); they are saved as generated
images and returned after the grids.
"""
from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from PIL import Image

from webui.engine.outputs import mode_folder
from webui.engine.tasks import EngineTask
from webui.engine.worker import Job, JobInterrupted, JobResult
from webui.infotext import format_infotext
from webui.requests import GenerationRequest, Limits, RequestError

if TYPE_CHECKING:
    from webui.engine.engine import Engine

log = logging.getLogger(__name__)

MAX_GRID_PIXELS = 200_000_000  # one grid, labels included (AUTOMATIC1111's default limit: 200 megapixels)


@dataclass(frozen=True)
class GridPlan:
    """One grid: the requests whose first images fill its cells (row by row, `columns` per row; -1 = a blank cell),
    its labels, and what its infotext adds to the first cell's parameters."""

    cells: tuple[int, ...]
    columns: int
    column_labels: tuple[str, ...] = ()
    row_labels: tuple[str, ...] = ()
    params: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class SuperGrid:
    """Grids side by side under titles (the Z axis of a plot): indices into the job's `grids`."""

    grids: tuple[int, ...]
    titles: tuple[str, ...]
    params: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ScriptJob(EngineTask):
    """Generations that make one result: `requests` with a label each (for errors: "Steps = 5000"), the grids
    drawn from their images, the options of how the result is returned."""

    script: str = ""
    base: GenerationRequest | None = field(default=None, compare=False, repr=False)  # the request as sent
    requests: tuple[GenerationRequest, ...] = field(default=(), repr=False)
    labels: tuple[str, ...] = ()
    grids: tuple[GridPlan, ...] = ()
    super_grid: SuperGrid | None = None  # shown and returned first when set
    include_sub_grids: bool = True  # with a super grid: the grids under it too
    include_images: bool = True  # the requests' own images after the grids
    draw_legend: bool = True
    margin: int = 0
    mode: str = "txt2img"
    # (engine, index, the request as planned, the results so far) -> the request to run, or None to leave it out
    prepare: Callable[..., GenerationRequest | None] | None = field(default=None, compare=False, repr=False)
    # (engine, the results by request, a job publishing as the batches after the requests') -> the job's own
    # images: (image, infotext, parameters, seed) each
    finish: Callable[..., list[tuple[Image.Image, str, dict[str, Any], int]]] | None = \
        field(default=None, compare=False, repr=False)
    finish_units: int = 0  # the progress units (batches) `finish` runs (SD upscale's detail passes)
    extras: tuple[tuple[tuple[str, Any], ...], ...] = ()  # per request: entries its images' infotext adds
    save_parts: bool = True  # the requests' own images are saved (SD upscale's tiles are not)

    @property
    def save_images(self) -> bool:
        return bool(getattr(self.base, "save_images", True))

    def validate(self, limits: Limits) -> None:
        if not self.requests:
            raise RequestError("script_args", f"{self.script}: nothing to generate")
        images = sum(r.batch_size * r.batch_count for r in self.requests)
        if images > limits.max_images:
            raise RequestError("script_args", f"{self.script} would make {images} images; the limit is "
                                              f"{limits.max_images} per request")
        for plan in self.grids:
            sizes = [(self.requests[i].width, self.requests[i].height) for i in plan.cells if i >= 0]
            width, height = max(sizes) if sizes else (0, 0)
            if len(plan.cells) * width * height > MAX_GRID_PIXELS:
                raise RequestError("script_args", f"{self.script}: a grid of {len(plan.cells)} images of "
                                                  f"{width}x{height} is larger than {MAX_GRID_PIXELS} pixels")

    def run_order(self) -> list[int]:
        """The requests' indices in the order they run: grouped by checkpoint (in the order each first appears),
        then by refiner and VAE, so each model loads once; the plot's own order within a group. A job that
        prepares its requests from earlier results runs them in their own order."""
        if self.prepare is not None:
            return list(range(len(self.requests)))
        def first_seen(values: list[str]) -> dict[str, int]:
            seen: dict[str, int] = {}
            for value in values:
                seen.setdefault(value, len(seen))
            return seen

        checkpoints = first_seen([r.checkpoint for r in self.requests])
        refiners = first_seen([str(getattr(r, "refiner_checkpoint", "")) for r in self.requests])
        vaes = first_seen([r.vae for r in self.requests])
        return sorted(range(len(self.requests)), key=lambda i: (
            checkpoints[self.requests[i].checkpoint], refiners[str(getattr(self.requests[i], "refiner_checkpoint", ""))],
            vaes[self.requests[i].vae], i))

    def run(self, engine: "Engine", job: Job) -> JobResult:
        # 1. Run every request through the engine's generation path, the progress spanning them all.
        from webui.engine.detail import units

        parts: list[JobResult | None] = [None] * len(self.requests)
        # a request's batches, then its detail passes' (finding and repainting per image and pass)
        batches = [r.batch_count + units(r) for r in self.requests]
        job.update(batch_total=sum(batches) + self.finish_units, batch_index=0)
        offset = 0
        group: tuple[str, str, str] | None = None
        for index in self.run_order():
            request = self.requests[index]
            if job.interrupt_requested:
                break
            models = (request.checkpoint, str(getattr(request, "refiner_checkpoint", "")), request.vae)
            if group is not None and models != group:  # the earlier models are done with: let the budgets free them
                engine.manager.memory.release_pins()
            group = models
            if self.prepare is not None:
                try:
                    prepared = self.prepare(engine, index, request, parts)
                except (ValueError, LookupError) as exc:  # an upscaler that will not load, ...
                    raise RequestError("script_args", f"{self.script}: {exc}") from None
                if prepared is None:  # nothing to build on (the image before it was skipped)
                    offset += batches[index]
                    continue
                request = prepared
            cell = CellJob(job, request, offset)
            extra = dict(self.extras[index]) if index < len(self.extras) else None
            try:
                parts[index] = engine.run_generation(cell, save=self.save_parts, extra=extra)
            except JobInterrupted:
                parts[index] = cell.result
                break
            except RequestError as exc:  # a value that fails only on this cell's model: name the cell
                raise RequestError("script_args", f"{self.script}, {self.labels[index]}: {exc.field}: "
                                                  f"{exc.message}") from None
            except LookupError as exc:  # a model a line or a value names that is not installed
                raise RequestError("script_args", f"{self.script}, {self.labels[index]}: {exc}") from None
            offset += batches[index]

        # 2. Draw and save the grids; the result holds them first, then the images.
        result = JobResult()
        grids = [self.draw(plan, parts, engine) for plan in self.grids]
        shown = grids
        if self.super_grid is not None:
            shown = [self.draw_super(grids, engine)] + (grids if self.include_sub_grids else [])
        for made in shown:
            if made[0] is not None:
                self._add(result, engine, made, grid_folder(engine.settings.outputs_dir, self.mode))
        result.info["grids"] = len(result.images)
        finishing = CellJob(job, self.base, sum(batches))
        for made in self.finish(engine, parts, finishing) if self.finish is not None else []:
            self._add(result, engine, made, mode_folder(engine.settings.outputs_dir, self.mode))
        models = [p.info for p in parts if p is not None and p.info.get("model")]
        if self.include_images:
            for part in parts:
                if part is None:
                    continue
                result.images += part.images
                result.infotexts += part.infotexts
                result.parameters += part.parameters
                result.seeds += part.seeds
                result.paths += part.paths
        result.info |= {"seeds": result.seeds, "model": models[0]["model"] if models else None,
                        "model_hash": models[0].get("model_hash") if models else None, "script": self.script}
        job.update(result=result)
        return result

    def _add(self, result: JobResult, engine: Any, made: tuple, folder: Path) -> None:
        """One (image, infotext, parameters, seed) of the job's own into `result`, saved in `folder` when saving
        is on (and recorded in the image browser's index)."""
        image, text, params, seed = made
        result.images.append(image)
        result.infotexts.append(text)
        result.parameters.append(params)
        result.seeds.append(seed)
        user = engine.user_settings(self.base)  # the settings, with the request's own per-job values
        if self.save_images and user.save_images:
            result.paths.append(engine.save_output(image, folder, seed, text, user.filename_digits))

    def draw(self, plan: GridPlan, parts: list[JobResult | None],
             engine: "Engine") -> tuple[Image.Image | None, str, dict[str, Any], int]:
        """One grid with the infotext of its first image plus the plan's entries (image None: no cell was made)."""
        from webui.scripts.grid import draw_grid

        cells: list[Image.Image | None] = []
        first: tuple[str, dict[str, Any], int] | None = None
        for index in plan.cells:
            part = parts[index] if index >= 0 else None
            if part is None or not part.images:
                cells.append(None)
                continue
            cells.append(part.images[0])
            if first is None:
                first = (part.infotexts[0], part.parameters[0] if part.parameters else {}, part.seeds[0])
        if first is None:
            return None, "", {}, -1
        legend = self.draw_legend
        image = draw_grid(cells, plan.columns, list(plan.column_labels) if legend else None,
                          list(plan.row_labels) if legend else None, self.margin)
        return (image, *with_params(first[0], first[1], plan.params), first[2])

    def draw_super(self, grids: list[tuple[Image.Image | None, str, dict[str, Any], int]],
                   engine: "Engine") -> tuple[Image.Image | None, str, dict[str, Any], int]:
        from webui.scripts.grid import draw_grid

        assert self.super_grid is not None
        images = [grids[i][0] for i in self.super_grid.grids]
        made = [grids[i] for i in self.super_grid.grids if grids[i][0] is not None]
        if not made:
            return None, "", {}, -1
        titles = list(self.super_grid.titles) if self.draw_legend else None
        image = draw_grid(images, len(images), titles, None, self.margin)
        _, text, params, seed = made[0]
        return (image, *with_params(text, params, self.super_grid.params), seed)


def with_params(text: str, params: dict[str, Any], extra: tuple[tuple[str, Any], ...]) -> tuple[str, dict[str, Any]]:
    """An image's infotext with entries added at the end (a grid's axes)."""
    from webui.infotext import parse_infotext

    merged = {**params, **dict(extra)}
    parsed = parse_infotext(text)
    return format_infotext(parsed.get("Prompt", ""), parsed.get("Negative prompt", ""), merged), merged


def grid_folder(outputs_dir: Path, mode: str, when: _dt.date | None = None) -> Path:
    """`outputs/txt2img-grids/<date>` (img2img and inpaint grids: `img2img-grids`)."""
    kind = "txt2img" if mode == "txt2img" else "img2img"
    return outputs_dir / f"{kind}-grids" / (when or _dt.date.today()).isoformat()


class CellJob(Job):
    """One request of a script job, run by the engine as if it were a job of its own: its step progress and
    preview go to the script's job, its batch index is counted from where the earlier requests ended, and
    Interrupt and Skip are the script job's."""

    def __init__(self, parent: Job, request: Any, offset: int) -> None:
        self.parent = parent
        self.offset = offset
        super().__init__(request, parent.source)

    @property  # type: ignore[override]
    def interrupt_requested(self) -> bool:
        return self.parent.interrupt_requested

    @interrupt_requested.setter
    def interrupt_requested(self, value: bool) -> None:
        if value:
            self.parent.update(interrupt_requested=True)

    @property  # type: ignore[override]
    def skip_requested(self) -> bool:
        return self.parent.skip_requested

    @skip_requested.setter
    def skip_requested(self, value: bool) -> None:
        if hasattr(self, "_cond"):  # Job.__init__ sets it False before the job exists: nothing to pass on yet
            self.parent.update(skip_requested=value)

    def update(self, **changes: Any) -> None:
        forwarded: dict[str, Any] = {}
        for key, value in changes.items():
            if key in ("step", "total_steps", "preview", "stage", "skip_requested", "interrupt_requested"):
                forwarded[key] = value
            elif key == "batch_index":
                forwarded[key] = self.offset + value
            elif key != "batch_total":  # the script job's total counts every request
                setattr(self, key, value)
        super().update()  # wake anyone watching this cell (nobody, normally)
        if forwarded:
            self.parent.update(**forwarded)
