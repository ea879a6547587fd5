"""Fixtures for editing tests: an Easel with the shipped built-in model (its edit mode) and the tiny SD 1.x model
(which cannot edit), a TestClient over its API, and a scene drawn by the built-in model's renderer: a large red
circle on the left and a medium green square on the right, on white."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import api_client
from tests.segment.conftest import b64_png, builtin_root, open_b64  # noqa: F401 - fixtures and helpers shared

__all__ = ["b64_png", "open_b64", "red_circle_scene"]


def red_circle_scene() -> tuple[Image.Image, np.ndarray, Image.Image]:
    """(source image 64×64, the circle's coverage [H, W] in [0, 1], the target: the circle drawn blue)."""
    from webui.builtin import data as D

    scene = D.Scene("white", (D.Obj("red", "circle", "large", "left", 16.0, 32.0, 12.0),
                              D.Obj("green", "square", "medium", "right", 48.0, 32.0, 8.5)))
    source, masks = D.render(scene)
    target, _ = D.render(scene, colors={0: D.PALETTE["blue"]})
    return Image.fromarray(source), masks[0], Image.fromarray(target)


@pytest.fixture
def edit_easel(make_easel, builtin_root):
    """An Easel with easel-shapes (edit-capable) and tiny-sd1 (not)."""
    return make_easel(builtin_dir=builtin_root)


@pytest.fixture
def edit_client(edit_easel) -> Any:
    with api_client(edit_easel) as test_client:
        yield test_client
