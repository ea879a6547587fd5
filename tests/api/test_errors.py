"""Bad requests get a 4xx JSON answer naming the field — never a 500 — and nothing is queued for them."""
from __future__ import annotations

import base64
import io
import threading
import time

import pytest
from PIL import Image

from tests.api.conftest import TINY, b64_png, gradient

GOOD_IMAGE = None


def _image() -> str:
    global GOOD_IMAGE
    if GOOD_IMAGE is None:
        GOOD_IMAGE = b64_png(gradient())
    return GOOD_IMAGE


def _mask(value: int) -> str:
    return b64_png(Image.new("L", (64, 64), value))


def _bomb() -> str:
    """A small PNG that claims 6000x6000 pixels (36 MP, over the decode limit)."""
    buffer = io.BytesIO()
    Image.new("1", (6000, 6000), 0).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


TXT2IMG_CASES = [
    ({"width": 65}, "width"),
    ({"height": 4000}, "height"),
    ({"steps": 0}, "steps"),
    ({"steps": "abc"}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"steps": 100000}, "steps"),
    ({"sampler_name": "Nope"}, "sampler_name"),
    ({"sampler_index": "Nope", "sampler_name": None}, "sampler_index"),
    ({"scheduler": "wobbly"}, "scheduler"),
    ({"batch_size": -1}, "batch_size"),
    ({"n_iter": 0}, "n_iter"),
    ({"cfg_scale": "high"}, "cfg_scale"),
    ({"cfg_scale": 1000}, "cfg_scale"),
    ({"seed": 2**40}, "seed"),
    ({"seed": "lucky"}, "seed"),
    ({"prompt": 12}, "prompt"),
    ({"prompt": "x" * 9000}, "prompt"),
    ({"clip_skip": 13}, "clip_skip"),
    ({"enable_hr": True, "hr_scale": 9}, "hr_scale"),
    ({"denoising_strength": 3}, "denoising_strength"),
    ({"override_settings": {"sd_model_checkpoint": "missing-model"}}, "override_settings.sd_model_checkpoint"),
    ({"override_settings": {"sd_vae": "missing.vae"}}, "override_settings.sd_vae"),
    ({"override_settings": {"CLIP_stop_at_last_layers": "two"}}, "override_settings.CLIP_stop_at_last_layers"),
    ({"override_settings": {"randn_source": "dice"}}, "override_settings.randn_source"),
    ({"override_settings": {"samples_format": "jpg"}}, "override_settings.samples_format"),
    ({"override_settings": {"no_such_option": 1}}, "override_settings.no_such_option"),
    ({"override_settings": "not a dict"}, "override_settings"),
]


@pytest.mark.parametrize("changes, field", TXT2IMG_CASES, ids=[c[1] + "-" + str(i) for i, c in enumerate(TXT2IMG_CASES)])
def test_bad_txt2img_fields_are_named(client, easel, changes, field):
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, **changes})
    assert 400 <= response.status_code < 500, response.text
    data = response.json()
    assert data["field"] == field, data
    assert data["detail"].startswith(field), data
    assert easel.engine.worker.queue_length() == 0 and not easel.engine.worker.jobs


IMG2IMG_CASES = [
    ({}, "init_images"),
    ({"init_images": []}, "init_images"),
    ({"init_images": ["!!!not base64!!!"]}, "init_images"),
    ({"init_images": [base64.b64encode(b"just some text, not an image").decode()]}, "init_images"),
    ({"init_images": [12]}, "init_images"),
    ({"init_images": "a string, not a list"}, "init_images"),
    ({"init_images": ["IMAGE"], "mask": "%%%"}, "mask"),
    ({"init_images": ["IMAGE"], "mask": "MASK0"}, "mask"),
    ({"init_images": ["IMAGE"], "mask": "MASK255", "inpainting_mask_invert": 1}, "mask"),
    ({"init_images": ["IMAGE"], "mask": "MASK255", "inpainting_fill": 7}, "inpainting_fill"),
    ({"init_images": ["IMAGE"], "mask": "MASK255", "inpainting_fill": "sand"}, "inpainting_fill"),
    ({"init_images": ["IMAGE"], "mask": "MASK255", "mask_blur": -1}, "mask_blur"),
    ({"init_images": ["IMAGE"], "mask": "MASK255", "inpaint_full_res": 5}, "inpaint_full_res"),
    ({"init_images": ["IMAGE"], "resize_mode": 5}, "resize_mode"),
    ({"init_images": ["IMAGE"], "denoising_strength": -0.5}, "denoising_strength"),
    ({"init_images": ["BOMB"]}, "init_images"),
]


