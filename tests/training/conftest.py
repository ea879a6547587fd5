"""Fixtures for LoRA training tests: a tiny built-in model saved as a folder, and small datasets.

Training reads and writes only inside its folders (webui/training/folders.py), so the tests do too: a test's data
folder is `tmp_path`, its datasets are under `tmp_path/data/`, its LoRAs under `tmp_path/models/Lora/`, and the
tiny model is named from its own folder, passed as a model folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_easel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.builtin.conftest import make_tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny-easel") / "tiny-easel"
    make_tiny_pipeline().save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def models(tiny_easel_dir: Path) -> list[Path]:
    """The folder that holds the tiny built-in model, as a model folder (the way --ckpt-dir adds one): training
    looks base models up by name in the model folders only."""
    return [tiny_easel_dir.parent]


def make_dataset(folder: Path, n: int = 3, size: tuple[int, int] = (64, 64), caption: str = "a red [trigger]"
                 ) -> Path:
    """`n` coloured images with captions, different per index."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = np.full((size[1], size[0], 3), 40 * i, np.uint8)
        arr[size[1] // 4: size[1] // 2, size[0] // 4: size[0] // 2] = rng.integers(0, 255, 3, dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(caption, encoding="utf-8")
    return folder


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    """A dataset in the data folder `tmp_path` (datasets live in a data folder's data/)."""
    return make_dataset(tmp_path / "data" / "dataset")
