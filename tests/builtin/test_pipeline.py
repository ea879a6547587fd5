"""EaselPipeline on a tiny random model: every mode runs, seeds reproduce, inpainting keeps the outside exactly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FlowMatchHeunDiscreteScheduler
from PIL import Image

from tests.builtin.conftest import make_tiny_pipeline
from webui.builtin import data as D


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _scene_image() -> Image.Image:
    return Image.fromarray(D.render(D.random_scene(D.example_rng(0, 1)))[0])


def test_save_load_round_trip(tiny_pipe, tmp_path: Path) -> None:
    from webui.builtin.pipeline import EaselPipeline

    tiny_pipe.save_pretrained(tmp_path / "easel")
    loaded = EaselPipeline.from_pretrained(str(tmp_path / "easel"))
    loaded.set_progress_bar_config(disable=True)
    assert loaded.text_encoder.config.vocab == tiny_pipe.text_encoder.config.vocab
    a = tiny_pipe("a red circle", num_inference_steps=2, generator=_gen(1), output_type="np").images
    b = loaded("a red circle", num_inference_steps=2, generator=_gen(1), output_type="np").images
    np.testing.assert_array_equal(a, b)


def test_txt2img_seed_reproduces_and_generator_list(tiny_pipe) -> None:
    a = tiny_pipe("a blue star", num_inference_steps=2, generator=_gen(5)).images[0]
    b = tiny_pipe("a blue star", num_inference_steps=2, generator=_gen(5)).images[0]
    c = tiny_pipe("a blue star", num_inference_steps=2, generator=_gen(6)).images[0]
    assert isinstance(a, Image.Image) and a.size == (64, 64)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    batch = tiny_pipe(["a blue star", "a red ring"], num_inference_steps=2, generator=[_gen(5), _gen(9)],
                      output_type="np").images
    single = tiny_pipe("a blue star", num_inference_steps=2, generator=_gen(5), output_type="np").images
    assert batch.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(batch[0], single[0], atol=1e-5)
    with pytest.raises(ValueError, match="one per image"):
        tiny_pipe(["a", "b"], num_inference_steps=2, generator=[_gen(1)])


def test_euler_a_draws_its_noise_from_the_seed(tiny_pipe) -> None:
    """Euler a (a stochastic flow-matching Euler step) adds fresh noise at each step: it comes from the images'
    generators, not torch's global generator, so the same seed gives the same image."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    euler = tiny_pipe.scheduler
    tiny_pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(euler.config, stochastic_sampling=True)
    try:
        torch.manual_seed(1)
        a = tiny_pipe("a blue star", num_inference_steps=3, generator=_gen(5), output_type="np").images
        torch.manual_seed(2)
        b = tiny_pipe("a blue star", num_inference_steps=3, generator=_gen(5), output_type="np").images
        batch = tiny_pipe(["a red ring", "a blue star"], num_inference_steps=3, generator=[_gen(9), _gen(5)],
                          output_type="np").images
    finally:
        tiny_pipe.scheduler = euler
    deterministic = tiny_pipe("a blue star", num_inference_steps=3, generator=_gen(5), output_type="np").images
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(batch[1], a[0], atol=1e-5)  # each image's noise from its own generator
    assert not np.allclose(a, deterministic)  # the stochastic step did run


def test_img2img_edit_other_sizes_and_heun(tiny_pipe) -> None:
    src = _scene_image()
    out = tiny_pipe("a red circle", image=src, strength=0.3, num_inference_steps=4, generator=_gen(0),
                    output_type="np").images
    assert out.shape == (1, 64, 64, 3)
    edit = tiny_pipe("highlight the red circle", source_image=src, num_inference_steps=2, num_images_per_prompt=2,
                     generator=_gen(0), output_type="pt").images
    assert edit.shape == (2, 3, 64, 64) and edit.min() >= 0 and edit.max() <= 1
    wide = tiny_pipe("a star", height=32, width=48, num_inference_steps=2, generator=_gen(0)).images[0]
    assert wide.size == (48, 32)
    pipe = make_tiny_pipeline()
    pipe.scheduler = FlowMatchHeunDiscreteScheduler.from_config(pipe.scheduler.config)
    assert pipe("a ring", num_inference_steps=2, generator=_gen(0)).images[0].size == (64, 64)
    assert pipe("a ring", image=src, strength=0.5, num_inference_steps=4, generator=_gen(0)).images[0].size == (64, 64)


def test_inpaint_keeps_outside_pixels_bit_identical(tiny_pipe) -> None:
    src = _scene_image()
    mask = np.zeros((64, 64), np.uint8)
    mask[8:40, 16:48] = 255
    out = tiny_pipe("a green square", image=src, mask_image=Image.fromarray(mask), num_inference_steps=2,
                    generator=_gen(3)).images[0]
    a, b = np.asarray(out), np.asarray(src)
    assert np.array_equal(a[mask == 0], b[mask == 0])
    assert not np.array_equal(a[mask > 0], b[mask > 0])


def test_callback_interrupt_and_latents(tiny_pipe) -> None:
    seen = []

    def callback(pipe, step, timestep, kwargs):
        seen.append((step, tuple(kwargs["latents"].shape)))
        if step == 1:
            pipe._interrupt = True
        return {}

    tiny_pipe("a cross", num_inference_steps=6, generator=_gen(0), callback_on_step_end=callback)
    assert seen == [(0, (1, 3, 64, 64)), (1, (1, 3, 64, 64))]


