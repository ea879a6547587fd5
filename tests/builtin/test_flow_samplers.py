"""The flow samplers on the built-in model through the API, and the timestep shift setting: each listed sampler
really runs (its own image, its own name in the infotext); one the family cannot run is a 422 listing those it can."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import info_of
from tests.builtin.conftest import make_tiny_pipeline
from tests.conftest import api_client
from webui.engine.samplers import FLOW_FAMILY_SAMPLERS
from webui.model_manager.identify import Arch
from webui.settings import UserSettings

BODY = {"prompt": "a red circle", "seed": 7, "steps": 3, "width": 64, "height": 64, "cfg_scale": 3.0,
        "override_settings": {"sd_model_checkpoint": "easel-tiny"}}


@pytest.fixture(scope="module")
def builtin_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("builtin")
    make_tiny_pipeline(seed=3).save_pretrained(root / "easel-tiny")
    return root


def test_each_flow_sampler_runs_on_the_builtin_model_and_others_are_refused(make_easel, builtin_root: Path) -> None:
    easel = make_easel(builtin_dir=builtin_root, install_sd1=False)
    with api_client(easel) as client:
        images = {}
        for name in FLOW_FAMILY_SAMPLERS[Arch.EASEL]:
            response = client.post("/sdapi/v1/txt2img", json={**BODY, "sampler_name": name})
            assert response.status_code == 200, response.text
            data = response.json()
            assert f"Sampler: {name}," in info_of(data)["infotexts"][0]
            images[name] = data["images"][0]
        assert len(set(images.values())) == len(images)  # DPM++ 2M and UniPC no longer answer with Euler's image
        for refused in ("LMS", "DPM++ 2M SDE", "DDIM"):
            response = client.post("/sdapi/v1/txt2img", json={**BODY, "sampler_name": refused})
            assert response.status_code == 422, response.text
            assert "sampler_name" in response.text and "Euler, Euler a, Heun, DPM++ 2M, UniPC" in response.text
        response = client.post("/sdapi/v1/txt2img", json={**BODY, "sampler_name": "Euler", "scheduler": "karras"})
        assert response.status_code == 422 and "scheduler" in response.text
        response = client.post("/sdapi/v1/txt2img", json={**BODY, "sampler_name": "Euler", "tiling": True})
        assert response.status_code == 422 and "tiling" in response.text


def test_timestep_shift_setting_changes_the_image_and_is_recorded(make_easel, builtin_root: Path) -> None:
    plain = make_easel(builtin_dir=builtin_root, install_sd1=False)
    with api_client(plain) as client:
        own = client.post("/sdapi/v1/txt2img", json={**BODY, "sampler_name": "Euler"}).json()
        response = client.post("/sdapi/v1/options", json={"flow_shift": 3.0})
        assert response.status_code == 200, response.text
        assert client.get("/sdapi/v1/options").json()["flow_shift"] == 3.0
        shifted = client.post("/sdapi/v1/txt2img", json={**BODY, "sampler_name": "Euler"}).json()
        assert own["images"][0] != shifted["images"][0]
        assert "Shift: 3" in info_of(shifted)["infotexts"][0] and "Shift" not in info_of(own)["infotexts"][0]
        bad = client.post("/sdapi/v1/options", json={"flow_shift": -1})
        assert bad.status_code == 422 and "flow_shift" in bad.text
    assert UserSettings().flow_shift == 0.0


def test_img2img_and_inpaint_batches_on_the_builtin_model(make_easel, builtin_root: Path) -> None:
    """A batch of two from one input image: two images, each its own seed."""
    from tests.api.conftest import b64_png
    from PIL import Image

    easel = make_easel(builtin_dir=builtin_root, install_sd1=False)
    source = b64_png(Image.new("RGB", (64, 64), (200, 40, 40)))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    with api_client(easel) as client:
        for extra in ({}, {"mask": b64_png(mask)}):
            body = {**BODY, "sampler_name": "Euler", "init_images": [source], "denoising_strength": 0.7,
                    "batch_size": 2, **extra}
            response = client.post("/sdapi/v1/img2img", json=body)
            assert response.status_code == 200, response.text
            data = response.json()
            assert len(data["images"]) == 2 and data["images"][0] != data["images"][1]
            assert info_of(data)["all_seeds"] == [7, 8]
