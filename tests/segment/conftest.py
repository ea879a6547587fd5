"""Fixtures for segmentation tests: an Easel with the shipped built-in model (copied, since training re-exports
it), a tiny random CLIPSeg in models/clipseg and the tiny SD 1.x model (which cannot edit)."""
from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO

BUILTIN = REPO / "models" / "builtin" / "easel-shapes"
CLIPSEG_LABEL = "tiny-clipseg (CLIPSeg)"


def b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def open_b64(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def scene_image(seed: int = 3) -> tuple[Image.Image, Any]:
    """A held-out shapes scene (64x64) and its Scene, from the built-in model's data generator."""
    from webui.builtin import data as D

    scene = D.random_scene(D.example_rng(seed, 0, "eval"), n_objects=2)
    image, _ = D.render(scene)
    return Image.fromarray(image), scene


def binary_values(image: Image.Image) -> set[int]:
    return set(np.unique(np.asarray(image)).tolist())


@pytest.fixture(scope="session")
def builtin_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a copy of the shipped built-in model as 'easel-shapes'."""
    if not (BUILTIN / "model_index.json").is_file():
        pytest.skip("the built-in model's weights are not in models/builtin/easel-shapes")
    root = tmp_path_factory.mktemp("builtin")
    shutil.copytree(BUILTIN, root / "easel-shapes", ignore=shutil.ignore_patterns(".*"))
    return root


@pytest.fixture(scope="session")
def tiny_clipseg_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_clipseg

    return make_tiny_clipseg(tmp_path_factory.mktemp("clipseg") / "tiny-clipseg")


@pytest.fixture
def seg_easel(make_easel, tmp_path: Path, builtin_root: Path, tiny_clipseg_dir: Path):
    """An Easel with easel-shapes (edit-capable), tiny-clipseg and tiny-sd1."""
    shutil.copytree(tiny_clipseg_dir, tmp_path / "data" / "models" / "clipseg" / "tiny-clipseg")
    return make_easel(builtin_dir=builtin_root)


@pytest.fixture
def seg_client(seg_easel):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api.routes import create_api

    app = FastAPI()
    create_api(app, seg_easel)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
