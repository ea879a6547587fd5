"""Jobs that are not generations but must run on the worker that owns the device.

An `EngineTask` is queued like a generation request (`Engine.submit`) so it never races one: upscaling an
image (the Extras tab and `/sdapi/v1/extra-single-image`) and unloading every model from memory. Each task
validates itself before it is queued and runs itself on the worker (`run(engine, job)`); extension hooks
(`before_generate`, `after_generate`) do not see tasks.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from webui import __version__
from webui.engine.outputs import mode_folder, save_image
from webui.engine.upscalers import NONE, target_size
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
    mode: str = "extras"

    def validate(self, limits: Limits) -> None:
        if self.image is None:
            raise RequestError("image", "an image to upscale is required")
        if not isinstance(self.upscaler, str) or not self.upscaler.strip():
            raise RequestError("upscaler_1", "pick an upscaler")
        if self.upscaler.strip() == NONE and (self.upscaler_2.strip() == NONE or self.upscaler_2_visibility <= 0):
            raise RequestError("upscaler_1", "pick an upscaler (None leaves the image as it is)")
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
        return target_size(self.image.size, self.scale, self.width or None, self.height or None)

    def run(self, engine: "Engine", job: Job) -> JobResult:
        assert self.image is not None
        image = self.image.convert("RGB")
        size = self.output_size()
        job.update(step=0, total_steps=2 if self.upscaler_2_visibility > 0 else 1)
        first = self._upscaled(engine, image, self.upscaler, size)
        job.update(step=1)
        if self.upscaler_2 != NONE and self.upscaler_2_visibility > 0:
            second = self._upscaled(engine, image, self.upscaler_2, size)
            first = Image.blend(first, second, self.upscaler_2_visibility)
            job.update(step=2)
        params: dict[str, Any] = {
            "Postprocess upscale by": None if self.width and self.height else _number(self.scale),
            "Postprocess upscale to": f"{size[0]}x{size[1]}" if self.width and self.height else None,
            "Postprocess upscaler": self.upscaler,
            "Postprocess upscaler 2": self.upscaler_2 if self.upscaler_2_visibility > 0 else None,
            "Version": f"Easel {__version__}",
        }
        text = format_infotext("", "", params).lstrip("\n")
        result = JobResult(images=[first], infotexts=[text], seeds=[-1])
        if self.save_images and engine.settings.user.save_images:
            folder = mode_folder(engine.settings.outputs_dir, self.mode)
            result.paths.append(save_image(first, folder, -1, text, engine.settings.user.filename_digits))
        job.update(result=result)
        return result

    def _upscaled(self, engine: "Engine", image: Image.Image, name: str, size: tuple[int, int]) -> Image.Image:
        if name == NONE:
            return image.resize(size, Image.LANCZOS)
        if self.crop and self.width and self.height:
            # cover the target box keeping the aspect ratio, then crop the overflow evenly
            ratio = max(size[0] / image.width, size[1] / image.height)
            cover = (max(size[0], round(image.width * ratio)), max(size[1], round(image.height * ratio)))
            big = engine.upscalers.upscale(image, name, cover)
            left, top = (big.width - size[0]) // 2, (big.height - size[1]) // 2
            return big.crop((left, top, left + size[0], top + size[1]))
        return engine.upscalers.upscale(image, name, size)


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


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 4)
