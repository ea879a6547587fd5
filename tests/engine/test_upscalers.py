"""Upscalers: built-ins, a tiny ESRGAN through spandrel (listing, tiles, exact sizes), the Extras job and hires fix."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.api.conftest import gradient
from tests.tiny_upscalers import make_tiny_esrgan
from webui.engine.tasks import UpscaleRequest, cover_box
from webui.engine.upscalers import UpscalerNotFoundError, Upscalers, run_tiled, scale_from_name
from webui.engine.worker import JobState
from webui.infotext import parse_infotext
from webui.requests import RequestError, Txt2ImgRequest


@pytest.fixture
def esrgan_dir(tmp_path):
    folder = tmp_path / "ESRGAN"
    make_tiny_esrgan(folder / "2x-tiny.safetensors", scale=2)
    return folder


def test_listing_and_lookup(esrgan_dir, tmp_path):
    extra = tmp_path / "more"
    make_tiny_esrgan(extra / "nested" / "RealTiny_x4.pth.safetensors", scale=4)
    (esrgan_dir / "notes.txt").write_text("not a model")
    upscalers = Upscalers([esrgan_dir, extra])
    assert upscalers.names() == ["Lanczos", "Nearest", "2x-tiny", "nested/RealTiny_x4.pth"]
    entry = upscalers.find("2X-TINY")
    assert entry.kind == "model" and entry.scale == 2 and entry.path == esrgan_dir / "2x-tiny.safetensors"
    assert upscalers.find("2x-tiny.safetensors").name == "2x-tiny"
    with pytest.raises(UpscalerNotFoundError, match="unknown upscaler 'R-ESRGAN 4x\\+'; installed: Lanczos"):
        upscalers.find("R-ESRGAN 4x+")
    assert upscalers.check_hires("Latent (bicubic)") == "Latent (bicubic)" and upscalers.check_hires("None") == "None"
    make_tiny_esrgan(esrgan_dir / "1x-later.safetensors", scale=1)
    assert "1x-later" not in upscalers.names()
    upscalers.refresh()
    assert "1x-later" in upscalers.names()


def test_scale_from_name():
    assert scale_from_name("4x-UltraSharp") == 4 and scale_from_name("RealESRGAN_x2plus") == 2
    assert scale_from_name("ESRGAN_4x") == 4 and scale_from_name("2xNomosUni") == 2
    assert scale_from_name("ultrasharp") is None and scale_from_name("Swin2SR") is None


def test_builtin_filters_and_latent_names():
    upscalers = Upscalers([])
    image = gradient(32, 32)
    assert upscalers.upscale(image, "Nearest", (64, 64)).tobytes() == image.resize((64, 64), Image.NEAREST).tobytes()
    assert upscalers.upscale(image, "lanczos", (48, 40)).size == (48, 40)
    assert upscalers.upscale(image, "Latent", (64, 64)).tobytes() == image.resize((64, 64), Image.BILINEAR).tobytes()


def test_tiles_meet_exactly():
    """With a model that only repeats pixels, tiled output equals the whole-image output exactly."""
    x = torch.rand(1, 3, 37, 53)  # sizes that do not divide into tiles

    def nearest_2x(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, scale_factor=2, mode="nearest")

    tiled = run_tiled(nearest_2x, x, 2, tile=16, overlap=4)
    assert tiled.shape == (1, 3, 74, 106)
    assert torch.equal(tiled, nearest_2x(x))


def test_esrgan_upscales_to_exact_sizes(esrgan_dir):
    upscalers = Upscalers([esrgan_dir], tile=16, tile_overlap=4)
    image = gradient(24, 20)
    once = upscalers.upscale(image, "2x-tiny", (48, 40))
    assert once.size == (48, 40) and once.mode == "RGB"
    again = upscalers.upscale(image, "2x-tiny", (48, 40))
    assert once.tobytes() == again.tobytes()  # the loaded model is reused and deterministic
    assert once.tobytes() != image.resize((48, 40), Image.LANCZOS).tobytes()  # the model really ran
    three_x = upscalers.upscale(image, "2x-tiny", (72, 60))  # two passes (4x), then Lanczos down
    assert three_x.size == (72, 60)
    # tiles of 16 px with 4 px of context stay close to the whole image at once
    whole = Upscalers([esrgan_dir], tile=512, tile_overlap=0).upscale(image, "2x-tiny", (48, 40))
    diff = (torch.tensor(list(once.tobytes()), dtype=torch.float) - torch.tensor(list(whole.tobytes()), dtype=torch.float))
    assert diff.abs().mean() < 8


def test_extras_job_and_its_errors(make_easel, esrgan_dir):
    easel = make_easel()
    easel.engine.upscalers.dirs = [esrgan_dir]
    easel.engine.upscalers.refresh()
    job = easel.engine.generate(UpscaleRequest(image=gradient(32, 24), upscaler="2x-tiny", scale=2), timeout=120)
    assert job.state == JobState.DONE, job.error
    image = job.result.images[0]
    assert image.size == (64, 48)
    params = parse_infotext(job.result.infotexts[0])
    assert params["Postprocess upscaler"] == "2x-tiny" and params["Postprocess upscale by"] == "2"
    assert job.result.paths and job.result.paths[0].parent.parent.name == "extras-images"
    saved = Image.open(job.result.paths[0])
    assert "Postprocess upscaler: 2x-tiny" in saved.info["parameters"]

    sized = easel.engine.generate(UpscaleRequest(image=gradient(32, 24), upscaler="Lanczos", width=40, height=40,
                                                 crop=True, save_images=False), timeout=60)
    assert sized.result.images[0].size == (40, 40) and not sized.result.paths

    with pytest.raises(RequestError, match="^upscaling_resize: must be between 1 and 8"):
        easel.engine.submit(UpscaleRequest(image=gradient(), scale=9))
    with pytest.raises(RequestError, match="^image:"):
        easel.engine.submit(UpscaleRequest(image=None))
    missing = easel.engine.generate(UpscaleRequest(image=gradient(), upscaler="nope"), timeout=60)
    assert missing.state == JobState.FAILED and "unknown upscaler 'nope'" in missing.error


def test_hires_fix_with_an_esrgan_model(make_easel, esrgan_dir):
    easel = make_easel()
    easel.engine.upscalers.dirs = [esrgan_dir]
    easel.engine.upscalers.refresh()
    request = Txt2ImgRequest(prompt="a cat", seed=3, width=64, height=64, steps=2, checkpoint="tiny-sd1",
                             enable_hr=True, hr_scale=1.5, hr_upscaler="2x-tiny", hr_second_pass_steps=2,
                             hr_denoising_strength=0.5)
    job = easel.engine.generate(request, timeout=300)
    assert job.state == JobState.DONE, job.error
    assert job.result.images[0].size == (96, 96)
    assert parse_infotext(job.result.infotexts[0])["Hires upscaler"] == "2x-tiny"
    wrong = easel.engine.generate(request.replace(hr_upscaler="R-ESRGAN 4x+"), timeout=60)
    assert wrong.state == JobState.FAILED
    assert isinstance(wrong.exception, RequestError) and wrong.exception.field == "hr_upscaler"


def test_crop_is_taken_before_upscaling_and_matches_cover_then_crop(make_easel, esrgan_dir):
    assert cover_box((8, 1024), (1024, 1024)) == (0, 508, 8, 516)  # never a 1024x131072 intermediate
    assert cover_box((32, 24), (40, 40)) == (4, 0, 28, 24) and cover_box((40, 40), (40, 40)) == (0, 0, 40, 40)
    easel = make_easel()
    easel.engine.upscalers.dirs = [esrgan_dir]
    easel.engine.upscalers.refresh()
    source = gradient(32, 24)
    job = easel.engine.generate(UpscaleRequest(image=source, upscaler="Lanczos", width=40, height=40, crop=True,
                                               save_images=False), timeout=60)
    assert job.state == JobState.DONE, job.error
    # the same picture as covering 40x40 (53x40) and cropping the overflow evenly, to within resampling
    cover = source.convert("RGB").resize((53, 40), Image.LANCZOS).crop((6, 0, 46, 40))
    made = torch.tensor(list(job.result.images[0].tobytes()), dtype=torch.float)
    assert (made - torch.tensor(list(cover.tobytes()), dtype=torch.float)).abs().mean() < 6
    seen = []
    model = easel.engine.upscalers._load(easel.engine.upscalers.find("2x-tiny"))
    handle = model.model.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    try:
        job = easel.engine.generate(UpscaleRequest(image=gradient(2, 600), upscaler="2x-tiny", width=64, height=64,
                                                   crop=True, save_images=False), timeout=60)
    finally:
        handle.remove()
    assert job.state == JobState.DONE and job.result.images[0].size == (64, 64)
    assert seen[0] == (2, 2) and all(h == w for h, w in seen), seen  # the 2x2 crop, never a 2x600 strip


def test_a_model_pass_never_makes_more_than_the_limit(esrgan_dir):
    upscalers = Upscalers([esrgan_dir], tile=512, tile_overlap=0)
    model = upscalers._load(upscalers.find("2x-tiny"))
    seen = []
    handle = model.model.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    try:
        # 100x10 -> 20x20 would run the model on 100x10 and make 200x20 = 4000 px: over a 1600 px limit, it runs
        # on 10x10 instead and lands on the target
        assert upscalers.upscale(gradient(100, 10), "2x-tiny", (20, 20), max_pixels=1600).size == (20, 20)
        assert seen == [(10, 10)]
        seen.clear()
        assert upscalers.upscale(gradient(30, 20), "2x-tiny", (40, 40), max_pixels=2400).size == (40, 40)
        assert seen == [(20, 30)]  # 60x40 = 2400: within the limit, the model sees the whole image
        seen.clear()
        upscalers.upscale(gradient(30, 20), "2x-tiny", (40, 40), max_pixels=1000)  # below the target: the target
        assert seen == [(20, 20)]
        seen.clear()
        upscalers.upscale(gradient(100, 10), "2x-tiny", (20, 20))  # no limit (the hires fix): as it always was
        assert seen == [(10, 100)]
    finally:
        handle.remove()
