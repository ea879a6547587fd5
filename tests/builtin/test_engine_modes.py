"""The built-in model through Easel's engine, as the UI and the API run it: every mode, batches of two, the same
seed giving the same pixels again, inpainting keeping the outside."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
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


def test_a_planned_layout_is_in_the_infotext_and_the_seed_repeats_it(make_easel, tmp_path: Path) -> None:
    """A model whose config plans layouts records, per image, the prompt it was given with positions written in;
    prompts it leaves alone (or a model that does not plan) add nothing."""
    from webui.builtin.layout import parse
    from webui.builtin.pipeline import EaselPipeline
    from webui.infotext import parse_infotext

    tiny = make_tiny_pipeline(seed=3)
    EaselPipeline(tiny.transformer, tiny.text_encoder, tiny.scheduler, plan_layout=True).save_pretrained(
        tmp_path / "easel-tiny")
    easel = make_easel(builtin_dir=tmp_path, install_sd1=False)
    request = Txt2ImgRequest(prompt="a red circle, a blue star above a green ring", **COMMON)
    job = easel.engine.generate(request, timeout=120)
    assert job.state == JobState.DONE, job.error
    infos = [parse_infotext(text) for text in job.result.infotexts]
    planned = [info["Planned prompt"] for info in infos]
    assert all(info["Prompt"] == request.prompt for info in infos)
    for text in planned:
        mentions, relations = parse(text)
        assert len(mentions) == 3 and all(m.position for m in mentions) and not relations
        rows = [D.POSITIONS[m.position][1] for m in mentions]
        assert rows[1] < rows[2]  # the star is above the ring
    again = easel.engine.generate(request, timeout=120)
    assert [parse_infotext(t)["Planned prompt"] for t in again.result.infotexts] == planned
    job = easel.engine.generate(Txt2ImgRequest(prompt="a dog", **COMMON), timeout=120)
    assert all("Planned prompt" not in parse_infotext(t) for t in job.result.infotexts)
    # the words the model did not understand are named, per image, instead of silently drawing something else
    assert all(parse_infotext(t)["Words not understood"] == "dog" for t in job.result.infotexts)
    assert all("Words not understood" not in parse_infotext(t) for t in again.result.infotexts)
    # the setting turns it off: the prompt as written, as a model without planning draws it
    import dataclasses

    easel.settings.user = dataclasses.replace(easel.settings.user, builtin_plan_layout=False)
    off = easel.engine.generate(request, timeout=120)
    assert all("Planned prompt" not in parse_infotext(t) for t in off.result.infotexts)
    plain = make_tiny_pipeline(seed=3)
    gens = [torch.Generator().manual_seed(COMMON["seed"] + i) for i in range(2)]
    expected = plain(request.prompt, num_inference_steps=3, guidance_scale=3.0, num_images_per_prompt=2,
                     generator=gens, output_type="np").images
    got = np.stack([np.asarray(image.convert("RGB")) for image in off.result.images])
    assert np.abs(got.astype(int) - (expected * 255).round().astype(int)).max() <= 1
