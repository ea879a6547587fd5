"""The StyleGAN seed walk: `POST /easel/v1/seed-walk`.

A client names a StyleGAN checkpoint (`model`, from models/GAN; the current checkpoint when left out), the seeds to
pass through (two or more) and the frames from each seed to the next; optionally the truncation ψ, a conditional
generator's class (`class_label`, or `prompt` with its number), the walk's space ("z": spherical interpolation of the
latents, "w": linear interpolation after the mapping network) and each frame's time. The answer is the animated GIF
(base64), its frame count and what ran. It runs through the engine queue like every job; a key that is not a field is
a 422 naming it, as are values out of range.
"""
from __future__ import annotations

import base64
import time
from typing import Any

from fastapi import APIRouter, Body

from webui.api.context import ApiContext
from webui.api.easel_bodies import run_api_job
from webui.api.errors import ApiError
from webui.engine.families.stylegan import SeedWalkRequest
from webui.redact import public_path

FIELDS = {"model": "checkpoint", "seeds": "seeds", "frames": "frames", "truncation_psi": "truncation_psi",
          "class_label": "class_label", "prompt": "prompt", "space": "space", "duration_ms": "duration_ms",
          "save_images": "save_images"}
KINDS: dict[str, tuple[type, ...]] = {"checkpoint": (str,), "seeds": (list,), "frames": (int,),
                                      "truncation_psi": (int, float), "class_label": (int,), "prompt": (str,),
                                      "space": (str,), "duration_ms": (int,), "save_images": (bool,)}


def walk_from_body(body: Any) -> SeedWalkRequest:
    """A SeedWalkRequest from a JSON body; ApiError naming the field that is wrong."""
    if not isinstance(body, dict):
        raise ApiError(422, "body", "must be a JSON object")
    unknown = sorted(k for k in body if k not in FIELDS)
    if unknown:
        raise ApiError(422, unknown[0], f"is not a seed walk field; known: {', '.join(FIELDS)}")
    if "seeds" not in body:
        raise ApiError(422, "seeds", "is required: the seeds to walk through, at least two (e.g. [1, 2, 3])")
    values: dict[str, Any] = {"save_images": False}  # like /sdapi/v1: the API saves only when asked
    for key, value in body.items():
        name = FIELDS[key]
        if value is None:
            continue
        if isinstance(value, float) and value.is_integer() and int in KINDS[name] and float not in KINDS[name]:
            value = int(value)
        if (isinstance(value, bool) and bool not in KINDS[name]) or not isinstance(value, KINDS[name]):
            raise ApiError(422, key, f"must be {' or '.join(k.__name__ for k in KINDS[name])}, got {value!r}")
        values[name] = tuple(value) if name == "seeds" else value
    return SeedWalkRequest(**values)


def gan_router(api: ApiContext) -> APIRouter:
    """The /easel/v1 seed walk route over this Easel's engine."""
    engine, settings = api.engine, api.settings
    router = api.router("/easel/v1", ["easel"])

    @router.post("/seed-walk")
    async def seed_walk(body: Any = Body(...)) -> dict[str, Any]:
        request = walk_from_body(body)
        result, started = await run_api_job(engine, request, "the seed walk failed")
        data = result.info.get("gif")
        if not data:
            raise ApiError(500, None, "the seed walk was interrupted before it finished", "JobFailed")
        return {"gif": base64.b64encode(data).decode("ascii"), "frames": len(result.info.get("frames") or []),
                "infotext": result.info.get("infotext", ""),
                "info": {"model": result.info.get("model"), "model_hash": result.info.get("model_hash"),
                         "seeds": result.info.get("seeds"), "space": request.space,
                         "truncation_psi": request.truncation_psi,
                         "paths": [public_path(p, [settings.data_dir]) for p in result.paths],
                         "seconds": round(time.perf_counter() - started, 3)}}

    return router
