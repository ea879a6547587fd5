"""A trained LoRA works through the engine: `<lora:name:1>` in a prompt changes the image, and dropping the tag
gives the base image back (built-in model and SD 1.x, tiny weights). Runs once Easel's LoRA loader is present."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.training.conftest import make_dataset
from webui.training.config import config_from_dict
from webui.training.folders import TrainingFolders
from webui.training.trainer import train

loras = pytest.importorskip("webui.model_manager.loras")


def trained(easel, base: str, name: str, size: int) -> Path:
    """Train `name` on the model `base` of this Easel, from a dataset in its data folder's data/, into its
    models/Lora (the folders the Train tab uses)."""
    folders = TrainingFolders.of_settings(easel.settings)
    make_dataset(easel.settings.data_dir / "data" / name, size=(size, size))
    config = config_from_dict({"base_model": base, "dataset": f"data/{name}", "trigger": "zork",
                               "output_name": name, "steps": 3, "batch_size": 2,
                               "rank": 4, "alpha": 4, "learning_rate": 5e-2, "resolution": [size],
                               "caption_dropout": 0.0}, folders=folders)
    return train(config, search_dirs=list(folders.models)).path


def generate(easel, prompt: str, checkpoint: str, size: int) -> np.ndarray:
    from webui.engine.worker import JobState
    from webui.requests import Txt2ImgRequest

    request = Txt2ImgRequest(prompt=prompt, checkpoint=checkpoint, width=size, height=size, steps=2, seed=7,
                             sampler=easel.default_sampler(checkpoint))
    job = easel.engine.generate(request, timeout=300)
    assert job.state == JobState.DONE, job.error
    return np.asarray(job.result.images[0].convert("RGB")).astype(int)


def check(easel, checkpoint: str, name: str, size: int) -> None:
    easel.manager.refresh_loras()
    entry = next(e for e in easel.manager.loras() if e.name == name)
    assert "zork" in entry.trigger_words
    base = generate(easel, "a red zork", checkpoint, size)
    with_lora = generate(easel, f"a red zork <lora:{name}:1>", checkpoint, size)
    assert np.abs(with_lora - base).max() > 10
    # without the tag the base image comes back (the built-in model on CPU repeats itself only to within one
    # level of 255 in a few pixels, LoRA or not)
    assert np.abs(generate(easel, "a red zork", checkpoint, size) - base).max() <= 1


def test_builtin_lora_through_the_engine(make_easel, tiny_easel_dir: Path, tmp_path: Path) -> None:
    builtin = tmp_path / "builtin"
    shutil.copytree(tiny_easel_dir, builtin / "tiny-easel")
    easel = make_easel(builtin_dir=builtin, install_sd1=False)
    path = trained(easel, "tiny-easel", "easel-zork", 64)
    assert path == easel.settings.models_dir / "Lora" / "easel-zork.safetensors"
    check(easel, "tiny-easel", "easel-zork", 64)


def test_sd1_lora_through_the_engine(make_easel, tmp_path: Path) -> None:
    easel = make_easel()
    trained(easel, "tiny-sd1", "sd-zork", 32)
    check(easel, "tiny-sd1", "sd-zork", 64)
