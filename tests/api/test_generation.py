"""txt2img and img2img/inpaint through /sdapi/v1 on the tiny SD 1.x model, and progress/interrupt while a job runs."""
from __future__ import annotations

import threading
import time

import numpy as np
from PIL import Image, ImageDraw

from tests.api.conftest import TINY, b64_png, gradient, info_of, open_b64
from webui.infotext import parse_infotext


def test_txt2img_returns_images_with_their_parameters(client):
    body = {"prompt": "a red circle", "negative_prompt": "blurry", "seed": 1234, "batch_size": 2, "n_iter": 2,
            "sampler_name": "Euler", "cfg_scale": 5, **TINY}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert len(data["images"]) == 4
    assert data["parameters"]["prompt"] == "a red circle" and data["parameters"]["n_iter"] == 2
    info = info_of(data)
    assert info["seed"] == 1234 and info["all_seeds"] == [1234, 1235, 1236, 1237]
    assert info["sd_model_name"] == "tiny-sd1" and info["sampler_name"] == "Euler"
    assert (info["width"], info["height"], info["steps"], info["cfg_scale"]) == (64, 64, 2, 5)
    assert len(info["infotexts"]) == 4
    for index, encoded in enumerate(data["images"]):
        image = open_b64(encoded)
        assert image.size == (64, 64)
        params = parse_infotext(image.info["parameters"])
        assert params["Prompt"] == "a red circle" and params["Negative prompt"] == "blurry"
        assert params["Seed"] == str(1234 + index) and params["Steps"] == "2" and params["Sampler"] == "Euler"
        assert image.info["parameters"] == info["infotexts"][index]


def test_same_seed_gives_identical_bytes_and_random_seed_is_reported(client):
    body = {"prompt": "a blue square", "seed": 77, **TINY}
    first = client.post("/sdapi/v1/txt2img", json=body).json()
    second = client.post("/sdapi/v1/txt2img", json=body).json()
    assert first["images"] == second["images"]
    other = client.post("/sdapi/v1/txt2img", json={**body, "seed": 78}).json()
    assert other["images"] != first["images"]
    random_seed = info_of(client.post("/sdapi/v1/txt2img", json={**body, "seed": -1}).json())["seed"]
    assert isinstance(random_seed, int) and random_seed >= 0


def test_images_are_saved_only_when_asked(client, easel):
    outputs = easel.settings.outputs_dir
    client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 5, **TINY})
    assert not list(outputs.glob("**/*.png"))
    data = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 5, "save_images": True, **TINY}).json()
    saved = list(outputs.glob("txt2img-images/*/*.png"))
    assert len(saved) == 1 and saved[0].name.endswith("-5.png")
    assert info_of(data)["paths"] == [saved[0].relative_to(easel.settings.data_dir).as_posix()]
    assert Image.open(saved[0]).info["parameters"] == info_of(data)["infotexts"][0]


def test_send_images_false_and_unknown_fields_are_accepted(client):
    body = {"prompt": "x", "seed": 3, "send_images": False, "restore_faces": False, "tiling": False,
            "alwayson_scripts": {}, "script_args": [], "eta": 1.0, "styles": [], **TINY}
    data = client.post("/sdapi/v1/txt2img", json=body).json()
    assert data["images"] == [] and info_of(data)["all_seeds"] == [3]


def test_img2img_returns_an_image_of_the_requested_size(client):
    body = {"init_images": [b64_png(gradient(48, 40))], "prompt": "a painting", "seed": 9,
            "denoising_strength": 0.5, "resize_mode": 1, **TINY}
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    image = open_b64(data["images"][0])
    assert image.size == (64, 64)
    assert parse_infotext(image.info["parameters"])["Denoising strength"] == "0.5"
    assert data["parameters"]["init_images"] is None  # not echoed unless include_init_images


def test_img2img_accepts_a_data_url(client):
    body = {"init_images": ["data:image/png;base64," + b64_png(gradient())], "seed": 1, **TINY}
    assert client.post("/sdapi/v1/img2img", json=body).status_code == 200


def _square_mask(size: int = 64, box: tuple[int, int, int, int] = (20, 20, 44, 44)) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


def test_inpaint_keeps_every_pixel_outside_the_mask(client):
    source = gradient()
    mask = _square_mask()
    body = {"init_images": [b64_png(source)], "mask": b64_png(mask), "mask_blur": 0, "inpainting_fill": 1,
            "inpaint_full_res": 0, "denoising_strength": 1.0, "prompt": "a cat", "seed": 4, **TINY}
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    result = np.asarray(open_b64(response.json()["images"][0]).convert("RGB")).astype(int)
    original = np.asarray(source).astype(int)
    outside = np.asarray(mask) == 0
    assert np.array_equal(result[outside], original[outside])
    assert np.abs(result[~outside] - original[~outside]).mean() > 1  # the masked square was repainted
    params = parse_infotext(open_b64(response.json()["images"][0]).info["parameters"])
    assert params["Masked content"] == "original" and params["Inpaint area"] == "Whole picture"


