"""What every group of API routes works with: the Easel, the options a client set, and the checks they share.

`ApiContext` is built once by `create_api` and handed to each router builder (`generation`, `options`, `models`,
`extras`, `progress`, `segment`). It holds no request state of its own beyond `ApiDefaults`, the options a client
set with `POST /options` for its later requests (in memory, like AUTOMATIC1111's session).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute

from webui.api.errors import ApiError
from webui.engine.upscalers import UpscalerNotFoundError
from webui.engine.worker import Job
from webui.redact import public_path, redact_paths


@dataclass
class ApiDefaults:
    """Options a client set with POST /options that apply to its later requests (in memory, like a session)."""

    clip_skip: int = 1
    vae: str = "Automatic"
    unloaded: str | None = None  # the checkpoint /unload-checkpoint dropped, for /reload-checkpoint
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def whole_number(value: Any, name: str, lowest: int, highest: int | None = None) -> int:
    """`value` as a whole number between the bounds (AUTOMATIC1111 clients send 2, 2.0 or "2"); ApiError names
    `name` otherwise."""
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


def hub_offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@dataclass
class ApiContext:
    """The Easel the routes serve, the route class they are built with and the lookups they share."""

    easel: Any
    route_class: type[APIRoute]
    folders: list[Path]  # paths in answers are relative to these (never absolute)
    defaults: ApiDefaults = field(default_factory=ApiDefaults)

    @property
    def manager(self) -> Any:
        return self.easel.manager

    @property
    def engine(self) -> Any:
        return self.easel.engine

    @property
    def settings(self) -> Any:
        return self.easel.settings

    def router(self, prefix: str = "/sdapi/v1", tags: list[str] | None = None) -> APIRouter:
        """A router whose routes check logins and bounds and answer errors as JSON."""
        return APIRouter(prefix=prefix, tags=tags or ["sdapi"], route_class=self.route_class)

    def shown(self, path: Any) -> str | None:
        """A path as an answer may show it: relative to Easel's folders."""
        return public_path(path, self.folders)

    def redact(self, text: str) -> str:
        """A message with this machine's folders taken out."""
        return redact_paths(text, self.folders)

    def max_image_pixels(self) -> int:
        return self.settings.user.limits().max_pixels * 4

    def find_checkpoint(self, query: str | None, field_name: str) -> Any:
        """The checkpoint entry a request names, or the current/default one."""
        manager, easel = self.manager, self.easel
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

    def check_vae(self, name: Any, field_name: str) -> str:
        if not isinstance(name, str):
            raise ApiError(422, field_name, f"must be a VAE name, got {name!r}")
        if name in ("", "Automatic", "None"):
            return "Automatic"
        try:
            return self.manager.find_vae(name).name  # by name, file name or path, as AUTOMATIC1111 clients send it
        except LookupError as exc:
            raise ApiError(404, field_name, f"unknown VAE: {exc}", "NotFound") from None

    def check_upscaler(self, name: Any, field_name: str, hires: bool = False) -> str:
        if not isinstance(name, str):
            raise ApiError(422, field_name, f"must be an upscaler name, got {name!r}")
        upscalers = self.engine.upscalers
        try:
            return upscalers.check_hires(name) if hires else upscalers.find(name).name
        except UpscalerNotFoundError as exc:
            raise ApiError(422, field_name, str(exc)) from None

    async def load_model(self, name: str, vae_now: str) -> Job:
        """Queue a model switch behind the jobs before it and await it."""
        job = self.engine.queue_load(name, None if vae_now == "Automatic" else vae_now, source="api")
        await job.wait_async()
        return job
