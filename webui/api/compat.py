"""Helpers for the AUTOMATIC1111 routes that describe the machine rather than generate: memory, embeddings,
LoRAs, upscalers (and the Real-ESRGAN listing), face restorers, hypernetworks, separate modules, API scripts, and
the OpenAPI page.

They shape Easel's own state into the JSON AUTOMATIC1111 answers with, so existing clients read it unchanged.
Where something cannot be used, the answer says why (an embedding listed as skipped carries its reason). The
AUTOMATIC1111 names clients send for samplers and schedules are listed here too.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

log = logging.getLogger(__name__)

# AUTOMATIC1111's k-diffusion aliases, so clients that send them find the sampler.
SAMPLER_ALIASES: dict[str, list[str]] = {
    "Euler a": ["k_euler_a", "k_euler_ancestral"],
    "Euler": ["k_euler"],
    "LMS": ["k_lms"],
    "Heun": ["k_heun"],
    "DPM2": ["k_dpm_2"],
    "DPM2 a": ["k_dpm_2_a"],
    "DPM++ 2M": ["k_dpmpp_2m"],
    "DPM++ 2M SDE": ["k_dpmpp_2m_sde"],
    "DPM++ SDE": ["k_dpmpp_sde"],
    "DDIM": ["ddim"],
    "PLMS": ["plms"],
    "UniPC": ["unipc"],
    "DEIS": ["deis"],
}

def scheduler_info() -> list[dict[str, Any]]:
    """AUTOMATIC1111's /schedulers: each schedule type with its API name, label, rho and whether its formula needs
    the model's own noise levels."""
    from webui.engine.schedules import DEFAULT_RHO, NEEDS_MODEL
    from webui.requests import SCHEDULE_TYPES

    return [{"name": name, "label": label, "aliases": None, "default_rho": DEFAULT_RHO.get(label, -1),
             "need_inner_model": label in NEEDS_MODEL} for name, label in SCHEDULE_TYPES]


LATENT_UPSCALE_MODES = ("Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                        "Latent (nearest)", "Latent (nearest-exact)")


def memory_info(report: dict[str, Any]) -> dict[str, Any]:
    """AUTOMATIC1111's /memory: system RAM, CUDA when it is in use, plus Easel's own report of loaded models."""
    import psutil

    ram = psutil.virtual_memory()
    process = psutil.Process()
    info: dict[str, Any] = {
        "ram": {"free": ram.available, "used": ram.total - ram.available, "total": ram.total,
                "process": process.memory_info().rss},
        "easel": report,
    }
    if "cuda_allocated_bytes" in report:
        import torch

        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()
        info["cuda"] = {
            "system": {"free": free, "used": total - free, "total": total},
            "active": {"current": stats.get("active_bytes.all.current", 0), "peak": stats.get("active_bytes.all.peak", 0)},
            "allocated": {"current": stats.get("allocated_bytes.all.current", 0),
                          "peak": stats.get("allocated_bytes.all.peak", 0)},
            "reserved": {"current": stats.get("reserved_bytes.all.current", 0),
                         "peak": stats.get("reserved_bytes.all.peak", 0)},
            "inactive": {"current": stats.get("inactive_split_bytes.all.current", 0),
                         "peak": stats.get("inactive_split_bytes.all.peak", 0)},
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
        }
    else:
        info["cuda"] = {"error": f"CUDA is not in use (device: {report.get('device', '?')})"}
    return info


def embeddings_info(entries: list[Any], model: tuple[str, Any, dict[int, int]] | None,
                    redact: Callable[[str], str] = str) -> dict[str, Any]:
    """AUTOMATIC1111's /embeddings. "loaded": the embeddings usable with the current model (every readable one when
    no model is loaded yet); "skipped": the rest, each with the reason (a pickle file, an unreadable layout, a
    width the current model's text encoder does not take, or a model family that takes no embeddings), passed
    through `redact` (the API's takes this machine's folders out)."""
    from webui.model_manager.embeddings import EMBEDDING_ARCHS, EmbeddingError, check_fits

    loaded: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    for entry in entries:
        item = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": entry.shape,
                "vectors": entry.vectors}
        reason = entry.reason
        if not reason and model is not None:
            name, arch, widths = model
            if arch not in EMBEDDING_ARCHS or not widths:
                reason = f"the current model {name} ({getattr(arch, 'value', arch)}) does not use embeddings"
            else:
                try:
                    check_fits(entry, widths, arch, name)
                except EmbeddingError as exc:
                    reason = str(exc)
        if reason:
            skipped[entry.name] = {**item, "reason": redact(reason)}
        else:
            loaded[entry.name] = item
    return {"loaded": loaded, "skipped": skipped}


