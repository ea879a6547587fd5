"""Options routes: `GET/POST /sdapi/v1/options` and `GET /sdapi/v1/cmd-flags`.

`POST /options` checks every value before it changes anything. `sd_model_checkpoint` queues a model switch (and
awaits it), `sd_vae` and `CLIP_stop_at_last_layers` apply to this client's later requests, and the options that are
Easel settings (`samples_save`, `show_progress_every_n_steps`, `randn_source`, `flow_shift`, `img2img_fix_steps`, the
face restorer) go through `webui.settings.apply_changes`, the path the Settings tab takes: the same checks and messages, the same atomic write of config.json. Other options are accepted at the value GET reports (a client may post back what it read), and any other key or value is a 422 naming it. Paths in the answers are
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
from webui.settings import apply_changes

log = logging.getLogger(__name__)


# AUTOMATIC1111 options that are Easel user settings: option name -> setting key.
SETTING_OPTIONS = {"samples_save": "save_images", "enable_pnginfo": "enable_pnginfo", "show_progress_every_n_steps": "live_preview_every",
                   "randn_source": "randn_source", "img2img_fix_steps": "img2img_fix_steps",
                   "flow_shift": "flow_shift", "face_restoration_model": "face_restoration_model",
                   "code_former_weight": "code_former_weight",
                   "vae_tiling": "vae_tiling", "vae_tile_size": "vae_tile_size",
                   "offload_mode": "offload_mode", "weight_precision": "weight_precision", "cpu_backend": "cpu_backend",
                   "tiny_vae_decode": "tiny_vae_decode", "tiny_vae_preview": "tiny_vae_preview"}
OPTION_NAMES = {key: option for option, key in SETTING_OPTIONS.items()}


def setting_value(option: str, value: Any) -> Any:
    """An option's value as the setting takes it: AUTOMATIC1111's -1 for the preview period means no previews."""
    if option == "show_progress_every_n_steps" and not isinstance(value, bool) and isinstance(value, (int, float, str)):
        try:
            return 0 if float(value) == -1 else value
        except ValueError:
            return value
    return value


def current_options(api: ApiContext) -> dict[str, Any]:
    """Every option GET /sdapi/v1/options reports, with its value now."""
    easel, manager, engine, settings, defaults = api.easel, api.manager, api.engine, api.settings, api.defaults
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
        "enable_pnginfo": user.enable_pnginfo,
        "outdir_txt2img_samples": public_path(settings.outputs_dir / "txt2img-images", [settings.data_dir]),
        "outdir_img2img_samples": public_path(settings.outputs_dir / "img2img-images", [settings.data_dir]),
        "outdir_extras_samples": public_path(settings.outputs_dir / "extras-images", [settings.data_dir]),
        "eta_noise_seed_delta": 0,
        "img2img_fix_steps": user.img2img_fix_steps,  # img2img runs exactly `steps` steps (else steps x strength)
        "randn_source": user.randn_source,
        "ESRGAN_tile": engine.upscalers.tile,
        "ESRGAN_tile_overlap": engine.upscalers.tile_overlap,
        "upscaler_for_img2img": None,
        "disabled_extensions": list(user.disabled_extensions),
        "sd_lora": "None",
        "flow_shift": user.flow_shift,  # flow-matching models' timestep shift; 0 = each model's own
        "face_restoration_model": user.face_restoration_model,  # restore_faces: CodeFormer or GFPGAN
        "code_former_weight": user.code_former_weight,  # CodeFormer's fidelity w (0 = most restored)
        "vae_tiling": user.vae_tiling, "vae_tile_size": user.vae_tile_size,  # webui.engine.tiling
        "offload_mode": user.offload_mode,  # webui.model_manager.memory.choose_offload
        "weight_precision": user.weight_precision,  # webui.model_manager.formats: next loads' weight storage
        "cpu_backend": user.cpu_backend,  # webui.engine.cpu_path (docs/CPU.md)
        "tiny_vae_decode": user.tiny_vae_decode, "tiny_vae_preview": user.tiny_vae_preview,
    }


def check_other_options(body: dict[str, Any], reported: dict[str, Any]) -> None:
    """The keys of a POST /options body that are not applied above: accepted where they describe what Easel does
    (a fixed option at its value, a reported option at its current value, so a client may post back what GET gave
    it), else a 422 naming the key. Nothing is ignored silently."""
    from webui.api.override_settings import FIXED, check_described

    applied = {"sd_model_checkpoint", "CLIP_stop_at_last_layers", "sd_vae", *SETTING_OPTIONS}
    for key in sorted(set(body) - applied):
        if key in FIXED or key in reported:
            check_described(key, body[key], reported, key, "not settable through the API (read-only here")
        else:
            raise ApiError(422, key, "not an option Easel knows; it sets these: "
                                     f"{', '.join(sorted(applied))}")


def options_router(api: ApiContext) -> APIRouter:
    """The options and command-line flag routes over `api`'s Easel."""
    easel, settings, defaults = api.easel, api.settings, api.defaults
    find_checkpoint, check_vae, load_model, shown = api.find_checkpoint, api.check_vae, api.load_model, api.shown
    router = api.router()

    @router.get("/options")
    def get_options() -> dict[str, Any]:
        return current_options(api)

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
        changes = {key: setting_value(option, body[option]) for option, key in SETTING_OPTIONS.items()
                   if option in body}
        check_other_options(body, current_options(api))
        if changes:  # checked, written and made current as the Settings tab does, or nothing changes
            _, errors = apply_changes(settings, changes, easel.sampler_choices(None))
            if errors:
                raise ApiError(422, OPTION_NAMES.get(errors[0].key, errors[0].key), errors[0].message)
        with defaults.lock:
            if clip_skip is not None:
                defaults.clip_skip = clip_skip
            if vae is not None:
                defaults.vae = vae
        return entry

    @router.get("/cmd-flags")
    def cmd_flags() -> dict[str, Any]:
        return {
            "port": settings.port, "listen": settings.listen, "share": settings.share, "api": settings.api,
            "nowebui": settings.nowebui, "gradio_auth": "(set)" if settings.gradio_auth else None,
            "data_dir": shown(settings.data_dir), "ckpt_dir": [shown(p) for p in settings.ckpt_dirs],
            "lora_dir": [shown(p) for p in settings.lora_dirs], "vae_dir": [shown(p) for p in settings.vae_dirs],
            "device": settings.device, "precision": settings.precision, "medvram": settings.medvram,
            "lowvram": settings.lowvram, "offload": settings.offload_flag,
            "enable_insecure_extension_access": settings.enable_insecure_extension_access,
            "allow_hub_downloads": settings.allow_hub_downloads,
            "esrgan_models_path": [shown(p) for p in settings.esrgan_dirs],
            "controlnet_dir": [shown(p) for p in settings.controlnet_dirs],
            "embeddings_dir": [shown(p) for p in settings.embedding_dirs],
            "api_auth": "(set)" if settings.api_auth else None,
            "cors_allow_origins": ",".join(settings.cors_allow_origins) or None,
            "cors_allow_origins_regex": settings.cors_allow_origins_regex,
            "api_server_stop": settings.api_server_stop,
        }

    return router
