"""DeepFloyd IF: a pixel-space cascade run as one generation.

Stage I (`IFPipeline`, T5-XXL text encoder) draws 64 px from the prompt; stage II (`IFSuperResolutionPipeline`,
sharing stage I's text encoder) enlarges it 4x to 256 px; the x4 upscaler (`StableDiffusionUpscalePipeline`)
enlarges that 4x to 1024 px. The asked size is the final size: stage I draws it divided by the enlargement of the
stages found (16 with both, 4 with one, 1 with none), so width and height must be multiples of 8 times that.
`steps` are stage I's, `stage2_steps` and `stage3_steps` the later stages' (0: as many as stage I). Each image
runs with its own seed's generator through the three stages.
"""
from __future__ import annotations

from typing import Any

from webui.engine.context import Generated, ModeContext, run_batches
from webui.engine.families import legacy_callback, skippable
from webui.engine.families.text import plain_prompts
from webui.requests import GenerationRequest, RequestError

ENLARGES = 4  # each later stage's factor


def run(ctx: ModeContext, request: GenerationRequest, mode: str) -> list[Generated]:
    # 1. Check the inputs; load stage I (its later stages come with it).
    if mode != "txt2img":
        raise RequestError("checkpoint", f"DeepFloyd IF runs text → image in Easel, not {mode}")
    loaded = ctx.load(request, "txt2img")
    pipe = loaded.pipe
    stages: dict[str, Any] = dict(getattr(pipe, "easel_stages", {}))
    factor = ENLARGES ** len(stages)
    if request.width % (8 * factor) or request.height % (8 * factor):
        raise RequestError("width", f"with {1 + len(stages)} stages the size must be a multiple of {8 * factor} "
                                    f"(stage I draws 1/{factor} of it); got {request.width}x{request.height}")
    for name in ("stage2_steps", "stage3_steps"):
        if getattr(request, name) and (name == "stage2_steps" and "stage II" not in stages
                                       or name == "stage3_steps" and "upscaler" not in stages):
            raise RequestError(name, "this DeepFloyd IF model has no such stage beside it (see the Models tab)")
    device = pipe._execution_device  # the model manager places stage I; the later stages follow it
    for stage in stages.values():
        if stage.device != device:
            stage.to(device)
    prompt, negative = plain_prompts(request)
    width, height = request.width // factor, request.height // factor
    steps = [request.steps, request.stage2_steps or request.steps, request.stage3_steps or request.steps]
    extra: dict[str, Any] = {**ctx.sampling_infotext(request, loaded.arch),
                             "Stages": " → ".join(f"{width * ENLARGES ** i}" for i in range(len(stages) + 1))}

    def callback(part: Any, total: int) -> Any:
        return legacy_callback(part, ctx.callback(loaded.arch, total), ctx.job)

    # 2. Run each image through the stages.
    def one(gen: Any) -> Any:
        guidance = {"prompt": prompt, "negative_prompt": negative or None, "guidance_scale": request.cfg_scale}
        image = ctx.call_pipeline(loaded, request, "txt2img", **guidance, num_inference_steps=steps[0], width=width,
                                  height=height, generator=gen, output_type="pt", clean_caption=False,
                                  callback=callback(pipe, steps[0]), callback_steps=1).images
        size = width
        if "stage II" in stages:
            size *= ENLARGES
            stage = stages["stage II"]
            stage.scheduler = type(stage.scheduler).from_config(stage.scheduler.config)  # fresh per job
            image = stage(**guidance, image=image, num_inference_steps=steps[1], width=size,
                          height=height * ENLARGES, generator=gen, output_type="pt", clean_caption=False,
                          callback=callback(stage, steps[1]), callback_steps=1).images
        if "upscaler" in stages:
            stage = stages["upscaler"]
            stage.scheduler = type(stage.scheduler).from_config(stage.scheduler.config)
            return stage(**guidance, image=image, num_inference_steps=steps[2], generator=gen, output_type="pil",
                         callback=callback(stage, steps[2]), callback_steps=1).images
        return pipe.numpy_to_pil((image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy())

    def call(gens: list[Any], batch_size: int, done: list[Any]) -> list[Any]:
        for gen in gens:
            done += one(gen)
        return done

    return run_batches(ctx, request, loaded, skippable(call), extra)
