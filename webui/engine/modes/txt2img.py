"""txt2img: prompt → images, with optional hires fix (upscale, then a second denoising pass)."""
from __future__ import annotations

from PIL import Image

from webui.engine.context import Generated, ModeContext, prompt_kwargs, run_batches, sampler_used
from webui.requests import Txt2ImgRequest


def run(ctx: ModeContext, request: Txt2ImgRequest) -> list[Generated]:
    # 1. Load the pipeline for this checkpoint (a fresh scheduler for this job).
    loaded = ctx.load(request, "txt2img")
    pipe = loaded.pipe
    extra = {"Sampler": sampler_used(request, loaded.arch)}

    # 2. Encode the prompt once for every batch.
    prompt_args = prompt_kwargs(loaded, request)
    hires = request.enable_hr and request.hr_scale > 1.0

    def call(gens, batch_size):
        images = pipe(**prompt_args, width=request.width, height=request.height,
                      num_inference_steps=request.steps, num_images_per_prompt=batch_size, generator=gens,
                      callback_on_step_end=ctx.callback(loaded.arch, request.steps), output_type="pil").images
        if hires and not ctx.job.interrupt_requested and not ctx.job.skip_requested:
            images = second_pass(ctx, request, images, gens)
        return images

    # 3. Run the batches.
    if hires:
        extra.update({"Hires upscale": request.hr_scale, "Hires upscaler": request.hr_upscaler,
                      "Hires steps": request.hr_second_pass_steps or None,
                      "Denoising strength": request.hr_denoising_strength})
    return run_batches(ctx, request, loaded, call, extra)


def hires_size(request: Txt2ImgRequest) -> tuple[int, int]:
    return (int(request.width * request.hr_scale) // 8 * 8, int(request.height * request.hr_scale) // 8 * 8)


def second_pass(ctx: ModeContext, request: Txt2ImgRequest, images: list[Image.Image], gens) -> list[Image.Image]:
    """Upscale in pixel space, then denoise again with img2img sharing the same weights."""
    width, height = hires_size(request)
    method = Image.NEAREST if request.hr_upscaler.lower().startswith("nearest") else Image.LANCZOS
    upscaled = [img.resize((width, height), method) for img in images]
    loaded = ctx.load(request, "img2img")
    steps = request.hr_second_pass_steps or request.steps
    strength = request.hr_denoising_strength
    total = max(1, int(steps * strength))
    out = loaded.pipe(**prompt_kwargs(loaded, request), image=upscaled, strength=strength,
                      num_inference_steps=steps, generator=[g.manual_seed(g.initial_seed()) for g in gens],
                      callback_on_step_end=ctx.callback(loaded.arch, total), output_type="pil")
    return out.images
