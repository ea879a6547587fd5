"""What a mode needs while it runs: the loaded pipeline, seeds, a step callback and family-specific arguments.

The step callback is the one place where a running pipeline meets the job: it publishes the step and a
preview every few steps, and stops the pipeline within one step when the user interrupts or skips.
"""
from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass, field
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

from webui.engine.conditioning import Conditioning, PromptCache, conditioning
from webui.engine.prompts import extract_loras
from webui.engine.noise import NoisePlan
from webui.engine.samplers import FLOW_ARCHS, Samplers
from webui.engine.tiling import memory_tiling, tile_options
from webui.engine.upscalers import Upscalers
from webui.engine.worker import Job
from webui.extensions import PipelineCall, PipelineWrapper
from webui.model_manager.defaults import entry_defaults, size_plan
from webui.model_manager.embeddings import AppliedEmbedding
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
    flow_shift: float = 0.0  # the setting: flow models' timestep shift (0 = each model's own)
    plan_layout: bool = True  # False: the built-in model draws the prompt as written, not its planned layout
    samplers: Samplers = field(default_factory=Samplers)  # the Easel's (its registry's): built-in + extensions'
    # the Easel's adapter kinds: extensions' `wanted(request) -> [AdapterSpec]` (the adapter models, ControlNets
    # and such, a request runs with) and each kind's `load(spec, loaded)`
    adapter_sources: list[Callable[[Any], Any]] = field(default_factory=list)
    adapter_loaders: dict[str, Callable[[Any, Any], Any]] = field(default_factory=dict)
    loaded: LoadedPipeline | None = None  # what the last `load` handed out: the model this job ran
    prompt_cache: PromptCache = field(default_factory=PromptCache)  # this job's encoded prompts
    randn_source: str = "CPU"  # where starting noise comes from: CPU, GPU or NV (webui.engine.noise)
    vae_tiling: str = "Automatic"  # the setting: when the VAE tiles and slices (webui.engine.tiling)
    vae_tile_size: int = 0  # VAE tile, pixels; 0 = the VAE's own
    memory_notes: dict[str, Any] = field(default_factory=dict)  # infotext of what tiling ran (Tiled VAE, ...)
    fix_steps: bool = False  # the setting img2img_fix_steps: img2img and inpainting run exactly `steps` steps
    cpu_path: Any = None  # webui.engine.cpu_path.CpuPath: faster CPU backends and the tiny VAE, around each call

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

    def prompts(self, loaded: LoadedPipeline, request: GenerationRequest, steps: int,
                first_pass_steps: int | None = None) -> Conditioning:
        """The request's prompts for a pass of `steps` sampling steps on `loaded`: `.kwargs` for the pipeline
        call and `.callback(progress)` for its `callback_on_step_end` (switching prompts where the prompt edits
        or alternates). Each distinct prompt is encoded once per job. `first_pass_steps`: this is a hires fix
        pass after a first pass of that many steps."""
        return conditioning(loaded, request, steps, self.prompt_cache, self.embeddings, first_pass_steps)

    def sampler_used(self, request: GenerationRequest, arch: Arch) -> str:
        """The sampler name that runs `request` on this model family (what the infotext records)."""
        return self.samplers.resolve(request.sampler, arch)

    def sampling_infotext(self, request: GenerationRequest, arch: Arch) -> dict[str, Any]:
        """`Sampler`, and `Schedule type` when it is not the sampler's own, as the infotext records them."""
        entries: dict[str, Any] = {"Sampler": self.samplers.resolve(request.sampler, arch)}
        schedule = self.samplers.check_schedule(request.sampler, getattr(request, "scheduler", "Automatic"), arch)
        if schedule != "Automatic":
            entries["Schedule type"] = schedule
        if self.flow_shift > 0 and arch in FLOW_ARCHS:
            entries["Shift"] = self.flow_shift
        return entries

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
                        sampler=request.sampler, schedule=getattr(request, "scheduler", "Automatic"),
                        shift=self.flow_shift, adapters=tuple(adapters))

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
            tiling = bool(getattr(request, "tiling", False))
            with seamless(call.pipe, tiling), \
                    memory_tiling(call.pipe, loaded.arch.value, call.kwargs, self.vae_tiling, self.vae_tile_size,
                                  tile_options(request)) as notes, \
                    self.backend(call.pipe, loaded.arch.value, tiling):
                result = call.pipe(**call.kwargs)
            self.memory_notes.update(notes)
            offload = self.manager.offload_choice(loaded.entry.name) or "none"
            if not offload.startswith("none"):  # how the weights visited the GPU: "model", "group", ...
                self.memory_notes["Offload"] = offload.split(" ", 1)[0]
            return result

        run: Callable[[PipelineCall], Any] = innermost
        for wrapper in reversed(self.pipeline_wrappers):
            run = _wrapped(wrapper, run)
        return run(PipelineCall(request, task, loaded.arch.value, loaded.entry.name, loaded.pipe, kwargs))

    def backend(self, pipe: Any, arch: str, tiling: bool = False) -> Any:
        """The CPU path's stand-ins in `pipe` for one call (webui.engine.cpu_path); none for seamless tiling,
        whose circular padding only the PyTorch modules have."""
        if self.cpu_path is None or tiling:
            return contextlib.nullcontext()
        return self.cpu_path.active(pipe, arch)

    def preview(self, latents: torch.Tensor, arch: Arch) -> Image.Image | None:
        """A live preview of the first latent: the tiny VAE's where its file is there, else the linear one."""
        tiny = self.cpu_path.previewer(arch.value) if self.cpu_path is not None else None
        image = tiny(latents) if tiny is not None else None
        return image if image is not None else latents_preview(latents, arch)

    def default_checkpoint(self) -> str:
        current = self.manager.current()
        if current is not None:
            return current.name
        usable = [c for c in self.manager.checkpoints() if c.supported]
        if not usable:
            raise RequestError("checkpoint", "no model is installed; put a .safetensors file in "
                                             "models/Stable-diffusion")
        return usable[0].name

    def callback(self, arch: Arch, total_steps: int, done: int = 0, overall: int = 0) -> Callable:
        """The step callback of a pipeline call running `total_steps` steps. An image made in several passes
        (base, refiner, hires fix) counts one step count, as AUTOMATIC1111 does: `overall` is every pass's steps,
        this pass counts on from the `done` steps of the passes before it and stays within its own share."""
        job = self.job
        job.update(step=done, total_steps=overall or total_steps)

        def on_step_end(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            changes: dict[str, Any] = {"step": done + min(step + 1, total_steps) if overall else step + 1}
            every = self.preview_every
            if every and (step + 1) % every == 0 and "latents" in kwargs:
                preview = self.preview(kwargs["latents"], arch)
                if preview is not None:
                    changes["preview"] = preview
            job.update(**changes)
            if job.interrupt_requested or job.skip_requested:
                pipe._interrupt = True
            return {}

        return on_step_end


@contextmanager
def seamless(pipe: Any, tiling: bool) -> Iterator[None]:
    """With `tiling`, circular padding in every Conv2d of the pipeline's denoiser and VAE while the block runs, so
    the image wraps around (its left edge continues its right, its top its bottom); the layers' own padding modes
    are put back afterwards, whatever happens, since the pipeline is shared by the jobs that follow."""
    if not tiling:
        yield
        return
    changed: list[tuple[torch.nn.Conv2d, str]] = []
    for part in ("unet", "transformer", "vae"):
        module = getattr(pipe, part, None)
        if not isinstance(module, torch.nn.Module):
            continue
        for layer in module.modules():
            if isinstance(layer, torch.nn.Conv2d) and layer.padding_mode != "circular":
                changed.append((layer, layer.padding_mode))
                layer.padding_mode = "circular"
    try:
        yield
    finally:
        for layer, mode in changed:
            layer.padding_mode = mode


def _wrapped(wrapper: PipelineWrapper, run: Callable[[PipelineCall], Any]) -> Callable[[PipelineCall], Any]:
    return lambda call: wrapper(call, run)


def prompt_kwargs(loaded: LoadedPipeline, request: GenerationRequest,
                  embeddings: list[AppliedEmbedding] | None = None) -> dict[str, Any]:
    """Prompt and guidance arguments in the form each model family's pipeline takes, for the prompts of the first
    step (`ModeContext.prompts` also switches them step by step). `embeddings` (the context's, after `load`) turn
    their names into their tokens for the CLIP families."""
    return conditioning(loaded, request, max(1, int(getattr(request, "steps", 1) or 1)), PromptCache(),
                        embeddings).kwargs


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
                call: Callable[..., list[Image.Image]],
                extra: dict[str, Any] | None = None, noise: NoisePlan | None = None) -> list[Generated]:
    """Run `batch_count` batches of `batch_size` images with consecutive seeds (seed, seed+1, ...) and variation
    seeds (subseed, subseed+1, ...). `call(generators, batch_size)` runs one batch; with a `noise` plan it is
    called as `call(generators, batch_size, latents)` with the batch's starting noise."""
    job = ctx.job
    first_seed = resolve_seed(request.seed)
    first_subseed = resolve_seed(request.subseed)
    results: list[Generated] = []
    job.update(batch_total=request.batch_count)
    for batch in range(request.batch_count):
        job.check_interrupt()
        job.update(batch_index=batch, step=0, skip_requested=False)  # together: the progress never jumps ahead
        first = batch * request.batch_size
        seeds = [first_seed + first + i for i in range(request.batch_size)]
        subseeds = [first_subseed + first + i for i in range(request.batch_size)]
        gens = generators(seeds)
        if noise is None:
            images = call(gens, request.batch_size)
        else:
            latents = noise.latents(seeds, subseeds, gens, request.width, request.height)  # [B,C,h,w]
            images = call(gens, request.batch_size, latents)
        entries = {**guidance_infotext(loaded, request), **(extra or {}), **ctx.network_infotext(),
                   **ctx.memory_notes}
        results.extend(Generated(img, seed, {**entries, **(noise.infotext(subseed) if noise else {})},
                                 model=loaded.entry.name, model_hash=loaded.entry.short_hash)
                       for img, seed, subseed in zip(images, seeds, subseeds))
        if job.interrupt_requested:
            break
    return results
