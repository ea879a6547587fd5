"""Editing by instruction: an image and "make the red circle blue" in, the edited image out.

Steps: check the inputs and pick the model (the request's, else the current checkpoint when it can edit, else
the first edit-capable one) → run the family's edit pipeline on the source at the model's working size (the
built-in model's native 64×64, other families the source rounded to 16 px), with the further reference images
for the family that takes several (Qwen-Image-Edit Plus) → scale the edit back to the source size → with a mask
(white = may change), paste the source back outside it, so those pixels are the input's exactly. The call
arguments per family are the Segment mode's (`webui.engine.modes.segment.edit_arguments`): segmentation there is
one particular edit.
"""
from __future__ import annotations

from typing import Any

import json

import numpy as np
from PIL import Image

from webui.engine.context import Generated, ModeContext, generators, resolve_seed
from webui.engine.modes.segment import (EDIT_FAMILIES, check_can_edit, default_editor, edit_arguments,
                                        working_size)
from webui.model_manager.manager import ModelManager
from webui.model_manager.spec import LoadSpec
from webui.requests import EditRequest, RequestError

MULTI_IMAGE_PIPELINES = ("QwenImageEditPlusPipeline",)  # families that take reference images besides the source
FAMILY_NAMES = {"EaselPipeline": "built-in", "QwenImageEditPipeline": "Qwen-Image-Edit",
                "QwenImageEditPlusPipeline": "Qwen-Image-Edit Plus", "FluxKontextPipeline": "FLUX.1 Kontext",
                "StableDiffusionInstructPix2PixPipeline": "InstructPix2Pix"}
MULTI_IMAGE_FAMILIES = tuple(FAMILY_NAMES[c] for c in MULTI_IMAGE_PIPELINES)


def default_model(manager: ModelManager) -> str:
    """The current checkpoint when it can edit, else the first edit-capable one."""
    editor = default_editor(manager)
    if editor is not None:
        return editor
    raise RequestError("model", f"no installed checkpoint can edit images; install {EDIT_FAMILIES}")


def edit_family(entry: Any) -> str:
    """The family name of an edit-capable checkpoint entry, from its folder's `model_index.json`."""
    if getattr(entry, "builtin", False) or str(getattr(entry.arch, "value", "")) == "easel":
        return FAMILY_NAMES["EaselPipeline"]
    index = entry.path / "model_index.json"
    try:
        pipe_class = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "")
    except (OSError, ValueError, AttributeError):
        return "unknown"
    return FAMILY_NAMES.get(pipe_class, pipe_class)


def check_edit_model(manager: ModelManager, name: str) -> str:
    """The checkpoint's own name when it can edit; ModelNotFoundError when it is not installed, RequestError on
    `model` listing the edit-capable ones when it cannot edit."""
    entry = manager.find_checkpoint(name)
    editors = [e.name for e in manager.edit_checkpoints()]
    if entry.name not in editors:
        raise RequestError("model", f"{entry.name} cannot edit images by instruction; edit-capable checkpoints: "
                                    f"{', '.join(editors) or 'none installed (' + EDIT_FAMILIES + ')'}")
    return entry.name


def mask_array(mask: Image.Image | None, size: tuple[int, int]) -> np.ndarray | None:
    """The mask at `size` as [H, W] bool (True = may change; grey ≥ 128 counts as white), or None."""
    if mask is None:
        return None
    grey = mask.convert("L")
    if grey.size != size:
        grey = grey.resize(size, Image.NEAREST)
    return np.asarray(grey) >= 128


def composite(source: Image.Image, edited: Image.Image, mask: np.ndarray | None) -> Image.Image:
    """The edit inside the mask, the source's own pixels outside it (both RGB at the same size)."""
    if mask is None:
        return edited
    out = np.where(mask[..., None], np.asarray(edited), np.asarray(source))  # [H, W, 3]
    return Image.fromarray(out.astype(np.uint8))


def changed_share(source: Image.Image, result: Image.Image, tolerance: int = 24) -> float:
    """The share of pixels whose largest channel difference exceeds `tolerance` (0..255)."""
    diff = np.abs(np.asarray(source, np.int16) - np.asarray(result, np.int16)).max(axis=-1)  # [H, W]
    return float((diff > tolerance).mean())


def edit_call(pipe: Any, arch: Any, source: Image.Image, references: list[Image.Image], request: EditRequest,
              seed: int, callback: Any = None) -> Image.Image:
    """Run the edit pipeline once; the edited image (RGB) at the source's size."""
    pipe_class = type(pipe).__name__
    work_size = working_size(arch, source)
    work = source if source.size == work_size else source.resize(work_size, Image.LANCZOS)
    kwargs = edit_arguments(pipe, work, request.instruction.strip(), request.steps, request.guidance,
                            request.image_guidance)
    if references:
        kwargs["image"] = [work, *references]
    if callback is not None:
        kwargs["callback_on_step_end"] = callback
    edited = pipe(**kwargs, generator=generators([seed]), output_type="pil").images[0].convert("RGB")
    if edited.size != source.size:
        edited = edited.resize(source.size, Image.LANCZOS)
    return edited


def run(ctx: ModeContext, request: EditRequest) -> list[Generated]:
    # 1. Check inputs and load the model's edit pipeline (base weights, no LoRA, a fresh Euler scheduler).
    if request.image is None:
        raise RequestError("image", "an image to edit is required")
    source = request.image.convert("RGB")
    references = [r.convert("RGB") for r in request.references]
    mask = mask_array(request.mask, source.size)
    name = request.checkpoint or default_model(ctx.manager)
    name = check_edit_model(ctx.manager, name)
    seed = resolve_seed(request.seed)
    loaded = ctx.manager.load(LoadSpec(name, "edit", sampler="Euler"), make_scheduler=ctx.samplers.make_scheduler)
    ctx.loaded = loaded
    pipe = loaded.pipe
    check_can_edit(pipe)
    pipe_class = type(pipe).__name__
    if references and pipe_class not in MULTI_IMAGE_PIPELINES:
        raise RequestError("images", f"{loaded.entry.name} ({FAMILY_NAMES.get(pipe_class, pipe_class)}) edits one "
                                     "image; send reference images only to Qwen-Image-Edit Plus")

    # 2. The edit, at the model's working size, scaled back to the source's.
    edited = edit_call(pipe, loaded.arch, source, references, request, seed,
                       ctx.callback(loaded.arch, request.steps))

    # 3. Outside the mask, the source's pixels exactly.
    result = composite(source, edited, mask)
    extra: dict[str, Any] = {"Steps": request.steps, "CFG scale": request.guidance, "Edit model": FAMILY_NAMES.get(
        pipe_class, pipe_class), "Model": loaded.entry.name}
    if pipe_class == "StableDiffusionInstructPix2PixPipeline":
        extra["Image CFG scale"] = request.image_guidance
    if mask is not None:
        extra["Edit mask"] = f"{float(mask.mean()):.1%}"
    if references:
        extra["Reference images"] = len(references)
    payload = {"source": source, "changed_share": round(changed_share(source, result), 4),
               "model": loaded.entry.name, "family": FAMILY_NAMES.get(pipe_class, pipe_class),
               "instruction": request.instruction.strip()}
    return [Generated(result, seed, extra, payload, model=loaded.entry.name, model_hash=loaded.entry.short_hash)]
