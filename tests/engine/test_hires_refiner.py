"""Hires fix with its own sampler, schedule, prompts and checkpoint; latent upscaling; the refiner. On tiny real
SD 1.x models (two different weight seeds installed as two checkpoints) and a tiny SD3 for a family mismatch."""
import shutil

import numpy as np
import pytest
from PIL import Image

from webui.engine.worker import JobState
from webui.infotext import parse_infotext, read_png_parameters, request_updates
from webui.requests import Img2ImgRequest, RequestError, Txt2ImgRequest

SMALL = dict(width=64, height=64, steps=2, checkpoint="tiny-sd1", sampler="Euler", seed=11)
HIRES = dict(enable_hr=True, hr_scale=2.0, hr_denoising_strength=0.6)


@pytest.fixture
def easel(two_sd1_easel):
    return two_sd1_easel


def run(easel, request):
    job = easel.engine.generate(request, timeout=180)
    assert job.state == JobState.DONE, job.error
    return job.result


def failure(easel, request):
    job = easel.engine.generate(request, timeout=180)
    assert job.state == JobState.FAILED
    return job.exception


def pixels(image):
    return np.asarray(image.convert("RGB")).astype(int)


def first(easel, **kwargs):
    result = run(easel, Txt2ImgRequest(prompt="a red circle", **{**SMALL, **kwargs}))
    return result.images[0], parse_infotext(result.infotexts[0])


def test_hr_prompt_and_negative_prompt_change_the_second_pass(easel):
    plain, params = first(easel, **HIRES)
    assert "Hires prompt" not in params and "Hires sampler" not in params
    own, params = first(easel, **HIRES, hr_prompt="a blue square")
    assert own.size == plain.size == (128, 128)
    assert not np.array_equal(pixels(plain), pixels(own))
    assert params["Hires prompt"] == "a blue square" and params["Prompt"] == "a red circle"
    negative, params = first(easel, **HIRES, hr_negative_prompt="green")
    assert not np.array_equal(pixels(plain), pixels(negative)) and params["Hires negative prompt"] == "green"
    same, _ = first(easel, **HIRES, hr_prompt="a red circle")  # the same text: the same image
    assert np.array_equal(pixels(plain), pixels(same))


def test_hr_sampler_and_schedule_are_used_and_recorded(easel):
    plain, _ = first(easel, **HIRES)
    ddim, params = first(easel, **HIRES, hr_sampler_name="DDIM")
    assert params["Sampler"] == "Euler" and params["Hires sampler"] == "DDIM"
    assert not np.array_equal(pixels(plain), pixels(ddim))
    dpm, _ = first(easel, **HIRES, hr_sampler_name="DPM++ 2M")
    karras, params = first(easel, **HIRES, hr_sampler_name="DPM++ 2M", hr_scheduler="Karras")
    assert params["Hires sampler"] == "DPM++ 2M" and params["Hires schedule type"] == "Karras"
    assert not np.array_equal(pixels(dpm), pixels(karras))  # the schedule type reaches the second pass
    legacy, params = first(easel, **HIRES, hr_sampler_name="DPM++ 2M Karras")  # an older name: the same run
    assert np.array_equal(pixels(karras), pixels(legacy))
    ddim_karras = failure(easel, Txt2ImgRequest(prompt="x", **SMALL, **HIRES, hr_sampler_name="DDIM",
                                                hr_scheduler="Karras"))
    assert isinstance(ddim_karras, RequestError) and ddim_karras.field == "hr_scheduler"
    unknown = failure(easel, Txt2ImgRequest(prompt="x", **SMALL, **HIRES, hr_sampler_name="Nope"))
    assert isinstance(unknown, RequestError) and unknown.field == "hr_sampler_name"
    with pytest.raises(RequestError, match="hr_scheduler: unknown schedule type 'Weird'"):
        easel.engine.submit(Txt2ImgRequest(prompt="x", **SMALL, **HIRES, hr_scheduler="Weird"))


def test_hr_checkpoint_loads_the_other_model(easel):
    plain, _ = first(easel, **HIRES)
    other, params = first(easel, **HIRES, hr_checkpoint_name="tiny-sd1b")
    assert not np.array_equal(pixels(plain), pixels(other))
    name, digest = params["Hires checkpoint"].split(" ")
    assert name == "tiny-sd1b" and len(digest.strip("[]")) == 10
    assert params["Model"] == "tiny-sd1"  # the first pass's model is the image's model
    by_title, _ = first(easel, **HIRES, hr_checkpoint_name=params["Hires checkpoint"])
    assert np.array_equal(pixels(other), pixels(by_title))
    missing = failure(easel, Txt2ImgRequest(prompt="x", **SMALL, **HIRES, hr_checkpoint_name="nope"))
    assert isinstance(missing, RequestError) and missing.field == "hr_checkpoint_name"


