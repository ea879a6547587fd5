"""img2img: an input image, noised to the denoising strength, denoised towards the prompt."""
from __future__ import annotations

from webui.engine.context import Generated, ModeContext, run_batches
from webui.engine.images import resize_image
from webui.engine.noise import refuse_variation
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

    # 3. Run.
    def call(gens, batch_size):
        return ctx.call_pipeline(loaded, request, "img2img", **prompt_args, image=[init] * batch_size,
                                 strength=run_strength, num_inference_steps=schedule, generator=gens,
                                 callback_on_step_end=prompts.callback(ctx.callback(loaded.arch, total)),
                                 output_type="pil").images

    extra = ctx.sampling_infotext(request, loaded.arch)
    return run_batches(ctx, request, loaded, call, extra)
