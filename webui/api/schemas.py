"""Request bodies of the AUTOMATIC1111-compatible `/sdapi/v1` API, built from the request declarations.

Every generation field is declared once, in `webui/requests.py`, with the name it has in the AUTOMATIC1111 JSON
(`FieldSpec.api`); the pydantic bodies here are generated from those declarations, so a field added there
appears in the API by itself. Where AUTOMATIC1111's API uses another type or default than the UI (steps 50,
integer resize and fill modes, "only masked" on by default), `API_OVERRIDES` says so. The fields only
AUTOMATIC1111 clients send (`override_settings`, `send_images`, `sampler_index`, `scheduler`, ...) are declared
on the base models. Any other field is kept as an extra and checked by `webui.api.a1111_fields` before the request
is built: an AUTOMATIC1111 field Easel does not honour passes only at its default, anything else is a 422 naming
it. `request_values` turns a parsed body into the field values of a request class, raising `RequestError` naming
the API field; `sent_fields` says which fields a client actually sent (the others take the model's defaults).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, create_model

from webui.requests import FieldSpec, InpaintRequest, RequestError, Txt2ImgRequest, field_specs

# API name -> (type, default) where AUTOMATIC1111's API differs from the request declaration.
API_OVERRIDES: dict[str, tuple[Any, Any]] = {
    "steps": (int | None, 50),
    "sampler_name": (str | None, None),  # None: use sampler_index, as AUTOMATIC1111 does
    "init_images": (list[str] | None, None),  # base64 images; the first one is used
    "mask": (str | None, None),  # base64 image, white = repaint; absent = plain img2img
    "resize_mode": (int | str | None, 0),  # 0 just resize, 1 crop and resize, 2 resize and fill
    "inpainting_fill": (int | str | None, 0),  # 0 fill, 1 original, 2 latent noise, 3 latent nothing
    "inpaint_full_res": (bool | None, True),  # AUTOMATIC1111 sends 0/1; pydantic reads both as bool
    "inpaint_full_res_padding": (int | None, 0),
    "inpainting_mask_invert": (bool | None, False),
    "styles": (list[str] | None, None),  # prompt style names (GET /prompt-styles), applied in order
}

IMAGE_FIELDS = ("init_images", "mask")


class _ApiBody(BaseModel):
    """What every generation body shares beyond the declared request fields."""

    model_config = ConfigDict(extra="allow")  # extras are checked against webui.api.a1111_fields, never dropped

    sampler_index: str | None = Field("Euler", description="Sampler used when sampler_name is absent")
    override_settings: dict[str, Any] | None = Field(
        None, description="Settings for this request only (sd_model_checkpoint, sd_vae, CLIP_stop_at_last_layers, "
                          "samples_save, randn_source, ...; docs/API.md lists them); any other key is a 422")
    override_settings_restore_afterwards: bool | None = Field(
        True, description="False keeps the override_settings for later requests (and the model loaded)")
    script_name: str | None = Field(None, description="An installed API script to run (GET /scripts lists them)")
    script_args: list[Any] | None = Field(None, description="The script's arguments, in order (GET /script-info)")
    send_images: bool | None = Field(True, description="Return the images in the response")
    save_images: bool | None = Field(False, description="Also save the images under outputs/")
    alwayson_scripts: dict[str, Any] | None = Field(
        None, description='Arguments for extensions, by name: {"ControlNet": {"args": [unit, ...]}}')


class _Txt2ImgExtras(_ApiBody):
    hr_resize_x: int | None = Field(0, description="Hires target width; overrides hr_scale when set")
    hr_resize_y: int | None = Field(0, description="Hires target height; overrides hr_scale when set")


class _Img2ImgExtras(_ApiBody):
    mask_blur_x: int | None = Field(None, description="Used as mask_blur when mask_blur is absent")
    mask_blur_y: int | None = Field(None, description="Used as mask_blur when mask_blur is absent")
    include_init_images: bool | None = Field(False, description="Echo init_images and mask in parameters")


def _python_type(default: Any) -> Any:
    for kind in (bool, int, float, str):  # bool before int: True is an int too
        if isinstance(default, kind):
            return kind
    raise TypeError(f"no API type for a field defaulting to {default!r}")


def _api_fields(cls: type) -> dict[str, tuple[Any, Any]]:
    """pydantic field definitions, by API name, for every declared field of `cls` that has one."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    fields: dict[str, tuple[Any, Any]] = {}
    for name, s in field_specs(cls).items():
        if s.api is None:
            continue
        if s.api in API_OVERRIDES:
            kind, default = API_OVERRIDES[s.api]
        else:
            default = defaults[name]
            kind = _python_type(default) | None  # null means "the default", as for AUTOMATIC1111's optionals
        fields[s.api] = (kind, Field(default, description=s.label))
    return fields


