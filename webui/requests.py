"""Typed generation requests, one declaration per field.

Every field carries a `FieldSpec` in its dataclass metadata: the label the UI shows, the key it has in the
AUTOMATIC1111 infotext (and how its value is written there), the name it has in the `/sdapi/v1` API and its
limits. The UI, the API, the infotext writer and the infotext reader all read these declarations, so a field is
added in one place. `validate_request` checks a
request against the limits of the running settings and raises `RequestError` naming the field.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from PIL import Image

from webui.engine.prompt_schedule import MAX_BRACKET_DEPTH, bracket_depth
from webui.model_manager.extra_files import find_hypernetwork_tags

if TYPE_CHECKING:
    from webui.engine.samplers import Samplers
    from webui.model_manager.identify import Arch

Mode = Literal["txt2img", "img2img", "inpaint", "segment", "edit"]

SAMPLE_NAMES_DEFAULT = "Euler a"
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill")
INPAINT_FILLS = ("fill", "original", "latent noise", "latent nothing")
# Schedule types as AUTOMATIC1111 >= 1.9 names them: (API name, label). "Automatic" is the sampler's own schedule.
SCHEDULE_TYPES: tuple[tuple[str, str], ...] = (
    ("automatic", "Automatic"), ("uniform", "Uniform"), ("karras", "Karras"), ("exponential", "Exponential"),
    ("polyexponential", "Polyexponential"), ("sgm_uniform", "SGM Uniform"), ("kl_optimal", "KL Optimal"),
    ("align_your_steps", "Align Your Steps"), ("simple", "Simple"), ("normal", "Normal"), ("ddim", "DDIM"),
    ("beta", "Beta"))
SCHEDULE_LABELS = tuple(label for _, label in SCHEDULE_TYPES)
# Older names that carried the schedule in the sampler's name ("DPM++ 2M Karras"): still accepted everywhere.
LEGACY_SCHEDULE_SUFFIXES = {" Karras": "Karras", " Exponential": "Exponential"}


def split_legacy(name: str) -> tuple[str, str | None]:
    """("DPM++ 2M", "Karras") for "DPM++ 2M Karras"; (name, None) for a name with no schedule in it."""
    for suffix, schedule in LEGACY_SCHEDULE_SUFFIXES.items():
        if name.endswith(suffix):
            return name[: -len(suffix)].strip(), schedule
    return name, None


# Families whose denoiser is a convolutional UNet: tiled diffusion (webui.engine.tiling) runs on these only.
TILED_DIFFUSION_ARCHS = ("sd1", "sd2", "sdxl")


def tiled_diffusion_refusal(family: str) -> str:
    """Why tiled diffusion cannot run on `family` (an Arch value)."""
    why = ("the built-in model draws pixels with attention over the whole image" if family == "easel"
           else "its transformer takes the whole image's patches with their positions")
    return f"tiled diffusion runs on SD 1.x, SD 2.x and SDXL models, not {family} ({why}); turn it off"


SAME_SAMPLER = "Use same sampler"  # hires fix: the first pass's sampler, schedule, checkpoint
SAME_SCHEDULER = "Use same scheduler"
SAME_CHECKPOINT = "Use same checkpoint"
NO_REFINER = "None"
# Hires fix's latent upscalers: they resize the first pass's latents (webui.engine.upscalers.upscale_latents).
LATENT_UPSCALERS = ("Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                    "Latent (nearest)", "Latent (nearest-exact)")


@dataclass(frozen=True)
class FieldSpec:
    """How one request field appears in the UI, the infotext and the API, and its limits."""

    label: str
    infotext: str | None = None  # key in the "parameters" text; None = not written there
    api: str | None = None  # name in the AUTOMATIC1111 JSON body; None = not in the API
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    limit: str | None = None  # name of the Limits attribute giving the maximum instead of `maximum`
    infotext_value: Callable[[Any], Any] | None = None  # the value as the infotext writes it; None leaves it out
    infotext_when: str | None = None  # a request attribute that must be true for the field to be written


def or_none(value: Any) -> Any:
    """Written only when set: 0 and "" leave the key out."""
    return value or None


def unless_automatic(name: str) -> str | None:
    return None if name in ("", "Automatic", "None") else name


def above_one(value: int) -> int | None:
    return value if value > 1 else None


def schedule_label(value: str, field_name: str) -> str:
    """A schedule type by label or AUTOMATIC1111 name, as its label; "" and "Use same scheduler" stay as they are.
    Anything else is a RequestError on `field_name` listing the types."""
    if value in ("", SAME_SCHEDULER):
        return value
    key = str(value).strip().lower().replace(" ", "_")
    for name, label in SCHEDULE_TYPES:
        if key in (name, label.lower().replace(" ", "_")):
            return label
    raise RequestError(field_name, f"unknown schedule type {value!r}; choose one of {', '.join(SCHEDULE_LABELS)} "
                                   f"or {SAME_SCHEDULER!r}")


def unless_same(value: str) -> str | None:
    """Hires sampler, schedule and checkpoint: written only when the second pass uses its own."""
    return None if value in ("", SAME_SAMPLER, SAME_SCHEDULER, SAME_CHECKPOINT) else value


def unless_no_refiner(name: str) -> str | None:
    return None if name in ("", NO_REFINER) else name


def written_by_mode(value: Any) -> None:
    """Never written from the request: the mode writes the key where the model uses the value."""
    return None


def inpaint_area(only_masked: bool) -> str:
    return "Only masked" if only_masked else "Whole picture"


def mask_mode(invert: bool) -> str | None:
    return "Inpaint not masked" if invert else None


def styles_json(names: tuple[str, ...]) -> str | None:
    """`Styles array` as the infotext writes it: a JSON list of names, left out when there are none."""
    return json.dumps(list(names), ensure_ascii=False) if names else None


def spec(default: Any, label: str, **kwargs: Any) -> Any:
    """A dataclass field with its FieldSpec."""
    return field(default=default, metadata={"spec": FieldSpec(label, **kwargs)})


def image_field(label: str, api: str | None) -> Any:
    return field(default=None, compare=False, repr=False, metadata={"spec": FieldSpec(label, api=api)})


class RequestError(ValueError):
    """A request field is out of its limits or of the wrong kind. `field` names it as the API does."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class Limits:
    """Upper bounds a request is validated against; they live in the settings."""

    max_side: int = 2048
    max_pixels: int = 2048 * 2048
    max_steps: int = 150
    max_batch_size: int = 8
    max_batch_count: int = 100
    max_prompt_chars: int = 8000
    max_images: int = 200  # batch size x batch count: images one request may make


