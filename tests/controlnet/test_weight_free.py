"""The weight-free modules: recolor, blur, tile colour fix, inpaint_only and the reference units (attention and
AdaIN injection into the checkpoint's own UNet), on known inputs and on the tiny SD 1.x pipeline."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.controlnet.conftest import TINY, shapes
from tests.controlnet.test_generation import generate, pixels, txt2img, unit
from tests.controlnet.test_units import extension_module
from webui.infotext import parse_infotext
from webui.requests import InpaintRequest, RequestError


@pytest.fixture
def runner(tmp_path):
    module = extension_module("preprocessors")
    return module.Preprocessors([tmp_path / "annotators"], offline=lambda: True)


def test_recolor_gives_grey_at_the_colours_luminance_and_intensity(runner):
    red = Image.new("RGB", (16, 8), (255, 0, 0))
    grey = np.asarray(runner.run("recolor_luminance", red))
    assert grey.shape == (8, 16, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    assert set(np.unique(grey)) == {136}  # CIELAB L* of pure red is 53.24 -> 53.24 * 255 / 100 = 135.8
    orange = Image.new("RGB", (8, 8), (200, 50, 10))
    assert set(np.unique(np.asarray(runner.run("recolor_intensity", orange)))) == {200}  # HSV value: max channel
    darker = np.asarray(runner.run("recolor_intensity", orange, threshold_a=2.0))
    assert set(np.unique(darker)) == {157}  # gamma 2: (200 / 255)^2 * 255 = 156.9


def test_blur_gaussian_spreads_a_step_by_its_sigma(runner):
    step = np.zeros((32, 64, 3), dtype=np.uint8)
    step[:, 32:] = 255
    sigma = 2.0
    blurred = np.asarray(runner.run("blur_gaussian", Image.fromarray(step), threshold_a=sigma)).astype(float)
    # A unit step convolved with a normalised Gaussian: the value at column x is the kernel mass at or left of
    # x - 32 (OpenCV's 8-bit kernel spans 6 sigma + 1 = 13 taps).
    taps = np.arange(-6, 7)
    kernel = np.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    for x in range(26, 39):
        expected = 255 * kernel[taps <= x - 32].sum()
        assert abs(blurred[16, x, 0] - expected) <= 1.5, (x, blurred[16, x, 0], expected)
    assert blurred[16, 10, 0] == 0 and blurred[16, 54, 0] == 255  # far from the edge: unchanged
    wider = np.asarray(runner.run("blur_gaussian", Image.fromarray(step), threshold_a=6.0)).astype(float)
    assert wider[16, 26, 0] > blurred[16, 26, 0] + 10  # a larger sigma reaches further


def test_color_fix_takes_the_low_frequencies_of_the_control_image():
    conditions = extension_module("conditions")
    units = extension_module("units")
    flat = Image.new("RGB", (64, 64), (90, 90, 90))  # no detail of its own
    control = shapes()
    fixed = np.asarray(conditions.color_fix(flat, control, units.ControlUnit(module="tile_colorfix", threshold_a=4.0)))
    import cv2

    expected = np.rint(cv2.GaussianBlur(np.asarray(control, dtype=np.float32), (0, 0), 4.0))
    assert np.abs(fixed.astype(float) - expected).max() <= 1.0
    sharp = conditions.color_fix(shapes(), Image.new("RGB", (64, 64), (0, 0, 0)),
                            units.ControlUnit(module="tile_colorfix+sharp", threshold_a=4.0, threshold_b=1.0))
    assert np.asarray(sharp).std() > 0  # the image's own edges, doubled, on the black control's colours


def test_inpaint_condition_marks_the_masked_pixels():
    conditions = extension_module("conditions")
    mask = Image.new("L", (8, 8), 0)
    mask.paste(255, (0, 0, 4, 8))
    condition = conditions.inpaint_condition(Image.new("RGB", (8, 8), (255, 0, 51)), mask)
    assert tuple(condition.shape) == (1, 3, 8, 8)
    assert (condition[0, :, :, :4] == -1).all()
    assert condition[0, 0, 0, 7] == 1.0 and condition[0, 2, 0, 7] == pytest.approx(0.2)


def reference_unit(**changes):
    return {"image": shapes().rotate(90), "module": "reference_only", "model": "None", **changes}


def test_reference_only_changes_the_image_and_weight_zero_gives_the_plain_one(cn_easel):
    plain = pixels(generate(cn_easel, txt2img()).images[0])
    referenced = generate(cn_easel, txt2img(), [reference_unit()])
    # a random-weight tiny UNet at 2 steps moves little, but every run moves it
    assert np.abs(pixels(referenced.images[0]) - plain).mean() > 0.1
    assert "Module: reference_only, Model: None, Weight: 1" in parse_infotext(referenced.infotexts[0])["ControlNet 0"]
    assert np.array_equal(pixels(generate(cn_easel, txt2img(), [reference_unit(weight=0)]).images[0]), plain)
    adain = pixels(generate(cn_easel, txt2img(), [reference_unit(module="reference_adain")]).images[0])
    assert np.abs(adain - plain).mean() > 0.1 and not np.array_equal(adain, pixels(referenced.images[0]))
    # with a ControlNet unit beside it, and again without: the UNet's processors and hooks were restored
    both = pixels(generate(cn_easel, txt2img(), [reference_unit(), unit()]).images[0])
    assert not np.array_equal(both, pixels(referenced.images[0]))
    assert np.array_equal(pixels(generate(cn_easel, txt2img()).images[0]), plain)


def test_reference_only_changes_the_self_attention_outputs(tiny_sd1_dir):
    import torch
    from diffusers import StableDiffusionPipeline

    reference = extension_module("reference")
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd1_dir), safety_checker=None)
    unet = pipe.unet
    attn1 = next(module for name, module in unet.named_modules() if name.endswith("attn1"))
    seen: list[torch.Tensor] = []
    attn1.register_forward_hook(lambda module, args, output: seen.append(output.detach().clone()))
    torch.manual_seed(0)
    sample = torch.randn(1, unet.config.in_channels, 8, 8)
    text = torch.randn(1, 4, unet.config.cross_attention_dim)

    def call() -> torch.Tensor:
        seen.clear()
        with torch.no_grad():
            unet(sample, 500, encoder_hidden_states=text)
        return seen[-1]

    before = call()
    state = reference.make_state(pipe, shapes(), (64, 64), "reference_only", 1.0, 0.5)
    with reference.reference_hooks(pipe, state):
        referenced = call()
        assert len(seen) == 2  # the reference pass (write), then the real call (read)
    after = call()
    assert torch.equal(before, after)  # the original processors are back
    assert (referenced - before).abs().mean() > 1e-4


def test_reference_and_inpaint_only_refusals_name_the_field(cn_easel):
    with pytest.raises(ValueError, match=r"args\[0\]\.model: reference_only uses no ControlNet model"):
        cn_easel.registry.parse_request_args({"controlnet": [reference_unit(model="tiny-canny")]})
    job = cn_easel.engine.generate(txt2img().replace(extension_args=cn_easel.registry.parse_request_args(
        {"controlnet": [unit(module="inpaint_only")]})), timeout=120)
    assert isinstance(job.exception, RequestError)
    assert job.exception.field == "alwayson_scripts.controlnet.args[0].mask"


def test_inpaint_only_feeds_image_and_mask_and_keeps_the_unmasked_pixels(cn_easel):
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    request = InpaintRequest(prompt="a house", seed=2, checkpoint="tiny-sd1", init_image=shapes(), mask=mask,
                             mask_blur=0, denoising_strength=0.9, **TINY)
    plain = pixels(generate(cn_easel, request).images[0])
    filled = pixels(generate(cn_easel, request, [unit(image=None, module="inpaint_only")]).images[0])
    other = pixels(generate(cn_easel, request, [unit(image=None, module="none")]).images[0])
    inside = np.asarray(mask) > 0
    assert np.abs(filled[inside] - plain[inside]).mean() > 0.5
    assert not np.array_equal(filled[inside], other[inside])  # the masked pixels reached the ControlNet as -1
    assert np.array_equal(filled[~inside], pixels(shapes())[~inside])
    # in txt2img the unit's own mask is used
    own = generate(cn_easel, txt2img(), [unit(module="inpaint_only", mask=mask)])
    assert own.images[0].size == (64, 64)


def test_tile_colorfix_pulls_the_colours_towards_the_control_image(cn_easel):
    red = Image.new("RGB", (64, 64), (220, 30, 30))
    plain = pixels(generate(cn_easel, txt2img()).images[0])
    fixed = pixels(generate(cn_easel, txt2img(), [unit(image=red, module="tile_colorfix", threshold_a=8)]).images[0])
    assert np.abs(fixed.reshape(-1, 3).mean(0) - np.array([220, 30, 30])).max() < 12
    assert np.abs(plain.reshape(-1, 3).mean(0) - np.array([220, 30, 30])).max() > 30


def test_reference_units_on_sdxl(make_easel, tmp_path, tmp_path_factory):
    import shutil

    from tests.tiny_models import make_tiny_sdxl
    from webui.requests import Txt2ImgRequest

    sdxl = make_tiny_sdxl(tmp_path_factory.mktemp("xl") / "tiny-sdxl")
    shutil.copytree(sdxl, tmp_path / "data" / "models" / "diffusers" / "tiny-sdxl")
    easel = make_easel(install_sd1=False)
    request = Txt2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-sdxl", **TINY)
    plain = pixels(generate(easel, request).images[0])
    for module in ("reference_only", "reference_adain+attn"):
        assert not np.array_equal(pixels(generate(easel, request, [reference_unit(module=module)]).images[0]), plain)
    assert np.array_equal(pixels(generate(easel, request, [reference_unit(weight=0)]).images[0]), plain)
