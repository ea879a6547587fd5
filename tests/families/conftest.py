"""Tiny models of the other diffusers families, built once per session, and an Easel with them installed."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest


def _built(factory: pytest.TempPathFactory, name: str, builder: Callable[..., Path]) -> Path:
    return builder(factory.mktemp(name) / name)


@pytest.fixture(scope="session")
def tiny_dit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_families import make_tiny_dit

    return _built(tmp_path_factory, "tiny-dit", make_tiny_dit)


@pytest.fixture
def family_easel(make_easel, tmp_path: Path) -> Callable:
    """An Easel with the given tiny family folders installed in models/diffusers under their names."""
    def build(install_sd1: bool = False, **folders: Path):
        diffusers_dir = tmp_path / "data" / "models" / "diffusers"
        diffusers_dir.mkdir(parents=True, exist_ok=True)
        for name, folder in folders.items():
            shutil.copytree(folder, diffusers_dir / name.replace("_", "-"))  # tiny_dit -> tiny-dit
        return make_easel(install_sd1=install_sd1)

    return build


@pytest.fixture(scope="session")
def tiny_pixart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_families import make_tiny_pixart

    return _built(tmp_path_factory, "tiny-pixart", make_tiny_pixart)


@pytest.fixture(scope="session")
def tiny_pixart_sigma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_families import make_tiny_pixart

    return make_tiny_pixart(tmp_path_factory.mktemp("tiny-pixart-sigma") / "tiny-pixart-sigma", sigma=True)


@pytest.fixture(scope="session")
def tiny_sana_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_families import make_tiny_sana

    return _built(tmp_path_factory, "tiny-sana", make_tiny_sana)


@pytest.fixture(scope="session")
def tiny_amused_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_families import make_tiny_amused

    return _built(tmp_path_factory, "tiny-amused", make_tiny_amused)


@pytest.fixture(scope="session")
def tiny_stable_unclip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_families import make_tiny_stable_unclip

    return _built(tmp_path_factory, "tiny-stable-unclip", make_tiny_stable_unclip)


@pytest.fixture(scope="session")
def tiny_unclip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_families import make_tiny_unclip

    return _built(tmp_path_factory, "tiny-unclip", make_tiny_unclip)


@pytest.fixture(scope="session")
def tiny_if_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_families import make_tiny_deepfloyd_if

    return _built(tmp_path_factory, "tiny-if", make_tiny_deepfloyd_if)