@dataclass(frozen=True)
class GenerationRequest:
    """Fields every generation mode shares."""

    prompt: str = spec("", "Prompt", api="prompt", limit="max_prompt_chars")
    negative_prompt: str = spec("", "Negative prompt", api="negative_prompt", limit="max_prompt_chars")
    # prompt styles (webui.styles) applied to the prompts when the job runs; the infotext keeps the prompts as typed
    styles: tuple[str, ...] = spec((), "Styles", infotext="Styles array", api="styles", infotext_value=styles_json)
    checkpoint: str = spec("", "Checkpoint", infotext="Model", infotext_value=or_none)
    vae: str = spec("Automatic", "VAE", infotext="VAE", infotext_value=unless_automatic)
    sampler: str = spec(SAMPLE_NAMES_DEFAULT, "Sampling method", infotext="Sampler", api="sampler_name")
    scheduler: str = spec("Automatic", "Schedule type", infotext="Schedule type", api="scheduler",
                          choices=SCHEDULE_LABELS, infotext_value=unless_automatic)
    tiling: bool = spec(False, "Tiling", infotext="Tiling", api="tiling", infotext_value=or_none)
    # GFPGAN or CodeFormer (the setting face_restoration_model) on the faces found (webui.engine.face_restore);
    # the engine writes "Face restoration: <restorer>"
    restore_faces: bool = spec(False, "Restore faces", infotext="Face restoration", api="restore_faces",
                               infotext_value=written_by_mode)
    # this request's restorer and CodeFormer weight ("" and -1: the settings', as the UI always uses); set, checked,
    # by the API's override_settings face_restoration_model / code_former_weight and the X/Y/Z "Face restore" axis
    face_restoration_model: str = ""
    code_former_weight: float = -1.0
    # this request's own values of per-job settings (webui.settings.PER_REQUEST_SETTINGS), as (key, value) pairs:
    # the API's override_settings (randn_source, samples_save, ...); () = the settings' values
    setting_overrides: tuple[tuple[str, Any], ...] = ()
    steps: int = spec(20, "Sampling steps", infotext="Steps", api="steps", minimum=1, limit="max_steps", step=1)
    cfg_scale: float = spec(7.0, "CFG Scale", infotext="CFG scale", api="cfg_scale", minimum=0.0, maximum=30.0, step=0.5)
    # the guidance a distilled model (Flux.1 dev) embeds; the infotext has it only for such models
    distilled_cfg_scale: float = spec(3.5, "Distilled CFG Scale", infotext="Distilled CFG Scale",
                                      api="distilled_cfg_scale", minimum=0.0, maximum=30.0, step=0.1,
                                      infotext_value=written_by_mode)
    seed: int = spec(-1, "Seed", infotext="Seed", api="seed", minimum=-1, maximum=2**32 - 1)
    width: int = spec(512, "Width", api="width", minimum=64, limit="max_side", step=8)
    height: int = spec(512, "Height", api="height", minimum=64, limit="max_side", step=8)
    batch_size: int = spec(1, "Batch size", api="batch_size", minimum=1, limit="max_batch_size", step=1)
    batch_count: int = spec(1, "Batch count", api="n_iter", minimum=1, limit="max_batch_count", step=1)
    clip_skip: int = spec(1, "Clip skip", infotext="Clip skip", api="clip_skip", minimum=1, maximum=12, step=1,
                          infotext_value=above_one)
    # Variation seed: its noise mixed into the seed's (spherical interpolation) by `subseed_strength`; the seed's
    # noise drawn at `seed_resize_from_w` x `_h` (0 or -1 = the image's own size) and placed at the image's centre.
    # The infotext's "Seed resize from: WxH" is written and read as one key (webui.infotext).
    subseed: int = spec(-1, "Variation seed", infotext="Variation seed", api="subseed", minimum=-1,
                        maximum=2**32 - 1, infotext_when="variation")
    subseed_strength: float = spec(0.0, "Variation strength", infotext="Variation seed strength",
                                   api="subseed_strength", minimum=0.0, maximum=1.0, step=0.01,
                                   infotext_when="variation")
    seed_resize_from_w: int = spec(0, "Resize seed from width", api="seed_resize_from_w", minimum=-1,
                                   limit="max_side", step=8)
    seed_resize_from_h: int = spec(0, "Resize seed from height", api="seed_resize_from_h", minimum=-1,
                                   limit="max_side", step=8)
    # Tiled diffusion (MultiDiffusion, webui.engine.tiling): the latent denoised in overlapping tiles of these many
    # latent cells (8 pixels each), blended across the overlap. The mode writes the infotext keys when it tiled.
    tiled_diffusion: bool = spec(False, "Tiled Diffusion", infotext="Tiled Diffusion", api="tiled_diffusion",
                                 infotext_value=written_by_mode)
    tiled_diffusion_tile_width: int = spec(96, "Latent tile width", infotext="Tiled Diffusion tile width",
                                           api="tiled_diffusion_tile_width", minimum=16, maximum=256, step=8,
                                           infotext_value=written_by_mode)
    tiled_diffusion_tile_height: int = spec(96, "Latent tile height", infotext="Tiled Diffusion tile height",
                                            api="tiled_diffusion_tile_height", minimum=16, maximum=256, step=8,
                                            infotext_value=written_by_mode)
    tiled_diffusion_overlap: int = spec(48, "Latent tile overlap", infotext="Tiled Diffusion overlap",
                                        api="tiled_diffusion_overlap", minimum=0, maximum=248, step=8,
                                        infotext_value=written_by_mode)
    # Per-request arguments of extensions, by extension name (the API's `alwayson_scripts`); read-only.
    extension_args: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    mode: Mode = "txt2img"

    @property
    def variation(self) -> bool:
        """A variation seed is mixed in."""
        return self.subseed_strength > 0

    def replace(self, **changes: Any) -> "GenerationRequest":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Txt2ImgRequest(GenerationRequest):
    enable_hr: bool = spec(False, "Hires. fix", api="enable_hr")
    # written in the infotext only when the hires fix runs (`hires`)
    hr_scale: float = spec(2.0, "Upscale by", infotext="Hires upscale", api="hr_scale", minimum=1.0, maximum=4.0, step=0.05,
                           infotext_when="hires")
    hr_upscaler: str = spec("Lanczos", "Upscaler", infotext="Hires upscaler", api="hr_upscaler", infotext_when="hires")
    hr_second_pass_steps: int = spec(0, "Hires steps", infotext="Hires steps", api="hr_second_pass_steps", minimum=0, limit="max_steps", step=1,
                                     infotext_when="hires", infotext_value=or_none)
    hr_denoising_strength: float = spec(0.7, "Denoising strength", infotext="Denoising strength", api="denoising_strength", minimum=0.0, maximum=1.0, step=0.01,
                                        infotext_when="hires")
    # the second pass's own sampler, schedule, checkpoint and prompts (the defaults: the first pass's)
    hr_checkpoint_name: str = spec(SAME_CHECKPOINT, "Hires checkpoint", infotext="Hires checkpoint", api="hr_checkpoint_name",
                                   infotext_when="hires", infotext_value=unless_same)
    hr_sampler_name: str = spec(SAME_SAMPLER, "Hires sampling method", infotext="Hires sampler", api="hr_sampler_name",
                                infotext_when="hires", infotext_value=unless_same)
    hr_scheduler: str = spec(SAME_SCHEDULER, "Hires schedule type", infotext="Hires schedule type", api="hr_scheduler",
                             infotext_when="hires", infotext_value=unless_same)
    hr_prompt: str = spec("", "Hires prompt", infotext="Hires prompt", api="hr_prompt", limit="max_prompt_chars",
                          infotext_when="hires", infotext_value=or_none)
    hr_negative_prompt: str = spec("", "Hires negative prompt", infotext="Hires negative prompt", api="hr_negative_prompt",
                                   limit="max_prompt_chars", infotext_when="hires", infotext_value=or_none)
    # the last part of the steps on another checkpoint ("None": no refiner)
    refiner_checkpoint: str = spec(NO_REFINER, "Refiner checkpoint", infotext="Refiner", api="refiner_checkpoint",
                                   infotext_when="refiner", infotext_value=unless_no_refiner)
    refiner_switch_at: float = spec(0.8, "Refiner switch at", infotext="Refiner switch at", api="refiner_switch_at",
                                    minimum=0.0, maximum=1.0, step=0.01, infotext_when="refiner")

    # DeepFloyd IF's later stages (0 = as many as `steps`)
    stage2_steps: int = spec(0, "Stage II steps", infotext="Stage II steps", api="stage2_steps", minimum=0,
                             limit="max_steps", step=1, infotext_value=or_none)
    stage3_steps: int = spec(0, "Upscaler steps", infotext="Stage III steps", api="stage3_steps", minimum=0,
                             limit="max_steps", step=1, infotext_value=or_none)
    # StyleGAN generators (models/GAN): truncation towards the average w (1 = none), and the class a conditional
    # generator draws (-1: the prompt names it by number); the mode writes both into the infotext
    truncation_psi: float = spec(1.0, "Truncation ψ", infotext="Truncation psi", api="truncation_psi", minimum=-1.0,
                                 maximum=2.0, step=0.05, infotext_value=written_by_mode)
    class_label: int = spec(-1, "Class", infotext="Class", api="class_label", minimum=-1, maximum=99999, step=1,
                            infotext_value=written_by_mode)

    mode: Mode = "txt2img"

    @property
    def hires(self) -> bool:
        """The hires fix runs: asked for, with a scale above 1."""
        return self.enable_hr and self.hr_scale > 1.0

    @property
    def refiner(self) -> bool:
        """A refiner takes over before the last step."""
        return self.refiner_checkpoint not in ("", NO_REFINER) and self.refiner_switch_at < 1.0