def test_inpaint_with_defaults_only_masked_and_blur_keeps_far_pixels(client):
    source = gradient()
    mask = _square_mask(box=(24, 24, 40, 40))
    body = {"init_images": [b64_png(source)], "mask": b64_png(mask), "seed": 4, **TINY}  # A1111 defaults
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    image = open_b64(response.json()["images"][0])
    params = parse_infotext(image.info["parameters"])
    assert params["Inpaint area"] == "Only masked" and params["Masked content"] == "fill" and params["Mask blur"] == "4"
    result = np.asarray(image.convert("RGB")).astype(int)
    far = np.ones((64, 64), bool)
    far[12:53, 12:53] = False  # the square grown by three blur radii
    assert np.array_equal(result[far], np.asarray(source).astype(int)[far])


def test_inverted_mask_repaints_the_outside(client):
    source = gradient()
    mask = _square_mask()
    body = {"init_images": [b64_png(source)], "mask": b64_png(mask), "mask_blur": 0, "inpainting_fill": 1,
            "inpaint_full_res": False, "inpainting_mask_invert": 1, "denoising_strength": 1.0, "seed": 4, **TINY}
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    result = np.asarray(open_b64(response.json()["images"][0]).convert("RGB")).astype(int)
    inside = np.asarray(mask) > 0
    assert np.array_equal(result[inside], np.asarray(source).astype(int)[inside])


def test_progress_while_running_then_interrupt_returns_early(client, easel):
    assert client.get("/sdapi/v1/progress").json()["progress"] == 0.0
    body = {"prompt": "long", "seed": 1, "width": 64, "height": 64, "steps": 150, "n_iter": 50}
    outcome: dict = {}

    def generate() -> None:
        outcome["response"] = client.post("/sdapi/v1/txt2img", json=body)

    thread = threading.Thread(target=generate)
    thread.start()
    seen = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = client.get("/sdapi/v1/progress").json()
        if state["state"]["sampling_step"] >= 2:
            seen = state
            break
        time.sleep(0.05)
    assert seen is not None, "the job never reported progress"
    assert 0 < seen["progress"] < 1 and seen["state"]["sampling_steps"] == 150 and seen["state"]["job_count"] == 50
    assert seen["eta_relative"] > 0 and "step" in seen["textinfo"]
    assert client.post("/sdapi/v1/interrupt").status_code == 200
    thread.join(300)
    assert not thread.is_alive()
    response = outcome["response"]
    assert response.status_code == 200, response.text
    data = response.json()
    assert 1 <= len(data["images"]) < 50
    assert info_of(data)["interrupted"] is True
    assert client.get("/sdapi/v1/progress").json()["progress"] == 0.0


def test_progress_reports_a_preview_image(make_easel):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api.routes import create_api
    from webui.settings import UserSettings

    easel = make_easel(user=UserSettings(live_preview_every=1))
    app = FastAPI()
    create_api(app, easel)
    with TestClient(app) as client:
        thread = threading.Thread(target=client.post, args=("/sdapi/v1/txt2img",),
                                  kwargs={"json": {"prompt": "p", "steps": 150, "n_iter": 20, "width": 64, "height": 64}})
        thread.start()
        preview = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and preview is None:
            preview = client.get("/sdapi/v1/progress").json()["current_image"]
            time.sleep(0.05)
        without = client.get("/sdapi/v1/progress", params={"skip_current_image": True}).json()
        client.post("/sdapi/v1/interrupt")
        thread.join(300)
    assert preview is not None and open_b64(preview).size[0] > 0
    assert without["current_image"] is None


def test_skip_ends_the_current_image_only(client):
    body = {"prompt": "p", "seed": 1, "width": 64, "height": 64, "steps": 8, "n_iter": 2}
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("r", client.post("/sdapi/v1/txt2img", json=body)))
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and client.get("/sdapi/v1/progress").json()["state"]["sampling_step"] < 1:
        time.sleep(0.02)
    assert client.post("/sdapi/v1/skip").json() == {"skipped": True}
    thread.join(300)
    data = outcome["r"].json()
    assert len(data["images"]) == 2 and info_of(data)["interrupted"] is False


def test_hires_fix_upscales_to_the_target_size(client):
    body = {"prompt": "p", "seed": 2, **TINY, "enable_hr": True, "hr_resize_x": 96, "hr_resize_y": 96,
            "hr_second_pass_steps": 2, "denoising_strength": 0.5, "hr_upscaler": "Latent"}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    image = open_b64(response.json()["images"][0])
    assert image.size == (96, 96)
    params = parse_infotext(image.info["parameters"])
    assert params["Hires upscale"] == "1.5" and params["Denoising strength"] == "0.5"
    assert info_of(response.json())["denoising_strength"] == 0.5
