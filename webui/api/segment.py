"""The segmentation API: `POST /easel/v1/segment` and `GET /easel/v1/segment/models`.

A client sends a base64 image and what to segment (one query per line); the request becomes a `SegmentRequest`
and runs through the same engine queue as the UI (the handler awaits the job without holding a thread). The
answer carries the first query's mask (PNG, white = object), the edited image, `found`, and `info` with every
query's outcome; several queries also give `masks` and `edited_images`, one per query, and an `overlay` with a
colour per query. Body fields have the names of `SegmentRequest`'s declarations (`image`, `query`, `model`,
`template`, `highlight`, `steps`, `cfg_scale`, `seed`, `threshold`, `mask_threshold`, `keep_largest`) plus
`save_images`; bad input is a 4xx naming the field. The router is built with the API's route class, so logins,
body limits and error bodies are those of `/sdapi/v1`.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

from fastapi import APIRouter, Body

from webui.api.context import ApiContext
from webui.api.easel_bodies import body_values, run_api_job
from webui.api.errors import ApiError
from webui.api.images import decode_image, encode_png
from webui.api.threads import API_LANE
from webui.engine.worker import JobResult
from webui.model_manager.errors import ModelNotFoundError
from webui.requests import SegmentRequest, field_specs

# API name → SegmentRequest attribute, from the field declarations.
BODY_FIELDS: dict[str, str] = {spec.api: name for name, spec in field_specs(SegmentRequest).items() if spec.api}
EXTRA_FIELDS = ("save_images",)
INT_FIELDS = {f.name for f in dataclasses.fields(SegmentRequest)
              if isinstance(f.default, int) and not isinstance(f.default, bool)}


def request_from_body(body: Any, max_pixels: int) -> SegmentRequest:
    """A SegmentRequest from a JSON body; ApiError / RequestError name the field that is wrong."""
    if not isinstance(body, dict):
        raise ApiError(422, "body", "must be a JSON object")
    unknown = sorted(k for k in body if k not in BODY_FIELDS and k not in EXTRA_FIELDS)
    if unknown:
        raise ApiError(422, unknown[0], f"is not a segmentation field; known: {', '.join(sorted(BODY_FIELDS))}")
    if "image" not in body:
        raise ApiError(422, "image", "is required (a base64-encoded PNG)")
    if not isinstance(body.get("query"), str) or not body["query"].strip():
        raise ApiError(422, "query", "is required: what to segment, one query per line (e.g. \"the red circle\")")
    values = body_values(body, BODY_FIELDS, INT_FIELDS, ("image",))
    image = decode_image(body["image"], "image", max_pixels * 4)
    return SegmentRequest(image=image, **values)


def segment_router(api: ApiContext) -> APIRouter:
    """The /easel/v1 segmentation routes over this Easel's engine and model manager."""
    easel, manager, engine, settings = api.easel, api.manager, api.engine, api.settings
    router = api.router("/easel/v1", ["easel"])

    def check_model(name: str) -> None:
        """404 for a model that is not installed, 422 for one that cannot segment."""
        if not name or manager.find_segmenter(name) is not None:
            return
        try:
            entry = manager.find_checkpoint(name)
        except ModelNotFoundError as exc:
            raise ApiError(404, "model", str(exc), "NotFound") from None
        editors = [e.name for e in manager.edit_checkpoints()]
        if entry.name not in editors:
            usable = editors + [s.label for s in manager.segmenters()]
            raise ApiError(422, "model", f"{entry.name} cannot segment (it is not an editing model); "
                                         f"available: {', '.join(usable) or 'none installed'}")

    @router.get("/segment/models")
    def segment_models() -> list[dict[str, Any]]:
        """Models the segment route takes: edit-capable checkpoints with their template, then segmenters."""
        models = [{"name": e.name, "kind": "edit", "template": easel.segment_template(e.name)}
                  for e in manager.edit_checkpoints()]
        models += [{"name": s.label, "kind": s.kind, "template": ""} for s in manager.segmenters()]
        return models

    def checked_request(body: Any) -> SegmentRequest:
        request = request_from_body(body, settings.user.limits().max_pixels)
        check_model(request.checkpoint)
        return request

    @router.post("/segment")
    async def segment(body: Any = Body(...)) -> dict[str, Any]:
        request = await API_LANE.run(checked_request, body)  # decoding the image: on a lane thread
        result, started = await run_api_job(engine, request, "segmentation failed")
        items = result.info.get("items") or []
        if not items:
            raise ApiError(500, None, "segmentation was interrupted before any query finished", "JobFailed")
        return await API_LANE.run(segment_response, request, result, items, time.perf_counter() - started)

    return router


def segment_response(request: SegmentRequest, result: JobResult, items: list[dict[str, Any]],
                     seconds: float) -> dict[str, Any]:
    """The JSON answer: the first query's mask and edit at the top, every query in `info`."""
    first = items[0]
    info = {
        "queries": [i["query"] for i in items],
        "found": [bool(i["found"]) for i in items],
        "messages": [i["message"] for i in items],
        "prompts": [i["prompt"] for i in items],
        "changed_share": [i["changed_share"] for i in items],
        "model": first["model"],
        "method": first["method"],
        "template": request.template or None,
        "highlight": request.highlight,
        "seed": result.seeds[0] if result.seeds else request.seed,
        "steps": request.steps,
        "infotexts": list(result.infotexts),
        "seconds": round(seconds, 3),
    }
    response: dict[str, Any] = {
        "mask": encode_png(first["mask"]),
        "edited": encode_png(result.images[0], result.infotexts[0] if result.infotexts else None),
        "found": bool(first["found"]),
        "info": info,
    }
    if "overlay" in first:
        response["overlay"] = encode_png(first["overlay"])
    if len(items) > 1:
        response["masks"] = [encode_png(i["mask"]) for i in items]
        response["edited_images"] = [encode_png(image) for image in result.images]
    return response