@dataclass(frozen=True)
class Img2ImgRequest(GenerationRequest):
    init_image: Image.Image | None = image_field("Image", api="init_images")
    denoising_strength: float = spec(0.75, "Denoising strength", infotext="Denoising strength", api="denoising_strength", minimum=0.0, maximum=1.0, step=0.01)
    resize_mode: str = spec("Just resize", "Resize mode", api="resize_mode", choices=RESIZE_MODES)
    refiner_checkpoint: str = spec(NO_REFINER, "Refiner checkpoint", infotext="Refiner", api="refiner_checkpoint",
                                   infotext_when="refiner", infotext_value=unless_no_refiner)
    refiner_switch_at: float = spec(0.8, "Refiner switch at", infotext="Refiner switch at", api="refiner_switch_at",
                                    minimum=0.0, maximum=1.0, step=0.01, infotext_when="refiner")
    # Stable unCLIP's image variations: how much noise is added to the input image's CLIP embedding (0 = none)
    noise_level: int = spec(0, "Noise level", infotext="Noise level", api="noise_level", minimum=0, maximum=1000,
                            step=10, infotext_value=or_none)

    mode: Mode = "img2img"

    @property
    def refiner(self) -> bool:
        """A refiner takes over before the last step."""
        return self.refiner_checkpoint not in ("", NO_REFINER) and self.refiner_switch_at < 1.0


