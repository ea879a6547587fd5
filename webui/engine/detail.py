"""The detail fixer: after a generation, find regions by a text query and repaint each one at a working size.

Steps per image and pass: find the query's mask with the Segment tab's engines (an edit-capable checkpoint's
generative segmentation, or CLIPSeg / SAM 3) → split it into connected regions (largest first, filtered by size)
→ for each region: grow or shrink its mask, crop it with padding to the working size's aspect ratio, inpaint the
crop at the working size with the pass's prompt, strength, steps and CFG, and blend it back through the blurred
region mask at the image's own size. Where the blurred mask is 0 the pixels stay exactly as they were; a query that
finds nothing leaves the image byte-identical and the infotext says so.

Progress: the passes are counted in the job's batches (`batch_total`, the API's `job_count`) after the mode's own
batches: two per image and pass, one for finding (the finder's steps) and one for repainting (every region's
inpainting steps, region after region), so the bar goes on moving while the passes run and never goes back.
Interrupt ends the job with the passes that finished; Skip ends the current image's passes (it keeps those that
finished) and goes on with the next image.
"""
from __future__ import annotations

import dataclasses
import logging
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from webui.engine.clipseg import probabilities
from webui.engine.context import Generated, ModeContext
from webui.engine.detail_args import DetailPass, pass_infotext, request_passes
from webui.engine.images import masked_bbox, paste_back
from webui.engine.mask_extraction import MaskSettings
from webui.engine.samplers import steps_for_strength
from webui.engine.script_job import CellJob
from webui.engine.worker import Job, JobInterrupted
from webui.model_manager.spec import LoadSpec
from webui.requests import GenerationRequest, InpaintRequest, RequestError

log = logging.getLogger(__name__)

FINDER_SEED = 0  # generative finders use a fixed seed: the same image and query give the same mask


def wanted(request: Any) -> list[DetailPass]:
    """The passes `request` asks for in its mode (ADetailer's skip-img2img passes run after txt2img only)."""
    args = getattr(request, "extension_args", None) or {}
    if not isinstance(request, GenerationRequest) or not args:
        return []
    try:
        passes = request_passes(args)
        return [p for p in passes if request.mode == "txt2img" or not p.skip_img2img]
    except ValueError as exc:
        raise RequestError("alwayson_scripts", str(exc)) from None


def check(request: Any, limits: Any) -> None:
    """Before queueing: the passes parse, and their prompts, steps and working size are within the limits."""
    for index, detail in enumerate(wanted(request), start=1):
        for name in ("prompt", "negative_prompt"):
            if len(getattr(detail, name)) > limits.max_prompt_chars:
                raise RequestError("alwayson_scripts", f"detail pass {index}: {name}: longer than "
                                                       f"{limits.max_prompt_chars} characters")
        if detail.steps > limits.max_steps or detail.finder_steps > limits.max_steps:
            raise RequestError("alwayson_scripts", f"detail pass {index}: steps: at most {limits.max_steps}")
        if max(detail.inpaint_width, detail.inpaint_height) > limits.max_side:
            raise RequestError("alwayson_scripts", f"detail pass {index}: inpaint_width/inpaint_height: at most "
                                                   f"{limits.max_side}")


def units(request: Any) -> int:
    """The progress units (batches) the request's passes add to its job: per image and pass, finding and
    repainting."""
    passes = wanted(request)
    return 2 * len(passes) * request.batch_size * request.batch_count if passes else 0


def apply(ctx: ModeContext, request: GenerationRequest, generated: list[Generated],
          first: int | None = None) -> list[Generated]:
    """Run the request's detail passes on each generated image (in place); the images' infotext records them.

    `ctx.job`'s batches count the mode's batches first (`request.batch_count`), then the passes' `units`; the
    passes' first batch is `first` when given (images made otherwise: SD upscale's pictures)."""
    passes = wanted(request)
    if not passes:
        return generated
    job = ctx.job
    start = request.batch_count if first is None else first
    for number, item in enumerate(generated):
        job.update(skip_requested=False)  # a Skip pressed before ended the image it was pressed on, not these passes
        for index, detail in enumerate(passes, start=1):
            unit = start + 2 * (number * len(passes) + index - 1)
            try:
                item.image, entries = run_pass(ctx, request, item, detail, index, unit)
            except JobInterrupted:
                if job.interrupt_requested:  # interrupted: the images keep the passes that finished
                    return generated
                break  # skipped: this image keeps the passes that finished; on with the next image
            item.extra.update(entries)
    return generated


