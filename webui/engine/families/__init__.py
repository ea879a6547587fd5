"""The generation modes of the other diffusers families (DiT, PixArt-α/Σ, Sana, aMUSEd, unCLIP, DeepFloyd IF).

Each family has its own runner, since its pipeline's arguments differ from the latent diffusion ones the modes
pass: DiT takes a class, not a prompt; PixArt and Sana draw at resolution bins; aMUSEd's scheduler takes one
generator per call; unCLIP runs a prior or makes image variations; DeepFloyd IF is a three-stage cascade.

`dispatch` is the one call the txt2img, img2img and inpaint modes make: for these families it refuses what they
cannot do, on the field that asks for it (hires fix, refiner, variation seeds, seamless tiling, LoRAs except on
Sana, a VAE where the model has none to replace, fields the runner does not read), then runs the family's runner;
for every other family it returns None and the mode goes on.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from webui.engine.prompts import extract_loras
from webui.engine.worker import JobInterrupted
from webui.model_manager.families import FAMILY_ARCHS, takes_vae
from webui.model_manager.identify import ARCH_LABELS, Arch
from webui.requests import NO_REFINER, GenerationRequest, RequestError

# Request fields a family's runner does not read, per family (None: every family) and mode: a value other than the
# field's declared default is refused on the field (the UI hides these controls and sends the default; the API
# uses the default, not the settings' value, when the client leaves them out).
UNUSED: tuple[tuple[str, Arch | None, str | None, str], ...] = (
    ("clip_skip", None, None, "CLIP skip applies to the CLIP text encoders of Stable Diffusion models; {label} "
                              "models have none to skip layers of: set it to 1"),
    ("steps", Arch.GAN, None, "a StyleGAN generator draws an image in one forward pass: there are no steps; leave "
                              "steps out (or at {default})"),
    ("cfg_scale", Arch.GAN, None, "a StyleGAN generator has no classifier-free guidance; leave cfg_scale out (or at "
                                  "{default}) and use the truncation ψ (truncation_psi) instead"),
    ("denoising_strength", Arch.UNCLIP, "img2img", "Stable unCLIP draws its variations from noise (the input "
                                                   "image conditions it through its CLIP embedding, not its "
                                                   "pixels), so the denoising strength does not apply: leave it at "
                                                   "{default}, and use the noise level to vary more or less"),
)


class ImageSkipped(Exception):
    """Skip was asked while a family's pipeline ran: that image (and the rest of its batch) ends, the job goes on."""

LORA_ARCHS = frozenset({Arch.SANA})  # families whose pipelines load PEFT LoRAs (diffusers' SanaLoraLoaderMixin)
RUNNERS = {Arch.DIT: "dit", Arch.PIXART: "text", Arch.SANA: "text", Arch.AMUSED: "amused",
           Arch.UNCLIP: "unclip", Arch.IF: "deepfloyd", Arch.GAN: "stylegan"}


def family_of(ctx: Any, request: GenerationRequest) -> Arch | None:
    """The family of the checkpoint `request` runs on, when it is one of these (None otherwise, or when the
    checkpoint is unknown: the mode then reports that)."""
    try:
        name = request.checkpoint or ctx.default_checkpoint()
        entry = ctx.manager.find_checkpoint(name)
    except (LookupError, RequestError):
        return None
    return entry.arch if entry.arch in FAMILY_ARCHS else None