StableDiffusionTxt2ImgProcessingAPI = create_model(
    "StableDiffusionTxt2ImgProcessingAPI", __base__=_Txt2ImgExtras, __module__=__name__,
    **_api_fields(Txt2ImgRequest))
StableDiffusionTxt2ImgProcessingAPI.__doc__ = "Body of POST /sdapi/v1/txt2img."

StableDiffusionImg2ImgProcessingAPI = create_model(
    "StableDiffusionImg2ImgProcessingAPI", __base__=_Img2ImgExtras, __module__=__name__,
    **_api_fields(InpaintRequest))
StableDiffusionImg2ImgProcessingAPI.__doc__ = "Body of POST /sdapi/v1/img2img; with a mask it inpaints."


class ExtrasSingleImageRequest(BaseModel):
    """Body of POST /sdapi/v1/extra-single-image: upscale one image (AUTOMATIC1111's Extras tab)."""

    model_config = ConfigDict(extra="ignore")

    image: str = Field(description="A base64 image (PNG, JPEG or WebP), with or without a data: prefix")
    resize_mode: int | None = Field(0, description="0 = scale by upscaling_resize, 1 = to upscaling_resize_w x _h")
    upscaling_resize: float | None = Field(2.0, description="Scale factor (resize_mode 0), 1 to 8")
    upscaling_resize_w: int | None = Field(512, description="Target width (resize_mode 1)")
    upscaling_resize_h: int | None = Field(512, description="Target height (resize_mode 1)")
    upscaling_crop: bool | None = Field(True, description="resize_mode 1: fill the size and crop the overflow")
    upscaler_1: str | None = Field("None", description="Upscaler name (GET /upscalers); None leaves the image as is")
    upscaler_2: str | None = Field("None", description="A second upscaler blended over the first")
    extras_upscaler_2_visibility: float | None = Field(0.0, description="Weight of upscaler_2, 0 to 1")
    upscale_first: bool | None = Field(False, description="Upscale before restoring faces (default: faces first)")
    gfpgan_visibility: float | None = Field(0.0, description="GFPGAN on the faces found, blended by this weight, "
                                                             "0 to 1 (0 = off; weights in models/GFPGAN)")
    codeformer_visibility: float | None = Field(0.0, description="CodeFormer on the faces found, blended by this "
                                                                 "weight, 0 to 1 (0 = off; weights in models/Codeformer)")
    codeformer_weight: float | None = Field(0.0, description="CodeFormer's fidelity w, 0 to 1 (0 = most restored)")
    show_extras_results: bool | None = Field(True, description="Accepted for compatibility")
    save_images: bool | None = Field(False, description="Also save the result under outputs/extras-images")


class PNGInfoRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    image: str = Field(description="A base64 image (PNG, JPEG or WebP), with or without a data: prefix")


def _choice(value: Any, s: FieldSpec) -> str:
    """A choice given by AUTOMATIC1111's index (0, "1") or by name (any case)."""
    assert s.choices is not None and s.api is not None
    numbered = ", ".join(f"{i} = {c}" for i, c in enumerate(s.choices))
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(s.choices):
            return s.choices[value]
        raise RequestError(s.api, f"must be one of {numbered}; got {value}")
    if isinstance(value, str):
        wanted = value.strip().lower().replace("_", " ")
        for choice in s.choices:
            if choice.lower() == wanted:
                return choice
    raise RequestError(s.api, f"must be one of {numbered}; got {value!r}")


def request_values(body: BaseModel, cls: type, decode_image: Callable[[Any, str], Image.Image]) -> dict[str, Any]:
    """Field values of request class `cls` from a parsed API body.

    Absent and null fields take the API default (or, with none, the request's own); choice fields accept
    AUTOMATIC1111's integers; images are decoded with `decode_image(data, api_name)`. The first of
    `init_images` is used.
    """
    api_fields = type(body).model_fields
    values: dict[str, Any] = {}
    for name, s in field_specs(cls).items():
        if s.api is None or s.api not in api_fields:
            continue
        value = getattr(body, s.api)
        if value is None:
            value = api_fields[s.api].default
        if value is None:
            continue
        if s.api in IMAGE_FIELDS:
            items = value if isinstance(value, list) else [value]
            if not items or items[0] in ("", None):
                continue
            values[name] = decode_image(items[0], s.api)
        elif s.choices:
            values[name] = _choice(value, s)
        elif isinstance(value, list):
            values[name] = tuple(value)
        else:
            values[name] = value
    return values


def sent_fields(body: BaseModel) -> set[str]:
    """The fields a client sent with a value (null counts as not sent, as AUTOMATIC1111 reads it)."""
    return {name for name in body.model_fields_set if getattr(body, name, None) is not None}


def body_parameters(body: BaseModel, include_images: bool = False) -> dict[str, Any]:
    """The body as AUTOMATIC1111 echoes it in `parameters`: every declared field, images left out."""
    params = body.model_dump()
    if not include_images:
        for name in IMAGE_FIELDS:
            if name in params:
                params[name] = None
    return params
