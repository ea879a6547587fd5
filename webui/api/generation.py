"""Generation routes: `POST /sdapi/v1/txt2img` and `POST /sdapi/v1/img2img` (inpainting when a mask is sent).

A body becomes the same typed request the UI builds (`webui.requests`), every value checked before it is queued;
an installed API script (`script_name`) may turn it into several. The handlers are `async`: they check the body and
decode its images on the API's lane of threads, submit, and `await` the jobs without holding a thread, so a full
queue answers 503 at once and `/progress` keeps answering. A field the client did not send takes the model's own
default (`webui.model_manager.defaults`: size, steps, CFG, sampler, distilled guidance); a field AUTOMATIC1111 has and
Easel does not honour passes only at its default (`webui.api.a1111_fields`). `override_settings` apply to this
request only (`webui.api.override_settings`: each key honoured or a 422 naming it), unless
`override_settings_restore_afterwards` is false: afterwards the model loaded before is loaded again, or, when none
was loaded yet, the override model is unloaded so the default stays the default. The answer's
`info` is built from the finished job: its request, its images' seeds and the parameters their infotext was written
from.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from webui import __version__
from webui.api.a1111_fields import check_extra_fields
from webui.api.compat import SAMPLER_ALIASES
from webui.api.context import ApiContext
from webui.api.errors import ApiError, job_failure
from webui.api.images import check_mask, decode_image, encode_png
from webui.api.options import current_options
from webui.api.override_settings import PREFIX, Overrides, kept_options, read_overrides
from webui.api.schemas import (
    StableDiffusionImg2ImgProcessingAPI,
    StableDiffusionTxt2ImgProcessingAPI,
    body_parameters,
    request_values,
    sent_fields,
)
from webui.api.threads import API_LANE
from webui.engine.refiner import same_latent_space
from webui.engine.script_job import ScriptJob
from webui.engine.worker import Job, JobResult, JobState
from webui.infotext import written_text
from webui.model_manager.defaults import ModelDefaults, entry_defaults
from webui.model_manager.families import FAMILY_ARCHS, takes_vae
from webui.redact import public_path
from webui.settings import apply_changes
from webui.engine.samplers import FLOW_ARCHS
from webui.requests import (NO_REFINER, SAME_CHECKPOINT, SAME_SAMPLER, SAME_SCHEDULER, GenerationRequest,
                            Img2ImgRequest, InpaintRequest, Txt2ImgRequest, schedule_label, split_legacy)

log = logging.getLogger(__name__)

INFO_CORE_KEYS = {"Prompt", "Negative prompt", "Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash",
                  "Model", "VAE", "Clip skip", "Version"}


def generation_router(api: ApiContext) -> APIRouter:
    """The txt2img and img2img routes over `api`'s Easel."""
    easel, manager, engine, settings, defaults = api.easel, api.manager, api.engine, api.settings, api.defaults
    find_checkpoint, check_vae, check_upscaler = api.find_checkpoint, api.check_vae, api.check_upscaler
    load_model, max_image_pixels = api.load_model, api.max_image_pixels
    router = api.router()

    def choose_sampler(body: BaseModel, arch: Any, values: dict[str, Any], own: str | None = None) -> str:
        """The sampler name for this model, from sampler_name / sampler_index (AUTOMATIC1111's aliases and older
        names with the schedule in them, "DPM++ 2M Karras", accepted), or `own` (the model's default sampler) when
        the client sent neither; checks `scheduler` for it."""
        field_name = "sampler_name" if body.sampler_name else "sampler_index"
        fallback = body.sampler_index if "sampler_index" in sent_fields(body) else (own or body.sampler_index)
        requested = str(body.sampler_name or fallback or "Euler").strip()
        samplers = easel.registry.samplers
        names = samplers.names(arch)
        lowered = {n.lower(): n for n in names}
        lowered.update({alias: n for n, aliases in SAMPLER_ALIASES.items() for alias in aliases if n in names})
        base, legacy = split_legacy(requested)
        name = lowered.get(requested.lower()) or lowered.get(base.lower(), requested)
        if legacy and name in names and values.get("scheduler", "Automatic") == "Automatic" and arch not in FLOW_ARCHS:
            values["scheduler"] = legacy
        try:
            samplers.resolve(name, arch)
        except ValueError:
            raise ApiError(422, field_name, f"{arch.value} models cannot run the sampler {requested!r}; choose one "
                                            f"of {', '.join(names)}") from None
        try:
            samplers.check_schedule(name, values.get("scheduler", "Automatic"), arch)
        except ValueError as exc:
            raise ApiError(422, "scheduler", getattr(exc, "message", str(exc))) from None
        return name

    def build_request(body: BaseModel, cls: type[GenerationRequest]) -> tuple[GenerationRequest, Any]:
        """The typed request for an API body, every value checked before it is queued."""
        check_extra_fields("txt2img" if cls is Txt2ImgRequest else "img2img", set(type(body).model_fields),
                           body.model_extra)
        found = read_overrides(body.override_settings, settings.user, current_options(api), check_vae)
        entry = find_checkpoint(found.checkpoint, PREFIX + "sd_model_checkpoint")
        values = request_values(body, cls, lambda data, name: decode_image(data, name, max_image_pixels()))
        own = entry_defaults(entry)
        values.update(omitted_defaults(body, own))
        values["checkpoint"] = entry.name
        values["sampler"] = choose_sampler(body, entry.arch, values, own.sampler)
        with defaults.lock:
            clip_skip, vae = defaults.clip_skip, defaults.vae
        if "clip_skip" not in body.model_fields_set or body.clip_skip is None:
            # the families without CLIP skip (DiT, PixArt, ...) take the default, not the setting; one sent is checked
            values["clip_skip"] = 1 if entry.arch in FAMILY_ARCHS else clip_skip
        # the VAE setting is for the models that can take one (not aMUSEd, Sana, IF, Karlo)
        own_vae_only = entry.arch in FAMILY_ARCHS and not takes_vae(entry.arch, entry.variant)
        values["vae"] = "Automatic" if own_vae_only else vae
        values.update(found.values)  # override_settings: clip skip, VAE, face restorer for this request
        values["setting_overrides"] = found.setting_pairs()  # and the per-job settings
        if cls is Txt2ImgRequest:
            apply_hires_size(body, values)
            if values.get("enable_hr"):
                values["hr_upscaler"] = check_upscaler(values.get("hr_upscaler", "Lanczos"), "hr_upscaler", True)
            check_hires_fields(values, entry)
        if cls is not InpaintRequest:
            check_refiner(values, entry)
        if cls is InpaintRequest:
            if "mask_blur" not in body.model_fields_set and (body.mask_blur_x or body.mask_blur_y):
                values["mask_blur"] = max(body.mask_blur_x or 0, body.mask_blur_y or 0)
            check_mask(values.get("mask"), bool(values.get("inpainting_mask_invert")))
        values["extension_args"] = easel.registry.parse_request_args(body.alwayson_scripts)
        api_cls = API_REQUEST_TYPES[cls]
        request = api_cls(**values, save_images=bool(body.save_images))
        return request, entry, found

    def check_hires_fields(values: dict[str, Any], entry: Any) -> None:
        """The hires checkpoint installed, its sampler by AUTOMATIC1111's names and aliases, its schedule type."""
        values["hr_scheduler"] = schedule_label(values.get("hr_scheduler", SAME_SCHEDULER), "hr_scheduler")
        arch = entry.arch
        checkpoint = values.get("hr_checkpoint_name", SAME_CHECKPOINT)
        if checkpoint not in ("", SAME_CHECKPOINT):
            hires_entry = find_checkpoint(checkpoint, "hr_checkpoint_name")
            values["hr_checkpoint_name"], arch = hires_entry.name, hires_entry.arch
        sampler = values.get("hr_sampler_name", SAME_SAMPLER)
        if sampler not in ("", SAME_SAMPLER):
            names = easel.registry.samplers.names(arch)
            lowered = {n.lower(): n for n in names}
            lowered.update({alias: n for n, aliases in SAMPLER_ALIASES.items() for alias in aliases if n in names})
            values["hr_sampler_name"] = lowered.get(sampler.strip().lower(), sampler)

    def check_refiner(values: dict[str, Any], entry: Any) -> None:
        """A refiner installed and of the base's latent space (SD 1.x/2.x, SDXL), or a 422 naming it."""
        name = values.get("refiner_checkpoint", NO_REFINER)
        if name in ("", NO_REFINER) or float(values.get("refiner_switch_at", 0.8) or 0) >= 1.0:
            return
        refiner = find_checkpoint(name, "refiner_checkpoint")
        if not same_latent_space(entry.arch, refiner.arch):
            raise ApiError(422, "refiner_checkpoint", f"{refiner.name} ({refiner.arch.value}) cannot refine "
                                                      f"{entry.name} ({entry.arch.value}): a refiner needs a model "
                                                      "of the same latent space (SD 1.x with SD 2.x, SDXL with SDXL)")
        values["refiner_checkpoint"] = refiner.name

    def omitted_defaults(body: BaseModel, own: ModelDefaults) -> dict[str, Any]:
        """The model's defaults for the fields the client did not send (size, steps, CFG, distilled guidance)."""
        sent = sent_fields(body)
        values = {"width": own.width, "height": own.height, "steps": own.steps, "cfg_scale": own.cfg_scale}
        if own.distilled_cfg_scale is not None:
            values["distilled_cfg_scale"] = own.distilled_cfg_scale
        return {name: value for name, value in values.items() if name not in sent}

    def apply_hires_size(body: BaseModel, values: dict[str, Any]) -> None:
        """hr_resize_x/y (a target size) become the scale that reaches it."""
        rx, ry = body.hr_resize_x or 0, body.hr_resize_y or 0
        if rx > 0 or ry > 0:
            width, height = values.get("width", 512), values.get("height", 512)
            if not width or not height:
                return
            values["hr_scale"] = max(rx / width, ry / height)

    def script_requests(body: BaseModel, request: GenerationRequest) -> list[GenerationRequest | ScriptJob]:
        """The request(s) an installed API script makes of this one (`script_name`, `script_args`): requests, or
        one script job (a plot: its grids first, then its images)."""
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
        if not items or not all(isinstance(item, (GenerationRequest, ScriptJob)) for item in items):
            raise ApiError(500, "script_name", f"the script {script.name!r} (extension {script.extension}) did "
                                               "not return a request or a list of requests", "ScriptFailed")
        return items

    def prepare(body: BaseModel, cls: type[GenerationRequest]) -> tuple[GenerationRequest, Any, list[Any], Any,
                                                                        Overrides]:
        """(request, checkpoint entry, the requests to queue, the model loaded now, the overrides): the CPU part, on
        a lane thread (images are decoded here, and the model manager may be busy loading)."""
        before = manager.current()
        request, entry, found = build_request(body, cls)
        return request, entry, script_requests(body, request), before or easel.default_checkpoint() or None, found

    async def run(body: BaseModel, cls: type[GenerationRequest], include_images: bool = False) -> dict[str, Any]:
        request, entry, items, previous, found = await API_LANE.run(prepare, body, cls)
        jobs = [engine.submit(item, source="api") for item in items]
        for job in jobs:
            log.info("API %s job %s queued at %d", request.mode, job.id, engine.worker.position(job))
        for job in jobs:
            await job.wait_async()
        await after_overrides(body, entry, previous, found)
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
            result.parameters += part.parameters
            result.seeds += part.seeds
            result.paths += part.paths
            result.info = result.info or dict(part.info)
        interrupted = any(job.state == JobState.INTERRUPTED for job in jobs)
        combined.update(result=result, started=jobs[0].started, finished=jobs[-1].finished,
                        state=JobState.INTERRUPTED if interrupted else JobState.DONE)
        return combined

    async def after_overrides(body: BaseModel, entry: Any, previous: Any, found: Overrides) -> None:
        """override_settings_restore_afterwards: put the model back (true, the default) or keep the overrides for
        later requests (false)."""
        override = body.override_settings or {}
        if not override:
            return
        if body.override_settings_restore_afterwards is False:
            await API_LANE.run(keep_overrides, found)
            return
        if "sd_model_checkpoint" not in override or previous is None:
            return
        if isinstance(previous, str):  # nothing was loaded before: restore that (the default stays the default)
            if previous != entry.name:
                job = engine.unload(entry.name, source="api", wait=False)
                await job.wait_async()
                if job.state == JobState.FAILED:
                    log.warning("API could not unload the override model %s: %s", entry.name, job.error)
            return
        if previous.name != entry.name:
            with defaults.lock:
                vae_now = defaults.vae
            job = await load_model(previous.name, vae_now)
            if job.state == JobState.FAILED:
                log.warning("API could not restore the model %s after an override: %s", previous.name, job.error)

    def keep_overrides(found: Overrides) -> None:
        """The overrides made the settings, as POST /options makes them (the model stays loaded)."""
        with defaults.lock:
            if "clip_skip" in found.values:
                defaults.clip_skip = found.values["clip_skip"]
            if "vae" in found.values:
                defaults.vae = found.values["vae"]
        changes = kept_options(found)
        if changes:  # checked when the request was made; checked again and written as the Settings tab does
            _, errors = apply_changes(settings, changes, easel.sampler_choices(None))
            if errors:
                log.warning("API could not keep override_settings: %s", "; ".join(str(e) for e in errors))

    def generation_response(body: BaseModel, request: GenerationRequest, entry: Any, job: Job,
                            include_images: bool) -> dict[str, Any]:
        if job.state == JobState.FAILED:
            raise job_failure(job, "generation failed")
        result = job.result or JobResult()
        images = [encode_png(img, text if result.pnginfo else None) for img, text in zip(result.images, result.infotexts)] \
            if body.send_images is not False else []
        info = generation_info(request, entry, job, result)
        return {"images": images, "parameters": body_parameters(body, include_images), "info": json.dumps(info)}

    def generation_info(request: GenerationRequest, entry: Any, job: Job, result: JobResult) -> dict[str, Any]:
        """AUTOMATIC1111's `info` object for a finished job."""
        count = len(result.images)
        seeds = list(result.seeds)
        params = result.parameters[0] if result.parameters else {}  # what the first infotext was written from
        denoising = getattr(request, "denoising_strength", None)
        if isinstance(request, Txt2ImgRequest):
            denoising = request.hr_denoising_strength if request.enable_hr else None
        started = job.started or job.created
        styled = result.info.get("styled") or {}  # the prompts with the request's styles applied
        # the variation seeds the images were made with, where a variation was mixed in (AUTOMATIC1111: -1 = none)
        subseeds = [p["Variation seed"] for p in result.parameters if p.get("Variation seed") is not None]
        resized = str(params.get("Seed resize from") or "")
        resize_w, resize_h = (int(v) for v in resized.split("x")) if "x" in resized else (-1, -1)
        return {
            "prompt": request.prompt,
            "all_prompts": [styled.get("prompt", request.prompt)] * count,
            "negative_prompt": request.negative_prompt,
            "all_negative_prompts": [styled.get("negative_prompt", request.negative_prompt)] * count,
            "seed": seeds[0] if seeds else request.seed,
            "all_seeds": seeds,
            "subseed": subseeds[0] if subseeds else -1,
            "all_subseeds": subseeds or [-1] * count,
            "subseed_strength": params.get("Variation seed strength") or 0,
            "width": request.width,
            "height": request.height,
            "sampler_name": params.get("Sampler") or request.sampler,
            "cfg_scale": request.cfg_scale,
            "steps": request.steps,
            "batch_size": request.batch_size,
            "restore_faces": bool(getattr(request, "restore_faces", False)),
            "face_restoration_model": params.get("Face restoration"),
            "sd_model_name": result.info.get("model") or entry.name,
            "sd_model_hash": result.info.get("model_hash") or entry.short_hash,
            "sd_vae_name": None if request.vae in ("", "Automatic", "None") else request.vae,
            "sd_vae_hash": None,
            "seed_resize_from_w": resize_w,
            "seed_resize_from_h": resize_h,
            "denoising_strength": denoising,
            "extra_generation_params": {k: written_text(v) for k, v in params.items()
                                        if k not in INFO_CORE_KEYS and v is not None and v != ""},
            "index_of_first_image": int(result.info.get("grids", 0)),
            "infotexts": list(result.infotexts),
            "styles": list(request.styles),
            "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(started)),
            "clip_skip": request.clip_skip,
            "is_using_inpainting_conditioning": False,
            "version": f"Easel {__version__}",
            "interrupted": job.state == JobState.INTERRUPTED,
            "paths": [public_path(p, [settings.data_dir]) for p in result.paths],
        }

    @router.post("/txt2img")
    async def txt2img(body: StableDiffusionTxt2ImgProcessingAPI) -> dict[str, Any]:  # type: ignore[valid-type]
        return await run(body, Txt2ImgRequest)

    @router.post("/img2img")
    async def img2img(body: StableDiffusionImg2ImgProcessingAPI) -> dict[str, Any]:  # type: ignore[valid-type]
        if not body.init_images or not body.init_images[0]:
            raise ApiError(422, "init_images", "an input image is required (a list of base64 images)")
        cls = InpaintRequest if body.mask else Img2ImgRequest
        return await run(body, cls, include_images=bool(body.include_init_images))

    return router


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
