"""Model and machine routes: checkpoints, VAEs, samplers, schedulers, upscalers, API scripts, LoRAs,
embeddings, extensions, memory, and unloading or reloading the checkpoint.

Listings shape Easel's state into AUTOMATIC1111's JSON (`webui.api.compat`), with paths relative to Easel's
folders. Unloading and reloading are queued behind running jobs like a generation, and awaited.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from webui.api.compat import (
    LATENT_UPSCALE_MODES,
    SAMPLER_ALIASES,
    embeddings_info,
    extension_info,
    lora_info,
    memory_info,
    scheduler_info,
    script_info,
    upscaler_info,
)
from webui.api.context import ApiContext
from webui.api.errors import job_failure
from webui.api.threads import API_LANE
from webui.engine.tasks import UnloadRequest
from webui.engine.worker import JobState


def models_router(api: ApiContext) -> APIRouter:
    """The listing, refresh, memory and unload/reload routes over `api`'s Easel."""
    easel, manager, engine, defaults = api.easel, api.manager, api.engine, api.defaults
    find_checkpoint, load_model, shown, redact = api.find_checkpoint, api.load_model, api.shown, api.redact
    router = api.router()

    # Checkpoints, VAEs, samplers, upscalers, scripts ----------------------------------------------------
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
        return [{"name": n, "aliases": SAMPLER_ALIASES.get(n, []), "options": {}} for n in names]

    @router.get("/schedulers")
    def schedulers() -> list[dict[str, Any]]:
        """The schedule types (`scheduler` in txt2img and img2img); which sampler runs which, a 422 says."""
        return scheduler_info()

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
        cpu_path = getattr(engine, "cpu_path", None)  # which CPU backend ran last, and why (docs/CPU.md)
        return memory_info({**manager.memory_report(), **({"cpu_path": cpu_path.status()} if cpu_path else {})})

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

    @router.get("/extensions")
    def extensions() -> list[dict[str, Any]]:
        """The installed extensions: name, version, enabled (for the next start), status and load error."""
        return extension_info(easel.extension_statuses(), redact)

    return router
