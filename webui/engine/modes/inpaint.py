"""Inpainting and outpainting: repaint the masked area, keep every other pixel exactly.

Steps: extend the canvas for outpainting → prepare the mask (invert, blur) → pre-fill the masked content →
either inpaint the whole picture or crop the masked area, inpaint it at full resolution and scale it back →
blend the result over the original through the blurred mask, so pixels outside it are unchanged.
"""
from __future__ import annotations

from PIL import Image, ImageFilter, ImageOps

from webui.engine import families
from webui.engine.context import Generated, ModeContext, run_batches
from webui.engine.images import binarize, extend_canvas, fill_masked, mask_to_l, masked_bbox, paste_back, resize_image
from webui.engine.noise import refuse_variation
from webui.engine.samplers import steps_for_strength
from webui.model_manager.defaults import entry_defaults, size_plan
from webui.model_manager.manager import LoadedPipeline
from webui.requests import InpaintRequest, RequestError


def prepare(request: InpaintRequest) -> tuple[Image.Image, Image.Image]:
    """The source image at its working size and the (unblurred) binary repaint mask, outpainting applied."""
    if request.init_image is None:
        raise RequestError("init_images", "an input image is required")
    image = resize_image(request.init_image, request.width, request.height, request.resize_mode)
    mask = None
    if request.mask is not None:
        mask = binarize(mask_to_l(request.mask).resize(image.size, Image.NEAREST))
        if request.inpainting_mask_invert:
            mask = ImageOps.invert(mask)
    if request.outpainting:
        image, mask = extend_canvas(image, mask, request.outpaint_left, request.outpaint_right,
                                    request.outpaint_top, request.outpaint_bottom)
    assert mask is not None
    return image, mask


def run(ctx: ModeContext, request: InpaintRequest) -> list[Generated]:
    family_images = families.dispatch(ctx, request, "inpaint")  # DiT, unCLIP, IF run their own
    if family_images is not None:
        return family_images
    # 1. Prepare image and mask.
    refuse_variation(request, "inpaint")
    original, mask = prepare(request)
    if mask.getbbox() is None:
        raise RequestError("mask", "the mask is empty; paint the area to repaint")
    blend = mask.filter(ImageFilter.GaussianBlur(request.mask_blur)) if request.mask_blur else mask
    blend = Image.composite(blend, Image.new("L", mask.size, 0), blend)  # keep outside exactly 0
    source = fill_masked(original, mask, request.inpainting_fill)
    strength = 1.0 if request.inpainting_fill == "latent noise" else request.denoising_strength

    # 2. Choose the region to generate: the whole canvas, or the masked area at full resolution.
    if request.inpaint_full_res:
        box = masked_bbox(mask, request.inpaint_full_res_padding, request.width, request.height)
        work_size = (request.width, request.height)
        work_image = source.crop(box).resize(work_size, Image.LANCZOS)
        work_mask = mask.crop(box).resize(work_size, Image.NEAREST)
    else:
        box = None
        work_size = source.size
        work_image, work_mask = source, mask
    work_w, work_h = (work_size[0] // 8) * 8, (work_size[1] // 8) * 8
    loaded = ctx.load(request, "inpaint")
    own = work_size_plan(loaded, work_w, work_h)  # a size the model cannot draw: its own size, pasted back resized
    work_w, work_h = own or (work_w, work_h)
    work_image, work_mask = work_image.resize((work_w, work_h)), work_mask.resize((work_w, work_h), Image.NEAREST)

    # 3. Run the pipeline.
    schedule, run_strength = steps_for_strength(request.steps, strength, ctx.fix_steps)  # at least one step
    total = max(1, int(schedule * run_strength))
    prompts = ctx.prompts(loaded, request, total)  # prompt edits count the steps that run
    prompt_args = prompts.kwargs

    def call(gens, batch_size):
        images = ctx.call_pipeline(loaded, request, "inpaint", **prompt_args, image=[work_image],
                                   mask_image=[work_mask], num_images_per_prompt=batch_size,
                                   strength=run_strength, width=work_w,
                                   height=work_h, num_inference_steps=schedule, generator=gens,
                                   callback_on_step_end=prompts.callback(ctx.callback(loaded.arch, total)),
                                   output_type="pil").images
        return [postprocess(img, original, blend, box) for img in images]

    # 4. Paste back through the blurred mask. The infotext records the strength the run used.
    extra = {**ctx.sampling_infotext(request, loaded.arch), "Denoising strength": strength}
    if own:
        extra["Rendered size"] = f"{work_w}x{work_h}"
    return run_batches(ctx, request, loaded, call, extra)


def work_size_plan(loaded: LoadedPipeline, width: int, height: int) -> tuple[int, int] | None:
    """The size the model renders a work area at when it cannot draw the asked one (None: as asked)."""
    return size_plan(entry_defaults(loaded.entry), width, height)


def postprocess(generated: Image.Image, original: Image.Image, blend: Image.Image,
                box: tuple[int, int, int, int] | None) -> Image.Image:
    if box is None:
        full = generated.resize(original.size, Image.LANCZOS) if generated.size != original.size else generated
    else:
        full = original.copy()
        x0, y0, x1, y1 = box
        full.paste(generated.resize((x1 - x0, y1 - y0), Image.LANCZOS), (x0, y0))
    return paste_back(original, full, blend)
