"""txt2img: prompt → images, with an optional refiner (the last part of the steps on another checkpoint) and an
optional hires fix (upscale with the chosen upscaler, or resize the latents, then a second denoising pass with
its own sampler, schedule, prompts and checkpoint if asked)."""
from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from webui.engine import families
from webui.engine.context import Generated, ModeContext, render_size, resized, run_batches
from webui.engine.noise import noise_plan
from webui.engine.refiner import (base_arguments, check_latent_space, check_refiner, decode_latents, find_checkpoint,
                                  load_keeping, pass_steps, refine, title)
from webui.engine.samplers import steps_for_strength
from webui.engine.upscalers import UpscalerLoadError, UpscalerNotFoundError, is_latent, upscale_latents
from webui.model_manager.catalogue import CheckpointEntry
from webui.model_manager.identify import Arch
from webui.requests import (SAME_CHECKPOINT, SAME_SAMPLER, SAME_SCHEDULER, RequestError, Txt2ImgRequest,
                             schedule_label, split_legacy)

def run(ctx: ModeContext, request: Txt2ImgRequest) -> list[Generated]:
    family_images = families.dispatch(ctx, request, "txt2img")  # DiT, unCLIP, IF run their own
    if family_images is not None:
        return family_images
    # 1. Check the upscaler, load the pipeline for this checkpoint (a fresh scheduler for this job), check the
    #    refiner and the hires pass's checkpoint and sampler against its family.
    hires = request.hires
    if hires:
        check_upscaler(ctx, request.hr_upscaler)
    loaded = ctx.load(request, "txt2img")
    extra: dict[str, Any] = ctx.sampling_infotext(request, loaded.arch)
    refiner = check_refiner(ctx, request, loaded.arch)
    if refiner is not None:
        extra["Refiner"] = title(refiner)
    latent_hires = hires and is_latent(request.hr_upscaler)
    if latent_hires and loaded.arch not in (Arch.SD1, Arch.SD2, Arch.SDXL):
        raise RequestError("hr_upscaler", f"latent upscalers work on SD 1.x, SD 2.x and SDXL models, not "
                                          f"{loaded.arch.value}; pick Lanczos or an upscaler model")
    second, second_entry = hires_request(ctx, request, loaded.arch) if hires else (request, None)
    if hires:
        extra.update(hires_infotext(ctx, request, second, second_entry, loaded.arch))
    own = render_size(loaded, request)  # a size the model cannot draw: its own size, then resized
    width, height = own or (request.width, request.height)
    if own:
        extra["Rendered size"] = f"{width}x{height}"
    drawn_request = request.replace(width=width, height=height) if own else request
    if own and hires:  # the second pass enlarges what the model drew; the result is resized to the asked size
        second = second.replace(width=width, height=height)
    final_size = hires_size(request) if hires else (request.width, request.height)

    # 2. Encode the prompts (each prompt of a schedule) once for every batch.
    prompts = ctx.prompts(loaded, request, request.steps)
    prompt_args = prompts.kwargs
    if loaded.arch == Arch.EASEL and not ctx.plan_layout:
        prompt_args["plan_layout"] = False  # on: the model's own default (model_index.json)
    other_models = refiner is not None or second_entry is not None
    # one step count per image over its passes (base, refiner, hires fix), as AUTOMATIC1111 counts them
    base_steps, refiner_steps = (pass_steps(loaded.arch, refiner, request, request.steps, request.steps)
                                 if refiner is not None else (request.steps, 0))
    hires_steps = second_pass_steps(second)[2] if hires else 0
    overall = base_steps + refiner_steps + hires_steps if refiner is not None or hires else 0  # 0: one pass

    planned: list[str | None] = []  # per image: the prompt with the built-in model's planned layout, if it has one
    not_understood: list[list[str]] = []  # per image: the built-in model's words it did not understand

    # the starting noise, where the request asks for a variation seed, a seed resize or another RNG source
    noise = noise_plan(drawn_request, loaded.arch, loaded.pipe, ctx.randn_source)

    def call(gens, batch_size, latents=None):
        noise_args = {} if latents is None else {"latents": latents}
        base = ctx.load(request, "txt2img") if other_models else loaded  # back on the device after another model
        latents_out = refiner is not None or latent_hires
        out = ctx.call_pipeline(base, request, "txt2img", **prompt_args, width=width, height=height,
                                num_inference_steps=request.steps,
                                num_images_per_prompt=batch_size, generator=gens, **noise_args,
                                callback_on_step_end=prompts.callback(ctx.callback(base.arch, base_steps, 0, overall)),
                                output_type="latent" if latents_out else "pil",
                                **(base_arguments(base, request) if refiner is not None else {}))
        images = out.images
        if base.arch == Arch.EASEL:  # the built-in model's output says what it drew
            drawn = list(getattr(out, "planned_prompts", None) or [None] * len(images))[:len(images)]
            planned.extend(p if p != prompt_args["prompt"] else None for p in drawn)
            words = list(getattr(out, "unknown_words", None) or [])
            not_understood.extend((words + [[]] * len(images))[:len(images)])
        stopped = ctx.job.interrupt_requested or ctx.job.skip_requested
        if refiner is not None and not stopped:
            images = refine(ctx, request, refiner, base, images, request.steps, gens,
                            "latent" if latent_hires else "pil", extra, base_steps, overall)
        elif refiner is not None:
            images = decode_latents(base, images)
        stopped = ctx.job.interrupt_requested or ctx.job.skip_requested
        if hires and not stopped:
            images = second_pass(ctx, second, images, gens, extra if second_entry is not None else None,
                                 base_steps + refiner_steps, overall)
        elif isinstance(images, torch.Tensor):  # stopped before the second pass: the latents as they are
            images = decode_latents(base, images)
        return resized(images, *final_size) if own else images

    # 3. Run the batches.
    generated = run_batches(ctx, drawn_request, loaded, call, extra, noise)  # the noise at the drawn size
    for item, text in zip(generated, planned):
        if text:
            item.extra["Planned prompt"] = text  # what the model drew: the prompt with positions written in
    for item, words in zip(generated, not_understood):
        if words:  # shown under the result and in the API's info: these words changed nothing
            item.extra["Words not understood"] = " ".join(words)
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


