"""Running ControlNet units: the pipeline wrapper that turns a mode's pipeline call into a ControlNet one.

For each diffusers call a mode makes (txt2img, img2img, inpaint, and the hires fix's img2img pass), `ControlNetRunner`
reads the request's units, checks that every model fits the checkpoint's family, makes each unit's control map
(preprocessor on the unit's image, or on the mode's input image when the unit has none, then fitted to the
generation size by the unit's resize mode), loads the models and calls the matching diffusers ControlNet pipeline,
built with `from_pipe` so it shares every weight of the loaded checkpoint:

    family          txt2img                              img2img                                  inpaint
    SD 1.x / 2.x    StableDiffusionControlNetPipeline    StableDiffusionControlNetImg2ImgPipeline  ...InpaintPipeline
    SDXL            StableDiffusionXLControlNetPipeline  StableDiffusionXLControlNetImg2ImgPipeline ...InpaintPipeline
    Flux.1          FluxControlNetPipeline               FluxControlNetImg2ImgPipeline             ...InpaintPipeline
    Z-Image         ZImageControlNetPipeline             (none in diffusers)                       ...InpaintPipeline
    SD3             StableDiffusion3ControlNetPipeline   -                                         -
    Qwen-Image      QwenImageControlNetPipeline          -                                         -

Several units become a `MultiControlNetModel` (Flux, SD3 and Qwen-Image have their own) with one weight and one
guidance window per unit. Control modes follow sd-webui-controlnet: "Balanced" adds the ControlNet's residuals at
the unit's weight; "My prompt is more important" scales the residual of block i (counting from the first down
block, the middle block last) by 0.825^(12 - i), so shallow blocks are weak and the middle one full; "ControlNet
is more important" does the same and also leaves the unconditional half of classifier-free guidance without
control, which lets the control map outweigh the prompt. Both are applied per unit with forward hooks on the
ControlNet module (SD 1.x/2.x and SDXL; the transformer families take "Balanced" only).
"""
from __future__ import annotations

import inspect
import logging
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable

from PIL import Image

from webui.extension_api import ModelFileError, PipelineCall, RequestError

from .models import FAMILY_LABELS, ControlNetEntry, ControlNetModels
from .conditions import color_fix, inpaint_condition, union_group, union_modes
from .preprocessors import COLORFIX_MODULES, INPAINT_MODULES, REFERENCE_MODULES, Preprocessors
from .t2iadapter import is_t2i_adapter
from .units import (BALANCED, CONTROLNET_MORE_IMPORTANT, CROP_AND_RESIZE, HIGH_RES_ONLY, JUST_RESIZE,
                    LOW_RES_ONLY, RESIZE_AND_FILL, ControlUnit)

log = logging.getLogger("easel.extensions.controlnet")

FIELD = "alwayson_scripts.controlnet"
SOFT_INJECTION_BASE = 0.825  # sd-webui-controlnet's per-block decay for the non-balanced control modes
SOFT_INJECTION_TOP = 12  # the middle block of SD 1.x is block 12 and keeps full strength

