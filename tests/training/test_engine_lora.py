"""A trained LoRA works through the engine: `<lora:name:1>` in a prompt changes the image, and dropping the tag
gives the base image back (built-in model and SD 1.x, tiny weights). Runs once Easel's LoRA loader is present."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.training.conftest import make_dataset
from webui.training.config import config_from_dict
from webui.training.trainer import train

loras = pytest.importorskip("webui.model_manager.loras")


def trained(base: Path, dataset: Path, out: Path, name: str, size: int) -> Path:
    config = config_from_dict({"base_model": str(base), "dataset": str(dataset), "trigger": "zork",
                               "output_dir": str(out), "output_name": name, "steps": 3, "batch_size": 2,
                               "rank": 4, "alpha": 4, "learning_rate": 5e-2, "resolution": [size],
                               "caption_dropout": 0.0})
    return train(config).path


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
    trained(builtin / "tiny-easel", make_dataset(tmp_path / "ds"), easel.settings.models_dir / "Lora",
            "easel-zork", 64)
    check(easel, "tiny-easel", "easel-zork", 64)


def test_sd1_lora_through_the_engine(make_easel, tmp_path: Path) -> None:
    easel = make_easel()
    base = easel.settings.models_dir / "diffusers" / "tiny-sd1"
    trained(base, make_dataset(tmp_path / "ds", size=(32, 32)), easel.settings.models_dir / "Lora", "sd-zork", 32)
    check(easel, "tiny-sd1", "sd-zork", 64)