def hires_request(ctx: ModeContext, request: Txt2ImgRequest,
                  base: Arch) -> tuple[Txt2ImgRequest, CheckpointEntry | None]:
    """The request the second pass runs: the hires prompts, sampler (with its schedule) and checkpoint where they
    are set, the first pass's otherwise. Checked here: the checkpoint exists and, for a latent upscaler, shares
    the base's latent space; the sampler runs on that checkpoint's family."""
    changes: dict[str, Any] = {}
    if request.hr_prompt:
        changes["prompt"] = request.hr_prompt
    if request.hr_negative_prompt:
        changes["negative_prompt"] = request.hr_negative_prompt
    entry = None
    arch = base
    if request.hr_checkpoint_name not in ("", SAME_CHECKPOINT):
        entry = find_checkpoint(ctx, request.hr_checkpoint_name, "hr_checkpoint_name")
        if is_latent(request.hr_upscaler):
            check_latent_space(base, entry, "hr_checkpoint_name", "a latent upscaler")
        changes["checkpoint"], changes["vae"], arch = entry.name, "Automatic", entry.arch
    own_sampler = request.hr_sampler_name not in ("", SAME_SAMPLER)
    sampler = request.hr_sampler_name if own_sampler else request.sampler
    sampler, legacy_schedule = split_legacy(sampler)  # "DPM++ 2M Karras": the sampler and its schedule
    schedule = schedule_label(request.hr_scheduler, "hr_scheduler")
    own_schedule = schedule not in ("", SAME_SCHEDULER)
    if own_schedule:
        changes["scheduler"] = schedule
    elif legacy_schedule and own_sampler:
        changes["scheduler"] = legacy_schedule
    try:
        changes["sampler"] = ctx.samplers.resolve(sampler, arch)
    except RequestError as exc:
        field_name = "hr_sampler_name" if own_sampler else ("hr_checkpoint_name" if entry else exc.field)
        raise RequestError(field_name, exc.message) from None
    try:
        ctx.samplers.check_schedule(changes["sampler"], changes.get("scheduler", request.scheduler), arch)
    except RequestError as exc:
        field_name = "hr_scheduler" if own_schedule else ("hr_sampler_name" if own_sampler else "hr_checkpoint_name")
        raise RequestError(field_name, exc.message) from None
    return request.replace(**changes), entry  # type: ignore[return-value]


