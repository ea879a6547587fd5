"""Flux.1 Fill and Flux.1 Depth/Canny checkpoints: told apart by their transformer's input channels, Fill inpainting
through the API (nothing outside the mask changes), Depth/Canny steered by a ControlNet unit's map with no model."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import api_client
from tests.controlnet.conftest import shapes
from tests.controlnet.test_api import b64, decoded

BASE = {"prompt": "a house", "steps": 2, "width": 64, "height": 64, "seed": 3, "cfg_scale": 1.0}


@pytest.fixture(scope="module")
def flux_tools(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.tiny_models import make_tiny_flux_tool

    root = tmp_path_factory.mktemp("flux-tools")
    return {kind: make_tiny_flux_tool(root / f"tiny-flux-{kind}", kind, seed=4) for kind in ("fill", "control")}


@pytest.fixture
def client(make_easel, tmp_path, flux_tools):
    for kind, folder in flux_tools.items():
        shutil.copytree(folder, tmp_path / "data" / "models" / "diffusers" / folder.name)
    easel = make_easel(install_sd1=False)
    with api_client(easel) as test_client:
        yield test_client


def test_the_transformers_input_channels_tell_fill_and_control(flux_tools):
    from webui.model_manager.identify import identify_folder

    fill, control = identify_folder(flux_tools["fill"]), identify_folder(flux_tools["control"])
    assert (fill.variant, fill.supported) == ("fill", True) and "Flux.1 Fill" in fill.reason
    assert (control.variant, control.supported) == ("control", True) and "Depth/Canny" in control.reason


def square_mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


def test_flux_fill_inpaints_through_the_api_and_keeps_the_rest(client):
    source = shapes()
    body = {**BASE, "override_settings": {"sd_model_checkpoint": "tiny-flux-fill"}, "init_images": [b64(source)],
            "mask": b64(square_mask()), "mask_blur": 0, "denoising_strength": 1.0}
    answer = client.post("/sdapi/v1/img2img", json=body)
    assert answer.status_code == 200, answer.text
    filled = np.asarray(decoded(answer.json()["images"][0]).convert("RGB"), dtype=np.int16)
    inside = np.asarray(square_mask()) > 0
    original = np.asarray(source, dtype=np.int16)
    assert np.array_equal(filled[~inside], original[~inside])  # composited: outside the mask is the input
    assert np.abs(filled[inside] - original[inside]).mean() > 5  # the masked square was generated
    plain = client.post("/sdapi/v1/txt2img", json={**BASE, "override_settings": {
        "sd_model_checkpoint": "tiny-flux-fill"}})
    assert plain.status_code in (400, 409, 422) and "only inpaints" in plain.text


def control_unit(**changes):
    return {"enabled": True, "image": b64(shapes()), "module": "canny", "model": "None", "processor_res": 64,
            "threshold_a": 50, "threshold_b": 150, **changes}


def test_flux_depth_canny_takes_the_units_control_image(client):
    settings = {"override_settings": {"sd_model_checkpoint": "tiny-flux-control"}}

    def txt2img(*units):
        return client.post("/sdapi/v1/txt2img", json={**BASE, **settings,
                                                       "alwayson_scripts": {"ControlNet": {"args": list(units)}}})

    first = txt2img(control_unit())
    assert first.status_code == 200, first.text
    again = txt2img(control_unit())
    other = txt2img(control_unit(image=b64(shapes().rotate(90))))
    pixels = [np.asarray(decoded(r.json()["images"][0]).convert("RGB"), dtype=np.int16) for r in (first, again, other)]
    assert np.array_equal(pixels[0], pixels[1]) and np.abs(pixels[0] - pixels[2]).mean() > 0.5
    missing = client.post("/sdapi/v1/txt2img", json={**BASE, **settings})
    assert missing.status_code == 422 and "needs a control image" in missing.text
    with_model = txt2img(control_unit(weight=0.5))
    assert with_model.status_code == 422 and "args[0].weight" in with_model.text
    # img2img: a unit without an image is steered by the input image's map
    edit = client.post("/sdapi/v1/img2img", json={**BASE, **settings, "init_images": [b64(shapes())],
                                                  "denoising_strength": 0.8, "alwayson_scripts": {
                                                      "ControlNet": {"args": [control_unit(image=None)]}}})
    assert edit.status_code == 200, edit.text
