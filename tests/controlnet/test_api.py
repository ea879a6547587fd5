"""The sd-webui-controlnet API: `alwayson_scripts.ControlNet.args` on /sdapi/v1/txt2img and img2img, 4xx naming
the bad key, and the /controlnet/ routes, through FastAPI's TestClient and the real `webuiapi` client."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import api_client
from tests.controlnet.conftest import TINY, shapes
from webui.infotext import parse_infotext


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decoded(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


@pytest.fixture
def client(cn_easel):
    with api_client(cn_easel) as test_client:
        yield test_client


def unit(**changes):
    return {"enabled": True, "image": b64(shapes()), "module": "canny", "model": "tiny-canny", "weight": 1.0,
            "guidance_start": 0.0, "guidance_end": 1.0, "control_mode": "Balanced", "resize_mode": "Crop and Resize",
            "processor_res": 64, "threshold_a": 50, "threshold_b": 150, "pixel_perfect": False, **changes}


def test_routes_and_bad_units(client):
    models = client.get("/controlnet/model_list").json()["model_list"]
    assert [m.split(" [")[0] for m in models] == ["tiny-canny", "tiny-depth"] and models[0].endswith("]")
    modules = client.get("/controlnet/module_list").json()
    assert {"none", "canny", "openpose", "mlsd", "shuffle", "depth_midas"} <= set(modules["module_list"])
    assert modules["module_detail"]["canny"]["model_free"] is True
    assert client.get("/controlnet/version").json() == {"version": 2}
    scripts = client.get("/sdapi/v1/scripts").json()
    assert "controlnet" in scripts["txt2img"] and "controlnet" in scripts["img2img"]
    info = [row for row in client.get("/sdapi/v1/script-info").json() if row["name"] == "controlnet"]
    assert sorted(row["is_img2img"] for row in info) == [False, True] and all(row["is_alwayson"] for row in info)

    detected = client.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_processor_res": 64,
                                                       "controlnet_input_images": [b64(shapes())],
                                                       "controlnet_threshold_a": 50, "controlnet_threshold_b": 150})
    assert detected.status_code == 200, detected.text
    edges = np.asarray(decoded(detected.json()["images"][0]))
    assert edges.shape == (64, 64, 3) and set(np.unique(edges)) == {0, 255}
    missing = client.post("/controlnet/detect", json={"controlnet_module": "depth",
                                                      "controlnet_input_images": [b64(shapes())]})
    assert missing.status_code == 404 and "dpt_hybrid-midas-501f0c75.pt" in missing.json()["detail"]
    assert client.post("/controlnet/detect", json={"controlnet_module": "nope", "controlnet_input_images": [
        b64(shapes())]}).json()["field"] == "controlnet_module"

    for changes, key in (({"weight": "lots"}, "args[0].weight"), ({"model": "nope"}, "args[0].model"),
                         ({"guidance_end": 1.5}, "args[0].guidance_end"), ({"module": "x"}, "args[0].module")):
        response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "alwayson_scripts": {
            "ControlNet": {"args": [unit(**changes)]}}})
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["field"] == "alwayson_scripts.ControlNet" and key in body["detail"], body
    no_image = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "alwayson_scripts": {
        "controlnet": {"args": [unit(image="")]}}})
    assert no_image.status_code == 422 and "args[0].image" in no_image.json()["detail"]


def test_webuiapi_controlnet_units(cn_easel):
    webuiapi = pytest.importorskip("webuiapi")
    from tests.api.test_http import free_port, stop, wait_until_up
    from webui.app import create_server

    port = free_port()
    cn_easel.settings.port, cn_easel.settings.api, cn_easel.settings.nowebui = port, True, True
    _, url = create_server(cn_easel, block=False)
    wait_until_up(url)
    try:
        api = webuiapi.WebUIApi(host="127.0.0.1", port=port, steps=2)
        assert [m.split(" [")[0] for m in api.controlnet_model_list()] == ["tiny-canny", "tiny-depth"]
        assert "canny" in api.controlnet_module_list() and api.controlnet_version() == 2
        detected = api.controlnet_detect([shapes()], module="canny", processor_res=64, threshold_a=50,
                                         threshold_b=150)
        assert len(detected.images) == 1 and detected.images[0].size == (64, 64) and detected.info == "Success"

        plain = api.txt2img(prompt="a house", seed=6, width=64, height=64, cfg_scale=6)
        units = [webuiapi.ControlNetUnit(image=shapes(), module="canny", model=api.controlnet_model_list()[0],
                                         processor_res=64, threshold_a=50, threshold_b=150)]
        controlled = api.txt2img(prompt="a house", seed=6, width=64, height=64, cfg_scale=6, controlnet_units=units)
        assert controlled.image.size == (64, 64)
        difference = np.abs(np.asarray(controlled.image, dtype=int) - np.asarray(plain.image, dtype=int)).mean()
        assert difference > 0.5
        info = parse_infotext(controlled.info["infotexts"][0])
        assert info["ControlNet 0"].startswith("Module: canny, Model: tiny-canny [")

        two = [webuiapi.ControlNetUnit(image=None, module="invert", model="tiny-depth", weight=0.6, control_mode=1),
               webuiapi.ControlNetUnit(image=shapes(), module="none", model="tiny-canny", guidance_end=0.5)]
        edited = api.img2img(images=[shapes()], prompt="edit", seed=6, width=64, height=64, denoising_strength=0.7,
                             controlnet_units=two)
        assert edited.image.size == (64, 64)
        assert "ControlNet 1" in parse_infotext(edited.info["infotexts"][0])
    finally:
        stop(cn_easel)
