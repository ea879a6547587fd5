"""The hires fix's own fields and the refiner through /sdapi/v1/txt2img and /img2img, and their infotext back
through /sdapi/v1/png-info; on tiny SD 1.x models and a tiny SD3 (another latent space)."""
from __future__ import annotations

import shutil

import pytest

from tests.api.conftest import TINY, b64_png, gradient, info_of
from tests.conftest import api_client
from webui.infotext import parse_infotext, request_updates
from webui.requests import Txt2ImgRequest


@pytest.fixture(scope="module")
def extra_models(tmp_path_factory):
    from tests.tiny_models import make_tiny_sd1, make_tiny_sd3

    root = tmp_path_factory.mktemp("hires-models")
    return make_tiny_sd1(root / "tiny-sd1b", seed=5), make_tiny_sd3(root / "tiny-sd3")


@pytest.fixture
def client(make_easel, tmp_path, extra_models):
    for folder in extra_models:
        shutil.copytree(folder, tmp_path / "data" / "models" / "diffusers" / folder.name)
    with api_client(make_easel()) as test_client:
        yield test_client


BODY = {"prompt": "a red circle", "seed": 3, "sampler_name": "Euler", **TINY}


def test_hires_fields_and_refiner_through_the_api_and_png_info(client):
    body = {**BODY, "enable_hr": True, "hr_scale": 2, "denoising_strength": 0.6, "hr_upscaler": "latent (bicubic)",
            "hr_sampler_name": "k_dpmpp_2m", "hr_scheduler": "karras", "hr_prompt": "a blue square",
            "hr_negative_prompt": "green", "hr_checkpoint_name": "tiny-sd1b", "refiner_checkpoint": "tiny-sd1b",
            "refiner_switch_at": 0.5}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    info = info_of(response.json())
    extra = info["extra_generation_params"]
    assert extra["Hires upscaler"] == "Latent (bicubic)" and extra["Hires sampler"] == "DPM++ 2M"
    assert extra["Hires schedule type"] == "Karras" and extra["Hires prompt"] == "a blue square"
    assert extra["Hires negative prompt"] == "green" and extra["Refiner switch at"] == "0.5"
    assert extra["Hires checkpoint"].startswith("tiny-sd1b [") and extra["Refiner"].startswith("tiny-sd1b [")
    png = client.post("/sdapi/v1/png-info", json={"image": response.json()["images"][0]}).json()
    assert png["info"] == info["infotexts"][0]
    updates = request_updates(png["parameters"], Txt2ImgRequest)
    assert updates["hr_checkpoint_name"] == "tiny-sd1b" and updates["refiner_checkpoint"] == "tiny-sd1b"
    assert updates["refiner_switch_at"] == 0.5 and updates["hr_prompt"] == "a blue square"
    assert updates["hr_upscaler"] == "Latent (bicubic)" and updates["enable_hr"] is True


def test_defaults_from_automatic1111_clients_are_the_first_pass(client):
    """What AUTOMATIC1111 clients send when nothing is set: nulls, "" and the "Use same ..." names."""
    plain = client.post("/sdapi/v1/txt2img", json={**BODY, "enable_hr": True, "hr_scale": 2})
    same = client.post("/sdapi/v1/txt2img", json={
        **BODY, "enable_hr": True, "hr_scale": 2, "hr_sampler_name": "Use same sampler", "hr_scheduler": None,
        "hr_prompt": "", "hr_negative_prompt": "", "hr_checkpoint_name": "Use same checkpoint",
        "refiner_checkpoint": None, "refiner_switch_at": 0})
    assert plain.status_code == same.status_code == 200, same.text
    assert plain.json()["images"] == same.json()["images"]
    assert "Refiner" not in info_of(same.json())["extra_generation_params"]


def test_bad_hires_and_refiner_fields_are_named(client):
    cases = [({"refiner_checkpoint": "tiny-sd3", "refiner_switch_at": 0.5}, 422, "refiner_checkpoint"),
             ({"refiner_checkpoint": "nope", "refiner_switch_at": 0.5}, 404, "refiner_checkpoint"),
             ({"enable_hr": True, "hr_checkpoint_name": "nope"}, 404, "hr_checkpoint_name"),
             ({"enable_hr": True, "hr_scheduler": "weird"}, 422, "hr_scheduler"),
             ({"enable_hr": True, "hr_sampler_name": "Nope"}, 422, "hr_sampler_name"),
             ({"enable_hr": True, "hr_upscaler": "Latent", "hr_checkpoint_name": "tiny-sd3"}, 422,
              "hr_checkpoint_name"),
             ({"refiner_checkpoint": "tiny-sd1b", "refiner_switch_at": 1.5}, 422, "refiner_switch_at")]
    for fields, status, field in cases:
        response = client.post("/sdapi/v1/txt2img", json={**BODY, **fields})
        assert response.status_code == status and response.json()["field"] == field, (fields, response.text)
    response = client.post("/sdapi/v1/img2img", json={**BODY, "init_images": [b64_png(gradient())],
                                                       "refiner_checkpoint": "tiny-sd3", "refiner_switch_at": 0.5})
    assert response.status_code == 422 and response.json()["field"] == "refiner_checkpoint"


def test_upscalers_route_lists_the_latent_modes(client):
    names = [row["name"] for row in client.get("/sdapi/v1/latent-upscale-modes").json()]
    assert names[:2] == ["Latent", "Latent (antialiased)"] and "Latent (nearest-exact)" in names