def test_latent_upscalers_resize_latents(easel):
    for upscaler in ("Latent (antialiased)", "Latent (bicubic antialiased)", "Latent (nearest)",
                     "Latent (nearest-exact)"):
        latent, params = first(easel, **HIRES, hr_upscaler=upscaler)
        assert latent.size == (128, 128) and params["Hires upscaler"] == upscaler


def test_latent_upscale_skips_the_vae_between_passes(easel):
    """Lanczos decodes the first pass and encodes the upscaled image; Latent does neither, and the images differ."""
    pipe = easel.manager.get("tiny-sd1", "txt2img").pipe
    calls = {"encode": 0, "decode": 0}

    def counting(name):
        def hook(module, args, output):
            calls[name] += 1
        return hook

    handles = [pipe.vae.encoder.register_forward_hook(counting("encode")),
               pipe.vae.decoder.register_forward_hook(counting("decode"))]
    try:
        lanczos, _ = first(easel, **HIRES, hr_upscaler="Lanczos")
        assert calls == {"encode": 1, "decode": 2}
        calls.update(encode=0, decode=0)
        latent, _ = first(easel, **HIRES, hr_upscaler="Latent")
        assert calls == {"encode": 0, "decode": 1}
    finally:
        for handle in handles:
            handle.remove()
    assert lanczos.size == latent.size == (128, 128)
    assert not np.array_equal(pixels(lanczos), pixels(latent))
    bicubic, _ = first(easel, **HIRES, hr_upscaler="Latent (bicubic)")
    assert not np.array_equal(pixels(latent), pixels(bicubic))


def test_refiner_switch_at_one_is_no_refiner(easel):
    plain, plain_params = first(easel)
    at_one, params = first(easel, refiner_checkpoint="tiny-sd1b", refiner_switch_at=1.0)
    assert np.array_equal(pixels(plain), pixels(at_one))
    assert "Refiner" not in params and "Refiner switch at" not in params
    assert params == plain_params


def test_refiner_takes_over_and_is_recorded(easel, tmp_path):
    plain, _ = first(easel)
    refined, params = first(easel, refiner_checkpoint="tiny-sd1b", refiner_switch_at=0.5)
    assert refined.size == (64, 64) and not np.array_equal(pixels(plain), pixels(refined))
    name, digest = params["Refiner"].split(" ")
    assert name == "tiny-sd1b" and len(digest.strip("[]")) == 10 and params["Refiner switch at"] == "0.5"
    assert params["Model"] == "tiny-sd1"
    again, _ = first(easel, refiner_checkpoint=params["Refiner"], refiner_switch_at=0.5)
    assert np.array_equal(pixels(refined), pixels(again))
    # with hires fix too (latent): refiner latents go to the second pass
    both, params = first(easel, **HIRES, hr_upscaler="Latent", refiner_checkpoint="tiny-sd1b",
                         refiner_switch_at=0.5)
    assert both.size == (128, 128) and params["Refiner"].startswith("tiny-sd1b")


def test_refiner_in_img2img(easel):
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    base = dict(prompt="x", init_image=init, denoising_strength=0.8, **SMALL)
    plain = run(easel, Img2ImgRequest(**base))
    refined = run(easel, Img2ImgRequest(**base, refiner_checkpoint="tiny-sd1b", refiner_switch_at=0.5))
    assert not np.array_equal(pixels(plain.images[0]), pixels(refined.images[0]))
    assert parse_infotext(refined.infotexts[0])["Refiner"].startswith("tiny-sd1b [")


def test_incompatible_refiner_and_hires_checkpoint_are_refused(easel, tmp_path, tmp_path_factory):
    from tests.tiny_models import make_tiny_sd3

    sd3 = make_tiny_sd3(tmp_path_factory.mktemp("sd3") / "tiny-sd3")
    shutil.copytree(sd3, tmp_path / "data" / "models" / "diffusers" / "tiny-sd3")
    easel.manager.refresh()
    exc = failure(easel, Txt2ImgRequest(prompt="x", **SMALL, refiner_checkpoint="tiny-sd3", refiner_switch_at=0.5))
    assert isinstance(exc, RequestError) and exc.field == "refiner_checkpoint" and "SD3" in exc.message
    exc = failure(easel, Txt2ImgRequest(prompt="x", **SMALL, **HIRES, hr_upscaler="Latent",
                                        hr_checkpoint_name="tiny-sd3"))
    assert isinstance(exc, RequestError) and exc.field == "hr_checkpoint_name"
    assert run(easel, Txt2ImgRequest(prompt="x", **SMALL)).images[0].size == (64, 64)  # the worker goes on


