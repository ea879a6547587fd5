"""Listing and server routes AUTOMATIC1111 clients call beside generation: `realesrgan-models`,
`face-restorers`, `hypernetworks`, `sd-modules`, and, only with `--api-server-stop`, `server-stop`,
`server-restart` and `server-kill`.

Listings shape what is on disk into AUTOMATIC1111's JSON (`webui.api.compat`), paths relative to Easel's
folders. The server routes exist only when the flag is given (otherwise they are 404, as in AUTOMATIC1111) and
sit behind the API's logins like every route. Each answers first, then acts: stop shuts the server down
gracefully and the process exits with status 0; restart does the same, then starts a fresh Easel with the same
command line in this process (`webui.app.restart_process`); kill ends the process at once, without waiting for
running jobs.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask

from webui.api.compat import face_restorer_info, hypernetwork_info, realesrgan_info, sd_module_info
from webui.api.context import ApiContext
from webui.api.errors import ApiError
from webui.model_manager.extra_files import face_restorer_files, hypernetwork_files

log = logging.getLogger(__name__)

NOT_STARTED = ("this Easel was not started by launch.py (webui.app.main), so the API cannot stop or restart it; "
               "stop the program that runs it")


def machine_router(api: ApiContext) -> APIRouter:
    """The listing routes, and the server routes when `--api-server-stop` is set."""
    easel, manager, engine, shown = api.easel, api.manager, api.engine, api.shown
    models_dir = api.settings.models_dir
    router = api.router()

    @router.get("/realesrgan-models")
    def realesrgan_models() -> list[dict[str, Any]]:
        """The ESRGAN-family upscaler models (models/ESRGAN and --esrgan-models-path): name, path, scale."""
        return realesrgan_info(engine.upscalers.entries(), shown)

    @router.get("/face-restorers")
    def face_restorers() -> list[dict[str, Any]]:
        """GFPGAN and CodeFormer, each when a weights file is in models/GFPGAN or models/Codeformer."""
        return face_restorer_info(face_restorer_files(models_dir), shown)

    @router.get("/hypernetworks")
    def hypernetworks() -> list[dict[str, Any]]:
        """The files in models/hypernetworks; `<hypernet:name:weight>` in a prompt applies one (SD 1.x)."""
        return hypernetwork_info(hypernetwork_files(models_dir), shown)

    @router.get("/sd-modules")
    def sd_modules() -> list[dict[str, Any]]:
        """The modules loaded apart from a checkpoint (VAEs): model_name, filename."""
        return sd_module_info(manager.vaes(), shown)

    if api.settings.api_server_stop:
        add_server_routes(router, easel)
    return router


def add_server_routes(router: APIRouter, easel: Any) -> None:
    """`server-stop`, `server-restart` and `server-kill` on `router`."""

    def control() -> Any:
        found = easel.extras.get("server_control")
        if found is None:
            raise ApiError(501, None, NOT_STARTED, "NotImplemented")
        return found

    @router.post("/server-stop")
    def server_stop() -> JSONResponse:
        """Shut the server down gracefully; the process exits with status 0."""
        server = control()
        return JSONResponse({"detail": "Stopping."}, background=BackgroundTask(server.ask, "stop"))

    @router.post("/server-restart")
    def server_restart() -> JSONResponse:
        """Shut the server down gracefully, then start Easel again with the same command line."""
        server = control()
        if easel.extras.get("restart") is None:
            raise ApiError(501, None, NOT_STARTED, "NotImplemented")
        return JSONResponse({"detail": "Restarting."}, background=BackgroundTask(server.ask, "restart"))

    @router.post("/server-kill")
    def server_kill() -> JSONResponse:
        """End the process at once (running jobs are not finished; nothing is saved)."""
        control()
        return JSONResponse({"detail": "Killing."}, background=BackgroundTask(kill_process))


def kill_process() -> None:
    log.warning("server kill requested through the API: exiting now")
    logging.shutdown()
    os._exit(0)
