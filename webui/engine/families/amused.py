"""aMUSEd: masked-token generation (a VQ-GAN's token grid, unmasked over a few steps by a transformer that reads a
CLIP text encoding), in txt2img, img2img and inpaint.

img2img re-masks a share of the input image's tokens (the denoising strength) and fills them again; inpaint masks
the tokens under the painted mask, and the result is pasted back through the blurred mask so nothing outside it
changes. Each image runs with its own seed's generator (aMUSEd's scheduler takes one generator per call).
"""
from __future__ import annotations

from typing import Any

from PIL import Image, ImageFilter

from webui.engine.context import Generated, ModeContext, run_batches
from webui.engine.families import legacy_callback, skippable
from webui.engine.families.text import plain_prompts, run as run_text
from webui.engine.images import fill_masked, resize_image
from webui.engine.samplers import steps_for_strength
from webui.requests import GenerationRequest, RequestError


def run(ctx: ModeContext, request: GenerationRequest, mode: str) -> list[Generated]:
    if mode == "txt2img":
        return run_text(ctx, request, mode)
    # 1. Check the inputs and prepare the image (and mask) at the asked size.
    if request.init_image is None:
        raise RequestError("init_images", "an input image is required")
    if request.width % 16 or request.height % 16:
        raise RequestError("width", "aMUSEd draws sizes that are multiples of 16 (its VQ-GAN's token grid)")
    blend = original = None
    if mode == "inpaint":
        from webui.engine.modes.inpaint import postprocess, prepare

        if request.inpaint_full_res:
            raise RequestError("inpaint_full_res", "aMUSEd inpaints the whole picture; turn 'Only masked' off")
        original, mask = prepare(request)
        if mask.getbbox() is None:
            raise RequestError("mask", "the mask is empty; paint the area to repaint")
        blend = mask.filter(ImageFilter.GaussianBlur(request.mask_blur)) if request.mask_blur else mask
        blend = Image.composite(blend, Image.new("L", mask.size, 0), blend)
        image = fill_masked(original, mask, request.inpainting_fill)
        size = (image.width // 16 * 16, image.height // 16 * 16)
        image, mask = image.resize(size), mask.resize(size, Image.NEAREST)
        extra_args: dict[str, Any] = {"image": image, "mask_image": mask}
        strength = 1.0
    else:
        image = resize_image(request.init_image, request.width, request.height, request.resize_mode)
        extra_args = {"image": image}
        strength = request.denoising_strength

    # 2. Load; the prompts, strength and step callback.
    loaded = ctx.load(request, mode)
    steps, run_strength = steps_for_strength(request.steps, strength)
    total = max(1, int(steps * run_strength))
    prompt, negative = plain_prompts(request)
    common = {"prompt": prompt, "negative_prompt": negative, "guidance_scale": request.cfg_scale,
              "num_inference_steps": steps, "strength": run_strength, "output_type": "pil",
              "callback": legacy_callback(loaded.pipe, ctx.callback(loaded.arch, total), ctx.job), "callback_steps": 1,
              **extra_args}
    extra = {**ctx.sampling_infotext(request, loaded.arch), "Denoising strength": strength}

    # 3. Run, one image per seed; inpaint pastes the result back through the mask.
    def finish(img: Image.Image) -> Image.Image:
        if mode == "inpaint":
            return postprocess(img, original, blend, None)
        return img.resize((request.width, request.height), Image.LANCZOS) if img.size != (request.width,
                                                                                          request.height) else img

    def call(gens: list[Any], batch_size: int, done: list[Any]) -> list[Any]:
        for gen in gens:
            out = ctx.call_pipeline(loaded, request, mode, **common, generator=gen, num_images_per_prompt=1)
            done += [finish(img) for img in out.images]
        return done

    return run_batches(ctx, request, loaded, skippable(call), extra)