def test_hires_and_refiner_keys_round_trip_through_png_info(easel):
    request = Txt2ImgRequest(prompt="a red circle", **SMALL, **HIRES, hr_upscaler="Latent (bicubic)",
                             hr_sampler_name="DPM++ 2M", hr_scheduler="Karras", hr_prompt="a, blue: square",
                             hr_negative_prompt="green", hr_checkpoint_name="tiny-sd1b",
                             refiner_checkpoint="tiny-sd1b", refiner_switch_at=0.6)
    result = run(easel, request)
    text = read_png_parameters(Image.open(result.paths[0]))
    updates = request_updates(parse_infotext(text), Txt2ImgRequest)
    for name in ("hr_upscaler", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt",
                 "hr_checkpoint_name", "refiner_checkpoint", "refiner_switch_at", "hr_scale", "enable_hr"):
        assert updates[name] == getattr(request, name), name
    again = run(easel, Txt2ImgRequest(**{**updates, "seed": 11, "checkpoint": "tiny-sd1"}))
    assert np.array_equal(pixels(result.images[0]), pixels(again.images[0]))


def test_sdxl_refiner_single_file_hands_over_mid_schedule(make_easel, tmp_path, tmp_path_factory):
    """An SDXL refiner as one original-layout file (second text encoder only) loads, refines an SDXL base through
    denoising_end / denoising_start, is refused as a txt2img model and as the refiner of an SD 1.x model."""
    from tests.tiny_models import make_tiny_sdxl, make_tiny_sdxl_refiner, save_sdxl_refiner_single_file
    from webui.model_manager.identify import identify_file

    root = tmp_path_factory.mktemp("sdxl")
    base = make_tiny_sdxl(root / "tiny-sdxl")
    refiner = make_tiny_sdxl_refiner(root / "tiny-refiner", seed=3)
    models = tmp_path / "data" / "models"
    shutil.copytree(base, models / "diffusers" / "tiny-sdxl")
    (models / "Stable-diffusion").mkdir(parents=True, exist_ok=True)
    path = save_sdxl_refiner_single_file(refiner, models / "Stable-diffusion" / "tiny-refiner.safetensors")
    shutil.copytree(refiner, path.with_name("tiny-refiner.config"))  # the tiny sizes (full-size ones are shipped)
    ident = identify_file(path)
    assert ident.supported and ident.variant == "refiner", ident.reason
    easel = make_easel()
    xl = dict(SMALL, checkpoint="tiny-sdxl", steps=4)
    plain = run(easel, Txt2ImgRequest(prompt="a red circle", **xl))
    at_one = run(easel, Txt2ImgRequest(prompt="a red circle", **xl, refiner_checkpoint="tiny-refiner",
                                       refiner_switch_at=1.0))
    assert np.array_equal(pixels(plain.images[0]), pixels(at_one.images[0]))
    refined = run(easel, Txt2ImgRequest(prompt="a red circle", **xl, refiner_checkpoint="tiny-refiner",
                                        refiner_switch_at=0.5))
    assert not np.array_equal(pixels(plain.images[0]), pixels(refined.images[0]))
    params = parse_infotext(refined.infotexts[0])
    assert params["Refiner"].startswith("tiny-refiner [") and params["Refiner switch at"] == "0.5"
    assert params["Model"] == "tiny-sdxl"
    with_hires = run(easel, Txt2ImgRequest(prompt="a red circle", **xl, **HIRES, hr_upscaler="Latent",
                                           refiner_checkpoint="tiny-refiner", refiner_switch_at=0.5))
    assert with_hires.images[0].size == (128, 128)
    as_base = failure(easel, Txt2ImgRequest(prompt="x", **dict(xl, checkpoint="tiny-refiner")))
    assert "only refines" in str(as_base)
    wrong = failure(easel, Txt2ImgRequest(prompt="x", **SMALL, refiner_checkpoint="tiny-refiner",
                                          refiner_switch_at=0.5))
    assert isinstance(wrong, RequestError) and wrong.field == "refiner_checkpoint"
