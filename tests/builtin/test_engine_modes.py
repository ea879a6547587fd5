"""The built-in model through Easel's engine, as the UI and the API run it: every mode, batches of two, the same
seed giving the same pixels again, inpainting keeping the outside."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.builtin.conftest import make_tiny_pipeline
from webui.builtin import data as D
from webui.engine.worker import JobState
from webui.requests import Img2ImgRequest, InpaintRequest, Txt2ImgRequest

COMMON = {"checkpoint": "easel-tiny", "steps": 3, "width": 64, "height": 64, "cfg_scale": 3.0, "seed": 11,
          "sampler": "Euler", "batch_size": 2}


@pytest.fixture(scope="module")
def builtin_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("builtin")
    make_tiny_pipeline(seed=3).save_pretrained(root / "easel-tiny")
    return root


def run(easel, request) -> list[np.ndarray]:
    job = easel.engine.generate(request, timeout=120)
    assert job.state == JobState.DONE, job.error
    return [np.asarray(image.convert("RGB")).astype(int) for image in job.result.images]


def scene() -> Image.Image:
    return Image.fromarray(D.render(D.random_scene(D.example_rng(0, 4)))[0])


def test_every_mode_runs_in_batches_and_repeats(make_easel, builtin_root: Path) -> None:
    easel = make_easel(builtin_dir=builtin_root, install_sd1=False)
    first = run(easel, Txt2ImgRequest(prompt="a red circle", **COMMON))
    assert len(first) == 2 and first[0].shape == (64, 64, 3) and not np.array_equal(first[0], first[1])
    again = run(easel, Txt2ImgRequest(prompt="a red circle", **COMMON))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))

    source = scene()
    edited = run(easel, Img2ImgRequest(prompt="a red circle", init_image=source, denoising_strength=0.5, **COMMON))
    assert len(edited) == 2 and not np.array_equal(edited[0], edited[1])
    assert all(np.array_equal(a, b) for a, b in zip(edited, run(easel, Img2ImgRequest(
        prompt="a red circle", init_image=source, denoising_strength=0.5, **COMMON))))

    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    filled = run(easel, InpaintRequest(prompt="a red circle", init_image=source, mask=mask, mask_blur=0,
                                       denoising_strength=1.0, **COMMON))
    outside = np.asarray(mask) == 0
    for image in filled:
        assert np.array_equal(image[outside], np.asarray(source).astype(int)[outside])
    assert not np.array_equal(filled[0][~outside], filled[1][~outside])
