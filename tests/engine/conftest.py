"""Engine test fixtures: an Easel with two tiny SD 1.x checkpoints (different weight seeds) for tests that switch
checkpoint between passes (hires fix, refiner)."""
from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="module")
def other_sd1_dir(tmp_path_factory):
    """A second tiny SD 1.x folder, `tiny-sd1b`, with other weights than `tiny-sd1`."""
    from tests.tiny_models import make_tiny_sd1

    return make_tiny_sd1(tmp_path_factory.mktemp("sd1b") / "tiny-sd1b", seed=5)


@pytest.fixture
def two_sd1_easel(make_easel, tmp_path, other_sd1_dir):
    """An Easel with `tiny-sd1` and `tiny-sd1b` installed."""
    shutil.copytree(other_sd1_dir, tmp_path / "data" / "models" / "diffusers" / "tiny-sd1b")
    return make_easel()