def hires_infotext(ctx: ModeContext, request: Txt2ImgRequest, second: Txt2ImgRequest,
                   entry: CheckpointEntry | None, base: Arch) -> dict[str, Any]:
    """The hires keys only the run knows: the sampler the second pass ran and its checkpoint as "name [hash]"."""
    extra: dict[str, Any] = {}
    if request.hr_sampler_name not in ("", SAME_SAMPLER) or second.sampler != ctx.sampler_used(request, base):
        extra["Hires sampler"] = second.sampler
    if entry is not None:
        extra["Hires checkpoint"] = title(entry)  # with its hash once the second pass has loaded it
    return extra


def second_pass_steps(request: Txt2ImgRequest) -> tuple[int, float, int]:
    """The hires pass's schedule length, strength and the steps it runs (at least one)."""
    steps, strength = steps_for_strength(request.hr_second_pass_steps or request.steps,
                                         request.hr_denoising_strength)
    return steps, strength, max(1, int(steps * strength))


def second_pass(ctx: ModeContext, request: Txt2ImgRequest, images: Any, gens,
                own_checkpoint: dict[str, Any] | None = None, done: int = 0,
                overall: int = 0) -> list[Image.Image]:
    """Upscale, then denoise again with img2img (the first pass's weights, or the hires checkpoint's).

    `images` are PIL images, upscaled in pixel space (Lanczos, Nearest or an ESRGAN-family model), or, for a latent
    upscaler, the first pass's latents (B, 4, h, w), resized as latents and handed to img2img undecoded.
    `own_checkpoint`: the infotext entries, when the request names the hires checkpoint (the job's LoRAs stay those
    of the first pass; `Hires checkpoint: name [hash]` is written there). Its steps count on from `done` of the
    image's `overall` steps (`ModeContext.callback`)."""
    width, height = hires_size(request)
    if isinstance(images, torch.Tensor):
        cell = max(1, request.width // images.shape[-1])  # pixels per latent cell: the VAE's scale factor
        upscaled: Any = upscale_latents(images, request.hr_upscaler, (width // cell, height // cell))
        count = images.shape[0]
    else:
        upscaled = [upscale(ctx, img, request.hr_upscaler, (width, height)) for img in images]
        count = len(upscaled)
    loaded = load_keeping(ctx, request, "img2img") if own_checkpoint is not None else ctx.load(request, "img2img")
    if own_checkpoint is not None:
        own_checkpoint["Hires checkpoint"] = title(loaded.entry)
    steps, strength, total = second_pass_steps(request)
    prompts = ctx.prompts(loaded, request, total, first_pass_steps=request.steps)  # the schedule goes on
    out = ctx.call_pipeline(loaded, request, "img2img", **prompts.kwargs,
                            image=upscaled, strength=strength, num_inference_steps=steps,
                            num_images_per_prompt=count, generator=[g.manual_seed(g.initial_seed()) for g in gens],
                            callback_on_step_end=prompts.callback(ctx.callback(loaded.arch, total, done, overall)),
                            output_type="pil")
    return out.images
