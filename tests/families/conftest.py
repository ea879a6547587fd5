"""Tiny models of the other diffusers families, built once per session, and an Easel with them installed."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest

from webui.engine.worker import JobState
from webui.requests import RequestError


def run(easel, request):
    """The result of a request that must finish."""
    job = easel.engine.generate(request, timeout=300)
    assert job.state == JobState.DONE, job.error
    return job.result


def failed(easel, request):
    """The RequestError a request ends with: refused when queued, or its job failed."""
    try:
        job = easel.engine.generate(request, timeout=300)
    except RequestError as exc:
        return exc
    assert job.state == JobState.FAILED
    return job.exception


def _tiny(fixture: str, folder: str, maker: str, **options) -> Callable:
    """A session fixture: the tiny model `tests.tiny_families.<maker>` builds in a temporary `folder`."""
    @pytest.fixture(scope="session", name=fixture)
    def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
        from tests import tiny_families

        return getattr(tiny_families, maker)(tmp_path_factory.mktemp(folder) / folder, **options)

    return built


tiny_dit_dir = _tiny("tiny_dit_dir", "tiny-dit", "make_tiny_dit")
tiny_pixart_dir = _tiny("tiny_pixart_dir", "tiny-pixart", "make_tiny_pixart")
tiny_pixart_sigma_dir = _tiny("tiny_pixart_sigma_dir", "tiny-pixart-sigma", "make_tiny_pixart", sigma=True)
tiny_sana_dir = _tiny("tiny_sana_dir", "tiny-sana", "make_tiny_sana")
tiny_amused_dir = _tiny("tiny_amused_dir", "tiny-amused", "make_tiny_amused")
tiny_stable_unclip_dir = _tiny("tiny_stable_unclip_dir", "tiny-stable-unclip", "make_tiny_stable_unclip")
tiny_unclip_dir = _tiny("tiny_unclip_dir", "tiny-unclip", "make_tiny_unclip")
tiny_if_dir = _tiny("tiny_if_dir", "tiny-if", "make_tiny_deepfloyd_if")


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
