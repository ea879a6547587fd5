"""Jobs that are not generations but must run on the worker that owns the device.

An `EngineTask` is queued like a generation request (`Engine.submit`) so it never races one: upscaling an
image (the Extras tab and `/sdapi/v1/extra-single-image`), unloading every model from memory, and an extension's
own work on the device (`CallTask`, through `ExtensionAPI.run_on_worker`). Each task validates itself before
it is queued and runs itself on the worker (`run(engine, job)`); extension hooks (`before_generate`,
`after_generate`) do not see tasks.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from PIL import Image

from webui import __version__
from webui.engine.outputs import mode_folder
from webui.engine.upscalers import NONE, UpscalerLoadError, target_size
from webui.engine.worker import Job, JobResult, release_memory
from webui.infotext import format_infotext
from webui.requests import Limits, RequestError

if TYPE_CHECKING:
    from webui.engine.engine import Engine

log = logging.getLogger(__name__)

MAX_UPSCALE = 8.0


@dataclass(frozen=True)
class EngineTask:
    """A job for the worker that is not a generation."""

    mode: str = "task"

    def validate(self, limits: Limits) -> None:
        """Raise RequestError naming the field that is wrong (before the task is queued)."""

    def run(self, engine: "Engine", job: Job) -> JobResult:
        raise NotImplementedError


@dataclass(frozen=True)
class UpscaleRequest(EngineTask):
    """Upscale one image, like AUTOMATIC1111's Extras tab: by a factor, or to a width and height.

    With `upscaler_2` and a visibility above 0, the result of the second upscaler is blended over the first.
    `crop` with an explicit size fills it and crops the overflow (otherwise the image is stretched).
    """

    image: Image.Image | None = field(default=None, compare=False, repr=False)
    upscaler: str = "Lanczos"
    scale: float = 2.0
    width: int = 0  # with height: the exact output size, instead of `scale`
    height: int = 0
    crop: bool = True
    upscaler_2: str = NONE
    upscaler_2_visibility: float = 0.0
    save_images: bool = True
    # face restoration (webui.engine.face_restore), GFPGAN then CodeFormer, each blended by its own visibility
    # (0 = off), before upscaling unless `upscale_first`; CodeFormer's fidelity weight
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.5
    upscale_first: bool = False
    mode: str = "extras"

    @property
    def upscaling(self) -> bool:
        """Anything to upscale: a first upscaler, or a second one that shows."""
        return self.upscaler.strip() != NONE or (self.upscaler_2.strip() != NONE and self.upscaler_2_visibility > 0)

    @property
    def restoring(self) -> list[tuple[str, float]]:
        """(restorer, visibility) of each face restorer that runs, in order."""
        return [(name, v) for name, v in (("GFPGAN", self.gfpgan_visibility),
                                          ("CodeFormer", self.codeformer_visibility)) if v > 0]

    def validate(self, limits: Limits) -> None:
        if self.image is None:
            raise RequestError("image", "an image to upscale is required")
        if not isinstance(self.upscaler, str) or not self.upscaler.strip():
            raise RequestError("upscaler_1", "pick an upscaler")
        for name in ("gfpgan_visibility", "codeformer_visibility", "codeformer_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise RequestError(name, f"must be between 0 and 1, got {value!r}")
        if not self.upscaling and not self.restoring:
            raise RequestError("upscaler_1", "pick an upscaler (None leaves the image as it is) or a face restorer")
        if not 0.0 <= self.upscaler_2_visibility <= 1.0:
            raise RequestError("extras_upscaler_2_visibility", f"must be between 0 and 1, got {self.upscaler_2_visibility}")
        explicit = bool(self.width and self.height)
        if explicit:
            for name, value in (("upscaling_resize_w", self.width), ("upscaling_resize_h", self.height)):
                if value < 1 or value > limits.max_side * 4:
                    raise RequestError(name, f"must be between 1 and {limits.max_side * 4}, got {value}")
        elif not 1.0 <= self.scale <= MAX_UPSCALE:
            raise RequestError("upscaling_resize", f"must be between 1 and {MAX_UPSCALE:g}, got {self.scale}")
        width, height = self.output_size()
        if width * height > limits.max_pixels * 4:
            field_name = "upscaling_resize_w" if explicit else "upscaling_resize"
            raise RequestError(field_name, f"the result would be {width}x{height}; the limit is "
                                           f"{limits.max_pixels * 4} pixels")

    def output_size(self) -> tuple[int, int]:
        assert self.image is not None
        if not self.upscaling:  # face restoration only: the image keeps its size
            return self.image.size
        return target_size(self.image.size, self.scale, self.width or None, self.height or None)

    def run(self, engine: "Engine", job: Job) -> JobResult:
        assert self.image is not None
        image = self.image.convert("RGB")
        size = self.output_size()
        second_shows = self.upscaler_2 != NONE and self.upscaler_2_visibility > 0
        job.update(step=0, total_steps=(1 + second_shows if self.upscaling else 0) + len(self.restoring))
        params: dict[str, Any] = {}
        if not self.upscale_first:
            image, params = self._faces_restored(engine, job, image)
        first = image
        if self.upscaling:
            first = self._upscaled(engine, image, self.upscaler, size, "upscaler_1")
            job.update(step=job.step + 1)
            if second_shows:
                second = self._upscaled(engine, image, self.upscaler_2, size, "upscaler_2")
                first = Image.blend(first, second, self.upscaler_2_visibility)
                job.update(step=job.step + 1)
            params |= {
                "Postprocess upscale by": None if self.width and self.height else _number(self.scale),
                "Postprocess upscale to": f"{size[0]}x{size[1]}" if self.width and self.height else None,
                "Postprocess upscaler": self.upscaler,
                "Postprocess upscaler 2": self.upscaler_2 if self.upscaler_2_visibility > 0 else None,
            }
        if self.upscale_first:
            first, faces = self._faces_restored(engine, job, first)
            params |= faces
        params["Version"] = f"Easel {__version__}"
        text = format_infotext("", "", params).lstrip("\n")
        result = JobResult(images=[first], infotexts=[text], seeds=[-1])
        if self.save_images and engine.settings.user.save_images:
            folder = mode_folder(engine.settings.outputs_dir, self.mode)
            result.paths.append(engine.save_output(first, folder, -1, text, engine.settings.user.filename_digits))
        job.update(result=result)
        return result

    def _faces_restored(self, engine: "Engine", job: Job, image: Image.Image) -> tuple[Image.Image, dict[str, Any]]:
        """The image after GFPGAN and CodeFormer (those with a visibility), and the infotext entries they add."""
        from webui.engine.context import ModeContext
        from webui.engine.face_restore import load_or_refuse, restore_faces

        params: dict[str, Any] = {}
        if not self.restoring:
            return image, params
        ctx = ModeContext(engine.manager, job, samplers=engine.registry.samplers)
        for name, visibility in self.restoring:
            field_name = f"{name.lower()}_visibility"
            load_or_refuse(engine.face_restorers, name, field_name)
            options = dataclasses.replace(engine.face_options(None, name, visibility),
                                          codeformer_weight=self.codeformer_weight)
            try:
                image, entries = restore_faces(ctx, engine.face_restorers, image, options)
            except RequestError as exc:  # no face finder
                raise RequestError(field_name, exc.message) from None
            params[f"{name} visibility"] = _number(visibility)
            if name == "CodeFormer":
                params["CodeFormer weight"] = _number(self.codeformer_weight)
            params |= {key.replace("Face restoration", name): value for key, value in entries.items()
                       if key.startswith("Face restoration ")}
            job.update(step=job.step + 1)
        return image, params

    def _upscaled(self, engine: "Engine", image: Image.Image, name: str, size: tuple[int, int],
                  field_name: str) -> Image.Image:
        try:
            return self._upscaled_by(engine, image, name, size)
        except UpscalerLoadError as exc:  # a refused or broken model file: the client's choice, named
            raise RequestError(field_name, str(exc)) from None

    def _upscaled_by(self, engine: "Engine", image: Image.Image, name: str, size: tuple[int, int]) -> Image.Image:
        if name == NONE:
            return image.resize(size, Image.LANCZOS)
        if self.crop and self.width and self.height:
            # crop the overflow first, so nothing larger than the result is ever made (an 8x1024 image filling
            # 1024x1024 would otherwise be upscaled to 1024x131072 before its crop)
            image = image.crop(cover_box(image.size, size))
        return engine.upscalers.upscale(image, name, size, engine.settings.user.limits().max_pixels * 4)


@dataclass(frozen=True)
class CallTask(EngineTask):
    """An extension's work that runs a model outside a generation (ControlNet's `/controlnet/detect`), queued so
    it never races a job for the device or the memory. `call()`'s return value ends up in `result.info["value"]`."""

    call: Callable[[], Any] | None = field(default=None, compare=False, repr=False)
    label: str = ""  # who asked, for the log and the progress route
    mode: str = "extension"

    def run(self, engine: "Engine", job: Job) -> JobResult:
        assert self.call is not None
        job.update(step=0, total_steps=1)
        result = JobResult(info={"value": self.call()})
        job.update(step=1, result=result)
        return result


