"""Text → image for PixArt-α/Σ (T5 text encoder), Sana (Gemma 2 text encoder) and aMUSEd (masked-token
generation, CLIP text encoder).

PixArt and Sana were trained on a table of sizes ("resolution bins": one size per aspect ratio around the model's
own area). With binning, the image is drawn at the bin closest to the asked aspect ratio and resized to the asked
size; the infotext records the bin. Models whose transformer size has no table (custom or tiny ones) draw the
asked size as it is. aMUSEd draws a grid of VQ tokens, unmasking the most confident ones over its 12 steps; each
image runs with its own seed's generator (its scheduler takes one generator per call).
"""
from __future__ import annotations

from typing import Any

from webui.engine.context import Generated, ModeContext, run_batches
from webui.engine.families import legacy_callback, skippable
from webui.engine.prompts import extract_loras, strip_emphasis
from webui.model_manager.identify import Arch
from webui.requests import GenerationRequest, RequestError


def bin_table(pipe: Any) -> dict[str, list[float]] | None:
    """The resolution bins the pipeline uses for its transformer's sample size (None: it has none)."""
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (ASPECT_RATIO_256_BIN, ASPECT_RATIO_512_BIN,
                                                                         ASPECT_RATIO_1024_BIN)
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN
    from diffusers.pipelines.sana.pipeline_sana import ASPECT_RATIO_4096_BIN

    size = int(pipe.transformer.config.sample_size)
    if type(pipe).__name__.startswith("Sana"):
        tables = {128: ASPECT_RATIO_4096_BIN, 64: ASPECT_RATIO_2048_BIN, 32: ASPECT_RATIO_1024_BIN,
                  16: ASPECT_RATIO_512_BIN}
    else:
        tables = {128: ASPECT_RATIO_1024_BIN, 64: ASPECT_RATIO_512_BIN, 32: ASPECT_RATIO_256_BIN}
        if type(pipe).__name__ == "PixArtSigmaPipeline":
            tables[256] = ASPECT_RATIO_2048_BIN
    return tables.get(size)


def resolution_bin(pipe: Any, width: int, height: int) -> tuple[int, int] | None:
    """(width, height) of the bin the pipeline draws an asked size at; None without binning."""
    table = bin_table(pipe)
    if table is None:
        return None
    bin_height, bin_width = pipe.image_processor.classify_height_width_bin(height, width, ratios=table)
    return int(bin_width), int(bin_height)


def plain_prompts(request: GenerationRequest) -> tuple[str, str]:
    prompt, _ = extract_loras(request.prompt)
    negative, _ = extract_loras(request.negative_prompt)
    return strip_emphasis(prompt), strip_emphasis(negative)


def run(ctx: ModeContext, request: GenerationRequest, mode: str) -> list[Generated]:
    # 1. Check and load.
    if mode != "txt2img":
        raise RequestError("checkpoint", "PixArt and Sana models draw from text only: use txt2img, not " + mode)
    if request.width % 8 or request.height % 8:
        raise RequestError("width", "width and height must be multiples of 8 for these models")
    loaded = ctx.load(request, "txt2img")
    pipe = loaded.pipe
    prompt, negative = plain_prompts(request)
    extra: dict[str, Any] = ctx.sampling_infotext(request, loaded.arch)
    common: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative, "guidance_scale": request.cfg_scale,
                              "num_inference_steps": request.steps, "width": request.width,
                              "height": request.height, "output_type": "pil"}

    # 2. Prepare the family's arguments: resolution bins (PixArt, Sana), the step callback in the form it takes.
    if loaded.arch in (Arch.PIXART, Arch.SANA):
        found = resolution_bin(pipe, request.width, request.height)
        common["use_resolution_binning"] = found is not None
        if found is not None and found != (request.width, request.height):
            extra["Resolution bin"] = f"{found[0]}x{found[1]}"
    on_step_end = ctx.callback(loaded.arch, request.steps)
    if loaded.arch == Arch.SANA:
        common["callback_on_step_end"] = on_step_end
    else:
        common.update(callback=legacy_callback(pipe, on_step_end, ctx.job), callback_steps=1)

    # 3. Run the batches (aMUSEd: one call per image, each with its own seed's generator).
    def call(gens: list[Any], batch_size: int, done: list[Any]) -> list[Any]:
        if loaded.arch == Arch.AMUSED:
            for gen in gens:
                done += ctx.call_pipeline(loaded, request, "txt2img", **common, generator=gen,
                                          num_images_per_prompt=1).images
            return done
        return ctx.call_pipeline(loaded, request, "txt2img", **common, generator=gens,
                                 num_images_per_prompt=batch_size).images

    return run_batches(ctx, request, loaded, skippable(call), extra)
