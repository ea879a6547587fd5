"""The engine end to end on a tiny real SD 1.x pipeline: txt2img, hires fix, img2img, inpaint, outpaint."""
import numpy as np
import pytest
from PIL import Image, ImageDraw

from webui.engine.worker import JobState
from webui.infotext import parse_infotext, read_png_parameters
from webui.requests import Img2ImgRequest, InpaintRequest, RequestError, Txt2ImgRequest

SMALL = dict(width=64, height=64, steps=2, checkpoint="tiny-sd1", sampler="Euler")


def run(easel, request):
    job = easel.engine.generate(request, timeout=120)
    assert job.state == JobState.DONE, job.error
    return job.result


def pixels(image):
    return np.asarray(image.convert("RGB")).astype(int)


def test_txt2img_saves_png_with_infotext_and_reproduces_seed(make_easel):
    easel = make_easel()
    request = Txt2ImgRequest(prompt="a (red:1.2) circle", negative_prompt="blurry", seed=1234, batch_size=2,
                             batch_count=2, **SMALL)
    result = run(easel, request)
    assert result.seeds == [1234, 1235, 1236, 1237]
    assert len(result.images) == 4 and all(img.size == (64, 64) for img in result.images)
    path = result.paths[0]
    assert path.parent.parent.name == "txt2img-images" and path.name == "00000-1234.png"
    assert [p.name for p in result.paths[1:]] == ["00001-1235.png", "00002-1236.png", "00003-1237.png"]
    params = parse_infotext(read_png_parameters(Image.open(path)))
    assert params["Prompt"] == "a (red:1.2) circle" and params["Negative prompt"] == "blurry"
    assert params["Seed"] == "1234" and params["Steps"] == "2" and params["Size"] == "64x64"
    assert params["Sampler"] == "Euler" and params["Model"] == "tiny-sd1"
    assert len(params["Model hash"]) == 10
    single = Txt2ImgRequest(prompt="a (red:1.2) circle", negative_prompt="blurry", seed=1235, **SMALL)
    again, once_more = run(easel, single), run(easel, single)
    assert np.array_equal(pixels(again.images[0]), pixels(once_more.images[0]))  # same request, same bytes
    # The same seed inside a batch differs only by batched-arithmetic rounding.
    assert np.abs(pixels(again.images[0]) - pixels(result.images[1])).max() <= 3
    assert again.paths[0].name == "00004-1235.png"  # never overwrites


def test_emphasis_changes_the_image(make_easel):
    easel = make_easel()
    plain = run(easel, Txt2ImgRequest(prompt="a red circle", seed=5, **SMALL)).images[0]
    weighted = run(easel, Txt2ImgRequest(prompt="a (red:1.8) circle", seed=5, **SMALL)).images[0]
    assert not np.array_equal(pixels(plain), pixels(weighted))


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M Karras", "DDIM", "UniPC", "Heun", "LMS", "DPM++ SDE Karras"])
def test_samplers_run(make_easel, sampler):
    easel = make_easel()
    result = run(easel, Txt2ImgRequest(prompt="x", seed=1, **{**SMALL, "sampler": sampler}))
    params = parse_infotext(result.infotexts[0])
    assert params["Sampler"] == sampler.removesuffix(" Karras")  # older names: the schedule is written on its own
    assert params.get("Schedule type") == ("Karras" if sampler.endswith(" Karras") else None)


def test_euler_a_on_a_flow_model_reproduces_from_the_seed(make_easel, tmp_path, tmp_path_factory):
    """SD3's pipeline steps its scheduler without the request's generators; Euler a's per-step noise must still
    follow the seed, whatever torch's global generator was doing before."""
    import shutil

    import torch

    from tests.tiny_models import make_tiny_sd3

    sd3 = make_tiny_sd3(tmp_path_factory.mktemp("sd3") / "tiny-sd3")
    shutil.copytree(sd3, tmp_path / "data" / "models" / "diffusers" / "tiny-sd3")
    easel = make_easel(install_sd1=False)
    request = Txt2ImgRequest(prompt="x", seed=4, **{**SMALL, "checkpoint": "tiny-sd3", "sampler": "Euler a"})
    torch.manual_seed(1)
    first = pixels(run(easel, request).images[0])
    torch.manual_seed(2)
    again = pixels(run(easel, request).images[0])
    assert np.array_equal(first, again)
    other = pixels(run(easel, Txt2ImgRequest(prompt="x", seed=5, **{**SMALL, "checkpoint": "tiny-sd3",
                                                                     "sampler": "Euler a"})).images[0])
    assert not np.array_equal(first, other)


def test_unknown_sampler_fails_with_a_named_field(make_easel):
    easel = make_easel()
    # No model loaded and none named: the family is known only once the job loads one, so the job fails.
    job = easel.engine.generate(Txt2ImgRequest(prompt="x", **{**SMALL, "sampler": "Nope", "checkpoint": ""}),
                                timeout=60)
    assert job.state == JobState.FAILED and "sampler_name" in job.error and "Euler a" in job.error
    assert easel.engine.worker.alive
    # A named checkpoint: the request is refused before it is queued.
    with pytest.raises(RequestError, match="sampler_name: unknown sampler 'Nope' for sd1 models.*Euler a"):
        easel.engine.submit(Txt2ImgRequest(prompt="x", **{**SMALL, "sampler": "Nope"}))
    assert easel.engine.worker.queue_length() == 0


