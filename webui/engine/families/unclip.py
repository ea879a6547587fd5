"""unCLIP: images drawn from a CLIP image embedding.

* Stable unCLIP (`StableUnCLIPImg2ImgPipeline`) makes **image variations** in img2img: the input image's CLIP
  embedding, noised to the request's `noise_level` (0 = the image's own embedding), conditions a Stable Diffusion
  UNet; the prompt steers it further. It starts from noise, not from the image's pixels, so the denoising strength
  does not apply (the infotext says "Image variations" instead).
* unCLIP / Karlo (`UnCLIPPipeline`) draws text → image through its prior (text embedding → image embedding), a
  decoder at 64 px and two super-resolution passes; it has no negative prompt and no step callback, and draws one
  size (its super-resolution size), resized to the asked size.

Each image runs with its own seed's generator (the embedding's noise is drawn per call).
"""
from __future__ import annotations

from typing import Any

from webui.engine.context import Generated, ModeContext, resized, run_batches
from webui.engine.families import legacy_callback, skippable
from webui.engine.families.text import plain_prompts
from webui.engine.images import resize_image
from webui.requests import GenerationRequest, RequestError


def run(ctx: ModeContext, request: GenerationRequest, mode: str) -> list[Generated]:
    # 1. Check the inputs against what this unCLIP model can do, and load.
    entry = ctx.manager.find_checkpoint(request.checkpoint or ctx.default_checkpoint())
    stable = entry.variant == "stable"
    if stable and mode != "img2img":
        raise RequestError("checkpoint", "Stable unCLIP makes variations of an image: use img2img (its input "
                                         "image is what it varies)")
    if not stable and mode != "txt2img":
        raise RequestError("checkpoint", "this unCLIP model has no image encoder; it draws from text in txt2img "
                                         "(image variations need a Stable unCLIP model)")
    if stable and request.init_image is None:
        raise RequestError("init_images", "an input image is required")
    if not stable and request.negative_prompt.strip():
        raise RequestError("negative_prompt", "unCLIP (Karlo) has no negative prompt; leave it empty")
    loaded = ctx.load(request, mode)
    prompt, negative = plain_prompts(request)
    extra: dict[str, Any] = ctx.sampling_infotext(request, loaded.arch)

    # 2. Prepare the arguments of one image.
    if stable:
        image = resize_image(request.init_image, request.width, request.height, request.resize_mode)
        args: dict[str, Any] = {"image": image, "prompt": prompt, "negative_prompt": negative,
                                "guidance_scale": request.cfg_scale, "num_inference_steps": request.steps,
                                "width": request.width, "height": request.height,
                                "noise_level": request.noise_level,
                                "callback": legacy_callback(loaded.pipe, ctx.callback(loaded.arch, request.steps),
                                                            ctx.job),
                                "callback_steps": 1}
        extra["Image variations"] = f"noise level {request.noise_level}"
        extra["Denoising strength"] = None  # it does not apply (refused unless left at its default): not written
    else:
        args = {"prompt": prompt, "prior_num_inference_steps": request.steps,
                "decoder_num_inference_steps": request.steps, "super_res_num_inference_steps": request.steps,
                "prior_guidance_scale": request.cfg_scale, "decoder_guidance_scale": request.cfg_scale}

    # 3. Run, one call per image.
    def call(gens: list[Any], batch_size: int, done: list[Any]) -> list[Any]:
        images = done
        for gen in gens:
            ctx.job.update(step=0, total_steps=request.steps)
            images += ctx.call_pipeline(loaded, request, mode, **args, generator=gen, num_images_per_prompt=1,
                                        output_type="pil").images
        if images and images[0].size != (request.width, request.height):
            extra["Rendered size"] = f"{images[0].width}x{images[0].height}"
        return resized(images, request.width, request.height)

    return run_batches(ctx, request, loaded, skippable(call), extra)
