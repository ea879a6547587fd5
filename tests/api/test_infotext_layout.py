"""The infotext Easel writes keeps AUTOMATIC1111's layout byte for byte, and the API's `info` agrees with it.

The expected texts are written out here by hand (AUTOMATIC1111's order: Steps, Sampler, CFG scale, Seed, Size,
Model hash, Model, VAE, Clip skip, then the mode's own keys, then Version), not computed by Easel's writer.
"""
from __future__ import annotations

import json

from PIL import Image

from tests.api.conftest import TINY, b64_png, gradient, info_of, open_b64
from webui import __version__


def tail(easel) -> str:
    entry = easel.manager.current()
    return f"Size: 64x64, Model hash: {entry.short_hash}, Model: tiny-sd1"


def test_txt2img_with_hires_infotext_is_unchanged(client, easel):
    body = {"prompt": "a red circle, on blue", "negative_prompt": "blurry", "seed": 42, "cfg_scale": 6.5,
            "sampler_name": "Euler", "clip_skip": 2, "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Lanczos",
            "hr_second_pass_steps": 1, "denoising_strength": 0.5, **TINY}
    data = client.post("/sdapi/v1/txt2img", json=body).json()
    info = info_of(data)
    expected = ("a red circle, on blue\nNegative prompt: blurry\n"
                f"Steps: 2, Sampler: Euler, CFG scale: 6.5, Seed: 42, {tail(easel)}, Clip skip: 2, "
                f"Hires upscale: 1.5, Hires upscaler: Lanczos, Hires steps: 1, Denoising strength: 0.5, "
                f"Version: Easel {__version__}")
    assert info["infotexts"] == [expected]
    assert open_b64(data["images"][0]).info["parameters"] == expected
    assert info["sampler_name"] == "Euler"
    assert info["extra_generation_params"] == {"Hires upscale": "1.5", "Hires upscaler": "Lanczos",
                                               "Hires steps": "1", "Denoising strength": "0.5"}


def test_txt2img_plain_infotext_is_unchanged(client, easel):
    data = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "seed": 7, "cfg_scale": 7,
                                                  "sampler_name": "DDIM", **TINY}).json()
    info = info_of(data)
    expected = (f"a cat\nSteps: 2, Sampler: DDIM, CFG scale: 7, Seed: 7, {tail(easel)}, "
                f"Version: Easel {__version__}")
    assert info["infotexts"] == [expected]
    assert info["extra_generation_params"] == {} and info["sampler_name"] == "DDIM"


def test_img2img_infotext_is_unchanged(client, easel):
    data = client.post("/sdapi/v1/img2img", json={"prompt": "a dog", "seed": 3, "sampler_name": "Euler",
                                                  "init_images": [b64_png(gradient())], "denoising_strength": 0.6,
                                                  **TINY}).json()
    info = info_of(data)
    expected = (f"a dog\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 3, {tail(easel)}, "
                f"Denoising strength: 0.6, Version: Easel {__version__}")
    assert info["infotexts"] == [expected]
    assert info["extra_generation_params"] == {"Denoising strength": "0.6"}


def test_inpaint_infotext_is_unchanged(client, easel):
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    body = {"prompt": "a hat", "seed": 5, "sampler_name": "Euler", "init_images": [b64_png(gradient())],
            "mask": b64_png(mask), "mask_blur": 2, "inpainting_fill": 2, "inpaint_full_res": True,
            "inpaint_full_res_padding": 8, "inpainting_mask_invert": 1, "denoising_strength": 0.8, **TINY}
    data = client.post("/sdapi/v1/img2img", json=body).json()
    info = info_of(data)
    expected = (f"a hat\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 5, {tail(easel)}, "
                "Denoising strength: 1, Mask blur: 2, Masked content: latent noise, Inpaint area: Only masked, "
                f"Masked area padding: 8, Mask mode: Inpaint not masked, Version: Easel {__version__}")
    assert info["infotexts"] == [expected]
    assert info["extra_generation_params"] == {
        "Denoising strength": "1", "Mask blur": "2", "Masked content": "latent noise",
        "Inpaint area": "Only masked", "Masked area padding": "8", "Mask mode": "Inpaint not masked"}
    assert json.loads(data["info"])["denoising_strength"] == 0.8
