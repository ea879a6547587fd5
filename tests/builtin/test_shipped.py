"""The committed built-in model: within its size budget, loadable the diffusers way and through the model manager,
finite, described by its training record, and drawing the colours a prompt names."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from webui.builtin import data as D

# EASEL_SHIPPED_MODEL checks a candidate folder before it replaces the shipped weights.
SHIPPED = Path(os.environ.get("EASEL_SHIPPED_MODEL", REPO / "models" / "builtin" / "easel-shapes"))

pytestmark = pytest.mark.skipif(not (SHIPPED / "model_index.json").is_file(),
                                reason="the built-in model's weights are not in models/builtin/easel-shapes")


@pytest.fixture(scope="module")
def shipped_pipe():
    from webui.builtin.pipeline import EaselPipeline

    pipe = EaselPipeline.from_pretrained(str(SHIPPED), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_size_budget_and_training_record(shipped_pipe) -> None:
    weights = list(SHIPPED.rglob("*.safetensors"))
    assert weights and sum(p.stat().st_size for p in weights) <= 30 * 1024 * 1024
    info = json.loads((SHIPPED / "training.json").read_text())
    params = sum(p.numel() for p in shipped_pipe.transformer.parameters()) + sum(
        p.numel() for p in shipped_pipe.text_encoder.parameters())
    assert info["params"] == params
    assert info["step"] > 0 and 0.0 < info["loss"] < 1.0 and isinstance(info["hparams"]["seed"], int)
    assert all(torch.isfinite(p).all() for p in shipped_pipe.transformer.parameters())


def test_the_model_manager_loads_it_as_the_builtin_model(tmp_path) -> None:
    import shutil

    from webui.model_manager.identify import Arch
    from webui.model_manager.manager import ModelManager

    shutil.copytree(SHIPPED, tmp_path / "builtin" / "easel-shapes")
    manager = ModelManager(checkpoint_dirs=[], diffusers_dirs=[], vae_dirs=[], lora_dirs=[],
                           builtin_dirs=[tmp_path / "builtin"], device="cpu", hash_cache_path=tmp_path / "h.json")
    loaded = manager.get("easel-shapes", "txt2img")
    assert loaded.arch == Arch.EASEL


def palette_shares(image) -> dict[str, float]:
    """Share of pixels nearest to each of the model's ten colours."""
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(float)
    names = list(D.PALETTE)
    palette = np.array([D.PALETTE[n] for n in names], dtype=float)
    nearest = np.argmin(((pixels[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)
    return {name: float((nearest == i).mean()) for i, name in enumerate(names)}


def test_it_draws_the_colours_the_prompt_names(shipped_pipe) -> None:
    prompt = "a red circle on a blue background"
    images = shipped_pipe(prompt=[prompt] * 2, num_inference_steps=20, guidance_scale=4.0, height=64, width=64,
                          generator=[torch.Generator().manual_seed(s) for s in (0, 1)]).images
    again = shipped_pipe(prompt=prompt, num_inference_steps=20, guidance_scale=4.0, height=64, width=64,
                         generator=torch.Generator().manual_seed(0)).images[0]
    # the same seed draws the same image alone or in a batch, up to float rounding (multithreaded matrix products
    # split a batch differently): at most 1 of 255 in any pixel
    assert int(np.abs(np.asarray(again, dtype=int) - np.asarray(images[0], dtype=int)).max()) <= 1
    for image in images:
        shares = palette_shares(image)
        assert shares["red"] > 0.03 and shares["blue"] > 0.03, shares
        assert shares["red"] + shares["blue"] > 0.8, shares
