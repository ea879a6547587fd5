"""The AUTOMATIC1111-compatible REST API (`/sdapi/v1/*`) over Easel's engine.

`create_api(app, easel)` adds the routes to a FastAPI app: the Gradio app when the UI runs, a bare one with
`--nowebui`. Generation goes through the same engine queue as the UI; the handlers that wait are plain `def`s,
which FastAPI runs in its thread pool, so the event loop keeps answering `/progress` and `/interrupt` while a
job runs. Every error leaves as JSON `{"error", "detail", "field"}` (AUTOMATIC1111 clients read `detail`): bad
input is a 4xx naming the field, a full queue a 503, and only a failure inside the pipeline a 500. Bodies and
decoded images have size limits. When the UI is protected with `--gradio-auth`, the API asks for the same
logins through HTTP Basic authentication.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import secrets
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine

from fastapi import APIRouter, Body, FastAPI, Request, Response
from fastapi.exceptions import FastAPIError, RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel

from webui import __version__
from webui.api.schemas import (
    PNGInfoRequest,
    StableDiffusionImg2ImgProcessingAPI,
    StableDiffusionTxt2ImgProcessingAPI,
    body_parameters,
    request_values,
)
from webui.engine.images import binarize, mask_to_l
from webui.engine.samplers import resolve_sampler, sampler_names
from webui.engine.worker import Job, JobResult, JobState, QueueFullError
from webui.infotext import parse_infotext, png_bytes, read_png_parameters
from webui.requests import GenerationRequest, Img2ImgRequest, InpaintRequest, RequestError, Txt2ImgRequest

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")

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


def _route_class(max_body_bytes: int, logins: list[tuple[str, str]]) -> type[APIRoute]:
    """Routes that check logins and the body size, and turn every error into the JSON above.

    Done per route rather than as app middleware or exception handlers, because the Gradio app has already
    started when the API is added to it.
    """

    class EaselRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    check_login(request, logins)
                    await read_body(request, max_body_bytes)
                    return await handler(request)
                except RequestValidationError as exc:
                    return validation_response(exc)
                except ApiError as exc:
                    return error_response(exc.status, exc.kind, exc.message, exc.field, exc.headers)
                except RequestError as exc:
                    return error_response(422, "RequestError", exc.message, exc.field)
                except QueueFullError as exc:
                    return error_response(503, "QueueFull", str(exc), None, {"Retry-After": "5"})
                except Exception as exc:  # noqa: BLE001 - the one place internal failures become a 500
                    log.exception("API %s %s failed", request.method, request.url.path)
                    return error_response(500, type(exc).__name__, str(exc) or type(exc).__name__, None)

            return guarded

    return EaselRoute


def check_login(request: Request, logins: list[tuple[str, str]]) -> None:
    if not logins:
        return
    challenge = {"WWW-Authenticate": 'Basic realm="Easel API"'}
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise ApiError(401, None, "this API needs a login (HTTP Basic, the --gradio-auth credentials)",
                       "Unauthorized", challenge)
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(401, None, "malformed Authorization header", "Unauthorized", challenge) from None
    ok = False
    for known_user, known_password in logins:  # compare every pair in constant time
        ok |= secrets.compare_digest(user.encode(), known_user.encode()) & \
              secrets.compare_digest(password.encode(), known_password.encode())
    if not ok:
        raise ApiError(401, None, "wrong user name or password", "Unauthorized", challenge)


async def read_body(request: Request, limit: int) -> None:
    """Read the body, refusing it once it passes `limit` bytes, and leave it cached for the handler."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body", f"the request body is {int(declared)} bytes; the limit is {limit}",
                       "PayloadTooLarge")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, "body", f"the request body exceeds the limit of {limit} bytes", "PayloadTooLarge")
        chunks.append(chunk)
    request._body = b"".join(chunks)  # where Starlette's Request.body() keeps the body it has read


