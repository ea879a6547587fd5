"""T2I-Adapter units: a tiny random diffusers T2I-Adapter in `models/ControlNet/`, run through the ControlNet
extension's units in txt2img, img2img and inpaint, and beside a ControlNet unit."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from tests.controlnet.conftest import TINY, shapes
from webui.infotext import parse_infotext
from webui.requests import Img2ImgRequest, InpaintRequest, Txt2ImgRequest


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="session")
def tiny_t2i_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_adapters import make_tiny_t2i_adapter

    return make_tiny_t2i_adapter(tmp_path_factory.mktemp("t2i") / "tiny-t2i-canny", seed=11)


@pytest.fixture
def t2i_easel(make_easel: Callable, tmp_path: Path, tiny_t2i_adapter: Path, tiny_sd1_controlnet: Path):
    folder = tmp_path / "data" / "models" / "ControlNet"
    folder.mkdir(parents=True)
    shutil.copytree(tiny_t2i_adapter, folder / tiny_t2i_adapter.name)
    shutil.copytree(tiny_sd1_controlnet, folder / tiny_sd1_controlnet.name)
    return make_easel()


def generate(easel, request, units=None):
    if units is not None:
        request = request.replace(extension_args=easel.registry.parse_request_args({"ControlNet": {"args": units}}))
    job = easel.engine.generate(request, timeout=300)
    assert job.error is None, job.error
    return job


def unit(**changes):
    return {"image": shapes(), "module": "canny", "model": "tiny-t2i-canny", "threshold_a": 50, "threshold_b": 150,
            "processor_res": 64, **changes}


def test_t2i_adapter_changes_the_image_and_weight_zero_restores_it(t2i_easel):
    request = Txt2ImgRequest(prompt="a house", seed=4, checkpoint="tiny-sd1", **TINY)
    plain = pixels(generate(t2i_easel, request).result.images[0])
    adapted = generate(t2i_easel, request, [unit()]).result
    assert np.abs(pixels(adapted.images[0]) - plain).mean() > 1.0
    assert np.array_equal(pixels(generate(t2i_easel, request, [unit(weight=0)]).result.images[0]), plain)
    assert np.array_equal(pixels(generate(t2i_easel, request).result.images[0]), plain)  # the hook is gone
    late = pixels(generate(t2i_easel, request, [unit(guidance_start=0.5)]).result.images[0])
    assert not np.array_equal(late, plain) and not np.array_equal(late, pixels(adapted.images[0]))
    info = parse_infotext(adapted.infotexts[0])
    assert info["ControlNet 0"].startswith("Module: canny, Model: tiny-t2i-canny [")
    with_controlnet = generate(t2i_easel, request, [unit(), unit(model="tiny-canny")]).result.images[0]
    assert not np.array_equal(pixels(with_controlnet), pixels(adapted.images[0]))


def test_t2i_adapter_in_img2img_and_inpaint(t2i_easel):
    img2img = Img2ImgRequest(prompt="a house", seed=4, checkpoint="tiny-sd1", init_image=shapes(),
                             denoising_strength=0.8, **TINY)
    plain = pixels(generate(t2i_easel, img2img).result.images[0])
    assert np.abs(pixels(generate(t2i_easel, img2img, [unit(image=None)]).result.images[0]) - plain).mean() > 0.5
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpaint = InpaintRequest(prompt="a house", seed=4, checkpoint="tiny-sd1", init_image=shapes(), mask=mask,
                             mask_blur=0, denoising_strength=1.0, **TINY)
    plain = pixels(generate(t2i_easel, inpaint).result.images[0])
    adapted = pixels(generate(t2i_easel, inpaint, [unit()]).result.images[0])
    inside = np.asarray(mask) > 0
    assert np.abs(adapted[inside] - plain[inside]).mean() > 0.5
    assert np.array_equal(adapted[~inside], pixels(shapes())[~inside])


def test_t2i_adapter_for_another_family_is_refused_naming_the_unit(t2i_easel, tmp_path):
    import json

    config_path = tmp_path / "data" / "models" / "ControlNet" / "tiny-t2i-canny" / "config.json"
    config = json.loads(config_path.read_text())
    config["adapter_type"] = "full_adapter_xl"
    config_path.write_text(json.dumps(config))
    request = Txt2ImgRequest(prompt="a house", seed=4, checkpoint="tiny-sd1", **TINY)
    request = request.replace(extension_args=t2i_easel.registry.parse_request_args({"ControlNet": {"args": [unit()]}}))
    job = t2i_easel.engine.generate(request, timeout=300)
    assert job.error is not None and "alwayson_scripts.controlnet.args[0].model" in job.error
    assert "T2I-Adapter for SDXL" in job.error


def test_t2i_adapter_on_sdxl(make_easel, tmp_path, tmp_path_factory):
    from tests.tiny_adapters import make_tiny_t2i_adapter
    from tests.tiny_models import make_tiny_sdxl

    sdxl = make_tiny_sdxl(tmp_path_factory.mktemp("xl") / "tiny-sdxl")
    models = tmp_path / "data" / "models"
    shutil.copytree(sdxl, models / "diffusers" / "tiny-sdxl")
    make_tiny_t2i_adapter(models / "ControlNet" / "xl-t2i", seed=12, xl=True)
    easel = make_easel(install_sd1=False)
    request = Txt2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-sdxl", **TINY)
    plain = pixels(generate(easel, request).result.images[0])
    adapted = pixels(generate(easel, request, [unit(model="xl-t2i")]).result.images[0])
    assert np.abs(adapted - plain).mean() > 0.5
    assert np.array_equal(pixels(generate(easel, request, [unit(model="xl-t2i", weight=0)]).result.images[0]), plain)