def lora_info(entries: list[Any], shown: Callable[[Any], str | None] = str) -> list[dict[str, Any]]:
    """AUTOMATIC1111's /loras: name (what `<lora:name:weight>` uses), alias, path, metadata (the file's own, JSON
    values decoded); plus Easel's family, layout, short hash, trigger words and preview file. `shown` turns a
    file into what the answer says (the API's: relative to its folder)."""
    rows = []
    for e in entries:
        arch = getattr(e.arch, "value", str(e.arch))
        metadata: dict[str, Any] = {"ss_base_model_version": arch}
        for key, value in (getattr(e, "metadata", None) or {}).items():
            metadata[key] = _json_or_text(value)
        preview = getattr(e, "preview", None)
        rows.append({"name": e.name, "alias": getattr(e, "alias", e.name), "path": shown(e.path), "metadata": metadata,
                     "hash": e.short_hash, "arch": arch, "format": getattr(e, "format", ""),
                     "trigger_words": list(getattr(e, "trigger_words", ())),
                     "preview": shown(preview) if preview else None})
    return rows


def _json_or_text(value: str) -> Any:
    text = value.strip()
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value
    return value


def upscaler_info(entries: list[Any], shown: Callable[[Any], str | None] = str) -> list[dict[str, Any]]:
    """AUTOMATIC1111's /upscalers: "None", the built-ins, then the installed models (`shown` as in `lora_info`)."""
    rows: list[dict[str, Any]] = [{"name": "None", "model_name": None, "model_path": None, "model_url": None,
                                   "scale": 1}]
    for e in entries:
        rows.append({"name": e.name, "model_name": e.name if e.kind == "model" else None,
                     "model_path": shown(e.path) if e.path else None, "model_url": None,
                     "scale": e.scale if e.scale else 4})
    return rows


def script_info(scripts: dict[str, Any], alwayson: list[str] | None = None) -> list[dict[str, Any]]:
    """AUTOMATIC1111's /script-info: each API script once per mode it runs in, with its argument labels, then the
    always-on scripts (extensions that read `alwayson_scripts`) for both modes."""
    rows = [{"name": name.lower(), "is_alwayson": True, "is_img2img": is_img2img, "args": []}
            for name in sorted(alwayson or []) for is_img2img in (False, True)]
    for script in scripts.values():
        for mode in script.modes:
            rows.append({"name": script.name, "is_alwayson": False, "is_img2img": mode == "img2img",
                         "args": [{"label": label, "value": None, "minimum": None, "maximum": None, "step": None,
                                   "choices": None} for label in script.args]})
    return rows


def extension_info(statuses: list[Any], redact: Callable[[str], str] = str) -> list[dict[str, Any]]:
    """AUTOMATIC1111's /extensions: each extension folder, enabled or not, with its version and load error (passed
    through `redact`). Git details are left empty (Easel does not track where an extension came from)."""
    return [{"name": s.name, "remote": None, "branch": None, "commit_hash": None, "version": s.version,
             "commit_date": None, "enabled": s.enabled, "status": s.status,
             "error": redact(s.error) if s.error else s.error}
            for s in statuses]


def add_docs(app: FastAPI, title: str) -> None:
    """Serve the Swagger page at /docs when the app has none (Gradio's app turns FastAPI's off).

    The page itself loads Swagger UI's script and style from a CDN; the schema it shows is /openapi.json.
    """
    if app.docs_url is not None or app.openapi_url is None:
        return
    if any(getattr(route, "path", None) == "/docs" for route in app.router.routes):
        return
    openapi_url = app.openapi_url

    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{title} - API docs")

    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
    app.openapi_schema = None  # rebuilt on the next request, now with the API routes


def realesrgan_info(entries: list[Any], shown: Callable[[Any], str | None] = str) -> list[dict[str, Any]]:
    """AUTOMATIC1111's /realesrgan-models: the ESRGAN-family model upscalers (models/ESRGAN and
    --esrgan-models-path; spandrel recognises Real-ESRGAN, ESRGAN, SwinIR, ...), with `shown` paths and each
    model's own factor (the one its name announces until it is loaded; 4 when it announces none)."""
    return [{"name": e.name, "path": shown(e.path), "scale": e.scale or 4} for e in entries if e.kind == "model"]


def face_restorer_info(found: dict[str, list[Any]], shown: Callable[[Any], str | None] = str
                       ) -> list[dict[str, Any]]:
    """AUTOMATIC1111's /face-restorers: each restorer (GFPGAN, CodeFormer) that has a weights file, with its folder
    as `cmd_dir`; Easel adds the files found (`shown`)."""
    from webui.model_manager.extra_files import FACE_RESTORER_FOLDERS

    return [{"name": name, "cmd_dir": FACE_RESTORER_FOLDERS[name], "files": [shown(path) for path in files]}
            for name, files in found.items()]


def hypernetwork_info(named: dict[str, Any], shown: Callable[[Any], str | None] = str) -> list[dict[str, Any]]:
    """AUTOMATIC1111's /hypernetworks: name (what `<hypernet:name:weight>` names) and path (`shown`)."""
    return [{"name": name, "path": shown(path)} for name, path in named.items()]


def sd_module_info(vaes: list[Any], shown: Callable[[Any], str | None] = str) -> list[dict[str, Any]]:
    """Forge's /sd-modules (model_name, filename): the modules Easel loads apart from a checkpoint, its VAEs
    (text encoders come with their checkpoints)."""
    return [{"model_name": v.name, "filename": shown(getattr(v, "path", None)) or ""} for v in vaes]
