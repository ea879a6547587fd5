"""The editing API: `POST /easel/v1/edit` and `GET /easel/v1/edit/models`.

A client sends a base64 image, an instruction ("make the red circle blue") and optionally a model, a mask
(white = may change; outside it the answer's pixels are the input's exactly), further reference images (`images`,
for Qwen-Image-Edit Plus) and the sampling numbers; the body becomes an `EditRequest` and runs through the same
engine queue as the UI. The answer is the edited image (PNG with its parameters text), the infotext and `info`.
Bad input is a 4xx naming the field; a body key that is not an edit field is a 422 naming it. The router is
built with the API's route class, so logins, body limits and error bodies are those of `/sdapi/v1`.
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
from webui.engine.images import mask_to_l
from webui.engine.worker import JobResult
from webui.model_manager.errors import ModelNotFoundError
from webui.requests import MAX_EDIT_IMAGES, EditRequest, RequestError, field_specs

# API name → EditRequest attribute, from the field declarations.
BODY_FIELDS: dict[str, str] = {spec.api: name for name, spec in field_specs(EditRequest).items() if spec.api}
EXTRA_FIELDS = ("images", "save_images")
IMAGE_FIELDS = ("image", "mask", "images")
INT_FIELDS = {f.name for f in dataclasses.fields(EditRequest)
              if isinstance(f.default, int) and not isinstance(f.default, bool)}


def request_from_body(body: Any, max_pixels: int) -> EditRequest:
    """An EditRequest from a JSON body; ApiError / RequestError name the field that is wrong."""
    if not isinstance(body, dict):
        raise ApiError(422, "body", "must be a JSON object")
    unknown = sorted(k for k in body if k not in BODY_FIELDS and k not in EXTRA_FIELDS)
    if unknown:
        known = sorted([*BODY_FIELDS, *EXTRA_FIELDS])
        raise ApiError(422, unknown[0], f"is not an edit field; known: {', '.join(known)}")
    if "image" not in body:
        raise ApiError(422, "image", "is required (a base64-encoded PNG or JPEG)")
    if not isinstance(body.get("instruction"), str) or not body["instruction"].strip():
        raise ApiError(422, "instruction", "is required: what to change (e.g. \"make the red circle blue\")")
    if body.get("model") is not None and not isinstance(body["model"], str):
        raise ApiError(422, "model", f"must be a checkpoint name, got {type(body['model']).__name__}")
    values = body_values(body, BODY_FIELDS, INT_FIELDS, IMAGE_FIELDS)
    image = decode_image(body["image"], "image", max_pixels)
    references = body.get("images") or []
    if not isinstance(references, list):
        raise ApiError(422, "images", "must be a list of base64 images (reference images besides `image`)")
    if 1 + len(references) > MAX_EDIT_IMAGES:
        raise ApiError(422, "images", f"{1 + len(references)} images with `image`; the limit is {MAX_EDIT_IMAGES} "
                                      "(the image to edit and up to two references)")
    decoded = tuple(decode_image(r, f"images[{i}]", max_pixels) for i, r in enumerate(references))
    mask = mask_to_l(decode_image(body["mask"], "mask", max_pixels)) if body.get("mask") is not None else None
    return EditRequest(image=image, references=decoded, mask=mask, **values)


def edit_router(api: ApiContext) -> APIRouter:
    """The /easel/v1 editing routes over this Easel's engine and model manager."""
    manager, engine, settings = api.manager, api.engine, api.settings
    router = api.router("/easel/v1", ["easel"])

    def check_model(name: str) -> None:
        """404 for a model that is not installed, 422 listing the edit-capable ones for one that cannot edit."""
        from webui.engine.modes.edit import check_edit_model

        if not name:
            return
        try:
            check_edit_model(manager, name)
        except ModelNotFoundError as exc:
            raise ApiError(404, "model", str(exc), "NotFound") from None

    @router.get("/edit/models")
    def edit_models() -> list[dict[str, Any]]:
        """The checkpoints `model` accepts, with their family."""
        from webui.engine.modes.edit import MULTI_IMAGE_FAMILIES, edit_family

        families = [(e.name, edit_family(e)) for e in manager.edit_checkpoints()]
        return [{"name": name, "family": family, "max_images": MAX_EDIT_IMAGES if family in MULTI_IMAGE_FAMILIES
                 else 1} for name, family in families]

    def checked_request(body: Any) -> EditRequest:
        request = request_from_body(body, settings.user.limits().max_pixels)
        check_model(request.checkpoint)
        return request

    @router.post("/edit")
    async def edit(body: Any = Body(...)) -> dict[str, Any]:
        request = await API_LANE.run(checked_request, body)  # decoding the images: on a lane thread
        result, started = await run_api_job(engine, request, "the edit failed")
        if not result.images:
            raise ApiError(500, None, "the edit was interrupted before it finished", "JobFailed")
        return await API_LANE.run(edit_response, request, result, time.perf_counter() - started)

    return router


def edit_response(request: EditRequest, result: JobResult, seconds: float) -> dict[str, Any]:
    """The JSON answer: the edited image with its parameters text, the infotext and what ran."""
    item = (result.info.get("items") or [{}])[0]
    text = result.infotexts[0] if result.infotexts else ""
    info = {
        "model": item.get("model") or result.info.get("model"),
        "family": item.get("family"),
        "instruction": item.get("instruction", request.instruction),
        "seed": result.seeds[0] if result.seeds else request.seed,
        "steps": request.steps,
        "guidance": request.guidance,
        "image_guidance": request.image_guidance,
        "masked": request.mask is not None,
        "references": len(request.references),
        "changed_share": item.get("changed_share"),
        "seconds": round(seconds, 3),
    }
    return {"image": encode_png(result.images[0], text or None), "infotext": text, "info": info}


__all__ = ["edit_router", "request_from_body", "RequestError"]
