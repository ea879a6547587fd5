"""sd-webui-controlnet's HTTP routes, so its clients find what they expect under `/controlnet/`.

`GET /controlnet/version`, `GET /controlnet/model_list` (titles `name [hash]`), `GET /controlnet/module_list`
(names and, per module, whether it needs weights and its sliders), `GET /controlnet/settings` and
`POST /controlnet/detect` (run a preprocessor on at most `MAX_UNITS` base64 images, on the worker like a
generation, and return the maps as base64 PNGs). Errors answer with Easel's API error body (`error`, `detail`,
`field`): 422 for bad input, 404 when a preprocessor's weights are missing, 503 when the queue is full.
"""
from __future__ import annotations

import base64
import io
import logging
from typing import TYPE_CHECKING, Any

from PIL import Image

from webui.extension_api import ExtensionAPI, ModelFileError, RequestError

from .preprocessors import MODULES, AnnotatorMissingError
from .units import MAX_UNITS, decode_image

if TYPE_CHECKING:
    from . import ControlNet

log = logging.getLogger("easel.extensions.controlnet")

API_VERSION = 2  # what sd-webui-controlnet's /controlnet/version answers for its current API
UI_UNITS = 3


def _error(status: int, field: str | None, message: str, kind: str = "RequestError") -> Any:
    from fastapi.responses import JSONResponse

    detail = f"{field}: {message}" if field else message
    return JSONResponse(status_code=status, content={"error": kind, "detail": detail, "field": field})


def encode_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def add_routes(api: ExtensionAPI, controlnet: "ControlNet") -> None:
    from fastapi import Body

    base = f"/{api.name}"

    def version() -> dict[str, Any]:
        return {"version": API_VERSION}

    def model_list(update: bool = True) -> dict[str, Any]:
        entries = controlnet.models.scan() if update else controlnet.models.entries()
        adapters = controlnet.ip_models.scan()  # IP-Adapters, as sd-webui-controlnet lists them beside ControlNets
        return {"model_list": [controlnet.models.title(entry) for entry in entries]
                + [controlnet.ip_models.title(entry) for entry in adapters]}

    def module_list(alias_names: bool = False) -> dict[str, Any]:
        detail = {name: {"model_free": module.model_free, "sliders": module.sliders()}
                  for name, module in MODULES.items()}
        return {"module_list": list(MODULES), "module_detail": detail}

    def settings() -> dict[str, Any]:
        return {"control_net_unit_count": UI_UNITS}

    def detect(body: dict[str, Any] = Body(...)) -> Any:
        images = body.get("controlnet_input_images", body.get("controlnet_images"))
        if not isinstance(images, list) or not images:
            return _error(422, "controlnet_input_images", "send a list of base64-encoded images")
        if len(images) > MAX_UNITS:
            return _error(422, "controlnet_input_images", f"at most {MAX_UNITS} images in one detect call, got "
                                                          f"{len(images)}")
        try:
            module = controlnet.preprocessors.find(str(body.get("controlnet_module", "none")))
        except LookupError as exc:
            return _error(422, "controlnet_module", str(exc))
        options: dict[str, Any] = {}
        for key, option, default in (("controlnet_processor_res", "resolution", 512),
                                     ("controlnet_threshold_a", "threshold_a", None),
                                     ("controlnet_threshold_b", "threshold_b", None)):
            value = body.get(key, default)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                return _error(422, key, f"must be a number, got {value!r}")
            if value is not None and value == -1:
                value = default
            options[option] = value
        if not 64 <= int(options["resolution"]) <= 4096:
            return _error(422, "controlnet_processor_res", "must be between 64 and 4096")
        decoded = []
        for i, data in enumerate(images):  # every image read (its size checked first) before any work is queued
            try:
                image = decode_image(data, f"controlnet_input_images[{i}]", controlnet.max_pixels())
            except RequestError as exc:
                return _error(422, exc.field, exc.message)
            if image is None:
                return _error(422, f"controlnet_input_images[{i}]", "is empty")
            decoded.append(image)

        def run() -> list[Image.Image]:  # on the worker: one detection at a time, behind the bounded queue
            return [controlnet.preprocessors.run(module, image, int(options["resolution"]), options["threshold_a"],
                                                 options["threshold_b"]) for image in decoded]

        try:
            detected = api.run_on_worker(run)
        except AnnotatorMissingError as exc:
            return _error(404, "controlnet_module", str(exc), "NotFound")
        except ModelFileError as exc:  # an annotator file refused (code in it) or not weights
            return _error(422, "controlnet_module", str(exc))
        return {"images": [encode_png(image) for image in detected], "info": "Success"}

    api.add_route(f"{base}/version", version)
    api.add_route(f"{base}/model_list", model_list)
    api.add_route(f"{base}/module_list", module_list)
    api.add_route(f"{base}/settings", settings)
    api.add_route(f"{base}/detect", detect, methods=["POST"])
