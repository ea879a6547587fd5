"""img2img: an input image, noised to the denoising strength, denoised towards the prompt; optionally the last
part of the steps on a refiner checkpoint (`webui.engine.refiner`)."""
from __future__ import annotations

from webui.engine.context import Generated, ModeContext, run_batches
from webui.engine.images import resize_image
from webui.engine.noise import refuse_variation
from webui.engine.refiner import base_arguments, check_refiner, decode_latents, refine, title
from webui.engine.samplers import steps_for_strength
from webui.requests import Img2ImgRequest, RequestError


def run(ctx: ModeContext, request: Img2ImgRequest) -> list[Generated]:
    # 1. Check and prepare the input image at the requested size.
    if request.init_image is None:
        raise RequestError("init_images", "an input image is required")
    init = resize_image(request.init_image, request.width, request.height, request.resize_mode)
    refuse_variation(request, "img2img")

    # 2. Load and encode.
    loaded = ctx.load(request, "img2img")
    strength = request.denoising_strength
    schedule, run_strength = steps_for_strength(request.steps, strength)  # at least one step
    total = max(1, int(schedule * run_strength))
    prompts = ctx.prompts(loaded, request, total)  # prompt edits count the steps that run
    prompt_args = prompts.kwargs

    refiner = check_refiner(ctx, request, loaded.arch)

    # 3. Run (with a refiner: the base hands its latents over undecoded).
    def call(gens, batch_size):
        base = ctx.load(request, "img2img") if refiner is not None else loaded
        out = ctx.call_pipeline(base, request, "img2img", **prompt_args, image=[init] * batch_size,
                                strength=run_strength, num_inference_steps=schedule, generator=gens,
                                callback_on_step_end=prompts.callback(ctx.callback(base.arch, total)),
                                output_type="latent" if refiner is not None else "pil",
                                **(base_arguments(base, request) if refiner is not None else {}))
        if refiner is None:
            return out.images
        if ctx.job.interrupt_requested or ctx.job.skip_requested:
            return decode_latents(base, out.images)
        return refine(ctx, request, refiner, base, out.images, schedule, gens, "pil", extra)

    extra = ctx.sampling_infotext(request, loaded.arch)
    if refiner is not None:
        extra["Refiner"] = title(refiner)
    return run_batches(ctx, request, loaded, call, extra)
