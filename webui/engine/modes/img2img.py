"""img2img: an input image, noised to the denoising strength, denoised towards the prompt."""
from __future__ import annotations

from webui.engine.context import Generated, ModeContext, prompt_kwargs, render_size, resized, run_batches
from webui.engine.images import resize_image
from webui.engine.samplers import steps_for_strength
from webui.requests import Img2ImgRequest, RequestError


def run(ctx: ModeContext, request: Img2ImgRequest) -> list[Generated]:
    # 1. Check the input image.
    if request.init_image is None:
        raise RequestError("init_images", "an input image is required")
    # 2. Load and encode; a size the model cannot draw is rendered at its own size, then resized.
    loaded = ctx.load(request, "img2img")
    own = render_size(loaded, request)
    width, height = own or (request.width, request.height)
    init = resize_image(request.init_image, width, height, request.resize_mode)
    prompt_args = prompt_kwargs(loaded, request, ctx.embeddings)
    strength = request.denoising_strength
    schedule, run_strength = steps_for_strength(request.steps, strength)  # at least one step
    total = max(1, int(schedule * run_strength))

    # 3. Run.
    def call(gens, batch_size):
        out = ctx.call_pipeline(loaded, request, "img2img", **prompt_args, image=[init] * batch_size,
                                strength=run_strength, num_inference_steps=schedule, generator=gens,
                                callback_on_step_end=ctx.callback(loaded.arch, total), output_type="pil")
        return resized(out.images, request.width, request.height)

    extra = {"Sampler": ctx.sampler_used(request, loaded.arch)}
    if own:
        extra["Rendered size"] = f"{width}x{height}"
    return run_batches(ctx, request, loaded, call, extra)