class PassJob(CellJob):
    """One progress unit of a pass (its finding, or its repainting), run by the finder and the region inpaints as
    if it were their own job: it publishes as batch `unit` of the job, and the region inpaints' steps add up,
    region after region (`region` of `regions`), to one count. The inner generations' batch fields and their
    resetting of Skip do not reach the job (a Skip pressed during a pass ends the image's passes)."""

    def __init__(self, parent: Job, request: Any, unit: int, label: str, regions: int = 1,
                 per_region: int = 0) -> None:
        super().__init__(parent, request, unit)
        self.label = label  # the job's `stage` while this unit runs
        self.regions = max(1, regions)
        self.region = 0
        self.per_region = per_region  # the inner generation's step count (0: not known before it starts)

    def begin(self) -> None:
        """Publish this unit as the job's current batch, before its first step."""
        self.parent.update(batch_index=self.offset, step=0, total_steps=self.regions * self.per_region,
                           stage=self.label)

    def update(self, **changes: Any) -> None:
        for key in ("batch_index", "batch_total", "skip_requested"):
            changes.pop(key, None)
        if "total_steps" in changes:
            self.per_region = int(changes["total_steps"])
            changes["total_steps"] = self.per_region * self.regions
        if "step" in changes:
            changes["step"] = self.region * self.per_region + int(changes["step"])
        super().update(**changes)


@contextmanager
def running_as(ctx: ModeContext, unit: PassJob) -> Iterator[PassJob]:
    """`ctx` with `unit` as its job while the block runs (the step callbacks and inner modes publish to it)."""
    outer = ctx.job
    unit.begin()
    ctx.job = unit
    try:
        yield unit
    finally:
        ctx.job = outer
        outer.update(stage="")


# Finding -----------------------------------------------------------------------------------------------------
def find_mask(ctx: ModeContext, image: Image.Image, detail: DetailPass) -> tuple[np.ndarray, str, str]:
    """([H, W] bool mask, the finder's name, a message) for the pass's query on `image`."""
    from webui.engine.modes.segment import (check_can_edit, default_model, segment_query,
                                            segment_with_probabilities)

    source = image.convert("RGB")
    name = detail.finder or default_model(ctx.manager)
    entry = ctx.manager.find_segmenter(name)
    if entry is not None:
        loaded = ctx.manager.get_segmenter(entry.name)
        ctx.job.update(step=0, total_steps=1)
        probs = probabilities(entry.kind, loaded.model, loaded.processor, source, [detail.query], loaded.device)
        ctx.job.update(step=1)
        result = segment_with_probabilities(source, [detail.query], probs, detail.confidence, "magenta",
                                            MaskSettings())[0]
        return result.mask, entry.name, result.message
    loaded_pipe = ctx.manager.load(LoadSpec(name, "edit", sampler="Euler"), make_scheduler=ctx.samplers.make_scheduler)
    check_can_edit(loaded_pipe.pipe)
    result = segment_query(loaded_pipe.pipe, loaded_pipe.arch, source, detail.query, steps=detail.finder_steps,
                           seed=FINDER_SEED, callback=ctx.callback(loaded_pipe.arch, detail.finder_steps))
    return result.mask, loaded_pipe.entry.name, result.message


MAX_REGIONS = 64  # regions repainted per pass at most, also when a pass asks for all of them


def split_regions(mask: np.ndarray, detail: DetailPass) -> list[np.ndarray]:
    """The mask's 8-connected regions [H, W] bool, largest first, within the pass's size ratios and count."""
    if not mask.any():
        return []
    labels, count = ndimage.label(mask, np.ones((3, 3)))
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    order = [i for i in sorted(range(count), key=lambda i: -sizes[i])
             if detail.min_ratio <= sizes[i] / mask.size <= detail.max_ratio]
    keep = min(detail.max_regions or MAX_REGIONS, MAX_REGIONS)  # 0 = all, up to the cap
    return [labels == i + 1 for i in order[:keep]]


def grow(region: np.ndarray, pixels: int) -> np.ndarray:
    """The region dilated (pixels > 0) or eroded (< 0) by a disc of that radius."""
    if pixels == 0:
        return region
    r = abs(pixels)
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    disc = x * x + y * y <= r * r
    return ndimage.binary_dilation(region, disc) if pixels > 0 else ndimage.binary_erosion(region, disc)