@dataclass(frozen=True)
class UnloadRequest(EngineTask):
    """Drop one checkpoint, or (None) every model of every kind from memory: checkpoints, VAEs, segmenters,
    upscalers, ControlNets (AUTOMATIC1111's unload-checkpoint). Queued like a job, so a running job keeps its
    model until it ends."""

    checkpoint: str | None = None
    mode: str = "unload"

    def run(self, engine: "Engine", job: Job) -> JobResult:
        current = engine.manager.current()
        if self.checkpoint:
            entry = engine.manager.find_checkpoint(self.checkpoint)
            unloaded = entry.name if entry.name in engine.manager.loaded_names() else None
            engine.manager.unload(entry.name)
        else:
            engine.manager.unload()  # the one memory cache: the upscalers' and the extensions' models too
            engine.upscalers.unload()
            unloaded = current.name if current else None
        release_memory()
        log.info("unloaded %s", f"checkpoint {self.checkpoint}" if self.checkpoint else
                 "every model" + (f" (was using {current.name})" if current else ""))
        result = JobResult(info={"unloaded": unloaded})
        job.update(result=result)
        return result


def cover_box(source: tuple[int, int], target: tuple[int, int]) -> tuple[int, int, int, int]:
    """The centred box of `source` with `target`'s aspect ratio: what is left of the source once scaling it to
    cover `target` and cropping the overflow evenly."""
    width, height = source
    ratio = max(target[0] / width, target[1] / height)  # the scale that covers the target
    crop_w = min(width, max(1, round(target[0] / ratio)))
    crop_h = min(height, max(1, round(target[1] / ratio)))
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return left, top, left + crop_w, top + crop_h


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 4)
