"""Request validation: every bad field is named with its limit."""
import pytest
from PIL import Image

from webui.requests import (GenerationRequest, Img2ImgRequest, InpaintRequest, Limits, RequestError, Txt2ImgRequest,
                            field_specs, validate_request)

LIMITS = Limits(max_side=1024, max_pixels=512 * 512, max_steps=50, max_batch_size=4, max_batch_count=10,
                max_prompt_chars=100)


@pytest.mark.parametrize("changes, field, words", [
    ({"width": 65}, "width", "multiple of 8"),
    ({"height": 2048}, "height", "at most 1024"),
    ({"steps": 0}, "steps", "at least 1"),
    ({"steps": 51}, "steps", "at most 50"),
    ({"steps": "abc"}, "steps", "must be a number"),
    ({"steps": 2.5}, "steps", "whole number"),
    ({"cfg_scale": float("nan")}, "cfg_scale", "NaN"),
    ({"batch_size": 5}, "batch_size", "at most 4"),
    ({"batch_count": 0}, "n_iter", "at least 1"),
    ({"prompt": "x" * 101}, "prompt", "limit is 100"),
    ({"prompt": 5}, "prompt", "must be text"),
    ({"width": 1024, "height": 1024}, "width", "limit is 262144"),
    ({"enable_hr": "yes"}, "enable_hr", "true or false"),
])
def test_bad_fields_are_named(changes, field, words):
    with pytest.raises(RequestError) as info:
        validate_request(Txt2ImgRequest(**changes), LIMITS)
    assert info.value.field == field
    assert words in str(info.value)


def test_good_request_passes():
    validate_request(Txt2ImgRequest(width=64, height=64, steps=4), LIMITS)


def test_img2img_needs_image_and_inpaint_needs_mask():
    with pytest.raises(RequestError, match="init_images"):
        validate_request(Img2ImgRequest(width=64, height=64), LIMITS)
    image = Image.new("RGB", (64, 64))
    with pytest.raises(RequestError, match="mask"):
        validate_request(InpaintRequest(width=64, height=64, init_image=image), LIMITS)
    validate_request(InpaintRequest(width=64, height=64, init_image=image, outpaint_left=64), LIMITS)
    with pytest.raises(RequestError, match="inpainting_fill"):
        validate_request(InpaintRequest(width=64, height=64, init_image=image, mask=image, inpainting_fill="x"), LIMITS)


def test_one_declaration_feeds_ui_infotext_and_api():
    specs = field_specs(Txt2ImgRequest)
    assert specs["steps"].infotext == "Steps" and specs["steps"].api == "steps"
    assert specs["batch_count"].api == "n_iter"
    assert specs["sampler"].api == "sampler_name" and specs["sampler"].label == "Sampling method"
    assert set(field_specs(GenerationRequest)) <= set(specs)