def test_hires_fix_doubles_size(make_easel):
    easel = make_easel()
    result = run(easel, Txt2ImgRequest(prompt="x", seed=3, enable_hr=True, hr_scale=2.0, hr_denoising_strength=0.5,
                                       **SMALL))
    assert result.images[0].size == (128, 128)
    params = parse_infotext(result.infotexts[0])
    assert params["Hires upscale"] == "2" and params["Size"] == "64x64"


def test_img2img_strength(make_easel):
    easel = make_easel()
    source = Image.new("RGB", (96, 80), (200, 30, 30))
    result = run(easel, Img2ImgRequest(prompt="x", init_image=source, denoising_strength=0.5, seed=2, **SMALL))
    assert result.images[0].size == (64, 64)
    assert parse_infotext(result.infotexts[0])["Denoising strength"] == "0.5"
    assert result.paths[0].parent.parent.name == "img2img-images"


def square_mask():
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    return mask


def test_inpaint_keeps_pixels_outside_the_mask(make_easel):
    easel = make_easel()
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = square_mask()
    for fill in ("original", "fill", "latent noise", "latent nothing"):
        result = run(easel, InpaintRequest(prompt="x", init_image=source, mask=mask, mask_blur=0, inpainting_fill=fill,
                                           denoising_strength=0.9, seed=1, **SMALL))
        out = pixels(result.images[0])
        outside = np.asarray(mask) == 0
        assert np.array_equal(out[outside], pixels(source)[outside]), fill
        assert not np.array_equal(out[~outside], pixels(source)[~outside]), fill


def test_inpaint_only_masked_and_inverted(make_easel):
    easel = make_easel()
    source = Image.new("RGB", (64, 64), (20, 120, 200))
    mask = square_mask()
    result = run(easel, InpaintRequest(prompt="x", init_image=source, mask=mask, mask_blur=2, inpaint_full_res=True,
                                       inpaint_full_res_padding=8, seed=1, **SMALL))
    out = pixels(result.images[0])
    assert np.array_equal(out[:8], pixels(source)[:8])  # far outside the blurred mask
    inverted = run(easel, InpaintRequest(prompt="x", init_image=source, mask=mask, mask_blur=0,
                                         inpainting_mask_invert=True, seed=1, **SMALL))
    out = pixels(inverted.images[0])
    inside = np.asarray(mask) > 0
    assert np.array_equal(out[inside], pixels(source)[inside])
    assert parse_infotext(inverted.infotexts[0])["Mask mode"] == "Inpaint not masked"


def test_outpaint_extends_the_canvas(make_easel):
    easel = make_easel()
    source = Image.new("RGB", (64, 64), (20, 120, 200))
    result = run(easel, InpaintRequest(prompt="x", init_image=source, outpaint_right=32, outpaint_top=16,
                                       mask_blur=0, seed=1, **SMALL))
    out = result.images[0]
    assert out.size == (96, 80)
    assert np.array_equal(pixels(out)[16:, :64], pixels(source))


def test_bad_request_is_refused_before_the_queue(make_easel):
    easel = make_easel()
    with pytest.raises(RequestError, match="width: must be a multiple of 8"):
        easel.engine.submit(Txt2ImgRequest(**{**SMALL, "width": 65}))


def test_interrupt_returns_early_and_worker_stays_healthy(make_easel):
    easel = make_easel()
    job = easel.engine.submit(Txt2ImgRequest(prompt="x", width=64, height=64, steps=150, checkpoint="tiny-sd1",
                                             seed=1, sampler="Euler"))
    version = 0
    while job.step < 2 and not job.finished_state:
        version = job.wait_for_update(version, timeout=30)
    easel.engine.worker.interrupt()
    assert job.wait(60)
    assert job.state == JobState.INTERRUPTED and job.step < 150
    assert run(easel, Txt2ImgRequest(prompt="x", seed=1, **SMALL)).images


def test_model_switch_is_a_queued_job(make_easel):
    easel = make_easel()
    job = easel.engine.load("tiny-sd1")
    assert job.state == JobState.DONE and job.result.info["model"] == "tiny-sd1"
    assert easel.manager.current().name == "tiny-sd1" and len(job.result.info["model_hash"]) == 10
    missing = easel.engine.load("no-such-model", timeout=60)
    assert missing.state == JobState.FAILED and "no-such-model" in missing.error
    assert isinstance(missing.exception, LookupError)
    assert easel.manager.current().name == "tiny-sd1"  # what was loaded stays loaded
    assert easel.engine.worker.alive


def test_img2img_and_inpaint_make_a_whole_batch(make_easel):
    """batch_size images from one input: each its own seed, the first equal to the same seed run alone."""
    easel = make_easel()
    source = Image.new("RGB", (64, 64), (90, 140, 200))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 48, 48), fill=255)
    for cls, extra in ((Img2ImgRequest, {}), (InpaintRequest, {"mask": mask})):
        request = cls(prompt="a red circle", seed=21, batch_size=2, init_image=source, denoising_strength=0.6,
                      **extra, **SMALL)
        result = run(easel, request)
        assert result.seeds == [21, 22] and len(result.images) == 2, cls.__name__
        assert not np.array_equal(pixels(result.images[0]), pixels(result.images[1]))
        alone = run(easel, request.replace(batch_size=1)).images[0]
        assert np.abs(pixels(alone) - pixels(result.images[0])).max() <= 3  # batched-arithmetic rounding only
