"""The infotext writer works from the request field declarations: each declared key is written where
AUTOMATIC1111 writes it, what the run used takes the requested value's place, and the reader restores the fields."""
from __future__ import annotations

import dataclasses

import pytest

from webui import __version__
from webui.infotext import format_infotext, generation_parameters, parse_infotext, request_updates
from webui.requests import Img2ImgRequest, InpaintRequest, Txt2ImgRequest, field_specs, written_by_mode

VERSION = f"Easel {__version__}"


def written(request, actual=None) -> str:
    return format_infotext(request.prompt, request.negative_prompt, generation_parameters(request, actual or {}))


def test_inpaint_with_outpainting_vae_and_clip_skip_is_written_as_automatic1111_does() -> None:
    request = InpaintRequest(prompt="a door", vae="soft-vae", clip_skip=2, outpaint_left=64, sampler="Euler a")
    actual = {"Seed": 5, "Model hash": "0123456789", "Model": "tiny", "Sampler": "Euler a",
              "Denoising strength": 1.0, "Lora hashes": "ink: abcdef012345"}
    assert written(request, actual) == (
        "a door\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512, Model hash: 0123456789, "
        "Model: tiny, VAE: soft-vae, Clip skip: 2, Denoising strength: 1, Mask blur: 4, Masked content: original, "
        f'Inpaint area: Whole picture, Outpaint left: 64, Lora hashes: "ink: abcdef012345", Version: {VERSION}')


def test_without_a_loaded_model_the_requested_one_is_written() -> None:
    request = Txt2ImgRequest(prompt="x", checkpoint="wanted", seed=3, steps=4, cfg_scale=6.25, width=64, height=64,
                             enable_hr=True, hr_scale=1.0)  # a scale of 1: no hires pass, so no hires keys
    assert written(request) == f"x\nSteps: 4, Sampler: Euler a, CFG scale: 6.25, Seed: 3, Size: 64x64, " \
                               f"Model: wanted, Version: {VERSION}"


VARIATION = dict(subseed=77, subseed_strength=0.25)  # written only with a strength above 0
REFINER = dict(refiner_checkpoint="r", refiner_switch_at=0.6)  # written only with a refiner named
HIRES_OWN = dict(hr_checkpoint_name="h", hr_sampler_name="DPM++ 2M", hr_scheduler="Karras", hr_prompt="hp, [x:y:2]",
                 hr_negative_prompt="hn")  # written only where the second pass has its own

REQUESTS = [
    Txt2ImgRequest(prompt="a\nb", negative_prompt="c", checkpoint="m", vae="v", sampler="DDIM", steps=12,
                   cfg_scale=6.5, seed=9, **VARIATION, width=64, height=96, clip_skip=2, enable_hr=True, hr_scale=1.5,
                   hr_upscaler="Nearest", hr_second_pass_steps=3, hr_denoising_strength=0.4,
                   styles=("ink", 'film "grain", 35mm: warm'), scheduler="Karras", tiling=True, **REFINER,
                   **HIRES_OWN, stage2_steps=5, stage3_steps=6),
    Img2ImgRequest(prompt="p", checkpoint="m", vae="v", seed=1, denoising_strength=0.35, clip_skip=3, styles=("a",),
                   **VARIATION, scheduler="Align Your Steps", tiling=True, **REFINER, noise_level=100),
    InpaintRequest(prompt="p", checkpoint="m", vae="v", seed=2, clip_skip=2, styles=("b", "a"), **VARIATION,
                   denoising_strength=0.6, mask_blur=8, inpainting_fill="fill",
                   inpaint_full_res=True, inpaint_full_res_padding=16, inpainting_mask_invert=True,
                   outpaint_left=8, outpaint_right=16, outpaint_top=24, outpaint_bottom=32, scheduler="SGM Uniform",
                   tiling=True, **REFINER, noise_level=50),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_every_declared_key_is_written_and_read_back(request_) -> None:
    text = written(request_)
    params = parse_infotext(text)
    by_mode = {s.infotext for s in field_specs(type(request_)).values() if s.infotext_value is written_by_mode}
    declared = {s.infotext for s in field_specs(type(request_)).values() if s.infotext} - by_mode
    assert declared <= set(params), declared - set(params)
    assert not by_mode & set(params), "keys only the run writes (where the model uses them) are not written here"
    restored = request_updates(params, type(request_))
    for name, s in field_specs(type(request_)).items():
        if s.infotext and s.infotext not in by_mode:
            assert restored[name] == getattr(request_, name), name
    assert dataclasses.replace(request_, **restored) == request_


def test_the_distilled_guidance_the_run_writes_is_read_back() -> None:
    request = Txt2ImgRequest(prompt="x", cfg_scale=1.0, distilled_cfg_scale=2.5, seed=3)
    text = written(request, {"Distilled CFG Scale": request.distilled_cfg_scale})
    assert "CFG scale: 1, Seed: 3, Size: 512x512, Distilled CFG Scale: 2.5" in text
    assert request_updates(parse_infotext(text))["distilled_cfg_scale"] == 2.5
