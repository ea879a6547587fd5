"""What a mode needs while it runs: the loaded pipeline, seeds, a step callback and family-specific arguments.

The step callback is the one place where a running pipeline meets the job: it publishes the step and a
preview every few steps, and stops the pipeline within one step when the user interrupts or skips.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from webui.engine.prompts import encode_sd, encode_sdxl, extract_loras, strip_emphasis
from webui.engine.samplers import Samplers
from webui.engine.upscalers import Upscalers
from webui.engine.worker import Job
from webui.extensions import PipelineCall, PipelineWrapper
from webui.model_manager.defaults import entry_defaults, size_plan
from webui.model_manager.embeddings import EMBEDDING_ARCHS, AppliedEmbedding
from webui.model_manager.embeddings import expand as expand_embeddings
from webui.model_manager.identify import Arch
from webui.model_manager.manager import AppliedLora, LoadedPipeline, ModelManager
from webui.model_manager.spec import AdapterSpec, LoadSpec, LoadSpecError
from webui.requests import GenerationRequest, RequestError

log = logging.getLogger(__name__)

# Linear maps from a 4-channel SD latent to RGB, for cheap previews (well-known approximations).
_SD_LATENT_RGB = torch.tensor([[0.298, 0.207, 0.208], [0.187, 0.286, 0.173],
                               [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]])


@dataclass
class Generated:
    """One finished image, the infotext entries that only the mode knows, and the model that made it."""

    image: Image.Image
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)  # infotext entries
    payload: dict[str, Any] = field(default_factory=dict)  # other outputs (masks, flags) for the UI and API
    model: str | None = None  # the checkpoint (or segmenter) that ran
    model_hash: str | None = None  # its short hash, where it has one


def resolve_seed(seed: int) -> int:
    return seed if seed >= 0 else random.randrange(0, 2**32 - 1)


def generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image: the same seed gives the same noise on every device."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def seed_global_generator(generator: torch.Generator | list[torch.Generator] | None) -> None:
    """Seed torch's global generator from the first image's seed. Several diffusers pipelines (SD3, Flux and the
    other flow-matching ones) step their scheduler without the request's generators, so a stochastic sampler
    (Euler a) draws its per-step noise from the global generator; seeded, the same seed gives the same image."""
    first = generator[0] if isinstance(generator, list) and generator else generator
    if isinstance(first, torch.Generator):
        torch.manual_seed(first.initial_seed())


def latents_preview(latents: torch.Tensor, arch: Arch) -> Image.Image | None:
    """A quick RGB view of the first latent in a batch, or None where the layout has no cheap preview."""
    if latents.ndim != 4:
        return None
    first = latents[0].detach().float().cpu()
    if arch == Arch.EASEL and first.shape[0] == 3:  # pixel space, [-1, 1]
        rgb = first
    elif first.shape[0] == 4:
        rgb = torch.einsum("chw,cr->rhw", first, _SD_LATENT_RGB)
    else:
        return None
    array = ((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array))


@dataclass
class ModeContext:
    manager: ModelManager
    job: Job
    preview_every: int = 4
    upscalers: Upscalers | None = None  # hires fix upscales through these
    pipeline_wrappers: list[PipelineWrapper] = field(default_factory=list)  # extensions', around each pipeline call
    loras: list[AppliedLora] = field(default_factory=list)  # what the prompt's <lora:…> tags applied
    embeddings: list[AppliedEmbedding] = field(default_factory=list)  # embeddings the prompts name, as loaded
    plan_layout: bool = True  # False: the built-in model draws the prompt as written, not its planned layout
    samplers: Samplers = field(default_factory=Samplers)  # the Easel's (its registry's): built-in + extensions'
    # the Easel's adapter kinds: extensions' `wanted(request) -> [AdapterSpec]` (the adapter models, ControlNets
    # and such, a request runs with) and each kind's `load(spec, loaded)`
    adapter_sources: list[Callable[[Any], Any]] = field(default_factory=list)
    adapter_loaders: dict[str, Callable[[Any, Any], Any]] = field(default_factory=dict)
    loaded: LoadedPipeline | None = None  # what the last `load` handed out: the model this job ran

    def load(self, request: GenerationRequest, mode: str) -> LoadedPipeline:
        """The pipeline for this request and mode, ready to run, from the model manager's one call (`LoadSpec`):
        exactly the prompt's LoRAs active, the embeddings its prompts name added, a fresh scheduler, the adapters
        the extensions say it needs loaded. A LoRA or an embedding that cannot be used is an error on the field
        that names it."""
        spec = self.load_spec(request, mode)
        try:
            loaded = self.manager.load(spec, self.samplers.make_scheduler, self.adapter_loaders)
        except LoadSpecError as exc:
            if exc.part == "embeddings":
                prompt, _ = extract_loras(request.prompt)
                negative_only = exc.name not in {e.name for e in self.manager.embeddings_in(prompt)}
                raise RequestError("negative_prompt" if negative_only else "prompt", str(exc)) from None
            raise RequestError("prompt", str(exc)) from None
        self.loras, self.embeddings = list(loaded.loras), list(loaded.embeddings)
        self.loaded = loaded
        return loaded

    def sampler_used(self, request: GenerationRequest, arch: Arch) -> str:
        """The sampler name that runs `request` on this model family (what the infotext records)."""
        return self.samplers.resolve(request.sampler, arch)

    def load_spec(self, request: GenerationRequest, mode: str) -> LoadSpec:
        """What this request needs loaded for `mode`: its checkpoint (the current one when it names none) and VAE,
        the prompt's `<lora:name:weight>` tags, the embeddings the prompt and negative prompt use as words (SD
        1.x/2.x and SDXL take them; other families read the name as plain text), the sampler, and the adapters."""
        _, tags = extract_loras(request.prompt)
        embeddings: dict[str, None] = {}
        for field_name in ("prompt", "negative_prompt"):
            text, _ = extract_loras(getattr(request, field_name))
            embeddings.update((entry.name, None) for entry in self.manager.embeddings_in(text))
        adapters: list[AdapterSpec] = [spec for wanted in self.adapter_sources for spec in wanted(request) or ()]
        return LoadSpec(checkpoint=request.checkpoint or self.default_checkpoint(), mode=mode,
                        vae=None if request.vae in ("", "Automatic", "None") else request.vae,
                        loras=tuple((tag.name, float(tag.weight)) for tag in tags), embeddings=tuple(embeddings),
                        sampler=request.sampler, adapters=tuple(adapters))

    def network_infotext(self) -> dict[str, Any]:
        """`Lora hashes: "name: hash, …"` for the LoRAs this job used, `TI hashes: "name: hash, …"` for its
        embeddings (nothing when none)."""
        entries: dict[str, Any] = {}
        if self.loras:
            entries["Lora hashes"] = ", ".join(f"{lora.name}: {lora.short_hash}" for lora in self.loras)
        if self.embeddings:
            entries["TI hashes"] = ", ".join(f"{e.name}: {e.short_hash}" for e in self.embeddings)
        return entries

    def call_pipeline(self, loaded: LoadedPipeline, request: GenerationRequest, task: str, **kwargs: Any) -> Any:
        """`loaded.pipe(**kwargs)`, run through the extensions' pipeline wrappers (the first registered outermost)."""
        def innermost(call: PipelineCall) -> Any:
            seed_global_generator(call.kwargs.get("generator"))
            return call.pipe(**call.kwargs)

        run: Callable[[PipelineCall], Any] = innermost
        for wrapper in reversed(self.pipeline_wrappers):
            run = _wrapped(wrapper, run)
        return run(PipelineCall(request, task, loaded.arch.value, loaded.entry.name, loaded.pipe, kwargs))

    def default_checkpoint(self) -> str:
        current = self.manager.current()
        if current is not None:
            return current.name
        usable = [c for c in self.manager.checkpoints() if c.supported]
        if not usable:
            raise RequestError("checkpoint", "no model is installed; put a .safetensors file in "
                                             "models/Stable-diffusion")
        return usable[0].name

    def callback(self, arch: Arch, total_steps: int) -> Callable:
        job = self.job
        job.update(step=0, total_steps=total_steps)

        def on_step_end(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            changes: dict[str, Any] = {"step": step + 1}
            every = self.preview_every
            if every and (step + 1) % every == 0 and "latents" in kwargs:
                preview = latents_preview(kwargs["latents"], arch)
                if preview is not None:
                    changes["preview"] = preview
            job.update(**changes)
            if job.interrupt_requested or job.skip_requested:
                pipe._interrupt = True
            return {}

        return on_step_end


def _wrapped(wrapper: PipelineWrapper, run: Callable[[PipelineCall], Any]) -> Callable[[PipelineCall], Any]:
    return lambda call: wrapper(call, run)


def prompt_kwargs(loaded: LoadedPipeline, request: GenerationRequest,
                  embeddings: list[AppliedEmbedding] | None = None) -> dict[str, Any]:
    """Prompt and guidance arguments in the form each model family's pipeline takes. `embeddings` (the context's,
    after `load`) turn their names into their tokens for the CLIP families."""
    arch, pipe = loaded.arch, loaded.pipe
    prompt, _ = extract_loras(request.prompt)  # <lora:…> tags choose adapters; they are not text to encode
    negative, _ = extract_loras(request.negative_prompt)
    if embeddings and arch in EMBEDDING_ARCHS:
        prompt, negative = expand_embeddings(prompt, embeddings), expand_embeddings(negative, embeddings)
    if arch in (Arch.SD1, Arch.SD2):
        return {**encode_sd(pipe, prompt, negative, request.clip_skip), "guidance_scale": request.cfg_scale}
    if arch == Arch.SDXL:
        return {**encode_sdxl(pipe, prompt, negative, request.clip_skip), "guidance_scale": request.cfg_scale}
    plain, plain_negative = strip_emphasis(prompt), strip_emphasis(negative)
    if arch == Arch.FLUX:  # the distilled guidance is embedded; a CFG scale above 1 adds true CFG on top
        args: dict[str, Any] = {"prompt": plain, "guidance_scale": request.distilled_cfg_scale}
        if request.cfg_scale > 1:
            args.update(negative_prompt=plain_negative or " ", true_cfg_scale=request.cfg_scale)
        return args
    if arch == Arch.QWEN:
        return {"prompt": plain, "negative_prompt": plain_negative or " ", "true_cfg_scale": request.cfg_scale}
    if arch == Arch.SD3:
        return {"prompt": plain, "negative_prompt": plain_negative, "guidance_scale": request.cfg_scale}
    return {"prompt": plain, "negative_prompt": plain_negative, "guidance_scale": request.cfg_scale}


def render_size(loaded: LoadedPipeline, request: GenerationRequest) -> tuple[int, int] | None:
    """The size this model renders the request at when it differs from the asked one (the image is then resized
    to the asked size); None renders as asked. RequestError on `width` when the model refuses the size."""
    return size_plan(entry_defaults(loaded.entry), request.width, request.height)


def resized(images: list[Image.Image], width: int, height: int) -> list[Image.Image]:
    return [img if img.size == (width, height) else img.resize((width, height), Image.LANCZOS) for img in images]


def distilled_guidance(loaded: LoadedPipeline) -> bool:
    """The model embeds a distilled guidance scale (Flux.1 dev; not schnell)."""
    denoiser = getattr(loaded.pipe, "transformer", None)
    return loaded.arch == Arch.FLUX and bool(getattr(getattr(denoiser, "config", None), "guidance_embeds", False))


def guidance_infotext(loaded: LoadedPipeline, request: GenerationRequest) -> dict[str, Any]:
    return {"Distilled CFG Scale": request.distilled_cfg_scale} if distilled_guidance(loaded) else {}


def run_batches(ctx: ModeContext, request: GenerationRequest, loaded: LoadedPipeline,
                call: Callable[[list[torch.Generator], int], list[Image.Image]],
                extra: dict[str, Any] | None = None) -> list[Generated]:
    """Run `batch_count` batches of `batch_size` images with consecutive seeds (seed, seed+1, ...)."""
    job = ctx.job
    first_seed = resolve_seed(request.seed)
    results: list[Generated] = []
    job.update(batch_total=request.batch_count)
    for batch in range(request.batch_count):
        job.check_interrupt()
        job.update(batch_index=batch, skip_requested=False)
        seeds = [first_seed + batch * request.batch_size + i for i in range(request.batch_size)]
        images = call(generators(seeds), request.batch_size)
        entries = {**guidance_infotext(loaded, request), **(extra or {}), **ctx.network_infotext()}
        results.extend(Generated(img, seed, dict(entries), model=loaded.entry.name, model_hash=loaded.entry.short_hash)
                       for img, seed in zip(images, seeds))
        if job.interrupt_requested:
            break
    return results
