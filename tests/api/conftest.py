"""Fixtures for the API tests: an Easel with the tiny SD 1.x model and a TestClient over its /sdapi/v1 routes."""
from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from PIL import Image

from tests.conftest import api_client

TINY = {"width": 64, "height": 64, "steps": 2}


def b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def open_b64(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def info_of(response_json: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(response_json["info"], str), "info is a JSON string, as in AUTOMATIC1111"
    return json.loads(response_json["info"])


def gradient(width: int = 64, height: int = 64) -> Image.Image:
    """A deterministic, varied RGB test picture."""
    image = Image.new("RGB", (width, height))
    image.putdata([((x * 4) % 256, (y * 4) % 256, ((x + y) * 2) % 256) for y in range(height) for x in range(width)])
    return image


@pytest.fixture
def easel(make_easel):
    return make_easel()


@pytest.fixture
def client(easel):
    with api_client(easel) as test_client:
        yield test_client
