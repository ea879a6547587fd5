"""The AUTOMATIC1111-compatible REST API (`/sdapi/v1/*`) over Easel's engine, put together.

`create_api(app, easel)` adds the routes to a FastAPI app: the Gradio app when the UI runs, a bare one with
`--nowebui`. It builds one `ApiContext` (the Easel, the options a client set, the lookups the routes share) and
adds the routers built from it, one module per concern:

    generation.py   txt2img, img2img (inpainting), API scripts, hires fix, override_settings
    options.py      options (model switch, clip skip, VAE, settings) and cmd-flags
    models.py       checkpoints, VAEs, samplers, upscalers, scripts, LoRAs, embeddings, extensions, memory,
                    unloading and reloading the checkpoint
    extras.py       extra-single-image, extra-batch-images, png-info
    machine.py      realesrgan-models, face-restorers, hypernetworks, sd-modules; server-stop, server-restart and
                    server-kill with --api-server-stop
    styles.py       prompt-styles
    progress.py     progress, interrupt, skip
    segment.py      /easel/v1/segment
    edit.py         /easel/v1/edit
    cluster.py      /easel/v1/cluster (the generation replicas with --workers / --ray-address)
    gan.py          /easel/v1/seed-walk (StyleGAN generators)

then the routes extensions registered. Every route is built with one route class (`webui.api.errors`): it asks
for a login with `--api-auth`, or when the UI is protected with `--gradio-auth` / `--gradio-auth-path` (an
address that keeps failing is made to wait, `webui.security.LoginThrottle`), holds the body to its size and
shape limits (`webui.api.bounds`), and answers every error as JSON `{"error", "detail", "field"}`. Generation
goes through the same engine queue as the UI; handlers that queue a job `await` it without holding a thread, and
run their CPU work on the API's own lane of threads (`webui.api.threads`).
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import FastAPIError
from fastapi.routing import APIRoute

from webui.api.bounds import RequestBounds
from webui.api.compat import add_docs
from webui.api.context import ApiContext
from webui.api.errors import route_class as make_route_class
from webui.api.cluster import cluster_router
from webui.api.edit import edit_router
from webui.api.extras import extras_router
from webui.api.gan import gan_router
from webui.api.generation import (  # the API's request types are importable from here too
    API_REQUEST_TYPES,
    ApiImg2ImgRequest,
    ApiInpaintRequest,
    ApiTxt2ImgRequest,
    generation_router,
)
from webui.api.machine import machine_router
from webui.api.models import models_router
from webui.api.options import options_router
from webui.api.progress import progress_router
from webui.api.segment import segment_router
from webui.api.styles import styles_router
from webui.api.threads import in_lane
from webui.redact import answer_folders, redact_paths
from webui.security import login_throttle

__all__ = ["create_api", "add_extension_routes", "API_REQUEST_TYPES", "ApiTxt2ImgRequest", "ApiImg2ImgRequest",
           "ApiInpaintRequest"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024


def create_api(app: FastAPI, easel: Any, max_body_bytes: int | None = None) -> None:
    """Add the /sdapi/v1 routes for this Easel to `app`."""
    settings = easel.settings
    if max_body_bytes is None:
        max_body_bytes = getattr(settings, "max_upload_bytes", MAX_BODY_BYTES)
    folders = answer_folders(settings)  # paths in answers are relative to these (never absolute)
    route_class = make_route_class(max_body_bytes, settings.api_auth_pairs(), login_throttle(easel.extras),
                                   lambda: RequestBounds(settings.user.max_request_pixels,
                                                         settings.user.max_request_images,
                                                         settings.user.limits().max_pixels * 4),
                                   lambda text: redact_paths(text, folders))
    api = ApiContext(easel, route_class, folders)
    for build in (generation_router, models_router, options_router, progress_router, extras_router, styles_router,
                  machine_router):
        app.include_router(build(api))
    app.include_router(segment_router(api))
    app.include_router(edit_router(api))
    app.include_router(cluster_router(api))
    app.include_router(gan_router(api))
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