@dataclass(frozen=True)
class InpaintRequest(Img2ImgRequest):
    mask: Image.Image | None = image_field("Mask", api="mask")
    mask_blur: int = spec(4, "Mask blur", infotext="Mask blur", api="mask_blur", minimum=0, maximum=64, step=1)
    inpainting_fill: str = spec("original", "Masked content", infotext="Masked content", api="inpainting_fill", choices=INPAINT_FILLS)
    inpaint_full_res: bool = spec(False, "Only masked", infotext="Inpaint area", api="inpaint_full_res", infotext_value=inpaint_area)
    inpaint_full_res_padding: int = spec(32, "Only masked padding, pixels", infotext="Masked area padding", api="inpaint_full_res_padding", minimum=0, maximum=256, step=4,
                                         infotext_when="inpaint_full_res")
    inpainting_mask_invert: bool = spec(False, "Inpaint not masked", infotext="Mask mode", api="inpainting_mask_invert", infotext_value=mask_mode)
    outpaint_left: int = spec(0, "Extend left", infotext="Outpaint left", minimum=0, limit="max_side", step=8, infotext_value=or_none)
    outpaint_right: int = spec(0, "Extend right", infotext="Outpaint right", minimum=0, limit="max_side", step=8, infotext_value=or_none)
    outpaint_top: int = spec(0, "Extend top", infotext="Outpaint top", minimum=0, limit="max_side", step=8, infotext_value=or_none)
    outpaint_bottom: int = spec(0, "Extend bottom", infotext="Outpaint bottom", minimum=0, limit="max_side", step=8, infotext_value=or_none)

    mode: Mode = "inpaint"

    @property
    def outpainting(self) -> bool:
        return any((self.outpaint_left, self.outpaint_right, self.outpaint_top, self.outpaint_bottom))