# Repainting --------------------------------------------------------------------------------------------------
def run_pass(ctx: ModeContext, request: GenerationRequest, item: Generated, detail: DetailPass, index: int,
             unit: int) -> tuple[Image.Image, dict[str, Any]]:
    """One pass on one image: the image with every region repainted, and the pass's infotext entries. The
    finding publishes as the job's batch `unit`, the repainting as `unit + 1`. JobInterrupted when the job was
    interrupted or the image skipped (the pass's half-made work is not used)."""
    job = ctx.job
    job.check_interrupt()
    image = item.image.convert("RGB")
    with running_as(ctx, PassJob(job, request, unit, f"Detail pass {index}: finding {detail.query!r}")):
        try:
            mask, finder, message = find_mask(ctx, image, detail)
        except RequestError as exc:  # the finder: none installed, or one that cannot segment
            raise RequestError("alwayson_scripts", f"detail pass {index}: finder: {exc.message}") from None
    if job.interrupt_requested or job.skip_requested:
        raise JobInterrupted()  # the finder stopped early: its mask is not used
    regions = [r for r in (grow(region, detail.dilate_erode) for region in split_regions(mask, detail)) if r.any()]
    if not regions:  # nothing to repaint: the next unit follows this one
        message = message if not mask.any() else "no region left after the size filters and dilation"
        return image, pass_infotext(index, detail, finder, 0, message)
    label = f"Detail pass {index}: repainting {len(regions)} region{'s' if len(regions) != 1 else ''}"
    with running_as(ctx, PassJob(job, request, unit + 1, label, len(regions), inpaint_steps(request, detail))) \
            as repainting:
        for number, region in enumerate(regions):
            job.check_interrupt()
            repainting.region = number
            image = repaint(ctx, request, image, region, detail, item.seed + number)
    return image, pass_infotext(index, detail, finder, len(regions), message)


def inpaint_steps(request: GenerationRequest, detail: DetailPass) -> int:
    """The steps one region's inpaint runs (as the inpaint mode counts them: the schedule times the strength)."""
    schedule, strength = steps_for_strength(detail.steps or request.steps, detail.denoising_strength)
    return max(1, int(schedule * strength))


def repaint(ctx: ModeContext, request: GenerationRequest, image: Image.Image, region: np.ndarray,
            detail: DetailPass, seed: int) -> Image.Image:
    """`image` with one region inpainted "only masked" at the working size and blended back through its blurred
    mask; pixels where that mask is 0 are returned unchanged."""
    from webui.engine.modes import inpaint

    mask = Image.fromarray((region * 255).astype(np.uint8), mode="L")  # [H, W], white = repaint
    work_w = detail.inpaint_width or request.width
    work_h = detail.inpaint_height or request.height
    box = masked_bbox(mask, detail.padding, work_w, work_h)
    crop_w, crop_h = box[2] - box[0], box[3] - box[1]
    scale = work_w / crop_w
    inner = InpaintRequest(**common_fields(request), init_image=image.crop(box), mask=mask.crop(box),
                           width=work_w, height=work_h, resize_mode="Just resize", seed=seed, batch_size=1,
                           batch_count=1, subseed_strength=0.0, denoising_strength=detail.denoising_strength,
                           mask_blur=round(detail.mask_blur * scale), inpainting_fill="original",
                           inpaint_full_res=False, prompt=detail.prompt or request.prompt,
                           negative_prompt=detail.negative_prompt or request.negative_prompt,
                           steps=detail.steps or request.steps,
                           cfg_scale=request.cfg_scale if detail.cfg_scale is None else detail.cfg_scale)
    made = inpaint.run(ctx, inner)
    if not made or ctx.job.interrupt_requested or ctx.job.skip_requested:
        raise JobInterrupted()  # the pipeline stopped early: its half-made patch is not used
    patch = made[0].image.convert("RGB").resize((crop_w, crop_h), Image.LANCZOS)
    full = image.copy()
    full.paste(patch, box[:2])
    blend = mask.filter(ImageFilter.GaussianBlur(detail.mask_blur)) if detail.mask_blur else mask
    blend = Image.composite(blend, Image.new("L", mask.size, 0), blend)  # exactly 0 where the blur did not reach
    return paste_back(image, full, blend)


# The fields a region's inpaint takes from the main request (model, sampler, schedule, clip skip, ...).
SHARED = ("checkpoint", "vae", "sampler", "scheduler", "clip_skip", "distilled_cfg_scale", "styles")


def common_fields(request: GenerationRequest) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(InpaintRequest)}
    values = {name: getattr(request, name) for name in SHARED if name in names and hasattr(request, name)}
    values["styles"] = ()  # the main prompts come styled already
    values["extension_args"] = {}  # extensions' arguments (ControlNet images, ...) describe the whole canvas
    return values
