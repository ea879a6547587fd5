"""Segmentation: one mask per query, read off an edit that paints the referent, or from CLIPSeg / SAM 3.

Generative steps per query: fill the family's prompt template → run the edit on the source at the model's working
size → extract the mask where the edit changed the image towards the highlight colour
(`webui.engine.mask_extraction`) → scale the edit and the mask back to the source size. With a text-prompted
segmenter (CLIPSeg, SAM 3) the mask is its probability above `mask_threshold`, and the "edited" image is the
source with the mask painted in the highlight colour, so both kinds of model give the same outputs. Several
queries (one per line) give several masks and one overlay with a colour per query; a referent that is not there
gives an empty mask, found = False and a message saying so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from PIL import Image

from webui.engine.clipseg import probabilities
from webui.engine.context import Generated, ModeContext, generators, resolve_seed
from webui.engine.mask_extraction import (HIGHLIGHT_COLOURS, MaskResult, MaskSettings, clean_mask, cutout,
                                          extract_mask, keep_largest, overlay)
from webui.engine.segment_prompts import EASEL_HIGHLIGHTS, build_prompt, template_for
from webui.model_manager.identify import Arch
from webui.model_manager.manager import ModelManager
from webui.model_manager.spec import LoadSpec
from webui.requests import RequestError, SegmentRequest

EDIT_FAMILIES = "the built-in model, Qwen-Image-Edit (Plus), FLUX.1 Kontext or InstructPix2Pix"


@dataclass
class QueryResult:
    """One query's outcome at the source image's size."""

    query: str
    prompt: str  # the edit instruction sent ("" for CLIPSeg / SAM 3)
    edited: Image.Image  # RGB
    mask: np.ndarray  # [H, W] bool, True = object
    found: bool
    message: str
    changed_share: float = 0.0


# Choosing the model ---------------------------------------------------------------------------------------
def default_editor(manager: ModelManager) -> str | None:
    """The current checkpoint when it can edit, else the first edit-capable one, else None."""
    editors = manager.edit_checkpoints()
    current = manager.current()
    if current is not None and any(e.name == current.name for e in editors):
        return current.name
    if editors:
        return editors[0].name
    return None


def default_model(manager: ModelManager) -> str:
    """The current checkpoint when it can edit, else the first edit-capable one, else the first segmenter."""
    editor = default_editor(manager)
    if editor is not None:
        return editor
    segmenters = manager.segmenters()
    if segmenters:
        return segmenters[0].label
    raise RequestError("model", f"no model can segment; install {EDIT_FAMILIES}, or put a CLIPSeg folder in "
                                "models/clipseg")


def working_size(arch: Arch, image: Image.Image) -> tuple[int, int]:
    """The size the edit runs at: the built-in model's native 64×64, else the source rounded to 16 px (≤ 1024)."""
    if arch == Arch.EASEL:
        return 64, 64
    w, h = image.size
    scale = min(1.0, 1024 / max(w, h))
    return max(16, int(w * scale) // 16 * 16), max(16, int(h * scale) // 16 * 16)


EDIT_PIPELINES = ("EaselPipeline", "QwenImageEditPipeline", "QwenImageEditPlusPipeline", "FluxKontextPipeline",
                  "StableDiffusionInstructPix2PixPipeline")


def check_can_edit(pipe: Any) -> None:
    name = type(pipe).__name__
    if name not in EDIT_PIPELINES:
        raise RequestError("model", f"{name} cannot edit images; pick {EDIT_FAMILIES}, or a CLIPSeg model")


def edit_arguments(pipe: Any, source: Image.Image, prompt: str, steps: int, cfg_scale: float,
                   image_cfg_scale: float = 1.5) -> dict[str, Any]:
    """Call arguments for each edit-capable pipeline family (`image_cfg_scale`: InstructPix2Pix's image guidance)."""
    check_can_edit(pipe)
    name = type(pipe).__name__
    common = {"prompt": prompt, "num_inference_steps": steps}
    if name == "EaselPipeline":
        return {**common, "source_image": source, "guidance_scale": cfg_scale,
                "width": source.width, "height": source.height}
    if name in ("QwenImageEditPipeline", "QwenImageEditPlusPipeline"):
        return {**common, "image": source, "negative_prompt": " ", "true_cfg_scale": cfg_scale,
                "width": source.width, "height": source.height}
    if name == "FluxKontextPipeline":  # no auto-resize: the edit must stay aligned with the source
        return {**common, "image": source, "guidance_scale": cfg_scale, "width": source.width,
                "height": source.height, "max_area": source.width * source.height, "_auto_resize": False}
    # StableDiffusionInstructPix2PixPipeline: the image guides as well as the text
    return {**common, "image": source, "guidance_scale": cfg_scale, "image_guidance_scale": image_cfg_scale}


def check_highlight(pipe_class: str, highlight: str) -> tuple[int, int, int]:
    if highlight not in HIGHLIGHT_COLOURS:
        raise RequestError("highlight", f"must be one of {', '.join(HIGHLIGHT_COLOURS)}; got {highlight!r}")
    if pipe_class == "EaselPipeline" and highlight not in EASEL_HIGHLIGHTS:
        raise RequestError("highlight", f"the built-in model paints only {' or '.join(EASEL_HIGHLIGHTS)}; "
                                        f"got {highlight!r}")
    return HIGHLIGHT_COLOURS[highlight]


# One query ------------------------------------------------------------------------------------------------
def segment_query(pipe: Any, arch: Arch, source: Image.Image, query: str, *, template: str = "",
                  highlight: str = "magenta", steps: int = 20, cfg_scale: float = 4.0, seed: int = 0,
                  settings: MaskSettings = MaskSettings(), callback: Callable | None = None) -> QueryResult:
    """Segment one query with an editing pipeline; `source` is RGB at any size."""
    pipe_class = type(pipe).__name__
    colour = check_highlight(pipe_class, highlight)
    prompt = build_prompt(pipe_class, template, query, highlight)
    work = source.resize(working_size(arch, source), Image.LANCZOS) if source.size != working_size(arch, source) \
        else source
    kwargs = edit_arguments(pipe, work, prompt, steps, cfg_scale)
    if callback is not None:
        kwargs["callback_on_step_end"] = callback
    edited = pipe(**kwargs, generator=generators([seed]), output_type="pil").images[0].convert("RGB")
    if edited.size != work.size:
        edited = edited.resize(work.size, Image.LANCZOS)
    result: MaskResult = extract_mask(work, edited, colour, settings)
    mask = result.mask
    if work.size != source.size:
        mask = np.asarray(result.image().resize(source.size, Image.NEAREST)) > 127  # [H, W]
        edited = edited.resize(source.size, Image.LANCZOS)
    return QueryResult(query, prompt, edited, mask, result.found, result.message, result.changed_share)


def segment_with_probabilities(source: Image.Image, queries: list[str], probs: np.ndarray, threshold: float,
                               highlight: str, settings: MaskSettings) -> list[QueryResult]:
    """Masks from per-query probabilities [Q, H, W]: above `threshold`, specks removed, optionally the largest."""
    colour = np.array(HIGHLIGHT_COLOURS[highlight], np.uint8)
    results = []
    for query, p in zip(queries, probs):
        mask = p > threshold  # [H, W]
        if settings.clean and mask.any():
            mask = clean_mask(mask, mask)
        if settings.keep_largest:
            mask = keep_largest(mask)
        found = float(mask.mean()) >= settings.min_area
        if not found:
            mask = np.zeros_like(mask)
        painted = np.asarray(source).copy()  # [H, W, 3]
        painted[mask] = colour
        message = f"found: {float(mask.mean()):.1%} of the image" if found else "nothing matching the query was found"
        results.append(QueryResult(query, "", Image.fromarray(painted), mask, found, message))
    return results


# The mode -------------------------------------------------------------------------------------------------
def run(ctx: ModeContext, request: SegmentRequest) -> list[Generated]:
    # 1. Check inputs and pick the model.
    if request.image is None:
        raise RequestError("image", "an image to segment is required")
    source = request.image.convert("RGB")
    queries = request.queries
    name = request.checkpoint or default_model(ctx.manager)
    settings = MaskSettings(change_threshold=request.threshold, keep_largest=request.keep_largest)
    seed = resolve_seed(request.seed)
    job = ctx.job
    job.update(batch_total=len(queries))

    # 2. One mask per query: from a text-prompted segmenter, or one edit per query.
    segmenter_entry = ctx.manager.find_segmenter(name)
    if segmenter_entry is not None:
        if request.highlight not in HIGHLIGHT_COLOURS:
            raise RequestError("highlight", f"must be one of {', '.join(HIGHLIGHT_COLOURS)}")
        loaded = ctx.manager.get_segmenter(segmenter_entry.name)
        job.update(step=0, total_steps=1)
        probs = probabilities(segmenter_entry.kind, loaded.model, loaded.processor, source, queries, loaded.device)
        job.update(step=1)
        results = segment_with_probabilities(source, queries, probs, request.mask_threshold, request.highlight,
                                             settings)
        model_name, method = segmenter_entry.name, segmenter_entry.label.rsplit("(", 1)[1].rstrip(")")
        model_hash, template = None, ""
    else:  # one call: the checkpoint's edit pipeline, on its base weights (no LoRA), with a fresh Euler scheduler
        loaded_pipe = ctx.manager.load(LoadSpec(name, "edit", sampler="Euler"),
                                       make_scheduler=ctx.samplers.make_scheduler)
        ctx.loaded = loaded_pipe
        pipe = loaded_pipe.pipe
        pipe_class = type(pipe).__name__
        check_can_edit(pipe)
        check_highlight(pipe_class, request.highlight)
        template = request.template or template_for(pipe_class)
        results = []
        for index, query in enumerate(queries):
            job.check_interrupt()
            job.update(batch_index=index)
            results.append(segment_query(pipe, loaded_pipe.arch, source, query, template=template,
                                         highlight=request.highlight, steps=request.steps,
                                         cfg_scale=request.cfg_scale, seed=seed, settings=settings,
                                         callback=ctx.callback(loaded_pipe.arch, request.steps)))
            if job.interrupt_requested:
                break
        model_name, model_hash, method = loaded_pipe.entry.name, loaded_pipe.entry.short_hash, "generative"

    # 3. Outputs: the edit (saved with its infotext), the mask, the cutout; one overlay for all queries.
    generated = []
    for r in results:
        extra = {"Query": r.query, "Found": r.found, "Segmentation": method, "Highlight": request.highlight,
                 "Model": model_name}
        if template:
            extra["Template"] = template
        mask_image = Image.fromarray((r.mask * 255).astype(np.uint8), mode="L")
        generated.append(Generated(r.edited, seed, extra, {
            "query": r.query, "found": r.found, "message": r.message, "mask": mask_image,
            "cutout": cutout(source, r.mask), "prompt": r.prompt, "changed_share": round(r.changed_share, 4),
            "model": model_name, "method": method}, model=model_name, model_hash=model_hash))
    if generated:
        generated[0].payload["overlay"] = overlay(source, [r.mask for r in results])
    return generated
