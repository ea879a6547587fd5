"""unCLIP end to end on tiny models: Stable unCLIP's image variations in img2img (the noise level changes the
image and is recorded; refused elsewhere), Karlo's text → image through its prior, and the API."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from tests.conftest import api_client
from tests.families.conftest import failed, run
from tests.api.conftest import b64_png
from webui.infotext import parse_infotext
from webui.requests import Img2ImgRequest, Txt2ImgRequest


def source_image():
    image = Image.new("RGB", (64, 64), "navy")
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill="yellow")
    return image


def test_stable_unclip_makes_image_variations_with_a_noise_level(family_easel, tiny_stable_unclip_dir):
    easel = family_easel(tiny_stable_unclip=tiny_stable_unclip_dir)
    entry = easel.manager.find_checkpoint("tiny-stable-unclip")
    assert (entry.arch.value, entry.variant, entry.supported) == ("unclip", "stable", True)
    request = Img2ImgRequest(prompt="", checkpoint="tiny-stable-unclip", steps=2, width=64, height=64, seed=2,
                             sampler="Default", init_image=source_image())
    plain = run(easel, request)
    assert plain.images[0].size == (64, 64)
    assert parse_infotext(plain.infotexts[0])["Image variations"] == "noise level 0"
    noised = run(easel, request.replace(noise_level=500))
    params = parse_infotext(noised.infotexts[0])
    assert params["Noise level"] == "500" and params["Image variations"] == "noise level 500"
    assert not np.array_equal(np.asarray(noised.images[0]), np.asarray(plain.images[0]))
    other = run(easel, request.replace(init_image=Image.new("RGB", (64, 64), "white")))
    assert not np.array_equal(np.asarray(other.images[0]), np.asarray(plain.images[0]))  # the image conditions it
    error = failed(easel, Txt2ImgRequest(prompt="x", checkpoint="tiny-stable-unclip", steps=2, width=64, height=64,
                                         sampler="Default"))
    assert error.field == "checkpoint" and "img2img" in error.message


def test_noise_level_is_refused_for_other_models(make_easel):
    easel = make_easel()
    error = failed(easel, Img2ImgRequest(prompt="x", checkpoint="tiny-sd1", steps=2, width=64, height=64,
                                         sampler="Euler", init_image=source_image(), noise_level=100))
    assert error.field == "noise_level"


def test_karlo_unclip_draws_text_through_its_prior(family_easel, tiny_unclip_dir):
    easel = family_easel(tiny_unclip=tiny_unclip_dir)
    own = easel.model_defaults("tiny-unclip")
    assert (own.width, own.height) == (64, 64)
    request = Txt2ImgRequest(prompt="a red circle", checkpoint="tiny-unclip", steps=2, width=64, height=64, seed=1,
                             sampler="Default")
    first = run(easel, request)
    assert first.images[0].size == (64, 64) and parse_infotext(first.infotexts[0])["Model"] == "tiny-unclip"
    assert failed(easel, request.replace(negative_prompt="x")).field == "negative_prompt"


def test_image_variations_through_the_api(family_easel, tiny_stable_unclip_dir):
    easel = family_easel(tiny_stable_unclip=tiny_stable_unclip_dir)
    with api_client(easel) as client:
        body = {"init_images": [b64_png(source_image())], "prompt": "", "steps": 2, "width": 64, "height": 64,
                "noise_level": 200, "override_settings": {"sd_model_checkpoint": "tiny-stable-unclip"}}
        response = client.post("/sdapi/v1/img2img", json=body)
        assert response.status_code == 200, response.text
        assert "Noise level: 200" in response.json()["info"]
        response = client.post("/sdapi/v1/img2img", json={**body, "noise_level": 5000})
        assert response.status_code == 422 and "noise_level" in response.text