# Images -----------------------------------------------------------------------------------------------
def decode_image(data: Any, field_name: str, max_pixels: int) -> Image.Image:
    """A base64 image (optionally a data: URL), its size checked before its pixels are decoded."""
    if not isinstance(data, str) or not data.strip():
        raise ApiError(422, field_name, "must be a base64-encoded image")
    text = data.strip()
    if text.startswith("data:"):
        text = text.partition(",")[2]
    text = "".join(text.split())
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, field_name, "is not valid base64") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise ApiError(422, field_name, f"image is {width}x{height}; the limit is {max_pixels} pixels")
            image.load()
    except ApiError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(422, field_name, f"is not an image Easel can read ({', '.join(IMAGE_FORMATS)})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ApiError(422, field_name, f"the image could not be decoded ({exc})") from None
    return image


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
def create_api(app: FastAPI, easel: Any, max_body_bytes: int = MAX_BODY_BYTES) -> None:
    """Add the /sdapi/v1 routes for this Easel to `app`."""
    manager, engine, settings = easel.manager, easel.engine, easel.settings
    defaults = ApiDefaults()
    route_class = _route_class(max_body_bytes, settings.auth_pairs())
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
            raise ApiError(422, field_name, f"model {entry.name!r} cannot be used: {entry.reason}")
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
        names = sampler_names(arch)
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
            resolve_sampler(name, arch)
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
        if cls is InpaintRequest:
            if "mask_blur" not in body.model_fields_set and (body.mask_blur_x or body.mask_blur_y):
                values["mask_blur"] = max(body.mask_blur_x or 0, body.mask_blur_y or 0)
            check_mask(values.get("mask"), bool(values.get("inpainting_mask_invert")))
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

    def run(body: BaseModel, cls: type[GenerationRequest], include_images: bool = False) -> dict[str, Any]:
        request, entry = build_request(body, cls)
        job = engine.submit(request, source="api")
        log.info("API %s job %s queued at %d", request.mode, job.id, engine.worker.position(job))
        job.wait()
        return generation_response(body, request, entry, job, include_images)

    def generation_response(body: BaseModel, request: GenerationRequest, entry: Any, job: Job,
                            include_images: bool) -> dict[str, Any]:
        if job.state == JobState.FAILED:
            raise ApiError(500, None, f"generation failed: {job.error or 'unknown error'}", "JobFailed")
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
            "paths": [str(p) for p in result.paths],
        }

    # Generation ----------------------------------------------------------------------------------------
    @router.post("/txt2img")
    def txt2img(body: StableDiffusionTxt2ImgProcessingAPI) -> dict[str, Any]:  # type: ignore[valid-type]
        return run(body, Txt2ImgRequest)

    @router.post("/img2img")
    def img2img(body: StableDiffusionImg2ImgProcessingAPI) -> dict[str, Any]:  # type: ignore[valid-type]
        if not body.init_images or not body.init_images[0]:
            raise ApiError(422, "init_images", "an input image is required (a list of base64 images)")
        cls = InpaintRequest if body.mask else Img2ImgRequest
        return run(body, cls, include_images=bool(body.include_init_images))

    # Models, samplers, options -------------------------------------------------------------------------
    @router.get("/sd-models")
    def sd_models() -> list[dict[str, Any]]:
        return [{"title": e.title, "model_name": e.name, "hash": e.short_hash,
                 "sha256": manager.hashes.cached_sha256(e.path) if e.kind != "hub" else None,
                 "filename": str(e.path), "config": None}
                for e in manager.checkpoints() if e.supported]

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints() -> None:
        manager.refresh()

    @router.post("/refresh-vae")
    def refresh_vae() -> None:
        manager.refresh()

    @router.get("/sd-vae")
    def sd_vae() -> list[dict[str, Any]]:
        return [{"model_name": v.name, "filename": str(getattr(v, "path", ""))} for v in manager.vaes()]

    @router.get("/samplers")
    def samplers() -> list[dict[str, Any]]:
        current = manager.current()
        names = sampler_names(current.arch) if current is not None else easel.sampler_choices(None)
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
        return [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
                for name in ("Lanczos", "Nearest")]

    @router.get("/scripts")
    def scripts() -> dict[str, list[str]]:
        return {"txt2img": [], "img2img": []}

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
            "outdir_samples": str(settings.outputs_dir),
            "show_progress_every_n_steps": user.live_preview_every,
            "live_previews_enable": user.live_preview_every > 0,
            "sd_checkpoint_cache": user.ram_cache_size,
        }

    @router.post("/options")
    def set_options(body: dict[str, Any] = Body(...)) -> None:
        # Check every value first, so a bad one changes nothing.
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
        if entry is not None:
            with defaults.lock:
                vae_now = defaults.vae
            manager.get(entry.name, "txt2img", None if vae_now == "Automatic" else vae_now)
            log.info("API switched the model to %s", entry.name)

    @router.get("/cmd-flags")
    def cmd_flags() -> dict[str, Any]:
        return {
            "port": settings.port, "listen": settings.listen, "share": settings.share, "api": settings.api,
            "nowebui": settings.nowebui, "gradio_auth": "(set)" if settings.gradio_auth else None,
            "data_dir": str(settings.data_dir), "ckpt_dir": [str(p) for p in settings.ckpt_dirs],
            "lora_dir": [str(p) for p in settings.lora_dirs], "vae_dir": [str(p) for p in settings.vae_dirs],
            "device": settings.device, "precision": settings.precision, "medvram": settings.medvram,
            "lowvram": settings.lowvram,
        }

    # Progress and control ------------------------------------------------------------------------------
    @router.get("/progress")
    def progress(skip_current_image: bool = False) -> dict[str, Any]:
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
    def interrupt() -> dict[str, Any]:
        return {"interrupted": engine.worker.interrupt()}

    @router.post("/skip")
    def skip() -> dict[str, Any]:
        return {"skipped": engine.worker.skip()}

    # PNG info ------------------------------------------------------------------------------------------
    @router.post("/png-info")
    def png_info(body: PNGInfoRequest) -> dict[str, Any]:
        image = decode_image(body.image, "image", max_image_pixels())
        text = read_png_parameters(image) or ""
        items = {k: v for k, v in image.info.items() if isinstance(v, str) and k != "parameters"}
        return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}

    app.include_router(router)
    add_extension_routes(app, easel, route_class)


def add_extension_routes(app: FastAPI, easel: Any, route_class: type[APIRoute]) -> None:
    """Mount the routes extensions registered; one that cannot be mounted is logged and skipped."""
    extensions = APIRouter(route_class=route_class, tags=["extensions"])
    for contribution in easel.registry.routes:
        try:
            extensions.add_api_route(contribution.path, contribution.endpoint, methods=contribution.methods)
        except (TypeError, ValueError, AssertionError, FastAPIError) as exc:
            log.error("extension %s: route %s not added: %s", contribution.extension, contribution.path, exc)
    if extensions.routes:
        app.include_router(extensions)


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
