"""Fixtures for the ControlNet extension: tiny random ControlNets beside the tiny checkpoints, and an Easel that has
them installed in its `models/ControlNet` folder (the bundled extension loads with every Easel)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image, ImageDraw

TINY = {"width": 64, "height": 64, "steps": 2}


def shapes(width: int = 64, height: int = 64) -> Image.Image:
    """A white rectangle and a grey disc on black: clear edges for canny."""
    image = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 4, height // 4, width // 2, height * 3 // 4), fill=(255, 255, 255))
    draw.ellipse((width // 2 + 4, height // 8, width - 4, height // 2), fill=(128, 128, 128))
    return image


def pixels(image: Image.Image) -> np.ndarray:
    """RGB pixels as int16, so differences do not wrap."""
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def generate(easel, request, units=None):
    """The result of `request` with ControlNet `units` (sd-webui-controlnet's args) when given; it must succeed."""
    if units is not None:
        request = request.replace(extension_args=easel.registry.parse_request_args({"ControlNet": {"args": units}}))
    job = easel.engine.generate(request, timeout=300)
    assert job.error is None, job.error
    return job.result


@pytest.fixture(scope="session")
def tiny_sd1_controlnet(tiny_sd1_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_sd_controlnet

    return make_tiny_sd_controlnet(tmp_path_factory.mktemp("cn") / "tiny-canny", tiny_sd1_dir, seed=3)


@pytest.fixture(scope="session")
def tiny_sd1_controlnet_2(tiny_sd1_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_sd_controlnet

    return make_tiny_sd_controlnet(tmp_path_factory.mktemp("cn2") / "tiny-depth", tiny_sd1_dir, seed=7)


@pytest.fixture
def cn_easel(make_easel: Callable, tmp_path: Path, tiny_sd1_controlnet: Path, tiny_sd1_controlnet_2: Path):
    """An Easel with tiny-sd1 and two tiny SD 1.x ControlNets (`tiny-canny`, `tiny-depth`)."""
    folder = tmp_path / "data" / "models" / "ControlNet"
    folder.mkdir(parents=True, exist_ok=True)
    for source in (tiny_sd1_controlnet, tiny_sd1_controlnet_2):
        shutil.copytree(source, folder / source.name)
    easel = make_easel()
    loaded = {item.name: item for item in easel.extensions}
    assert loaded["controlnet"].loaded, loaded["controlnet"].error
    return easel
