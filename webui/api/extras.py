"""Extras routes: `POST /sdapi/v1/extra-single-image`, `POST /sdapi/v1/extra-batch-images` (upscaling) and
`POST /sdapi/v1/png-info` (reading an image's parameters).

Every image is checked (its size from its header) and every upscale validated before any is queued; the total
pixels of the images and their results are held to `max_request_pixels`. The upscales run through the engine
queue, one job per image, and are awaited without holding a thread.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from PIL import Image
from pydantic import BaseModel, Field

from webui.api.context import ApiContext
from webui.api.errors import ApiError, job_failure
from webui.api.images import decode_image, encode_png, load_image
from webui.api.schemas import ExtrasSingleImageRequest, PNGInfoRequest
from webui.api.threads import API_LANE
from webui.engine.face_restore import check_finder
from webui.engine.tasks import UpscaleRequest
from webui.engine.upscalers import NONE
from webui.engine.worker import JobResult, JobState
from webui.infotext import parse_infotext, read_png_parameters, split_styles


class ExtrasBatchImage(BaseModel):
    data: str = Field(description="A base64 image (PNG, JPEG or WebP), with or without a data: prefix")
    name: str | None = Field(None, description="The image's name (accepted for compatibility)")


class ExtrasBatchImagesRequest(ExtrasSingleImageRequest):
    """Body of POST /sdapi/v1/extra-batch-images: the Extras settings, applied to every image of `imageList`."""

    image: str | None = Field(None, description="Not used here: send the images in imageList")
    imageList: list[ExtrasBatchImage] = Field(default_factory=list, description="The images to upscale")


def extras_router(api: ApiContext) -> APIRouter:
    """The Extras and PNG info routes over `api`'s Easel."""
    engine, settings = api.engine, api.settings
    check_upscaler, max_image_pixels = api.check_upscaler, api.max_image_pixels
    router = api.router()

    def upscale_requests(body: BaseModel, images: list[Image.Image]) -> list[UpscaleRequest] | None:
        """The upscale jobs an Extras body asks for, one per image (None: nothing to do, as in AUTOMATIC1111)."""
        faces = {name: float(getattr(body, name) or 0.0) for name in
                 ("gfpgan_visibility", "codeformer_visibility", "codeformer_weight")}
        for name, restorer in (("gfpgan_visibility", "GFPGAN"), ("codeformer_visibility", "CodeFormer")):
            if faces[name] > 0:  # the restorer has a file and faces a finder (before any image is queued)
                engine.face_restorers.check(restorer, name)
                check_finder(api.manager, settings.user.face_restoration_finder, name)
        first = check_upscaler(body.upscaler_1 or NONE, "upscaler_1") if (body.upscaler_1 or NONE) != NONE else NONE
        second = check_upscaler(body.upscaler_2 or NONE, "upscaler_2") if (body.upscaler_2 or NONE) != NONE else NONE
        visibility = float(body.extras_upscaler_2_visibility or 0.0)
        if first == NONE and (second == NONE or visibility <= 0) and \
                faces["gfpgan_visibility"] <= 0 and faces["codeformer_visibility"] <= 0:
            return None
        by_size = body.resize_mode == 1
        if body.resize_mode not in (None, 0, 1):
            raise ApiError(422, "resize_mode", f"must be 0 (scale) or 1 (to a size), got {body.resize_mode}")
        requests = [UpscaleRequest(image=image, upscaler=first, scale=float(body.upscaling_resize or 2.0),
                                   width=int(body.upscaling_resize_w or 0) if by_size else 0,
                                   height=int(body.upscaling_resize_h or 0) if by_size else 0,
                                   crop=bool(body.upscaling_crop), upscaler_2=second,
                                   upscaler_2_visibility=visibility, save_images=bool(body.save_images),
                                   upscale_first=bool(body.upscale_first), **faces)
                    for image in images]
        for request in requests:  # every image checked before any is queued (or decoded: only headers are read)
            request.validate(settings.user.limits())
        budget = settings.user.max_request_pixels
        total = sum(image.width * image.height for image in images) + \
            sum(width * height for width, height in (request.output_size() for request in requests))
        if total > budget:
            raise ApiError(422, "upscaling_resize_w" if by_size else "upscaling_resize",
                           f"the images and their results would add up to {total} pixels; the limit is {budget} "
                           "pixels per request (max_request_pixels)")
        return requests

    async def run_upscales(requests: list[UpscaleRequest]) -> list[tuple[Image.Image, str]]:
        """Queue the upscales, await them, and return (image, infotext) for each; the first failure stops the
        rest."""
        jobs = [engine.submit(request, source="api") for request in requests]
        done: list[tuple[Image.Image, str]] = []
        for index, job in enumerate(jobs):
            await job.wait_async()
            result = job.result or JobResult()
            if job.state == JobState.FAILED or not result.images:
                for later in jobs[index + 1:]:
                    engine.worker.interrupt(later.id)
                if job.state == JobState.FAILED:
                    raise job_failure(job, "upscaling failed")
                raise ApiError(500, None, "upscaling was interrupted", "JobFailed")
            done.append((result.images[0], result.infotexts[0]))
        return done

    @router.post("/extra-single-image")
    async def extra_single_image(body: ExtrasSingleImageRequest) -> dict[str, Any]:
        image, requests = await API_LANE.run(single_image_requests, body)
        if requests is None:
            return await API_LANE.run(lambda: {"html_info": "", "image": encode_png(image)})
        [(result, text)] = await run_upscales(requests)
        return await API_LANE.run(lambda: {"html_info": text, "image": encode_png(result, text)})

    def single_image_requests(body: ExtrasSingleImageRequest) -> tuple[Image.Image, list[UpscaleRequest] | None]:
        image = decode_image(body.image, "image", max_image_pixels(), load=False)
        requests = upscale_requests(body, [image])
        load_image(image, "image")
        return image, requests

    @router.post("/extra-batch-images")
    async def extra_batch_images(body: ExtrasBatchImagesRequest) -> dict[str, Any]:
        """Upscale several images alike (AUTOMATIC1111's Extras batch): `imageList` of {"data", "name"}."""
        images, requests = await API_LANE.run(batch_requests, body)
        if requests is None:
            return await API_LANE.run(lambda: {"html_info": "", "images": [encode_png(image) for image in images]})
        done = await run_upscales(requests)
        return await API_LANE.run(lambda: {"html_info": done[0][1],
                                           "images": [encode_png(image, text) for image, text in done]})

    def batch_requests(body: ExtrasBatchImagesRequest) -> tuple[list[Image.Image], list[UpscaleRequest] | None]:
        if not body.imageList:
            raise ApiError(422, "imageList", 'send at least one image as {"data": <base64>, "name": <text>}')
        limit = settings.user.max_batch_count
        if len(body.imageList) > limit:
            raise ApiError(422, "imageList", f"at most {limit} images at once (the batch count limit), got "
                                             f"{len(body.imageList)}")
        images = [decode_image(item.data, f"imageList.{index}.data", max_image_pixels(), load=False)
                  for index, item in enumerate(body.imageList)]
        requests = upscale_requests(body, images)
        for index, image in enumerate(images):
            load_image(image, f"imageList.{index}.data")
        return images, requests

    # PNG info ------------------------------------------------------------------------------------------
    @router.post("/png-info")
    def png_info(body: PNGInfoRequest) -> dict[str, Any]:
        image = decode_image(body.image, "image", max_image_pixels())
        text = read_png_parameters(image) or ""
        items = {k: v for k, v in image.info.items() if isinstance(v, str) and k != "parameters"}
        # `Styles array` as a list of names, as AUTOMATIC1111 answers it (its texts: found in the prompts)
        parameters = split_styles(parse_infotext(text), api.easel.styles.styles()) if text else {}
        return {"info": text, "items": items, "parameters": parameters}

    return router
