"""Options routes: `GET/POST /sdapi/v1/options` and `GET /sdapi/v1/cmd-flags`.

`POST /options` checks every value before it changes anything. `sd_model_checkpoint` queues a model switch (and
awaits it), `sd_vae` and `CLIP_stop_at_last_layers` apply to this client's later requests, and the options that are
Easel settings (`samples_save`, `show_progress_every_n_steps`) are changed and persisted the way the Settings
tab changes them. Other AUTOMATIC1111 options are accepted and ignored (logged). Paths in the answers are
relative to Easel's folders.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Body

from webui.api.context import ApiContext, whole_number
from webui.api.errors import ApiError, job_failure
from webui.api.threads import API_LANE
from webui.engine.worker import JobState
from webui.redact import public_path

log = logging.getLogger(__name__)


def flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    raise ApiError(422, name, f"must be true or false, got {value!r}")


def options_router(api: ApiContext) -> APIRouter:
    """The options and command-line flag routes over `api`'s Easel."""
    easel, manager, engine, settings, defaults = api.easel, api.manager, api.engine, api.settings, api.defaults
    find_checkpoint, check_vae, load_model, shown = api.find_checkpoint, api.check_vae, api.load_model, api.shown
    router = api.router()

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
        clip_skip = whole_number(body["CLIP_stop_at_last_layers"], "CLIP_stop_at_last_layers", 1, 12) \
            if "CLIP_stop_at_last_layers" in body else None
        vae = check_vae(body["sd_vae"], "sd_vae") if "sd_vae" in body else None
        save = flag(body["samples_save"], "samples_save") if "samples_save" in body else None
        preview = whole_number(body["show_progress_every_n_steps"], "show_progress_every_n_steps", -1) \
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

    return router