# (pipeline group, task) -> diffusers pipeline class name
PIPELINES: dict[tuple[str, str], str] = {
    ("sd", "txt2img"): "StableDiffusionControlNetPipeline",
    ("sd", "img2img"): "StableDiffusionControlNetImg2ImgPipeline",
    ("sd", "inpaint"): "StableDiffusionControlNetInpaintPipeline",
    ("sdxl", "txt2img"): "StableDiffusionXLControlNetPipeline",
    ("sdxl", "img2img"): "StableDiffusionXLControlNetImg2ImgPipeline",
    ("sdxl", "inpaint"): "StableDiffusionXLControlNetInpaintPipeline",
    ("flux", "txt2img"): "FluxControlNetPipeline",
    ("flux", "img2img"): "FluxControlNetImg2ImgPipeline",
    ("flux", "inpaint"): "FluxControlNetInpaintPipeline",
    ("zimage", "txt2img"): "ZImageControlNetPipeline",
    ("zimage", "inpaint"): "ZImageControlNetInpaintPipeline",
    ("sd3", "txt2img"): "StableDiffusion3ControlNetPipeline",
    ("qwen", "txt2img"): "QwenImageControlNetPipeline",
    ("sdxl-union", "txt2img"): "StableDiffusionXLControlNetUnionPipeline",
    ("sdxl-union", "img2img"): "StableDiffusionXLControlNetUnionImg2ImgPipeline",
    ("sdxl-union", "inpaint"): "StableDiffusionXLControlNetUnionInpaintPipeline",
}
# Several units of one family: diffusers' container for their ControlNets.
MULTI = {"flux": "FluxMultiControlNetModel", "sd3": "SD3MultiControlNetModel", "qwen": "QwenImageMultiControlNetModel"}
BALANCED_ONLY = ("flux", "zimage", "sd3", "qwen")  # no per-block residuals to scale: "Balanced" only
FLUX_CONTROL_PIPELINES = ("FluxControlPipeline", "FluxControlImg2ImgPipeline", "FluxControlInpaintPipeline")
GROUPS = {"sd1": "sd", "sd2": "sd", "sdxl": "sdxl", "flux": "flux", "zimage": "zimage", "sd3": "sd3",
          "qwenimage": "qwen"}
CHECKPOINT_LABELS = {**FAMILY_LABELS, "sd3": "SD3", "qwenimage": "Qwen-Image", "easel": "the Easel built-in model"}


@dataclass(frozen=True)
class PreparedUnit:
    """A unit ready for the pipeline: its model entry and its control map at the generation size."""

    index: int
    unit: ControlUnit
    entry: ControlNetEntry | None  # None for a reference unit (no ControlNet model)
    control: Any  # RGB PIL image at exactly the generation size; inpaint_only: a [1, 3, H, W] tensor


# Control images --------------------------------------------------------------------------------------------------
def pixel_perfect_resolution(source: tuple[int, int], target: tuple[int, int], resize_mode: str) -> int:
    """The preprocessor resolution whose map needs no rescaling after the resize mode fits it to `target`.

    The map's shorter side is scaled by the same factor the resize mode applies to the image: the larger of the two
    axis ratios when the image is cropped to cover the target, the smaller when it is fitted inside it.
    """
    (width, height), (target_w, target_h) = source, target
    ratio_w, ratio_h = target_w / width, target_h / height
    scale = min(ratio_w, ratio_h) if resize_mode == RESIZE_AND_FILL else max(ratio_w, ratio_h)
    return max(64, int(round(scale * min(width, height))))


