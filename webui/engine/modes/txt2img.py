"""txt2img: prompt → images, with optional hires fix (upscale with the chosen upscaler, then a second denoising
pass)."""
from __future__ import annotations

from PIL import Image

from webui.engine.context import Generated, ModeContext, prompt_kwargs, render_size, resized, run_batches
from webui.engine.upscalers import UpscalerLoadError, UpscalerNotFoundError
from webui.engine.samplers import steps_for_strength
from webui.model_manager.identify import Arch
from webui.requests import RequestError, Txt2ImgRequest


def run(ctx: ModeContext, request: Txt2ImgRequest) -> list[Generated]:
    # 1. Check the upscaler, load the pipeline for this checkpoint (a fresh scheduler for this job).
    hires = request.hires
    if hires:
        check_upscaler(ctx, request.hr_upscaler)
    loaded = ctx.load(request, "txt2img")
    extra = {"Sampler": ctx.sampler_used(request, loaded.arch)}
    own = render_size(loaded, request)  # a size the model cannot draw: its own size, then resized
    width, height = own or (request.width, request.height)
    if own:
        extra["Rendered size"] = f"{width}x{height}"

    # 2. Encode the prompt once for every batch.
    prompt_args = prompt_kwargs(loaded, request, ctx.embeddings)
    if loaded.arch == Arch.EASEL and not ctx.plan_layout:
        prompt_args["plan_layout"] = False  # on: the model's own default (model_index.json)

    planned: list[str | None] = []  # per image: the prompt with the built-in model's planned layout, if it has one

    def call(gens, batch_size):
        out = ctx.call_pipeline(loaded, request, "txt2img", **prompt_args, width=width, height=height,
                                num_inference_steps=request.steps,
                                num_images_per_prompt=batch_size, generator=gens,
                                callback_on_step_end=ctx.callback(loaded.arch, request.steps), output_type="pil")
        images = resized(out.images, request.width, request.height)
        if loaded.arch == Arch.EASEL:  # the built-in model's output says what it drew
            drawn = list(getattr(out, "planned_prompts", None) or [None] * len(images))[:len(images)]
            planned.extend(p if p != prompt_args["prompt"] else None for p in drawn)
        if hires and not ctx.job.interrupt_requested and not ctx.job.skip_requested:
            images = second_pass(ctx, request, images, gens)
        return images

    # 3. Run the batches.
    generated = run_batches(ctx, request, loaded, call, extra)
    for item, text in zip(generated, planned):
        if text:
            item.extra["Planned prompt"] = text  # what the model drew: the prompt with positions written in
    return generated


def hires_size(request: Txt2ImgRequest) -> tuple[int, int]:
    return (int(request.width * request.hr_scale) // 8 * 8, int(request.height * request.hr_scale) // 8 * 8)


def check_upscaler(ctx: ModeContext, name: str) -> None:
    if ctx.upscalers is None:
        return
    try:
        ctx.upscalers.check_hires(name)
    except UpscalerNotFoundError as exc:
        raise RequestError("hr_upscaler", str(exc)) from None


def upscale(ctx: ModeContext, image: Image.Image, name: str, size: tuple[int, int]) -> Image.Image:
    if ctx.upscalers is None:
        return image.resize(size, Image.LANCZOS)
    try:
        return ctx.upscalers.upscale(image, name, size)
    except UpscalerLoadError as exc:  # a refused or broken model file
        raise RequestError("hr_upscaler", str(exc)) from None


def second_pass(ctx: ModeContext, request: Txt2ImgRequest, images: list[Image.Image], gens) -> list[Image.Image]:
    """Upscale in pixel space (Lanczos, Nearest or an ESRGAN-family model), then denoise again with img2img
    sharing the same weights."""
    width, height = hires_size(request)
    upscaled = [upscale(ctx, img, request.hr_upscaler, (width, height)) for img in images]
    loaded = ctx.load(request, "img2img")
    steps = request.hr_second_pass_steps or request.steps
    steps, strength = steps_for_strength(steps, request.hr_denoising_strength)  # at least one step
    total = max(1, int(steps * strength))
    out = ctx.call_pipeline(loaded, request, "img2img", **prompt_kwargs(loaded, request, ctx.embeddings),
                            image=upscaled, strength=strength, num_inference_steps=steps,
                            generator=[g.manual_seed(g.initial_seed()) for g in gens],
                            callback_on_step_end=ctx.callback(loaded.arch, total), output_type="pil")
    return out.images