def check_request(request: GenerationRequest, arch: Arch, variant: str = "") -> None:
    """Refuse, on the field that asks for it, what the families' pipelines cannot do."""
    label = ARCH_LABELS[arch]
    if request.vae.strip().lower() not in ("", "automatic", "none") and not takes_vae(arch, variant):
        raise RequestError("vae", f"{label} models have no Stable Diffusion-style VAE for {request.vae!r} to "
                                  "replace; pick Automatic")
    if getattr(request, "enable_hr", False):
        raise RequestError("enable_hr", f"hires fix runs on latent diffusion models, not on {label} models")
    refiner = getattr(request, "refiner_checkpoint", NO_REFINER)
    if refiner not in ("", NO_REFINER) and float(getattr(request, "refiner_switch_at", 1.0)) < 1.0:
        raise RequestError("refiner_checkpoint", f"{label} models run without a refiner")
    if request.subseed_strength > 0:
        raise RequestError("subseed_strength", f"variation seeds are not available for {label} models")
    if request.seed_resize_from_w > 0 or request.seed_resize_from_h > 0:
        raise RequestError("seed_resize_from_w", f"seed resize is not available for {label} models")
    if request.tiling:
        raise RequestError("tiling", f"seamless tiling is not available for {label} models")
    for name, only, mode, message in UNUSED:
        if only not in (None, arch) or mode not in (None, request.mode) or not hasattr(request, name):
            continue
        default = next(f.default for f in dataclasses.fields(request) if f.name == name)
        if getattr(request, name) != default:
            raise RequestError(name, message.format(label=label, default=default))
    _, tags = extract_loras(request.prompt)
    if tags and arch not in LORA_ARCHS:
        raise RequestError("prompt", f"<lora:{tags[0].name}:…>: Easel does not apply LoRAs to {label} models "
                                     "(diffusers has no LoRA loader for their pipelines; see docs/FAMILIES.md); "
                                     "remove the tag")


def dispatch(ctx: Any, request: GenerationRequest, mode: str) -> list[Any] | None:
    """For a request on one of these families: check it, then run the family's own runner (its images) or return
    None for the mode to run it as usual. None at once for every other family."""
    arch = family_of(ctx, request)
    if getattr(request, "noise_level", 0) and arch != Arch.UNCLIP:
        raise RequestError("noise_level", "the noise level applies to Stable unCLIP image variations only; set it "
                                          "to 0 for this model")
    for name in ("stage2_steps", "stage3_steps"):
        if getattr(request, name, 0) and arch != Arch.IF:
            raise RequestError(name, "per-stage steps apply to DeepFloyd IF's cascade only; set them to 0")
    if arch != Arch.GAN:
        if getattr(request, "truncation_psi", 1.0) != 1.0:
            raise RequestError("truncation_psi", "the truncation ψ applies to StyleGAN generators (models/GAN) only; "
                                                 "leave it at 1 for this model")
        if getattr(request, "class_label", -1) != -1:
            raise RequestError("class_label", "the class field applies to class-conditional StyleGAN generators "
                                              "only; leave it at -1 (DiT reads its class from the prompt)")
    if arch is None:
        return None
    entry = ctx.manager.find_checkpoint(request.checkpoint or ctx.default_checkpoint())
    check_request(request, arch, entry.variant)
    return importlib.import_module(f"webui.engine.families.{RUNNERS[arch]}").run(ctx, request, mode)


# ------------------------------------------------------------------------------------------------ pipeline calls
def legacy_callback(pipe: Any, on_step_end: Callable[..., Any], job: Any) -> Callable[[int, Any, Any], None]:
    """An older-style `callback(step, timestep, latents)` from a `callback_on_step_end`: progress and previews the
    same. These pipelines read no interrupt flag, so the pipeline is stopped at once by raising: JobInterrupted
    for an interrupt (the job ends), ImageSkipped for a skip (`skippable` ends the image's batch, the job goes
    on)."""
    def callback(step: int, timestep: Any, latents: Any) -> None:
        on_step_end(pipe, step, timestep, {"latents": latents})
        if getattr(pipe, "_interrupt", False):
            pipe._interrupt = False
            if job.interrupt_requested:
                raise JobInterrupted()
            raise ImageSkipped()

    return callback


def skippable(call: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
    """A batch call (`run_batches`' `call`) that a skip ends without failing: the images it made before the skip
    are kept (a skipped image has no result: its pipeline stopped before decoding), and the next batch runs."""
    def run(*args: Any) -> list[Any]:
        done: list[Any] = []
        try:
            return call(*args, done=done)
        except ImageSkipped:
            return done

    return run

