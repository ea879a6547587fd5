"""Prompt editing and alternation switch the conditioning during sampling (tiny SD 1.x through the engine, the
built-in pipeline directly); BREAK lengthens the embeddings; each distinct prompt is encoded once per job."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from webui.engine.conditioning import PromptCache, conditioning
from webui.engine.prompts import encode_text
from webui.engine.worker import JobState
from webui.infotext import parse_infotext
from webui.model_manager.identify import Arch
from webui.requests import Img2ImgRequest, Txt2ImgRequest

SMALL = dict(width=64, height=64, steps=2, checkpoint="tiny-sd1", sampler="Euler", seed=11)


def image(easel, prompt, **changes):
    job = easel.engine.generate(Txt2ImgRequest(prompt=prompt, **{**SMALL, **changes}), timeout=120)
    assert job.state == JobState.DONE, job.error
    return np.asarray(job.result.images[0].convert("RGB")).astype(int)


def test_prompt_editing_switches_the_prompt_during_sampling(make_easel):
    easel = make_easel()
    red, blue = image(easel, "a red circle"), image(easel, "a blue square")
    assert not np.array_equal(red, blue)
    assert np.array_equal(image(easel, "[a red circle:a blue square:0]"), blue)  # switched before step 1
    assert np.array_equal(image(easel, "[a red circle:a blue square:1.0]"), red)  # the fraction 1: never
    assert np.array_equal(image(easel, "[a red circle:a blue square:7]"), red)  # past the last step
    halfway = image(easel, "[a red circle:a blue square:1]")  # step 1 red, step 2 blue
    assert not np.array_equal(halfway, red) and not np.array_equal(halfway, blue)
    # Two steps of [a|b] draw a, then b: the same as switching after step 1.
    assert np.array_equal(image(easel, "[a red circle|a blue square]"), halfway)
    # The negative prompt switches too; without guidance the prompt rows alone still switch.
    plain_neg = image(easel, "x", negative_prompt="green")
    assert not np.array_equal(image(easel, "x", negative_prompt="[green:yellow stripes:1]"), plain_neg)
    assert np.array_equal(image(easel, "[a red circle:a blue square:0]", cfg_scale=1.0),
                          image(easel, "a blue square", cfg_scale=1.0))
    assert not np.array_equal(image(easel, "[a red circle:a blue square:1]", cfg_scale=1.0),
                              image(easel, "a red circle", cfg_scale=1.0))


def unet_inputs(easel, request) -> list[torch.Tensor]:
    """The text conditioning the UNet received at each of its calls while running `request`."""
    unet = easel.manager.get("tiny-sd1", "txt2img").pipe.unet
    seen: list[torch.Tensor] = []
    handle = unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["encoder_hidden_states"].detach().clone()), with_kwargs=True)
    try:
        job = easel.engine.generate(request, timeout=120)
        assert job.state == JobState.DONE, job.error
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("sampler, steps, prompts", [
    ("Euler", 2, ["a red circle", "a blue square"]),
    ("Heun", 2, ["a red circle", "a red circle", "a blue square"]),  # two model calls a step, one prompt a step
    ("Euler", 3, ["a red circle", "a blue square", "a red circle"]),
])
def test_each_step_of_a_batch_gets_its_prompt(make_easel, sampler, steps, prompts):
    """What the denoiser receives: the negative rows, then each image's prompt rows, for the step's prompt."""
    easel = make_easel()
    pipe = easel.manager.get("tiny-sd1", "txt2img").pipe
    typed = "[a red circle:a blue square:1]" if steps == 2 else "[a red circle|a blue square]"
    seen = unet_inputs(easel, Txt2ImgRequest(prompt=typed, batch_size=2, **{**SMALL, "sampler": sampler,
                                                                            "steps": steps}))
    empty = encode_text(pipe, "", 1, False).states[0]
    assert len(seen) == len(prompts)
    for states, prompt in zip(seen, prompts):
        expected = encode_text(pipe, prompt, 1, False).states[0]
        assert states.shape == (4, 77, expected.shape[-1])
        for row in range(2):
            torch.testing.assert_close(states[row], empty)
            torch.testing.assert_close(states[2 + row], expected)


@pytest.mark.parametrize("sampler", ["Heun", "DPM++ 2M Karras"])
def test_second_order_and_multistep_samplers_switch_too(make_easel, sampler):
    easel = make_easel()
    red = image(easel, "a red circle", sampler=sampler, steps=3)
    switched = image(easel, "[a red circle:a blue square:2]", sampler=sampler, steps=3)
    assert not np.array_equal(red, switched)
    assert np.array_equal(image(easel, "[a red circle:a blue square:3]", sampler=sampler, steps=3), red)


def test_infotext_keeps_the_prompt_as_typed(make_easel):
    easel = make_easel()
    prompt = "a [red:blue:0.5] circle BREAK [day|night], [[soft]]"
    job = easel.engine.generate(Txt2ImgRequest(prompt=prompt, negative_prompt="[ugly::1]", **SMALL), timeout=120)
    assert job.state == JobState.DONE, job.error
    params = parse_infotext(job.result.infotexts[0])
    assert params["Prompt"] == prompt and params["Negative prompt"] == "[ugly::1]"


def test_each_distinct_prompt_is_encoded_once_per_job(make_easel):
    """Two batches, hires fix on: the prompts a, b and the empty negative are encoded once each."""
    easel = make_easel()
    encoder = easel.manager.get("tiny-sd1", "txt2img").pipe.text_encoder
    calls: list[int] = []
    handle = encoder.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        job = easel.engine.generate(Txt2ImgRequest(prompt="[a red circle|a blue square]", batch_count=2, enable_hr=True, hr_scale=1.5,
                                                   hr_denoising_strength=0.6, **{**SMALL, "steps": 3}),
                                    timeout=240)
        assert job.state == JobState.DONE, job.error
        assert len(job.result.images) == 2
        assert len(calls) == 3
        calls.clear()
        job = easel.engine.generate(Img2ImgRequest(prompt="[a:b:1] c", init_image=job.result.images[0],
                                                   denoising_strength=1.0, batch_count=2, **{**SMALL, "steps": 4}),
                                    timeout=120)
        assert job.state == JobState.DONE, job.error
        assert len(calls) == 3  # "a c" and "b c" once each, and the empty negative
    finally:
        handle.remove()


def test_break_and_long_prompts_change_the_chunk_count(make_easel):
    easel = make_easel()
    pipe = easel.manager.get("tiny-sd1", "txt2img").pipe
    one = encode_text(pipe, "a red circle, blue", 1, False)
    two = encode_text(pipe, "a red circle BREAK blue", 1, False)
    assert (one.chunks, two.chunks) == (1, 2)
    assert one.states.shape[1] == 77 and two.states.shape[1] == 154
    assert encode_text(pipe, "a " * 80, 1, False).chunks == 2
    # A long prompt and a short negative are padded to one length; the images still come out.
    assert image(easel, "a red circle BREAK blue", negative_prompt="x").shape == (64, 64, 3)
    assert not np.array_equal(image(easel, "a red circle BREAK blue"), image(easel, "a red circle blue"))


# ------------------------------------------------------------------------------------ the built-in model
@pytest.fixture(scope="module")
def builtin_pipe():
    from tests.builtin.conftest import make_tiny_pipeline

    return make_tiny_pipeline()


def run_builtin(pipe, prompt: str, negative: str = "", steps: int = 2, guidance: float = 4.0) -> np.ndarray:
    loaded = SimpleNamespace(arch=Arch.EASEL, pipe=pipe)
    request = SimpleNamespace(prompt=prompt, negative_prompt=negative, cfg_scale=guidance, clip_skip=1)
    cond = conditioning(loaded, request, steps, PromptCache())
    progress_steps: list[int] = []

    def progress(pipe, step, timestep, tensors):
        progress_steps.append(step)
        return {}

    out = pipe(**cond.kwargs, num_inference_steps=steps, generator=torch.Generator().manual_seed(3),
               callback_on_step_end=cond.callback(progress), output_type="np")
    assert progress_steps == list(range(steps))  # the job's own callback still runs every step
    return out.images[0]


def test_builtin_model_switches_prompts_per_step(builtin_pipe):
    red, blue = run_builtin(builtin_pipe, "a red circle"), run_builtin(builtin_pipe, "a blue square")
    assert not np.array_equal(red, blue)
    np.testing.assert_array_equal(run_builtin(builtin_pipe, "[a red circle:a blue square:0]"), blue)
    np.testing.assert_array_equal(run_builtin(builtin_pipe, "[a red circle:a blue square:1.0]"), red)
    halfway = run_builtin(builtin_pipe, "[a red circle:a blue square:1]")
    assert not np.array_equal(halfway, red) and not np.array_equal(halfway, blue)
    np.testing.assert_array_equal(run_builtin(builtin_pipe, "[a red circle|a blue square]"), halfway)


# ------------------------------------------------------------------------------------ SDXL
def test_sdxl_switches_both_encoders_states_and_the_pooled_embedding(tmp_path):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from tests.tiny_models import make_tiny_sdxl

    pipe = StableDiffusionXLPipeline.from_pretrained(str(make_tiny_sdxl(tmp_path / "xl")))
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    pipe.unet.register_forward_pre_hook(lambda module, args, kwargs: seen.append(
        (kwargs["encoder_hidden_states"].clone(), kwargs["added_cond_kwargs"]["text_embeds"].clone())),
        with_kwargs=True)

    def run(prompt: str) -> np.ndarray:
        loaded = SimpleNamespace(arch=Arch.SDXL, pipe=pipe)
        request = SimpleNamespace(prompt=prompt, negative_prompt="", cfg_scale=5.0, clip_skip=1)
        cond = conditioning(loaded, request, 2, PromptCache())
        return pipe(**cond.kwargs, num_inference_steps=2, width=64, height=64, output_type="np",
                    generator=torch.Generator().manual_seed(2),
                    callback_on_step_end=cond.callback(lambda *args: {})).images[0]

    blue = run("a blue square")
    np.testing.assert_array_equal(run("[a red circle:a blue square:0]"), blue)
    seen.clear()
    run("[a red circle:a blue square:1]")
    red_xl, blue_xl, empty_xl = (encode_text(pipe, text, 1, True) for text in ("a red circle", "a blue square", ""))
    for (states, pooled), expected in zip(seen, (red_xl, blue_xl)):
        torch.testing.assert_close(states[1], expected.states[0])  # row 0: the negative prompt
        torch.testing.assert_close(pooled[1], expected.pooled[0])
        torch.testing.assert_close(pooled[0], empty_xl.pooled[0])
    assert len(seen) == 2
