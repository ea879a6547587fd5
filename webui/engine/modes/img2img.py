"""img2img: an input image, noised to the denoising strength, denoised towards the prompt; optionally the last
part of the steps on a refiner checkpoint (`webui.engine.refiner`)."""
from __future__ import annotations

from webui.engine import families
from webui.engine.context import Generated, ModeContext, render_size, resized, run_batches
from webui.engine.images import resize_image
from webui.engine.noise import refuse_variation
from webui.engine.refiner import base_arguments, check_refiner, decode_latents, pass_steps, refine, title
from webui.engine.samplers import steps_for_strength
from webui.requests import Img2ImgRequest, RequestError


def run(ctx: ModeContext, request: Img2ImgRequest) -> list[Generated]:
    family_images = families.dispatch(ctx, request, "img2img")  # DiT, unCLIP, IF run their own
    if family_images is not None:
        return family_images
    # 1. Check the input image.
    if request.init_image is None:
        raise RequestError("init_images", "an input image is required")
    refuse_variation(request, "img2img")

    # 2. Load and encode; a size the model cannot draw is rendered at its own size, then resized.
    loaded = ctx.load(request, "img2img")
    own = render_size(loaded, request)
    width, height = own or (request.width, request.height)
    init = resize_image(request.init_image, width, height, request.resize_mode)
    strength = request.denoising_strength
    schedule, run_strength = steps_for_strength(request.steps, strength, ctx.fix_steps)  # at least one step
    total = max(1, int(schedule * run_strength))
    prompts = ctx.prompts(loaded, request, total)  # prompt edits count the steps that run
    prompt_args = prompts.kwargs

    refiner = check_refiner(ctx, request, loaded.arch)
    # one step count per image over the base's and the refiner's passes
    base_steps, refiner_steps = (pass_steps(loaded.arch, refiner, request, schedule, total)
                                 if refiner is not None else (total, 0))
    overall = base_steps + refiner_steps if refiner is not None else 0  # 0: one pass

    # 3. Run (with a refiner: the base hands its latents over undecoded).
    def call(gens, batch_size):
        base = ctx.load(request, "img2img") if refiner is not None else loaded
        out = ctx.call_pipeline(base, request, "img2img", **prompt_args, image=[init],
                                num_images_per_prompt=batch_size, strength=run_strength,
                                num_inference_steps=schedule, generator=gens,
                                callback_on_step_end=prompts.callback(ctx.callback(base.arch, base_steps, 0, overall)),
                                output_type="latent" if refiner is not None else "pil",
                                **(base_arguments(base, request) if refiner is not None else {}))
        if refiner is None:
            images = out.images
        elif ctx.job.interrupt_requested or ctx.job.skip_requested:
            images = decode_latents(base, out.images)
        else:
            images = refine(ctx, request, refiner, base, out.images, schedule, gens, "pil", extra,
                            base_steps, overall)
        return resized(images, request.width, request.height)

    extra = ctx.sampling_infotext(request, loaded.arch)
    if refiner is not None:
        extra["Refiner"] = title(refiner)
    if own:
        extra["Rendered size"] = f"{width}x{height}"
    return run_batches(ctx, request, loaded, call, extra)