@pytest.mark.parametrize("changes, field", IMG2IMG_CASES, ids=[c[1] + "-" + str(i) for i, c in enumerate(IMG2IMG_CASES)])
def test_bad_img2img_fields_are_named(client, easel, changes, field):
    substitutes = {"IMAGE": _image, "MASK0": lambda: _mask(0), "MASK255": lambda: _mask(255), "BOMB": _bomb}
    body = {"prompt": "x", **TINY}
    for key, value in changes.items():
        if isinstance(value, list):
            value = [substitutes[v]() if isinstance(v, str) and v in substitutes else v for v in value]
        elif isinstance(value, str) and value in substitutes:
            value = substitutes[value]()
        body[key] = value
    response = client.post("/sdapi/v1/img2img", json=body)
    assert 400 <= response.status_code < 500, response.text
    data = response.json()
    assert data["field"] == field, data
    assert easel.engine.worker.queue_length() == 0 and not easel.engine.worker.jobs


def test_malformed_json_and_wrong_body_types(client):
    response = client.post("/sdapi/v1/txt2img", content=b'{"prompt": "x",', headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["field"] == "body"
    response = client.post("/sdapi/v1/txt2img", json=["not", "an", "object"])
    assert response.status_code == 422 and response.json()["field"] == "body"
    response = client.post("/sdapi/v1/options", json=[1, 2])
    assert response.status_code == 422 and response.json()["field"] == "body"


def test_png_info_bad_input(client):
    response = client.post("/sdapi/v1/png-info", json={})
    assert response.status_code == 422 and response.json()["field"] == "image"
    response = client.post("/sdapi/v1/png-info", json={"image": "@@@"})
    assert response.status_code == 422 and response.json()["field"] == "image"
    response = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(b"GIF89a garbage").decode()})
    assert response.status_code == 422 and response.json()["field"] == "image"


def test_options_bad_values_change_nothing(client, easel):
    response = client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2, "sd_vae": "nope.safetensors"})
    assert response.status_code == 404 and response.json()["field"] == "sd_vae"
    assert client.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 1
    response = client.post("/sdapi/v1/options", json={"samples_save": "maybe"})
    assert response.status_code == 422 and response.json()["field"] == "samples_save"


def test_body_size_is_limited(easel):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api.routes import create_api

    app = FastAPI()
    create_api(app, easel, max_body_bytes=10_000)
    with TestClient(app) as client:
        big = {"init_images": [_image()], "prompt": "x" * 20_000}
        response = client.post("/sdapi/v1/img2img", json=big)
        assert response.status_code == 413 and response.json()["field"] == "body"

        def chunks():  # no Content-Length: the limit is enforced while reading
            for _ in range(20):
                yield b" " * 1000

        response = client.post("/sdapi/v1/txt2img", content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413


def test_full_queue_is_a_503(make_easel):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api.routes import ApiTxt2ImgRequest, create_api
    from webui.settings import UserSettings

    easel = make_easel(user=UserSettings(queue_size=1))
    app = FastAPI()
    create_api(app, easel)
    long = ApiTxt2ImgRequest(prompt="long", checkpoint="tiny-sd1", width=64, height=64, steps=150, batch_count=50)
    running = easel.engine.submit(long, source="test")
    deadline = time.monotonic() + 60
    while running.step == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    waiting = easel.engine.submit(long, source="test")
    try:
        with TestClient(app) as client:
            response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY})
        assert response.status_code == 503
        assert "queue is full" in response.json()["detail"] and response.headers["retry-after"]
    finally:
        easel.engine.worker.interrupt(waiting.id)
        easel.engine.worker.interrupt()
        running.wait(60)
        waiting.wait(60)


def test_failure_inside_the_pipeline_is_a_500_with_the_message(client, easel, tiny_sd1_dir):
    import shutil

    broken = easel.settings.models_dir / "diffusers" / "tiny-broken"
    shutil.copytree(tiny_sd1_dir, broken)
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.write_bytes(b"\x00" * 16)
    client.post("/sdapi/v1/refresh-checkpoints")
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": "x", **TINY, "override_settings": {"sd_model_checkpoint": "tiny-broken"}})
    if response.status_code == 422:  # the manager recognised the folder as unusable: also a fine answer
        assert response.json()["field"] == "sd_model_checkpoint"
        return
    assert response.status_code == 500, response.text
    assert response.json()["error"] == "JobFailed" and response.json()["detail"].startswith("generation failed")
    # The worker survives: the next request works.
    again = client.post("/sdapi/v1/txt2img", json={
        "prompt": "x", **TINY, "override_settings": {"sd_model_checkpoint": "tiny-sd1"}})
    assert again.status_code == 200, again.text


def test_concurrent_requests_all_succeed(client):
    results: list[int] = []

    def post(seed: int) -> None:
        results.append(client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": seed, **TINY}).status_code)

    threads = [threading.Thread(target=post, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == [200, 200, 200]
