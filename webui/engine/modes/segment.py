"""Segmentation as editing: ask an editing model to paint the referent in a highlight colour, read the mask.

Steps per query: fill the family's prompt template → run the edit on the source at the model's working size
→ extract the mask where the edit changed the image towards the highlight colour → scale the mask back to the
source size. Several queries (one per line) give several masks; an absent referent gives an empty mask and
found = False.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from webui.engine.context import Generated, ModeContext, generators, resolve_seed
from webui.engine.mask_extraction import HIGHLIGHT_COLOURS, MaskSettings, cutout, extract_mask, overlay
from webui.engine.samplers import make_scheduler
from webui.model_manager.identify import Arch
from webui.requests import DEFAULT_SEGMENT_TEMPLATE, SegmentRequest

# Prompt templates by pipeline family; {query} is the referent, {colour} the highlight colour's name.
TEMPLATES: dict[str, str] = {
    "EaselPipeline": "highlight {query} in {colour}",
    "default": DEFAULT_SEGMENT_TEMPLATE,
}


def template_for(pipe_class: str) -> str:
    return TEMPLATES.get(pipe_class, TEMPLATES["default"])


def working_size(arch: Arch, image: Image.Image) -> tuple[int, int]:
    """The size the edit runs at: the built-in model's native 64×64, else the source rounded to 16 px."""
    if arch == Arch.EASEL:
        return 64, 64
    w, h = image.size
    scale = min(1.0, 1024 / max(w, h))
    return max(16, int(w * scale) // 16 * 16), max(16, int(h * scale) // 16 * 16)


def edit_arguments(pipe: Any, source: Image.Image, prompt: str, request: SegmentRequest) -> dict[str, Any]:
    """Call arguments for each edit-capable pipeline family."""
    name = type(pipe).__name__
    common = {"prompt": prompt, "num_inference_steps": request.steps}
    if name == "EaselPipeline":
        return {**common, "source_image": source, "guidance_scale": request.cfg_scale,
                "width": source.width, "height": source.height}
    if name.startswith("QwenImageEdit"):
        return {**common, "image": source, "negative_prompt": " ", "true_cfg_scale": request.cfg_scale}
    if name.startswith("FluxKontext"):
        return {**common, "image": source, "guidance_scale": request.cfg_scale,
                "width": source.width, "height": source.height}
    if name == "StableDiffusionInstructPix2PixPipeline":
        return {**common, "image": source, "guidance_scale": request.cfg_scale, "image_guidance_scale": 1.5}
    raise ValueError(f"model: {name} cannot edit images; pick the built-in model or an editing model "
                     "(Qwen-Image-Edit, FLUX.1 Kontext, InstructPix2Pix)")


def run(ctx: ModeContext, request: SegmentRequest) -> list[Generated]:
    # 1. Check inputs and load the editing pipeline.
    assert request.image is not None
    source_full = request.image.convert("RGB")
    loaded = ctx.manager.get(request.checkpoint or ctx.default_checkpoint(), "edit")
    pipe = loaded.pipe
    pipe.scheduler = make_scheduler("Euler", loaded.arch, pipe.scheduler.config)
    template = request.template or template_for(type(pipe).__name__)
    colour = HIGHLIGHT_COLOURS[request.highlight]
    size = working_size(loaded.arch, source_full)
    source = source_full.resize(size, Image.LANCZOS)
    settings = MaskSettings(change_threshold=request.threshold, keep_largest=request.keep_largest)
    seed = resolve_seed(request.seed)

    # 2. One edit and one mask per query.
    results: list[Generated] = []
    masks: list[np.ndarray] = []
    queries = request.queries
    ctx.job.update(batch_total=len(queries))
    for index, query in enumerate(queries):
        ctx.job.check_interrupt()
        ctx.job.update(batch_index=index)
        prompt = template.format(query=query, colour=request.highlight)
        edited = pipe(**edit_arguments(pipe, source, prompt, request), generator=generators([seed]),
                      callback_on_step_end=ctx.callback(loaded.arch, request.steps), output_type="pil").images[0]
        mask = extract_mask(source, edited, colour, settings)
        # 3. Back to the source size.
        full_mask = np.asarray(mask.image().resize(source_full.size, Image.NEAREST)) > 127
        masks.append(full_mask)
        mask_image = Image.fromarray((full_mask * 255).astype(np.uint8), mode="L")
        results.append(Generated(edited, seed, {"Query": query, "Found": mask.found},
                                 {"query": query, "found": mask.found, "message": mask.message, "mask": mask_image,
                                  "cutout": cutout(source_full, full_mask), "prompt": prompt}))
    # 4. A combined overlay with one colour per query.
    if results:
        results[0].payload["overlay"] = overlay(source_full, masks)
    return results
