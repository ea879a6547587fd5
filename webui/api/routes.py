"""The AUTOMATIC1111-compatible REST API (`/sdapi/v1/*`) over Easel's engine.

`create_api(app, easel)` adds the routes to a FastAPI app: the Gradio app when the UI runs, a bare one with
`--nowebui`. Generation goes through the same engine queue as the UI. The handlers that queue a job are `async`:
they check the body, submit, and `await` the job (`Job.wait_async`) without holding a thread, and run their CPU
work (decoding uploads, reading the model list, encoding PNGs) on the API's own lane of threads
(`webui.api.threads`) only while it runs; so however many requests wait, `/progress`, `/interrupt`, the page and
its login keep answering, and the request after a full queue gets its 503 at once. Every error leaves as JSON
`{"error", "detail", "field"}` (AUTOMATIC1111 clients read `detail`): bad input is a 4xx naming the field, a full
queue a 503, and only a failure inside the pipeline a 500. Bodies and decoded images have size limits. With
`--api-auth`, or when the UI is protected with `--gradio-auth` / `--gradio-auth-path`, every route here (and
every extension route) asks for a login through HTTP Basic authentication, and an address that keeps failing is
made to wait (`webui.security.LoginThrottle`).
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine, Iterator

from fastapi import APIRouter, Body, FastAPI, Request, Response
from fastapi.exceptions import FastAPIError, RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from webui import __version__
from webui.api.bounds import (
    IMAGE_FORMATS,
    JsonShape,
    RequestBoundError,
    RequestBounds,
    base64_bytes,
    check_images,
    is_json,
)
from webui.api.compat import (
    LATENT_UPSCALE_MODES,
    add_docs,
    embeddings_info,
    extension_info,
    lora_info,
    memory_info,
    script_info,
    upscaler_info,
)
from webui.api.schemas import (
    ExtrasSingleImageRequest,
    PNGInfoRequest,
    StableDiffusionImg2ImgProcessingAPI,
    StableDiffusionTxt2ImgProcessingAPI,
    body_parameters,
    request_values,
)
from webui.api.threads import API_LANE, in_lane
from webui.engine.images import binarize, mask_to_l
from webui.engine.tasks import UnloadRequest, UpscaleRequest
from webui.engine.upscalers import NONE, UpscalerNotFoundError
from webui.engine.worker import Job, JobResult, JobState, QueueFullError
from webui.infotext import parse_infotext, png_bytes, read_png_parameters
from webui.model_manager.errors import ModelLoadError, ModelNotFoundError
from webui.redact import answer_folders, public_path, redact_paths
from webui.requests import GenerationRequest, Img2ImgRequest, InpaintRequest, RequestError, Txt2ImgRequest
from webui.security import LOGIN_CHECKED, LoginThrottle, check_basic_auth, login_throttle

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024

# AUTOMATIC1111's k-diffusion aliases, so clients that send them find the sampler.
SAMPLER_ALIASES: dict[str, list[str]] = {
    "Euler a": ["k_euler_a", "k_euler_ancestral"],
    "Euler": ["k_euler"],
    "LMS": ["k_lms"],
    "LMS Karras": ["k_lms_ka"],
    "Heun": ["k_heun"],
    "DPM2": ["k_dpm_2"],
    "DPM2 a": ["k_dpm_2_a"],
    "DPM++ 2M": ["k_dpmpp_2m"],
    "DPM++ 2M Karras": ["k_dpmpp_2m_ka"],
    "DPM++ 2M SDE": ["k_dpmpp_2m_sde"],
    "DPM++ 2M SDE Karras": ["k_dpmpp_2m_sde_ka"],
    "DPM++ SDE": ["k_dpmpp_sde"],
    "DPM++ SDE Karras": ["k_dpmpp_sde_ka"],
    "DDIM": ["ddim"],
    "PLMS": ["plms"],
    "UniPC": ["unipc"],
    "DEIS": ["deis"],
}

# AUTOMATIC1111's schedule types. Easel follows "karras" where the sampler has a Karras variant; the others
# run the sampler's own schedule.
A1111_SCHEDULERS = ("automatic", "uniform", "karras", "exponential", "polyexponential", "sgm_uniform",
                    "kl_optimal", "align_your_steps", "simple", "normal", "ddim", "beta")

INFO_CORE_KEYS = {"Prompt", "Negative prompt", "Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash",
                  "Model", "VAE", "Clip skip", "Version"}


# Errors -----------------------------------------------------------------------------------------------
class ApiError(Exception):
    """An error with its HTTP status and the request field it is about."""

    def __init__(self, status: int, field_name: str | None, message: str, kind: str = "BadRequest",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{field_name}: {message}" if field_name else message)
        self.status = status
        self.field = field_name
        self.message = message
        self.kind = kind
        self.headers = headers


def error_response(status: int, kind: str, message: str, field_name: str | None,
                   headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    detail = f"{field_name}: {message}" if field_name else message
    return JSONResponse(status_code=status, headers=headers,
                        content={"error": kind, "detail": detail, "field": field_name, **extra})


def validation_response(exc: RequestValidationError) -> JSONResponse:
    """A 422 naming the first field pydantic rejected (and listing the others)."""
    problems = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part != "body"]
        if err.get("type") == "json_invalid":
            name, path = "body", "body"
            message = f"is not valid JSON ({err.get('ctx', {}).get('error', 'decode error')})"
        else:
            name = loc[0] if loc else "body"
            path = ".".join(loc) if loc else "body"
            message = err.get("msg", "is invalid")
            if err.get("type") == "missing":
                message = "is required"
        problems.append({"field": name, "path": path, "message": message})
    if not problems:
        problems.append({"field": "body", "path": "body", "message": "is invalid"})
    first = problems[0]
    detail = "; ".join(f"{p['path']}: {p['message']}" for p in problems)
    return JSONResponse(status_code=422, content={"error": "ValidationError", "detail": detail,
                                                  "field": first["field"], "errors": problems})


def _route_class(max_body_bytes: int, logins: list[tuple[str, str]], throttle: LoginThrottle | None = None,
                 bounds: Callable[[], RequestBounds] | None = None, shown: Callable[[str], str] = str
                 ) -> type[APIRoute]:
    """Routes that check logins, the body size and its shape (`bounds`), and turn every error into the JSON above
    (its message passed through `shown`, which takes this machine's folders out of it).

    Done per route rather than as app middleware or exception handlers, because the Gradio app has already
    started when the API is added to it.
    """

    class EaselRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    check_login(request, logins, throttle)
                    await read_body(request, max_body_bytes, bounds() if bounds is not None else None)
                    return await handler(request)
                except RequestValidationError as exc:
                    return validation_response(exc)
                except ApiError as exc:
                    return error_response(exc.status, exc.kind, shown(exc.message), exc.field, exc.headers)
                except RequestError as exc:
                    return error_response(422, "RequestError", shown(exc.message), exc.field)
                except QueueFullError as exc:
                    return error_response(503, "QueueFull", str(exc), None, {"Retry-After": "5"})
                except HTTPException as exc:  # FastAPI's own refusals, e.g. a body that is not UTF-8 JSON
                    message = exc.detail if isinstance(exc.detail, str) else "the request was refused"
                    return error_response(exc.status_code, "BadRequest", shown(message),
                                          "body" if exc.status_code < 500 else None, exc.headers)
                except Exception as exc:  # noqa: BLE001 - the one place internal failures become a 500
                    log.exception("API %s %s failed", request.method, request.url.path)
                    return error_response(500, type(exc).__name__, shown(str(exc) or type(exc).__name__), None)

            return guarded

    return EaselRoute


def job_failure(job: Job, what: str, field_name: str | None = None) -> ApiError:
    """A failed job as an API error: bad input found while running is the client's (4xx), the rest is ours."""
    exc = job.exception
    if isinstance(exc, RequestError):
        return ApiError(422, exc.field, exc.message, "RequestError")
    if isinstance(exc, ModelNotFoundError):
        return ApiError(404, field_name, str(exc), "NotFound")
    if isinstance(exc, ModelLoadError):  # a broken, truncated or mismatched file: the message names it
        return ApiError(422, field_name or "sd_model_checkpoint", str(exc), "ModelLoadError")
    if isinstance(exc, ValueError):
        name, sep, message = str(exc).partition(": ")
        if sep and name.replace("_", "").isalnum():
            return ApiError(422, name, message, "RequestError")
        return ApiError(422, field_name, str(exc), "RequestError")
    return ApiError(500, None, f"{what}: {job.error or 'unknown error'}", "JobFailed")


def check_login(request: Request, logins: list[tuple[str, str]], throttle: LoginThrottle | None = None) -> None:
    """HTTP Basic against `logins` (compared in constant time); an address that failed too often gets a 429
    before its credentials are even looked at. A request `ApiLoginMiddleware` already let through is not checked
    twice."""
    if request.scope.get(LOGIN_CHECKED):
        return
    address = request.client.host if request.client else "unknown"
    refusal = check_basic_auth(request.headers.get("authorization", ""), address, logins, throttle)
    if refusal is not None:
        raise ApiError(refusal.status, None, refusal.message, refusal.kind, refusal.headers)


async def read_body(request: Request, limit: int, bounds: RequestBounds | None = None) -> None:
    """Read the body and leave it cached for the handler, refusing it once it passes `limit` bytes.

    A JSON body is also held to `webui.api.bounds`: its shape while it streams in, then (with `bounds`) the
    number and total pixels of the images it carries, read from their headers before any is decoded."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body", f"the request body is {int(declared)} bytes; the limit is {limit}",
                       "PayloadTooLarge")
    shape = JsonShape() if is_json(request.headers.get("content-type")) else None
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ApiError(413, "body", f"the request body exceeds the limit of {limit} bytes",
                               "PayloadTooLarge")
            if shape is not None:
                shape.feed(chunk)
            chunks.append(chunk)
        request._body = b"".join(chunks)  # where Starlette's Request.body() keeps the body it has read
        del chunks
        if shape is not None and bounds is not None and request._body:
            try:
                data = await request.json()  # kept by Starlette: FastAPI's handler does not parse it again
            except (ValueError, RecursionError):
                return  # FastAPI answers malformed JSON itself
            await run_in_threadpool(check_images, data, bounds)
    except RequestBoundError as exc:
        raise ApiError(exc.status, exc.field, exc.message, exc.kind) from None


# Images -----------------------------------------------------------------------------------------------
def decode_image(data: Any, field_name: str, max_pixels: int, load: bool = True) -> Image.Image:
    """A base64 image (optionally a data: URL), its size checked before its pixels are decoded.

    With `load=False` only the header is read: call `load_image` before using the pixels."""
    if not isinstance(data, str) or not data.strip():
        raise ApiError(422, field_name, "must be a base64-encoded image")
    try:
        raw = base64_bytes(data)
    except (binascii.Error, ValueError):
        raise ApiError(422, field_name, "is not valid base64") from None
    with _decoding_errors(field_name):
        image = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise ApiError(422, field_name, f"image is {width}x{height}; the limit is {max_pixels} pixels")
    return load_image(image, field_name) if load else image


def load_image(image: Image.Image, field_name: str) -> Image.Image:
    """Decode the pixels of an image `decode_image(..., load=False)` opened; a corrupt one is a 422."""
    with _decoding_errors(field_name):
        image.load()
    return image


@contextmanager
def _decoding_errors(field_name: str) -> Iterator[None]:
    """Pillow's refusals as 422s naming the field."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(422, field_name, f"the image is too large to decode (over the limit of "
                                        f"{Image.MAX_IMAGE_PIXELS} pixels)") from None
    except UnidentifiedImageError:
        raise ApiError(422, field_name, f"is not an image Easel can read ({', '.join(IMAGE_FORMATS)})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ApiError(422, field_name, f"the image could not be decoded ({exc})") from None


def check_mask(mask: Image.Image | None, invert: bool) -> None:
    """Refuse a mask that leaves nothing to repaint (the engine would fail on it after queueing)."""
    if mask is None:
        return
    binary = binarize(mask_to_l(mask))
    if invert:
        binary = ImageOps.invert(binary)
    if binary.getbbox() is None:
        what = "all white, and inpainting_mask_invert is set" if invert else "all black"
        raise ApiError(422, "mask", f"the mask is empty ({what}); paint the area to repaint in white")


def hub_offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def encode_png(image: Image.Image, text: str | None = None) -> str:
    return base64.b64encode(png_bytes(image, text)).decode("ascii")


# State the options endpoint sets for later API requests ----------------------------------------------
@dataclass
class ApiDefaults:
    """Options a client set with POST /options that apply to its later requests (in memory, like a session)."""

    clip_skip: int = 1
    vae: str = "Automatic"
    unloaded: str | None = None  # the checkpoint /unload-checkpoint dropped, for /reload-checkpoint
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _whole_number(value: Any, name: str, lowest: int, highest: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ApiError(422, name, f"must be a whole number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ApiError(422, name, f"must be a whole number, got {value!r}") from None
    if not number.is_integer():
        raise ApiError(422, name, f"must be a whole number, got {value!r}")
    if number < lowest or (highest is not None and number > highest):
        bounds = f"between {lowest} and {highest}" if highest is not None else f"at least {lowest}"
        raise ApiError(422, name, f"must be {bounds}, got {int(number)}")
    return int(number)


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    raise ApiError(422, name, f"must be true or false, got {value!r}")


# The API ----------------------------------------------------------------------------------------------
def create_api(app: FastAPI, easel: Any, max_body_bytes: int | None = None) -> None:
    """Add the /sdapi/v1 routes for this Easel to `app`."""
    manager, engine, settings = easel.manager, easel.engine, easel.settings
    defaults = ApiDefaults()
    if max_body_bytes is None:
        max_body_bytes = getattr(settings, "max_upload_bytes", MAX_BODY_BYTES)
    folders = answer_folders(settings)  # paths in answers are relative to these (never absolute)

    def shown(path: Any) -> str | None:
        return public_path(path, folders)

    def redact(text: str) -> str:
        return redact_paths(text, folders)

    route_class = _route_class(max_body_bytes, settings.api_auth_pairs(), login_throttle(easel.extras),
                               lambda: RequestBounds(settings.user.max_request_pixels,
                                                     settings.user.max_request_images,
                                                     settings.user.limits().max_pixels * 4), redact)
    router = APIRouter(prefix="/sdapi/v1", tags=["sdapi"], route_class=route_class)

    # Helpers over this Easel ---------------------------------------------------------------------------
    def max_image_pixels() -> int:
        return settings.user.limits().max_pixels * 4

    def find_checkpoint(query: str | None, field_name: str) -> Any:
        """The checkpoint entry a request names, or the current/default one."""
        if query:
            try:
                entry = manager.find_checkpoint(str(query))
            except LookupError as exc:  # the manager's message lists close names
                raise ApiError(404, field_name, f"unknown model: {exc}", "NotFound") from None
        else:
            entry = manager.current()
            if entry is None:
                name = easel.default_checkpoint()
                if not name:
                    raise ApiError(503, field_name, "no model is installed; put a checkpoint in models/Stable-diffusion",
                                   "NoModel")
                entry = manager.find_checkpoint(name)
        if entry.kind == "hub" and hub_offline():
            raise ApiError(404, field_name, f"unknown model {query!r}: not installed, and Easel is offline so it cannot "
                                            "be fetched as a Hugging Face repository", "NotFound")
        if not entry.supported:
            raise ApiError(422, field_name, f"model {entry.name!r} ({entry.path.name}) cannot be used: {entry.reason}")
        return entry

    def check_vae(name: Any, field_name: str) -> str:
        if not isinstance(name, str):
            raise ApiError(422, field_name, f"must be a VAE name, got {name!r}")
        if name in ("", "Automatic", "None"):
            return "Automatic"
        try:
            return manager.find_vae(name).name  # by name, file name or path, as AUTOMATIC1111 clients send it
        except LookupError as exc:
            raise ApiError(404, field_name, f"unknown VAE: {exc}", "NotFound") from None

    def choose_sampler(body: BaseModel, arch: Any) -> str:
        """The sampler name for this model, from sampler_name / sampler_index and AUTOMATIC1111's scheduler."""
        field_name = "sampler_name" if body.sampler_name else "sampler_index"
        requested = str(body.sampler_name or body.sampler_index or "Euler").strip()
        names = easel.registry.samplers.names(arch)
        lowered = {n.lower(): n for n in names}
        lowered.update({alias: n for n, aliases in SAMPLER_ALIASES.items() for alias in aliases if n in names})
        name = lowered.get(requested.lower(), requested)
        schedule = (body.scheduler or "").strip().lower().replace(" ", "_")
        if schedule and schedule not in A1111_SCHEDULERS:
            raise ApiError(422, "scheduler", f"unknown scheduler {body.scheduler!r}; choose one of "
                                             f"{', '.join(A1111_SCHEDULERS)}")
        if schedule == "karras" and not name.endswith("Karras") and f"{name} Karras" in names:
            name = f"{name} Karras"
        try:
            easel.registry.samplers.resolve(name, arch)
        except ValueError:
            raise ApiError(422, field_name, f"unknown sampler {requested!r}; choose one of {', '.join(names)}") from None
        return name

    def build_request(body: BaseModel, cls: type[GenerationRequest]) -> tuple[GenerationRequest, Any]:
        """The typed request for an API body, every value checked before it is queued."""
        override = body.override_settings or {}
        entry = find_checkpoint(override.get("sd_model_checkpoint"), "sd_model_checkpoint")
        values = request_values(body, cls, lambda data, name: decode_image(data, name, max_image_pixels()))
        values["checkpoint"] = entry.name
        values["sampler"] = choose_sampler(body, entry.arch)
        with defaults.lock:
            clip_skip, vae = defaults.clip_skip, defaults.vae
        if "clip_skip" not in body.model_fields_set or body.clip_skip is None:
            values["clip_skip"] = clip_skip
        if "CLIP_stop_at_last_layers" in override:
            values["clip_skip"] = _whole_number(override["CLIP_stop_at_last_layers"], "CLIP_stop_at_last_layers", 1, 12)
        values["vae"] = check_vae(override["sd_vae"], "sd_vae") if "sd_vae" in override else vae
        if cls is Txt2ImgRequest:
            apply_hires_size(body, values)
            if values.get("enable_hr"):
                values["hr_upscaler"] = check_upscaler(values.get("hr_upscaler", "Lanczos"), "hr_upscaler", True)
        if cls is InpaintRequest:
            if "mask_blur" not in body.model_fields_set and (body.mask_blur_x or body.mask_blur_y):
                values["mask_blur"] = max(body.mask_blur_x or 0, body.mask_blur_y or 0)
            check_mask(values.get("mask"), bool(values.get("inpainting_mask_invert")))
        values["extension_args"] = easel.registry.parse_request_args(body.alwayson_scripts)
        api_cls = API_REQUEST_TYPES[cls]
        request = api_cls(**values, save_images=bool(body.save_images))
        return request, entry

    def apply_hires_size(body: BaseModel, values: dict[str, Any]) -> None:
        """hr_resize_x/y (a target size) become the scale that reaches it."""
        rx, ry = body.hr_resize_x or 0, body.hr_resize_y or 0
        if rx > 0 or ry > 0:
            width, height = values.get("width", 512), values.get("height", 512)
            if not width or not height:
                return
            values["hr_scale"] = max(rx / width, ry / height)

    def check_upscaler(name: Any, field_name: str, hires: bool = False) -> str:
        if not isinstance(name, str):
            raise ApiError(422, field_name, f"must be an upscaler name, got {name!r}")
        try:
            return engine.upscalers.check_hires(name) if hires else engine.upscalers.find(name).name
        except UpscalerNotFoundError as exc:
            raise ApiError(422, field_name, str(exc)) from None

    def script_requests(body: BaseModel, request: GenerationRequest) -> list[GenerationRequest]:
        """The request(s) an installed API script makes of this one (`script_name`, `script_args`)."""
        name = (body.script_name or "").strip()
        if not name:
            return [request]
        mode = "txt2img" if isinstance(request, Txt2ImgRequest) else "img2img"
        script = easel.registry.scripts.get(name.lower())
        if script is None or mode not in script.modes:
            known = [s.name for s in easel.registry.scripts.values() if mode in s.modes]
            raise ApiError(422, "script_name", f"no {mode} script named {name!r}; installed: "
                                               f"{', '.join(known) or 'none'}")
        try:
            made = script.run(request, list(body.script_args or []))
        except (ValueError, TypeError) as exc:
            raise ApiError(422, "script_args", f"{script.name}: {exc}") from None
        made = request if made is None else made
        items = made if isinstance(made, list) else [made]
        if not items or not all(isinstance(item, GenerationRequest) for item in items):
            raise ApiError(500, "script_name", f"the script {script.name!r} (extension {script.extension}) did "
                                               "not return a request or a list of requests", "ScriptFailed")
        return items

    def prepare(body: BaseModel, cls: type[GenerationRequest]) -> tuple[GenerationRequest, Any, list[Any], Any]:
        """(request, checkpoint entry, the requests to queue, the model loaded now): the CPU part, on a lane thread
        (images are decoded here, and the model manager may be busy loading)."""
        request, entry = build_request(body, cls)
        return request, entry, script_requests(body, request), manager.current()

    async def run(body: BaseModel, cls: type[GenerationRequest], include_images: bool = False) -> dict[str, Any]:
        request, entry, items, previous = await API_LANE.run(prepare, body, cls)
        jobs = [engine.submit(item, source="api") for item in items]
        for job in jobs:
            log.info("API %s job %s queued at %d", request.mode, job.id, engine.worker.position(job))
        for job in jobs:
            await job.wait_async()
        await after_overrides(body, entry, previous)
        return await API_LANE.run(generation_response, body, request, entry,
                                  jobs[0] if len(jobs) == 1 else merged(request, jobs), include_images)

    def merged(request: GenerationRequest, jobs: list[Job]) -> Job:
        """One finished job holding every image of a script's jobs (the first failure, if any)."""
        failed = next((job for job in jobs if job.state == JobState.FAILED), None)
        if failed is not None:
            return failed
        combined = Job(request, "api")
        result = JobResult()
        for job in jobs:
            part = job.result or JobResult()
            result.images += part.images
            result.infotexts += part.infotexts
            result.seeds += part.seeds
            result.paths += part.paths
            result.info = result.info or dict(part.info)
        interrupted = any(job.state == JobState.INTERRUPTED for job in jobs)
        combined.update(result=result, started=jobs[0].started, finished=jobs[-1].finished,
                        state=JobState.INTERRUPTED if interrupted else JobState.DONE)
        return combined

    async def after_overrides(body: BaseModel, entry: Any, previous: Any) -> None:
        """override_settings_restore_afterwards: put the model back (true, the default) or keep the overrides for
        later requests (false)."""
        override = body.override_settings or {}
        if not override:
            return
        if body.override_settings_restore_afterwards is False:
            await API_LANE.run(keep_overrides, override)
            return
        if "sd_model_checkpoint" in override and previous is not None and previous.name != entry.name:
            with defaults.lock:
                vae_now = defaults.vae
            job = await load_model(previous.name, vae_now)
            if job.state == JobState.FAILED:
                log.warning("API could not restore the model %s after an override: %s", previous.name, job.error)

    def keep_overrides(override: dict[str, Any]) -> None:
        with defaults.lock:
            if "CLIP_stop_at_last_layers" in override:
                defaults.clip_skip = _whole_number(override["CLIP_stop_at_last_layers"],
                                                   "CLIP_stop_at_last_layers", 1, 12)
            if "sd_vae" in override:
                defaults.vae = check_vae(override["sd_vae"], "sd_vae")

    async def load_model(name: str, vae_now: str) -> Job:
        """Queue a model switch behind the jobs before it and await it."""
        job = engine.queue_load(name, None if vae_now == "Automatic" else vae_now, source="api")
        await job.wait_async()
        return job

    def generation_response(body: BaseModel, request: GenerationRequest, entry: Any, job: Job,
                            include_images: bool) -> dict[str, Any]:
        if job.state == JobState.FAILED:
            raise job_failure(job, "generation failed")
        result = job.result or JobResult()
        images = [encode_png(img, text) for img, text in zip(result.images, result.infotexts)] \
            if body.send_images is not False else []
        info = generation_info(request, entry, job, result)
        return {"images": images, "parameters": body_parameters(body, include_images), "info": json.dumps(info)}

    def generation_info(request: GenerationRequest, entry: Any, job: Job, result: JobResult) -> dict[str, Any]:
        """AUTOMATIC1111's `info` object for a finished job."""
        count = len(result.images)
        seeds = list(result.seeds)
        parsed = parse_infotext(result.infotexts[0]) if result.infotexts else {}
        denoising = getattr(request, "denoising_strength", None)
        if isinstance(request, Txt2ImgRequest):
            denoising = request.hr_denoising_strength if request.enable_hr else None
        started = job.started or job.created
        return {
            "prompt": request.prompt,
            "all_prompts": [request.prompt] * count,
            "negative_prompt": request.negative_prompt,
            "all_negative_prompts": [request.negative_prompt] * count,
            "seed": seeds[0] if seeds else request.seed,
            "all_seeds": seeds,
            "subseed": -1,
            "all_subseeds": [-1] * count,
            "subseed_strength": 0,
            "width": request.width,
            "height": request.height,
            "sampler_name": parsed.get("Sampler", request.sampler),
            "cfg_scale": request.cfg_scale,
            "steps": request.steps,
            "batch_size": request.batch_size,
            "restore_faces": False,
            "face_restoration_model": None,
            "sd_model_name": result.info.get("model") or entry.name,
            "sd_model_hash": result.info.get("model_hash") or entry.short_hash,
            "sd_vae_name": None if request.vae in ("", "Automatic", "None") else request.vae,
            "sd_vae_hash": None,
            "seed_resize_from_w": -1,
            "seed_resize_from_h": -1,
            "denoising_strength": denoising,
            "extra_generation_params": {k: v for k, v in parsed.items() if k not in INFO_CORE_KEYS},
            "index_of_first_image": 0,
            "infotexts": list(result.infotexts),
            "styles": [],
            "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(started)),
            "clip_skip": request.clip_skip,
            "is_using_inpainting_conditioning": False,
            "version": f"Easel {__version__}",
            "interrupted": job.state == JobState.INTERRUPTED,
            "paths": [public_path(p, [settings.data_dir]) for p in result.paths],
        }

    # Generation ----------------------------------------------------------------------------------------
    @router.post("/txt2img")
    async def txt2img(body: StableDiffusionTxt2ImgProcessingAPI) -> dict[str, Any]:  # type: ignore[valid-type]
        return await run(body, Txt2ImgRequest)

    @router.post("/img2img")
    async def img2img(body: StableDiffusionImg2ImgProcessingAPI) -> dict[str, Any]:  # type: ignore[valid-type]
        if not body.init_images or not body.init_images[0]:
            raise ApiError(422, "init_images", "an input image is required (a list of base64 images)")
        cls = InpaintRequest if body.mask else Img2ImgRequest
        return await run(body, cls, include_images=bool(body.include_init_images))

    # Models, samplers, options -------------------------------------------------------------------------
    @router.get("/sd-models")
    def sd_models() -> list[dict[str, Any]]:
        return [{"title": e.title, "model_name": e.name, "hash": e.short_hash,
                 "sha256": manager.hashes.cached_sha256(e.path) if e.kind != "hub" else None,
                 "filename": shown(e.path), "config": None}
                for e in manager.checkpoints() if e.supported]

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints() -> None:
        manager.refresh()

    @router.post("/refresh-vae")
    def refresh_vae() -> None:
        manager.refresh()

    @router.get("/sd-vae")
    def sd_vae() -> list[dict[str, Any]]:
        return [{"model_name": v.name, "filename": shown(getattr(v, "path", None)) or ""} for v in manager.vaes()]

    @router.get("/samplers")
    def samplers() -> list[dict[str, Any]]:
        current = manager.current()
        names = easel.registry.samplers.names(current.arch) if current is not None else easel.sampler_choices(None)
        return [{"name": n, "aliases": SAMPLER_ALIASES.get(n, []),
                 "options": {"scheduler": "karras"} if n.endswith("Karras") else {}} for n in names]

    @router.get("/schedulers")
    def schedulers() -> list[dict[str, Any]]:
        return [{"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1,
                 "need_inner_model": False},
                {"name": "karras", "label": "Karras", "aliases": None, "default_rho": 7.0,
                 "need_inner_model": False}]

    @router.get("/upscalers")
    def upscalers() -> list[dict[str, Any]]:
        """None, Lanczos and Nearest, then the ESRGAN-family models in models/ESRGAN (and --esrgan-models-path)."""
        return upscaler_info(engine.upscalers.entries(), shown)

    @router.get("/latent-upscale-modes")
    def latent_upscale_modes() -> list[dict[str, Any]]:
        """Accepted as hires upscalers; Easel upscales in pixel space with the same interpolation."""
        return [{"name": name} for name in LATENT_UPSCALE_MODES]

    @router.get("/scripts")
    def scripts() -> dict[str, list[str]]:
        """The API scripts extensions installed (used with script_name / script_args)."""
        found: dict[str, list[str]] = {"txt2img": [], "img2img": []}
        for script in easel.registry.scripts.values():
            for mode in script.modes:
                found[mode].append(script.name)
        for name in sorted(easel.registry.request_args):  # always-on scripts (alwayson_scripts), e.g. controlnet
            for mode in found:
                found[mode].append(name.lower())
        return found

    @router.get("/script-info")
    def scripts_info() -> list[dict[str, Any]]:
        return script_info(easel.registry.scripts, list(easel.registry.request_args))

    @router.get("/options")
    def get_options() -> dict[str, Any]:
        current = manager.current()
        with defaults.lock:
            clip_skip, vae = defaults.clip_skip, defaults.vae
        user = settings.user
        return {
            "sd_model_checkpoint": current.title if current is not None else easel.default_checkpoint() or None,
            "sd_checkpoint_hash": current.short_hash if current is not None else None,
            "sd_vae": vae,
            "CLIP_stop_at_last_layers": clip_skip,
            "samples_save": user.save_images,
            "outdir_samples": public_path(settings.outputs_dir, [settings.data_dir]),
            "show_progress_every_n_steps": user.live_preview_every,
            "live_previews_enable": user.live_preview_every > 0,
            "sd_checkpoint_cache": user.ram_cache_size,
            "samples_format": "png",
            "enable_pnginfo": True,
            "outdir_txt2img_samples": public_path(settings.outputs_dir / "txt2img-images", [settings.data_dir]),
            "outdir_img2img_samples": public_path(settings.outputs_dir / "img2img-images", [settings.data_dir]),
            "outdir_extras_samples": public_path(settings.outputs_dir / "extras-images", [settings.data_dir]),
            "eta_noise_seed_delta": 0,
            "ESRGAN_tile": engine.upscalers.tile,
            "ESRGAN_tile_overlap": engine.upscalers.tile_overlap,
            "upscaler_for_img2img": None,
            "disabled_extensions": list(user.disabled_extensions),
            "sd_lora": "None",
        }

    @router.post("/options")
    async def set_options(body: dict[str, Any] = Body(...)) -> None:
        entry = await API_LANE.run(apply_options, body)
        if entry is not None:
            with defaults.lock:
                vae_now = defaults.vae
            job = await load_model(entry.name, vae_now)
            if job.state == JobState.FAILED:
                raise job_failure(job, "loading the model failed", "sd_model_checkpoint")
            log.info("API switched the model to %s", entry.name)

    def apply_options(body: dict[str, Any]) -> Any:
        """Check every value first, so a bad one changes nothing; set them; the checkpoint entry to load, if any."""
        entry = find_checkpoint(body["sd_model_checkpoint"], "sd_model_checkpoint") \
            if body.get("sd_model_checkpoint") else None
        clip_skip = _whole_number(body["CLIP_stop_at_last_layers"], "CLIP_stop_at_last_layers", 1, 12) \
            if "CLIP_stop_at_last_layers" in body else None
        vae = check_vae(body["sd_vae"], "sd_vae") if "sd_vae" in body else None
        save = _flag(body["samples_save"], "samples_save") if "samples_save" in body else None
        preview = _whole_number(body["show_progress_every_n_steps"], "show_progress_every_n_steps", -1) \
            if "show_progress_every_n_steps" in body else None
        ignored = sorted(set(body) - {"sd_model_checkpoint", "CLIP_stop_at_last_layers", "sd_vae", "samples_save",
                                      "show_progress_every_n_steps"})
        if ignored:
            log.info("API options not supported by Easel, ignored: %s", ", ".join(ignored))
        with defaults.lock:
            if clip_skip is not None:
                defaults.clip_skip = clip_skip
            if vae is not None:
                defaults.vae = vae
        if save is not None or preview is not None:
            if save is not None:
                settings.user.save_images = save
            if preview is not None:
                settings.user.live_preview_every = max(0, preview)
            settings.save_user_settings()
        return entry

    @router.get("/cmd-flags")
    def cmd_flags() -> dict[str, Any]:
        return {
            "port": settings.port, "listen": settings.listen, "share": settings.share, "api": settings.api,
            "nowebui": settings.nowebui, "gradio_auth": "(set)" if settings.gradio_auth else None,
            "data_dir": shown(settings.data_dir), "ckpt_dir": [shown(p) for p in settings.ckpt_dirs],
            "lora_dir": [shown(p) for p in settings.lora_dirs], "vae_dir": [shown(p) for p in settings.vae_dirs],
            "device": settings.device, "precision": settings.precision, "medvram": settings.medvram,
            "lowvram": settings.lowvram,
            "enable_insecure_extension_access": settings.enable_insecure_extension_access,
            "allow_hub_downloads": settings.allow_hub_downloads,
            "esrgan_models_path": [shown(p) for p in settings.esrgan_dirs],
            "controlnet_dir": [shown(p) for p in settings.controlnet_dirs],
            "embeddings_dir": [shown(p) for p in settings.embedding_dirs],
            "api_auth": "(set)" if settings.api_auth else None,
            "cors_allow_origins": ",".join(settings.cors_allow_origins) or None,
            "cors_allow_origins_regex": settings.cors_allow_origins_regex,
        }

    # Progress and control ------------------------------------------------------------------------------
    @router.get("/progress")
    async def progress(skip_current_image: bool = False) -> dict[str, Any]:
        """On the event loop itself (the worker's state and a small preview), so it answers whatever waits."""
        worker = engine.worker
        job = worker.current
        waiting = worker.queue_length()
        if job is None or job.finished_state:
            return {"progress": 0.0, "eta_relative": 0.0,
                    "state": {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "",
                              "job_count": 0, "job_timestamp": "0", "job_no": 0, "sampling_step": 0,
                              "sampling_steps": 0, "queue_length": waiting},
                    "current_image": None, "textinfo": f"{waiting} waiting" if waiting else None,
                    "current_task": None}
        done = job.progress
        elapsed = time.time() - (job.started or time.time())
        eta = elapsed / done - elapsed if done > 0 else 0.0
        preview = job.preview
        return {
            "progress": round(done, 4),
            "eta_relative": round(max(0.0, eta), 3),
            "state": {"skipped": job.skip_requested, "interrupted": job.interrupt_requested,
                      "stopping_generation": False, "job": f"{job.request.mode} {job.id}",
                      "job_count": job.batch_total, "job_no": job.batch_index,
                      "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.started or job.created)),
                      "sampling_step": job.step, "sampling_steps": job.total_steps, "queue_length": waiting},
            "current_image": None if skip_current_image or preview is None else encode_png(preview),
            "textinfo": f"Batch {job.batch_index + 1} of {job.batch_total}, step {job.step} of {job.total_steps}",
            "current_task": job.id,
        }

    @router.post("/interrupt")
    async def interrupt() -> dict[str, Any]:
        return {"interrupted": engine.worker.interrupt()}

    @router.post("/skip")
    async def skip() -> dict[str, Any]:
        return {"skipped": engine.worker.skip()}

    # LoRAs, embeddings, memory, checkpoint unloading ------------------------------------------------------
    @router.get("/loras")
    def loras() -> list[dict[str, Any]]:
        return lora_info(manager.loras(), shown)

    @router.post("/refresh-loras")
    def refresh_loras() -> None:
        manager.refresh()

    @router.get("/embeddings")
    def embeddings() -> dict[str, Any]:
        return embeddings_info(manager.embeddings(), manager.embedding_model(), redact)

    @router.post("/refresh-embeddings")
    def refresh_embeddings() -> None:
        manager.refresh_embeddings()

    @router.get("/memory")
    def memory() -> dict[str, Any]:
        return memory_info(manager.memory_report())

    @router.post("/unload-checkpoint")
    async def unload_checkpoint() -> None:
        """Free the memory every model holds (queued behind running jobs); /reload-checkpoint loads it again."""
        current = await API_LANE.run(manager.current)
        job = engine.submit(UnloadRequest(), source="api")
        await job.wait_async()
        if job.state == JobState.FAILED:
            raise job_failure(job, "unloading failed")
        if current is not None:
            with defaults.lock:
                defaults.unloaded = current.name

    @router.post("/reload-checkpoint")
    async def reload_checkpoint() -> None:
        """Load the checkpoint that was unloaded (or the current/default one) onto the device."""
        with defaults.lock:
            name, vae_now = defaults.unloaded, defaults.vae
        entry = await API_LANE.run(find_checkpoint, name, "sd_model_checkpoint")
        job = await load_model(entry.name, vae_now)
        if job.state == JobState.FAILED:
            raise job_failure(job, "loading the model failed", "sd_model_checkpoint")
        with defaults.lock:
            defaults.unloaded = None

    # Extras: upscaling ---------------------------------------------------------------------------------
    def upscale_requests(body: BaseModel, images: list[Image.Image]) -> list[UpscaleRequest] | None:
        """The upscale jobs an Extras body asks for, one per image (None: nothing to do, as in AUTOMATIC1111)."""
        for name in ("gfpgan_visibility", "codeformer_visibility"):
            if (getattr(body, name) or 0) > 0:
                raise ApiError(422, name, "Easel has no face restoration; send 0")
        first = check_upscaler(body.upscaler_1 or NONE, "upscaler_1") if (body.upscaler_1 or NONE) != NONE else NONE
        second = check_upscaler(body.upscaler_2 or NONE, "upscaler_2") if (body.upscaler_2 or NONE) != NONE else NONE
        visibility = float(body.extras_upscaler_2_visibility or 0.0)
        if first == NONE and (second == NONE or visibility <= 0):
            return None
        by_size = body.resize_mode == 1
        if body.resize_mode not in (None, 0, 1):
            raise ApiError(422, "resize_mode", f"must be 0 (scale) or 1 (to a size), got {body.resize_mode}")
        requests = [UpscaleRequest(image=image, upscaler=first, scale=float(body.upscaling_resize or 2.0),
                                   width=int(body.upscaling_resize_w or 0) if by_size else 0,
                                   height=int(body.upscaling_resize_h or 0) if by_size else 0,
                                   crop=bool(body.upscaling_crop), upscaler_2=second,
                                   upscaler_2_visibility=visibility, save_images=bool(body.save_images))
                    for image in images]
        for request in requests:  # every image checked before any is queued (or decoded: only headers are read)
            request.validate(settings.user.limits())
        budget = settings.user.max_request_pixels
        total = sum(image.width * image.height for image in images) + \
            sum(width * height for width, height in (request.output_size() for request in requests))
        if total > budget:
            raise ApiError(422, "upscaling_resize_w" if by_size else "upscaling_resize",
                           f"the images and their results would add up to {total} pixels; the limit is {budget} "
                           "pixels per request (max_request_pixels)")
        return requests

    async def run_upscales(requests: list[UpscaleRequest]) -> list[tuple[Image.Image, str]]:
        """Queue the upscales, await them, and return (image, infotext) for each; the first failure stops the
        rest."""
        jobs = [engine.submit(request, source="api") for request in requests]
        done: list[tuple[Image.Image, str]] = []
        for index, job in enumerate(jobs):
            await job.wait_async()
            result = job.result or JobResult()
            if job.state == JobState.FAILED or not result.images:
                for later in jobs[index + 1:]:
                    engine.worker.interrupt(later.id)
                if job.state == JobState.FAILED:
                    raise job_failure(job, "upscaling failed")
                raise ApiError(500, None, "upscaling was interrupted", "JobFailed")
            done.append((result.images[0], result.infotexts[0]))
        return done

    @router.post("/extra-single-image")
    async def extra_single_image(body: ExtrasSingleImageRequest) -> dict[str, Any]:
        image, requests = await API_LANE.run(single_image_requests, body)
        if requests is None:
            return await API_LANE.run(lambda: {"html_info": "", "image": encode_png(image)})
        [(result, text)] = await run_upscales(requests)
        return await API_LANE.run(lambda: {"html_info": text, "image": encode_png(result, text)})

    def single_image_requests(body: ExtrasSingleImageRequest) -> tuple[Image.Image, list[UpscaleRequest] | None]:
        image = decode_image(body.image, "image", max_image_pixels(), load=False)
        requests = upscale_requests(body, [image])
        load_image(image, "image")
        return image, requests

    @router.post("/extra-batch-images")
    async def extra_batch_images(body: ExtrasBatchImagesRequest) -> dict[str, Any]:
        """Upscale several images alike (AUTOMATIC1111's Extras batch): `imageList` of {"data", "name"}."""
        images, requests = await API_LANE.run(batch_requests, body)
        if requests is None:
            return await API_LANE.run(lambda: {"html_info": "", "images": [encode_png(image) for image in images]})
        done = await run_upscales(requests)
        return await API_LANE.run(lambda: {"html_info": done[0][1],
                                           "images": [encode_png(image, text) for image, text in done]})

    def batch_requests(body: ExtrasBatchImagesRequest) -> tuple[list[Image.Image], list[UpscaleRequest] | None]:
        if not body.imageList:
            raise ApiError(422, "imageList", 'send at least one image as {"data": <base64>, "name": <text>}')
        limit = settings.user.max_batch_count
        if len(body.imageList) > limit:
            raise ApiError(422, "imageList", f"at most {limit} images at once (the batch count limit), got "
                                             f"{len(body.imageList)}")
        images = [decode_image(item.data, f"imageList.{index}.data", max_image_pixels(), load=False)
                  for index, item in enumerate(body.imageList)]
        requests = upscale_requests(body, images)
        for index, image in enumerate(images):
            load_image(image, f"imageList.{index}.data")
        return images, requests

    @router.get("/extensions")
    def extensions() -> list[dict[str, Any]]:
        """The installed extensions: name, version, enabled (for the next start), status and load error."""
        return extension_info(easel.extension_statuses(), redact)

    # PNG info ------------------------------------------------------------------------------------------
    @router.post("/png-info")
    def png_info(body: PNGInfoRequest) -> dict[str, Any]:
        image = decode_image(body.image, "image", max_image_pixels())
        text = read_png_parameters(image) or ""
        items = {k: v for k, v in image.info.items() if isinstance(v, str) and k != "parameters"}
        return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}

    app.include_router(router)
    from webui.api.segment import segment_router  # it builds on this module's helpers

    app.include_router(segment_router(easel, route_class))
    add_extension_routes(app, easel, route_class)
    add_docs(app, "Easel")


def add_extension_routes(app: FastAPI, easel: Any, route_class: type[APIRoute]) -> None:
    """Mount the routes extensions registered; one that cannot be mounted is logged and skipped."""
    extensions = APIRouter(route_class=route_class, tags=["extensions"])
    for contribution in easel.registry.routes:
        try:
            # a plain-function route runs on a few threads of its own, never holding the pool the page needs
            endpoint = in_lane(contribution.endpoint, f"{contribution.extension}:{contribution.path}")
            extensions.add_api_route(contribution.path, endpoint, methods=contribution.methods)
        except (TypeError, ValueError, AssertionError, FastAPIError) as exc:
            log.error("extension %s: route %s not added: %s", contribution.extension, contribution.path, exc)
    if extensions.routes:
        app.include_router(extensions)


class ExtrasBatchImage(BaseModel):
    data: str = Field(description="A base64 image (PNG, JPEG or WebP), with or without a data: prefix")
    name: str | None = Field(None, description="The image's name (accepted for compatibility)")


class ExtrasBatchImagesRequest(ExtrasSingleImageRequest):
    """Body of POST /sdapi/v1/extra-batch-images: the Extras settings, applied to every image of `imageList`."""

    image: str | None = Field(None, description="Not used here: send the images in imageList")
    imageList: list[ExtrasBatchImage] = Field(default_factory=list, description="The images to upscale")


@dataclass(frozen=True)
class ApiTxt2ImgRequest(Txt2ImgRequest):
    """A txt2img request from the API; like AUTOMATIC1111, images are saved only when asked."""

    save_images: bool = False


@dataclass(frozen=True)
class ApiImg2ImgRequest(Img2ImgRequest):
    save_images: bool = False


@dataclass(frozen=True)
class ApiInpaintRequest(InpaintRequest):
    save_images: bool = False


API_REQUEST_TYPES: dict[type, type] = {Txt2ImgRequest: ApiTxt2ImgRequest, Img2ImgRequest: ApiImg2ImgRequest,
                                       InpaintRequest: ApiInpaintRequest}