def fit_image(image: Image.Image, size: tuple[int, int], resize_mode: str) -> Image.Image:
    """`image` at exactly `size`: stretched (Just Resize), scaled to cover and centre-cropped (Crop and Resize), or
    scaled to fit and centred on black (Resize and Fill)."""
    image = image.convert("RGB")
    target_w, target_h = size
    if image.size == size:
        return image
    if resize_mode == JUST_RESIZE:
        return image.resize(size, Image.LANCZOS)
    width, height = image.size
    if resize_mode == CROP_AND_RESIZE:
        scale = max(target_w / width, target_h / height)
        scaled = image.resize((max(target_w, math.ceil(width * scale)), max(target_h, math.ceil(height * scale))),
                              Image.LANCZOS)
        left, top = (scaled.width - target_w) // 2, (scaled.height - target_h) // 2
        return scaled.crop((left, top, left + target_w, top + target_h))
    scale = min(target_w / width, target_h / height)
    scaled = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.LANCZOS)
    canvas = Image.new("RGB", size, (0, 0, 0))
    canvas.paste(scaled, ((target_w - scaled.width) // 2, (target_h - scaled.height) // 2))
    return canvas


def generation_size(call: PipelineCall) -> tuple[int, int]:
    """(width, height) of the images this call makes."""
    kwargs = call.kwargs
    if kwargs.get("width") and kwargs.get("height"):
        return int(kwargs["width"]), int(kwargs["height"])
    image = kwargs.get("image")
    first = image[0] if isinstance(image, (list, tuple)) and image else image
    if isinstance(first, Image.Image):
        return first.size
    raise ValueError(f"{FIELD}: cannot tell the size of this {call.task} generation")


def input_image(call: PipelineCall) -> Image.Image | None:
    """The mode's own input image (img2img's init image, inpaint's working image), if it has one."""
    image = call.kwargs.get("image")
    first = image[0] if isinstance(image, (list, tuple)) and image else image
    return first if isinstance(first, Image.Image) else None


# Control-mode hooks ----------------------------------------------------------------------------------------------
def soft_injection_factors(count: int) -> list[float]:
    """Per-residual scales for `count` residuals (down blocks first, middle block last)."""
    return [SOFT_INJECTION_BASE ** float(SOFT_INJECTION_TOP - i) for i in range(count)]


def control_mode_hook(control_mode: str, guided: Callable[[], bool]) -> Callable[..., Any]:
    """A forward hook for a ControlNetModel that applies a non-balanced control mode to its residuals.

    The module returns `(down_block_res_samples, mid_block_res_sample)`, each [B, C, h, w]; under classifier-free
    guidance B = 2N with the unconditional half first, which "ControlNet is more important" zeroes.
    """
    uncond_free = control_mode == CONTROLNET_MORE_IMPORTANT

    def hook(module: Any, args: Any, output: Any) -> Any:
        import torch

        as_tuple = isinstance(output, tuple)
        down, mid = (output[0], output[1]) if as_tuple else (output.down_block_res_samples,
                                                             output.mid_block_res_sample)
        factors = soft_injection_factors(len(down) + 1)
        down = [sample * factor for sample, factor in zip(down, factors)]  # each [B, C, h, w]
        mid = mid * factors[-1]  # [B, C, h, w]
        if uncond_free and guided() and mid.shape[0] % 2 == 0:
            half = mid.shape[0] // 2
            down = [torch.cat([torch.zeros_like(s[:half]), s[half:]]) for s in down]
            mid = torch.cat([torch.zeros_like(mid[:half]), mid[half:]])
        if as_tuple:
            return (down, mid, *output[2:])
        return type(output)(down_block_res_samples=down, mid_block_res_sample=mid)

    return hook


# The runner ------------------------------------------------------------------------------------------------------
class ControlNetRunner:
    """The pipeline wrapper (see `ExtensionAPI.wrap_pipeline`) and the after-generate infotext hook."""

    def __init__(self, models: ControlNetModels, preprocessors: Preprocessors,
                 parse: Callable[[Any], list[ControlUnit]], name: str = "controlnet") -> None:
        self.models = models
        self.preprocessors = preprocessors
        self.parse = parse
        self.name = name
        # Control maps of the request being run, by (unit, source image, size); each entry keeps its source image
        # (and the request is kept), so an id is never reused while its entry exists.
        self._maps: dict[tuple[Any, ...], tuple[Image.Image, Image.Image]] = {}
        self._maps_owner: Any = None
        self._lock = threading.Lock()
        self.ip_title: Callable[[str], str] | None = None

    def title_of(self, unit: ControlUnit) -> str:
        """The infotext title of a unit's model ("name [hash]"); IP-Adapter units get theirs from `ip_title`."""
        return self.ip_title(unit.model) if self.ip_title is not None else unit.model

    def units(self, request: Any) -> list[ControlUnit]:
        """The enabled units of a request (parsing them when code put raw arguments there)."""
        raw = (getattr(request, "extension_args", None) or {}).get(self.name)
        if raw is None:
            return []
        if isinstance(raw, list) and all(isinstance(u, ControlUnit) for u in raw):
            return [u for u in raw if u.enabled]
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise RequestError(FIELD, str(exc)) from None

    # The wrapper ---------------------------------------------------------------------------------------------
    def __call__(self, call: PipelineCall, run: Callable[[PipelineCall], Any]) -> Any:
        units = self.units(call.request)
        hires_pass = getattr(call.request, "mode", "") == "txt2img" and call.task == "img2img"
        hires_on = bool(getattr(call.request, "enable_hr", False))
        skipped = HIGH_RES_ONLY if hires_on and not hires_pass else LOW_RES_ONLY if hires_pass else None
        # IP-Adapter and T2I-Adapter units run in their own wrappers (ipadapter.py, t2iadapter.py)
        units = [unit for unit in units if unit.hr_option != skipped and not unit.module.startswith("ip-adapter")
                 and not (unit.model and is_t2i_adapter(self.models.find(unit.model)))]
        kind = type(call.pipe).__name__
        if kind in FLUX_CONTROL_PIPELINES:
            return self.run_flux_control(call, run, units)
        units = [unit for unit in units if unit.weight > 0.0]  # weight 0: exactly the image without the unit
        if not units:
            return run(call)
        if kind == "FluxFillPipeline":
            raise RequestError(FIELD, f"{call.checkpoint} is a Flux.1 Fill checkpoint; it takes no ControlNet units")
        group = self.check_family(call, units)
        prepared = self.prepare(call, units)
        return self.run_units(call, run, group, prepared)

    def run_flux_control(self, call: PipelineCall, run: Callable[[PipelineCall], Any],
                         units: list[ControlUnit]) -> Any:
        """A Flux.1 Depth/Canny checkpoint: its control image is the one unit's map (the unit has no model)."""
        if not units:
            raise RequestError(FIELD, f"{call.checkpoint} is a Flux.1 Depth/Canny checkpoint and needs a control "
                                      f"image: send one ControlNet unit with model \"None\" and its image (or a "
                                      f"preprocessor such as canny or depth_midas)")
        if len(units) > 1:
            raise RequestError(FIELD, f"{call.checkpoint} takes one control image: send one ControlNet unit")
        unit = units[0]
        at = f"{FIELD}.args[{unit.index}]"
        checks = ((unit.model, "model", "the checkpoint is its own ControlNet; send model \"None\""),
                  (unit.module in REFERENCE_MODULES + INPAINT_MODULES, "module",
                   f"{unit.module} does not make a control image for a Flux.1 Depth/Canny checkpoint"),
                  (unit.weight != 1.0, "weight", "the checkpoint's control has no weight; send 1"),
                  (unit.control_mode != BALANCED, "control_mode", f"only {BALANCED!r}"),
                  (unit.guidance_start > 0.0 or unit.guidance_end < 1.0, "guidance_start",
                   "the checkpoint's control acts on every step; send guidance_start 0 and guidance_end 1"))
        for failed, key, message in checks:
            if failed:
                raise RequestError(f"{at}.{key}", message)
        prepared = self.prepare(call, units)[0]
        kwargs = {**call.kwargs, "control_image": prepared.control}
        if not kwargs.get("width"):
            kwargs["width"], kwargs["height"] = generation_size(call)
        output = run(call.replace(kwargs=kwargs))
        if unit.module in COLORFIX_MODULES and kwargs.get("output_type", "pil") == "pil":
            output.images = [color_fix(image, prepared.control, unit) for image in output.images]
        return output

    def check_family(self, call: PipelineCall, units: list[ControlUnit]) -> str:
        """The pipeline group for this checkpoint; RequestError when a unit's model is for another family."""
        group = GROUPS.get(call.arch)
        if group is None:
            raise RequestError(FIELD, f"ControlNet runs with SD 1.x, SD 2.x, SDXL, SD3, Flux.1, Z-Image and "
                                      f"Qwen-Image checkpoints; {call.checkpoint} is "
                                      f"{CHECKPOINT_LABELS.get(call.arch, call.arch)}")
        if (group, call.task) not in PIPELINES:
            if group in ("sd3", "qwen"):  # diffusers' inpaint pipelines there need inpainting ControlNets
                raise RequestError(FIELD, f"{CHECKPOINT_LABELS.get(call.arch, call.arch)} ControlNets run in "
                                          f"txt2img only")
            raise RequestError(FIELD, f"diffusers has no {call.task} ControlNet pipeline for "
                                      f"{CHECKPOINT_LABELS.get(call.arch, call.arch)}; use txt2img or inpaint")
        for unit in units:
            i = unit.index
            if unit.module in REFERENCE_MODULES or unit.module in INPAINT_MODULES:
                if group not in ("sd", "sdxl"):
                    raise RequestError(f"{FIELD}.args[{i}].module",
                                       f"{unit.module} runs with SD 1.x, SD 2.x and SDXL checkpoints; {call.checkpoint} "
                                       f"is {CHECKPOINT_LABELS.get(call.arch, call.arch)}")
                if unit.module in REFERENCE_MODULES:
                    continue
            if not unit.model:
                raise RequestError(f"{FIELD}.args[{i}].model",
                                   "choose a ControlNet model (GET /controlnet/model_list lists them)")
            entry = self.models.find(unit.model)
            try:
                family = self.models.family(entry)  # reads a pickle file's tensors only; refuses anything else
            except ModelFileError as exc:
                raise RequestError(f"{FIELD}.args[{i}].model", str(exc).removeprefix("model: ")) from None
            if family != call.arch:
                raise RequestError(f"{FIELD}.args[{i}].model",
                                   f"{entry.name} is a ControlNet for {FAMILY_LABELS.get(family, family)}, but the "
                                   f"checkpoint {call.checkpoint} is {CHECKPOINT_LABELS.get(call.arch, call.arch)}; "
                                   f"choose a ControlNet made for it")
            if group in BALANCED_ONLY and unit.control_mode != BALANCED:
                raise RequestError(f"{FIELD}.args[{i}].control_mode",
                                   f"{FAMILY_LABELS[family]} ControlNets take only {BALANCED!r}")
            if group == "zimage" and (unit.guidance_start > 0.0 or unit.guidance_end < 1.0):
                raise RequestError(f"{FIELD}.args[{i}].guidance_start",
                                   "Z-Image ControlNets act on every step; send guidance_start 0 and guidance_end 1")
        if sum(unit.module in REFERENCE_MODULES for unit in units) > 1:
            second = [unit for unit in units if unit.module in REFERENCE_MODULES][1]
            raise RequestError(f"{FIELD}.args[{second.index}].module", "one reference unit per generation")
        if group in ("zimage", "qwen") and len(units) > 1:  # diffusers runs one ControlNet there
            raise RequestError(FIELD, f"{CHECKPOINT_LABELS.get(call.arch, call.arch)} takes one ControlNet unit at "
                                      f"a time")
        return group

    def prepare(self, call: PipelineCall, units: list[ControlUnit]) -> list[PreparedUnit]:
        """Each unit's control map at the generation size (made once per request and size)."""
        size = generation_size(call)
        with self._lock:
            if self._maps_owner is not call.request:
                self._maps, self._maps_owner = {}, call.request
        prepared = []
        for unit in units:
            i = unit.index
            source = unit.image if unit.image is not None else input_image(call)
            if source is None:
                raise RequestError(f"{FIELD}.args[{i}].image", f"{call.task} has no input image to control with; "
                                                               f"give the unit an image")
            key = (i, id(source), size)
            cached = self._maps.get(key)
            if cached is not None and cached[0] is source:
                control = cached[1]
            else:
                try:
                    control = self.control_map(unit, source, size)
                except ModelFileError as exc:  # an annotator file that was refused or is not weights
                    raise RequestError(f"{FIELD}.args[{i}].module", str(exc)) from None
                self._maps[key] = (source, control)
            if unit.module in INPAINT_MODULES:
                control = inpaint_condition(control, self.inpaint_mask(call, unit, size))
            entry = self.models.find(unit.model) if unit.model else None
            prepared.append(PreparedUnit(i, unit, entry, control))
        return prepared

    def inpaint_mask(self, call: PipelineCall, unit: ControlUnit, size: tuple[int, int]) -> Image.Image:
        """inpaint_only's mask at `size`: the unit's own, else the inpaint tab's (white = repaint)."""
        mask = unit.mask
        if mask is None:
            given = call.kwargs.get("mask_image")
            mask = given[0] if isinstance(given, (list, tuple)) and given else given
        if not isinstance(mask, Image.Image):
            raise RequestError(f"{FIELD}.args[{unit.index}].mask",
                               f"{unit.module} needs a mask: send the unit's mask (white = repaint) or inpaint "
                               f"with a mask")
        return fit_image(mask.convert("L").convert("RGB"), size, unit.resize_mode).convert("L")

    def control_map(self, unit: ControlUnit, source: Image.Image, size: tuple[int, int]) -> Image.Image:
        """The unit's preprocessor run on `source`, fitted to `size` by its resize mode."""
        resolution = (pixel_perfect_resolution(source.size, size, unit.resize_mode) if unit.pixel_perfect
                      else unit.processor_res)
        detected = self.preprocessors.run(unit.module, source, resolution, unit.threshold_a, unit.threshold_b)
        return fit_image(detected, size, unit.resize_mode)

    def run_units(self, call: PipelineCall, run: Callable[[PipelineCall], Any], group: str,
                  prepared: list[PreparedUnit]) -> Any:
        pipe = call.pipe
        reference = next((item for item in prepared if item.unit.module in REFERENCE_MODULES), None)
        prepared = [item for item in prepared if item.unit.module not in REFERENCE_MODULES]
        colorfix = [item for item in prepared if item.unit.module in COLORFIX_MODULES]
        if reference is not None and reference.unit.weight > 0.0:
            from .reference import make_state, reference_hooks

            try:
                state = make_state(pipe, reference.control, generation_size(call), reference.unit.module,
                                   reference.unit.weight, 0.5 if reference.unit.threshold_a is None
                                   else min(max(float(reference.unit.threshold_a), 0.0), 1.0))
            except ValueError as exc:
                raise RequestError(f"{FIELD}.args[{reference.index}].module", str(exc)) from None
            with reference_hooks(pipe, state):
                return self._run_controlnets(call, run, group, prepared, colorfix)
        return self._run_controlnets(call, run, group, prepared, colorfix)

    def _run_controlnets(self, call: PipelineCall, run: Callable[[PipelineCall], Any], group: str,
                         prepared: list[PreparedUnit], colorfix: list[PreparedUnit]) -> Any:
        if not prepared:  # reference units only: the checkpoint's own pipeline, its UNet hooked
            return run(call)
        import diffusers

        pipe = call.pipe
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        device, dtype = pipe._execution_device, denoiser.dtype
        seen: dict[str, int] = {}
        nets = []
        for item in prepared:  # the same model twice gets a second copy, so each unit's hook acts on its own
            copy = seen.get(str(item.entry.path), 0)
            seen[str(item.entry.path)] = copy + 1
            try:
                nets.append(self.models.load(item.entry, device, dtype, copy))
            except RequestError as exc:  # not a ControlNet Easel runs, or a pickle-only folder
                raise RequestError(f"{FIELD}.args[{item.index}].model", exc.message) from None
            except ModelFileError as exc:  # refused (code in the file) or not weights; the reader names it "model"
                raise RequestError(f"{FIELD}.args[{item.index}].model", str(exc).removeprefix("model: ")) from None
        group = union_group(prepared, nets, group)
        multi = len(nets) > 1
        if multi:
            # the union pipelines wrap a list in their own container (diffusers does not export it)
            controlnet = list(nets) if group == "sdxl-union" else getattr(diffusers, MULTI.get(group,
                                                                                             "MultiControlNetModel"))(nets)
        else:
            controlnet = nets[0]
        if group == "zimage" and call.task == "inpaint" and \
                nets[0].config.control_in_dim == pipe.transformer.config.in_channels:
            raise RequestError(f"{FIELD}.args[{prepared[0].index}].model",
                               f"{prepared[0].entry.name} takes no mask (its control input has as many channels as "
                               f"the latents); Z-Image inpainting needs a ControlNet made for it, such as the "
                               f"Union 2.0 models")
        cls = getattr(diffusers, PIPELINES[(group, call.task)])
        control_pipe = cls.from_pipe(pipe, controlnet=controlnet)

        kwargs = dict(call.kwargs)
        images = [item.control for item in prepared]
        weights = [item.unit.weight for item in prepared]
        key = "image" if group in ("sd", "sdxl") and call.task == "txt2img" else "control_image"
        kwargs[key] = images if multi else images[0]
        kwargs["controlnet_conditioning_scale"] = weights if multi else weights[0]
        if group != "zimage":
            kwargs["control_guidance_start"] = [item.unit.guidance_start for item in prepared]
            kwargs["control_guidance_end"] = [item.unit.guidance_end for item in prepared]
        union = union_modes(prepared, nets, group)
        if union is not None:
            kwargs["control_mode"] = union if multi else union[0]
        accepted = inspect.signature(cls.__call__).parameters
        if "width" in accepted and "height" in accepted and not kwargs.get("width"):
            # Some ControlNet img2img pipelines (Flux's) default to their model's native size, not the image's.
            kwargs["width"], kwargs["height"] = generation_size(call)
        dropped = [name for name in kwargs if name not in accepted]
        for name in dropped:  # e.g. Z-Image's inpaint pipeline has no strength: it always denoises fully
            log.info("%s takes no %s; left out", cls.__name__, name)
            kwargs.pop(name)

        handles = []
        try:
            for item, net in zip(prepared, nets):
                if item.unit.control_mode != BALANCED:
                    hook = control_mode_hook(item.unit.control_mode,
                                             lambda: bool(getattr(control_pipe, "do_classifier_free_guidance",
                                                                  False)))
                    handles.append(net.register_forward_hook(hook))
            output = run(call.replace(pipe=control_pipe, kwargs=kwargs))
        finally:
            for handle in handles:
                handle.remove()
        for item in colorfix:
            if isinstance(getattr(output, "images", None), list) and kwargs.get("output_type", "pil") == "pil":
                output.images = [color_fix(image, item.control, item.unit) for image in output.images]
        return output

    # Infotext ------------------------------------------------------------------------------------------------
    def after_generate(self, request: Any, generated: list[Any]) -> list[Any] | None:
        """Record each unit as AUTOMATIC1111 does: `ControlNet 0: "Module: canny, Model: name [hash], ..."`."""
        from .units import infotext_value

        try:
            units = self.units(request)
        except ValueError:
            return None
        if not units:
            return None
        entries = {}
        for unit in units:
            if unit.module.startswith("ip-adapter"):
                entries[unit.index] = infotext_value(unit, self.title_of(unit), (None, None))
                continue
            title = self.models.title(self.models.find(unit.model)) if unit.model else "None"
            module = self.preprocessors.module(unit.module)
            thresholds = tuple(given if given is not None else (slider.value if slider is not None else None)
                               for given, slider in ((unit.threshold_a, module.threshold_a),
                                                     (unit.threshold_b, module.threshold_b)))
            entries[unit.index] = infotext_value(unit, title, thresholds)
        for item in generated:
            for i, text in entries.items():
                item.extra[f"ControlNet {i}"] = text
        return generated
