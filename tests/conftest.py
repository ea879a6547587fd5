"""Shared fixtures: a small Easel world per test session, built from tiny random-weight models.

`tiny_sd1_dir` is a tiny SD 1.x diffusers folder made once per session. `make_easel(tmp_path, ...)` builds an
Easel app (settings → manager → engine) over its own data dir, with the tiny model installed, the way
`webui.app.build` does for users.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    import torch

    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_sd1_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_sd1

    return make_tiny_sd1(tmp_path_factory.mktemp("tiny-sd1") / "tiny-sd1")


@pytest.fixture
def make_easel(tmp_path: Path, tiny_sd1_dir: Path) -> Callable:
    """Build an Easel whose data dir is tmp_path, with the tiny SD 1.x model installed as 'tiny-sd1'."""
    from webui.app import build
    from webui.settings import Settings, UserSettings

    built = []

    def factory(*, builtin_dir: Path | None = None, user: UserSettings | None = None, install_sd1: bool = True,
                **kwargs):
        data = tmp_path / "data"
        diffusers_dir = data / "models" / "diffusers"
        diffusers_dir.mkdir(parents=True, exist_ok=True)
        if install_sd1 and not (diffusers_dir / "tiny-sd1").exists():
            shutil.copytree(tiny_sd1_dir, diffusers_dir / "tiny-sd1")
        settings = Settings(data_dir=data, device="cpu", precision="full",
                            builtin_dir=builtin_dir or (tmp_path / "no-builtin"),
                            user=user or UserSettings(), **kwargs)
        easel = build(settings)
        easel.engine.start()
        built.append(easel)
        return easel

    yield factory
    for easel in built:
        easel.engine.stop()


@contextmanager
def api_client(easel) -> Iterator:
    """A FastAPI TestClient over Easel's API routes for `easel` (server errors come back as 500 responses)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api.routes import create_api

    app = FastAPI()
    create_api(app, easel)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