def test_input_errors(tiny_pipe) -> None:
    with pytest.raises(ValueError, match="multiples of 8"):
        tiny_pipe("x", height=60)
    with pytest.raises(ValueError, match="strength"):
        tiny_pipe("x", image=_scene_image(), strength=0.0)
    with pytest.raises(ValueError, match="needs `image`"):
        tiny_pipe("x", mask_image=Image.new("L", (64, 64)))
    with pytest.raises(ValueError, match="not both"):
        tiny_pipe("x", image=_scene_image(), source_image=_scene_image())
    with pytest.raises(ValueError, match="negative_prompt"):
        tiny_pipe(["a", "b"], negative_prompt=["x", "y", "z"])


def test_self_conditioned_transformer_gets_each_steps_previous_prediction() -> None:
    """The sampler passes x0_prev = None at the first step and, from then on, the prediction of the step before
    (both guidance branches, unguided), for text-to-image and inpainting alike."""
    pipe = make_tiny_pipeline()
    calls: list[tuple[torch.Tensor | None, torch.Tensor]] = []
    forward = pipe.transformer.forward

    def spy(x_t, t, text, mask, source=None, x0_prev=None):
        out = forward(x_t, t, text, mask, source, x0_prev)
        calls.append((None if x0_prev is None else x0_prev.clone(), out.detach().clone()))
        return out

    pipe.transformer.forward = spy
    pipe("a red circle", num_inference_steps=3, guidance_scale=3.0, height=32, width=32)
    assert len(calls) == 3 and calls[0][0] is None
    for (_, before), (prev, _) in zip(calls, calls[1:]):
        assert prev is not None and prev.shape == (2, 3, 32, 32) and torch.equal(prev, before.to(prev.dtype))
    calls.clear()
    image = Image.new("RGB", (32, 32), (40, 90, 220))
    mask = Image.new("L", (32, 32), 255)
    pipe("a red circle", image=image, mask_image=mask, num_inference_steps=2, guidance_scale=1.0, height=32,
         width=32)
    assert len(calls) == 2 and calls[0][0] is None and torch.equal(calls[1][0], calls[0][1])


def test_guidance_interval_guides_only_inside_it_and_is_the_models_default(tmp_path: Path) -> None:
    """Inside the interval of noise levels both branches run and are mixed; outside only the prompt's branch runs
    (one row per image). The model folder's model_index.json holds the default; an argument overrides it."""
    import json

    from webui.builtin.pipeline import EaselPipeline

    pipe = make_tiny_pipeline()
    rows: list[int] = []
    sigmas: list[float] = []
    forward = pipe.transformer.forward

    def spy(x_t, t, *args):
        rows.append(x_t.shape[0])
        sigmas.append(float(t[0]))
        return forward(x_t, t, *args)

    pipe.transformer.forward = spy
    kw = dict(num_inference_steps=6, guidance_scale=3.0, height=32, width=32, output_type="np")
    pipe("a red circle", generator=_gen(0), guidance_interval=(0.3, 0.8), **kw)
    assert rows == [2 if 0.3 <= s <= 0.8 else 1 for s in sigmas] and 1 in rows and 2 in rows
    # an interval that holds none of the steps is sampling without guidance
    rows.clear()
    unguided = pipe("a red circle", generator=_gen(0), guidance_interval=(0.0, 1e-6), **kw).images
    assert rows == [1] * 6
    plain = pipe("a red circle", generator=_gen(0), **{**kw, "guidance_scale": 1.0}).images
    np.testing.assert_allclose(unguided, plain, atol=1e-5)
    full = pipe("a red circle", generator=_gen(0), guidance_interval=(0.0, 1.0), **kw).images
    default = pipe("a red circle", generator=_gen(0), **kw).images
    np.testing.assert_array_equal(full, default)
    assert np.abs(full - unguided).max() > 1e-3

    pipe.transformer.forward = forward
    windowed = EaselPipeline(pipe.transformer, pipe.text_encoder, pipe.scheduler, guidance_interval=[0.3, 0.8])
    windowed.save_pretrained(tmp_path / "easel")
    assert json.loads((tmp_path / "easel" / "model_index.json").read_text())["guidance_interval"] == [0.3, 0.8]
    loaded = EaselPipeline.from_pretrained(str(tmp_path / "easel"))
    loaded.set_progress_bar_config(disable=True)
    loaded.transformer.forward = spy
    rows.clear()
    sigmas.clear()
    loaded("a red circle", generator=_gen(0), **kw)
    assert rows == [2 if 0.3 <= s <= 0.8 else 1 for s in sigmas] and 1 in rows
    rows.clear()
    loaded("a red circle", generator=_gen(0), guidance_interval=(0.0, 1.0), **kw)
    assert rows == [2] * 6

    with pytest.raises(ValueError, match=r"`guidance_interval` must satisfy 0 <= low < high <= 1, got \(0.9, 0.2\)"):
        pipe("x", guidance_interval=(0.9, 0.2))
    with pytest.raises(ValueError, match="`guidance_interval` must be two numbers"):
        pipe("x", guidance_interval=("low",))