REQUEST_TYPES: dict[str, type[GenerationRequest]] = {
    "txt2img": Txt2ImgRequest,
    "img2img": Img2ImgRequest,
    "inpaint": InpaintRequest,
}


def field_specs(cls: type) -> dict[str, FieldSpec]:
    """The FieldSpec of each declared field of a request class, by attribute name."""
    return {f.name: f.metadata["spec"] for f in dataclasses.fields(cls) if "spec" in f.metadata}


def _limit(s: FieldSpec, limits: Limits) -> float | None:
    return getattr(limits, s.limit) if s.limit else s.maximum


def check_field(f: dataclasses.Field, value: Any, limits: Limits) -> None:
    """Raise RequestError when one declared field has the wrong type or is outside its limits."""
    s: FieldSpec = f.metadata["spec"]
    name = s.api or f.name
    if isinstance(f.default, tuple):  # a list of names (styles)
        if not isinstance(value, (tuple, list)) or not all(isinstance(item, str) for item in value):
            raise RequestError(name, f"must be a list of names, got {value!r}"[:200])
    elif isinstance(f.default, str):
        if not isinstance(value, str):
            raise RequestError(name, f"must be text, got {type(value).__name__}")
        top = _limit(s, limits)
        if top is not None and len(value) > top:
            raise RequestError(name, f"is {len(value)} characters long; the limit is {int(top)}")
        if s.choices and value not in s.choices:
            raise RequestError(name, f"must be one of {', '.join(s.choices)}; got {value!r}")
    elif isinstance(f.default, bool):
        if not isinstance(value, bool):
            raise RequestError(name, f"must be true or false, got {value!r}")
    elif isinstance(f.default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError(name, f"must be a number, got {type(value).__name__}")
        if value != value:  # NaN
            raise RequestError(name, "must be a number, got NaN")
        if isinstance(f.default, int) and not float(value).is_integer():
            raise RequestError(name, f"must be a whole number, got {value}")
        top = _limit(s, limits)
        if s.minimum is not None and value < s.minimum:
            raise RequestError(name, f"must be at least {s.minimum:g}, got {value}")
        if top is not None and value > top:
            raise RequestError(name, f"must be at most {top:g}, got {value}")


def check_fields(request: Any, limits: Limits, skip: tuple[str, ...] = ()) -> None:
    for f in dataclasses.fields(request):
        if "spec" in f.metadata and f.name not in skip and f.default is not None:
            check_field(f, getattr(request, f.name), limits)


def validate_request(request: GenerationRequest, limits: Limits, samplers: Samplers | None = None,
                     arch: Arch | None = None) -> None:
    """Raise RequestError naming the first field that is of the wrong type or outside its limits.

    With `samplers` (the Easel's, `easel.registry.samplers`) and the model family the request will run on, the
    sampler is checked too: one this Easel does not offer for that family is refused on `sampler_name`."""
    check_fields(request, limits)
    for name, api_name in (("prompt", "prompt"), ("negative_prompt", "negative_prompt"), ("hr_prompt", "hr_prompt"),
                           ("hr_negative_prompt", "hr_negative_prompt")):
        depth = bracket_depth(getattr(request, name, "") or "")
        if depth > MAX_BRACKET_DEPTH:
            raise RequestError(api_name, f"square brackets are nested {depth} deep; the limit is {MAX_BRACKET_DEPTH}")
        if name.endswith("negative_prompt") and find_hypernetwork_tags(getattr(request, name, "") or ""):
            raise RequestError(api_name, "<hypernet:…> tags apply from the prompt only (they change the model's "
                                         "cross-attention for the whole image, both prompts alike); move it to "
                                         "`prompt`")
    if samplers is not None and arch is not None:
        samplers.resolve(request.sampler, arch)
        samplers.check_schedule(request.sampler, request.scheduler, arch)
        family = getattr(arch, "value", arch)
        if request.tiled_diffusion and family not in TILED_DIFFUSION_ARCHS:
            raise RequestError("tiled_diffusion", tiled_diffusion_refusal(family))
        if request.tiling and getattr(arch, "value", arch) == "easel":
            raise RequestError("tiling", "the built-in model draws pixels with a transformer that has no padded "
                                         "convolutions, so it cannot tile; turn tiling off")
    if request.tiled_diffusion and request.tiling:
        raise RequestError("tiled_diffusion", "tiled diffusion does not combine with seamless tiling (each tile "
                                              "would wrap around on itself); turn one of them off")
    if request.tiled_diffusion and request.tiled_diffusion_overlap >= min(request.tiled_diffusion_tile_width,
                                                                          request.tiled_diffusion_tile_height):
        raise RequestError("tiled_diffusion_overlap", f"the overlap ({request.tiled_diffusion_overlap}) must be "
                                                      f"smaller than the tile ({request.tiled_diffusion_tile_width}x"
                                                      f"{request.tiled_diffusion_tile_height} latent cells)")
    for side in ("width", "height"):
        if getattr(request, side) % 8:
            raise RequestError(side, f"must be a multiple of 8, got {getattr(request, side)}")
    images = request.batch_size * request.batch_count
    if images > limits.max_images:
        raise RequestError("n_iter", f"{request.batch_size} x {request.batch_count} = {images} images; the limit "
                                      f"is {limits.max_images} images per request (batch size x batch count)")
    pixels = request.width * request.height
    if pixels > limits.max_pixels:
        raise RequestError("width", f"{request.width}x{request.height} is {pixels} pixels; the limit is {limits.max_pixels}")
    if isinstance(request, Txt2ImgRequest) and request.enable_hr and request.hr_scale > 1:
        out_w, out_h = int(request.width * request.hr_scale), int(request.height * request.hr_scale)
        if max(out_w, out_h) > limits.max_side or out_w * out_h > limits.max_pixels:
            raise RequestError("hr_scale", f"the upscaled size {out_w}x{out_h} exceeds the limits ({limits.max_side} "
                                           f"per side, {limits.max_pixels} pixels)")
    if isinstance(request, Txt2ImgRequest):
        schedule_label(request.hr_scheduler, "hr_scheduler")
    if getattr(request, "refiner", False) and request.refiner_switch_at <= 0:  # type: ignore[attr-defined]
        raise RequestError("refiner_switch_at", "must be above 0 with a refiner (the fraction of the steps the "
                                                "base model runs), got 0")
    if isinstance(request, InpaintRequest) and request.refiner:
        raise RequestError("refiner_checkpoint", "a refiner is not available for inpainting; leave it at "
                                                 f"{NO_REFINER!r}")
    if isinstance(request, Img2ImgRequest) and request.init_image is None:
        raise RequestError("init_images", "an input image is required")
    if isinstance(request, Img2ImgRequest) and request.init_image is not None:
        w, h = request.init_image.size
        if w * h > limits.max_pixels * 4:
            raise RequestError("init_images", f"image is {w}x{h}; the limit is {limits.max_pixels * 4} pixels")
    if isinstance(request, InpaintRequest):
        if request.mask is None and not request.outpainting:
            raise RequestError("mask", "a mask is required for inpainting (draw one or upload it)")
        out_w = request.width + request.outpaint_left + request.outpaint_right
        out_h = request.height + request.outpaint_top + request.outpaint_bottom
        if out_w > limits.max_side or out_h > limits.max_side:
            raise RequestError("outpaint_right" if out_w > limits.max_side else "outpaint_bottom",
                               f"the extended canvas {out_w}x{out_h} exceeds the limit of {limits.max_side} per side")


# The Ming models' referring-segmentation prompt, with the highlight colour named so the edit is readable as a mask.
DEFAULT_SEGMENT_TEMPLATE = ("Given the following instructions: {query}; please perform referring segmentation on this "
                            "image. Paint the referred object {colour}.")
HIGHLIGHTS = ("magenta", "cyan", "lime")
_TEMPLATE_PART = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def fill_segment_template(template: str, query: str, colour: str) -> str:
    """A segmentation prompt template filled in: `{query}` (exactly once) and `{colour}` are replaced as they are,
    `{{` and `}}` stand for braces, and anything else in braces is refused (RequestError naming `template`).

    The template never goes through `str.format`, whose format specs would let a short template allocate
    hundreds of megabytes (`{query:>300000000}`) or read attributes (`{query.__class__}`).
    """
    fields = [match.group(1) for match in _TEMPLATE_PART.finditer(template) if match.group(1) is not None]
    unknown = next((name for name in fields if name not in ("query", "colour")), None)
    if unknown is not None:
        shown = unknown if len(unknown) <= 40 else unknown[:40] + "..."
        raise RequestError("template", f"only {{query}} and {{colour}} may appear in braces, not {{{shown}}}; "
                                       "write {{ and }} for literal braces")
    if _TEMPLATE_PART.sub("", template).count("{") or _TEMPLATE_PART.sub("", template).count("}"):
        raise RequestError("template", "has an unmatched brace; write {{ and }} for literal braces")
    if fields.count("query") != 1:
        raise RequestError("template", "must contain {query} once (and may name the colour with {colour})")
    values = {"query": query, "colour": colour}
    return _TEMPLATE_PART.sub(lambda match: values[match.group(1)] if match.group(1) is not None
                              else match.group(0)[0], template)


@dataclass(frozen=True)
class SegmentRequest:
    """Segmentation: one mask per query line, read off an edit that paints the referent (or from CLIPSeg / SAM 3).

    `checkpoint` names an edit-capable checkpoint or a text-prompted segmenter from the model manager; empty picks
    the current edit-capable checkpoint, else the first one, else the first segmenter. `template` empty uses the
    model family's own template. `threshold` (ΔE) applies to generative masks, `mask_threshold` (probability) to
    CLIPSeg and SAM 3.
    """

    image: Image.Image | None = image_field("Image", api="image")
    query: str = spec("", "What to segment (one per line)", infotext="Query", api="query", limit="max_prompt_chars")
    checkpoint: str = spec("", "Model", infotext="Model", api="model")
    template: str = spec("", "Prompt template", infotext="Template", api="template", limit="max_prompt_chars")
    highlight: str = spec("magenta", "Highlight colour", infotext="Highlight", api="highlight", choices=HIGHLIGHTS)
    steps: int = spec(20, "Steps", infotext="Steps", api="steps", minimum=1, limit="max_steps", step=1)
    cfg_scale: float = spec(4.0, "CFG Scale", infotext="CFG scale", api="cfg_scale", minimum=0.0, maximum=30.0, step=0.5)
    seed: int = spec(0, "Seed", infotext="Seed", api="seed", minimum=-1, maximum=2**32 - 1)
    threshold: float = spec(12.0, "Change threshold (ΔE)", infotext="Threshold", api="threshold", minimum=1.0, maximum=100.0, step=1.0)
    mask_threshold: float = spec(0.4, "Mask threshold (CLIPSeg, SAM 3)", infotext="Mask threshold", api="mask_threshold", minimum=0.0, maximum=1.0, step=0.01)
    keep_largest: bool = spec(False, "Keep largest region", infotext="Keep largest", api="keep_largest")
    save_images: bool = True

    mode: Mode = "segment"

    MAX_QUERIES = 8

    @property
    def queries(self) -> list[str]:
        return [line.strip() for line in self.query.splitlines() if line.strip()]

    def validate(self, limits: Limits) -> None:
        if self.image is None:
            raise RequestError("image", "an image to segment is required")
        w, h = self.image.size
        if w * h > limits.max_pixels:
            raise RequestError("image", f"image is {w}x{h} = {w * h} pixels; the limit is {limits.max_pixels}")
        if not isinstance(self.query, str) or not self.queries:
            raise RequestError("query", "type what to segment, e.g. 'the red circle'")
        if len(self.queries) > self.MAX_QUERIES:
            raise RequestError("query", f"{len(self.queries)} queries; the limit is {self.MAX_QUERIES} at once")
        check_fields(self, limits)
        if self.template:
            fill_segment_template(self.template, "", "")


# Editing by instruction ----------------------------------------------------------------------------------
MAX_EDIT_IMAGES = 3  # the source and up to two more reference images (Qwen-Image-Edit Plus takes several)


@dataclass(frozen=True)
class EditRequest:
    """Edit an image by instruction ("make the red circle blue") with an edit-capable checkpoint.

    `checkpoint` empty picks the current checkpoint when it can edit, else the first edit-capable one.
    `references` are further input images for models that take several (Qwen-Image-Edit Plus). `mask` (white =
    may change) keeps the edit inside it: outside, the result is the source image's pixels exactly.
    `image_guidance` is InstructPix2Pix's image CFG scale; other families do not use it.
    """

    image: Image.Image | None = image_field("Image", api="image")
    references: tuple[Image.Image, ...] = field(default=(), compare=False, repr=False)
    mask: Image.Image | None = image_field("Mask", api="mask")
    instruction: str = spec("", "Instruction", api="instruction", limit="max_prompt_chars")
    checkpoint: str = spec("", "Model", infotext="Model", api="model")
    steps: int = spec(20, "Steps", infotext="Steps", api="steps", minimum=1, limit="max_steps", step=1)
    guidance: float = spec(4.0, "Guidance", infotext="CFG scale", api="guidance", minimum=0.0, maximum=30.0, step=0.5)
    image_guidance: float = spec(1.5, "Image guidance (InstructPix2Pix)", infotext="Image CFG scale",
                                 api="image_guidance", minimum=0.0, maximum=30.0, step=0.1)
    seed: int = spec(0, "Seed", infotext="Seed", api="seed", minimum=-1, maximum=2**32 - 1)
    save_images: bool = True

    mode: Mode = "edit"

    def validate(self, limits: Limits) -> None:
        if self.image is None:
            raise RequestError("image", "an image to edit is required")
        for name, image in (("image", self.image), *(("images", r) for r in self.references)):
            if not isinstance(image, Image.Image):
                raise RequestError(name, f"must be an image, got {type(image).__name__}")
            w, h = image.size
            if w * h > limits.max_pixels:
                raise RequestError(name, f"image is {w}x{h} = {w * h} pixels; the limit is {limits.max_pixels}")
        if 1 + len(self.references) > MAX_EDIT_IMAGES:
            raise RequestError("images", f"{1 + len(self.references)} images; the limit is {MAX_EDIT_IMAGES} "
                                         "(the image to edit and up to two references)")
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise RequestError("instruction", "type what to change, e.g. 'make the red circle blue'")
        if self.mask is not None:
            if not isinstance(self.mask, Image.Image):
                raise RequestError("mask", f"must be an image, got {type(self.mask).__name__}")
            if self.mask.convert("L").point(lambda v: 255 if v >= 128 else 0).getbbox() is None:
                raise RequestError("mask", "the mask is empty (all black): nothing may change; paint the region "
                                           "to edit in white, or send no mask")
        check_fields(self, limits)
