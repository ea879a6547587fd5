"""SD upscale and Loopback on the tiny SD 1.x model: the upscaled size, tiles blended across their overlap, the
upscaler by index and by name; each loop fed the previous loop's image, the strength schedule in the infotexts."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.api.conftest import gradient
from webui.engine.script_job import ScriptJob
from webui.engine.worker import JobState
from webui.infotext import parse_infotext
from webui.requests import Img2ImgRequest, RequestError, Txt2ImgRequest
from webui.scripts.loopback import strength_schedule
from webui.scripts.sd_upscale import blend_tiles, tile_positions, upscaler_name

BASE = Img2ImgRequest(prompt="a red ball", width=64, height=64, steps=2, seed=11, checkpoint="tiny-sd1",
                      init_image=gradient(), denoising_strength=0.6)


def script_job(easel, name, request, args) -> ScriptJob:
    job = easel.registry.scripts[name].run(request, args)
    assert isinstance(job, ScriptJob)
    return job


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def test_tile_layout_and_blend():
    assert tile_positions(128, 64, 16) == [0, 32, 64]
    assert tile_positions(64, 64, 16) == [0]
    assert tile_positions(200, 64, 0) == [0, 45, 91, 136]
    black, white = Image.new("RGB", (64, 64), (0, 0, 0)), Image.new("RGB", (64, 64), (255, 255, 255))
    out = pixels(blend_tiles((96, 64), [0, 32], [0], [[black, white]]))[0, :, 0]
    assert (out[:32] == 0).all() and (out[64:] == 255).all()
    assert (np.diff(out[32:64]) > 0).all()  # a ramp from one tile to the other, no step
    assert upscaler_name(0, ["Lanczos", "Nearest"]) == "None" and upscaler_name(2, ["Lanczos", "Nearest"]) == "Nearest"
    assert upscaler_name("lanczos", ["Lanczos", "Nearest"]) == "Lanczos"
    with pytest.raises(ValueError, match="index 5 is not between 0 and 2"):
        upscaler_name(5, ["Lanczos", "Nearest"])


def test_sd_upscale_size_and_seams(make_easel):
    easel = make_easel()
    job = script_job(easel, "sd upscale", BASE, [None, 16, "Lanczos", 2])
    assert len(job.requests) == 9  # 3 x 3 tiles of 64 px over 128 px
    done = easel.engine.generate(job, source="ui", timeout=600)
    assert done.state == JobState.DONE, done.error
    result = done.result
    assert len(result.images) == 1 and result.images[0].size == (128, 128)
    assert done.batch_total == 9
    params = parse_infotext(result.infotexts[0])
    assert params["SD upscale overlap"] == "16" and params["SD upscale upscaler"] == "Lanczos"
    assert params["Seed"] == "11" and params["Size"] == "64x64"
    assert result.paths and result.paths[0].parent.parent.name == "img2img-images" and len(result.paths) == 1
    # the first two tiles of the top row, run by hand from the Lanczos-upscaled image
    upscaled = gradient().resize((128, 128), Image.LANCZOS)
    tiles = []
    for index, box in ((0, (0, 0, 64, 64)), (1, (32, 0, 96, 64))):
        own = easel.engine.generate(job.requests[index].replace(init_image=upscaled.crop(box)), timeout=300)
        assert own.state == JobState.DONE, own.error
        tiles.append(pixels(own.result.images[0]))
    out = pixels(result.images[0])
    top = slice(0, 32)  # rows only the first row of tiles covers
    assert np.array_equal(out[top, :32], tiles[0][top, :32])  # before the overlap: the first tile alone
    band = out[top, 32:64]
    left, right = tiles[0][top, 32:64], tiles[1][top, :32]
    assert not np.array_equal(band, right) and not np.array_equal(band, left)  # not a naive paste
    ramp = ((np.arange(32) + 0.5) / 32)[None, :, None]
    assert np.abs(band - (left * (1 - ramp) + right * ramp)).max() <= 1.0  # a fade from one tile to the next


def test_sd_upscale_by_index_and_bad_args(make_easel):
    easel = make_easel()
    job = script_job(easel, "sd upscale", BASE, ["", 0, 2, 1.5])  # 2: Nearest; 96 px from 64
    done = easel.engine.generate(job, source="ui", timeout=600)
    assert done.state == JobState.DONE, done.error
    assert done.result.images[0].size == (96, 96)
    assert parse_infotext(done.result.infotexts[0])["SD upscale upscaler"] == "Nearest"
    with pytest.raises(ValueError, match="Tile overlap: must be at least 0 and less than the tile size"):
        script_job(easel, "sd upscale", BASE, [None, 64, "Lanczos", 2])
    with pytest.raises(ValueError, match="no upscaler named 'Magic'"):
        script_job(easel, "sd upscale", BASE, [None, 16, "Magic", 2])
    with pytest.raises(ValueError, match=r"smaller than a tile"):
        script_job(easel, "sd upscale", BASE.replace(width=128, height=128), [None, 16, "None", 2])
    with pytest.raises(ValueError, match="not txt2img"):
        script_job(easel, "sd upscale", Txt2ImgRequest(prompt="x"), [None, 16, "Lanczos", 2])


def test_strength_schedules():
    assert strength_schedule(0.6, 3, final=0.2) == pytest.approx([0.6, 0.4, 0.2])
    assert strength_schedule(0.5, 3, factor=1.5) == pytest.approx([0.5, 0.75, 1.0])
    lazy = strength_schedule(0.0, 3, final=1.0, curve="Lazy")
    aggressive = strength_schedule(0.0, 3, final=1.0, curve="Aggressive")
    assert lazy[1] < 0.5 < aggressive[1] and lazy[2] == pytest.approx(1.0) == aggressive[2]


def test_loopback_feeds_each_loop_the_previous_image(make_easel):
    easel = make_easel()
    job = script_job(easel, "loopback", BASE, [3, 0.2, "Linear", "None"])
    done = easel.engine.generate(job, source="ui", timeout=600)
    assert done.state == JobState.DONE, done.error
    result = done.result
    assert result.info["grids"] == 1 and len(result.images) == 4 and done.batch_total == 3
    assert result.images[0].size == (3 * 64, 64)
    loops = result.images[1:]
    params = [parse_infotext(text) for text in result.infotexts[1:]]
    assert [p["Denoising strength"] for p in params] == ["0.6", "0.4", "0.2"]
    assert [p["Loopback"] for p in params] == ["1/3", "2/3", "3/3"]
    assert {p["Final denoising strength"] for p in params} == {"0.2"} and params[0]["Denoising curve"] == "Linear"
    assert [p["Seed"] for p in params] == ["11", "12", "13"]
    # the second loop, by hand: the first loop's image at the second strength and seed
    by_hand = easel.engine.generate(BASE.replace(init_image=loops[0], seed=12, denoising_strength=0.4), timeout=300)
    assert by_hand.state == JobState.DONE, by_hand.error
    assert np.array_equal(pixels(by_hand.result.images[0]), pixels(loops[1]))
    assert not np.array_equal(pixels(loops[0]), pixels(loops[1]))


def test_loopback_legacy_factor_and_bad_args(make_easel):
    easel = make_easel()
    job = script_job(easel, "loopback", BASE.replace(denoising_strength=0.4), [3, 2.0, "None"])
    assert [r.denoising_strength for r in job.requests] == pytest.approx([0.4, 0.8, 1.0])
    with pytest.raises(ValueError, match="Easel has no interrogator"):
        script_job(easel, "loopback", BASE, [2, 0.5, "Linear", "CLIP"])
    with pytest.raises(ValueError, match="Loops: must be between 1 and 100"):
        script_job(easel, "loopback", BASE, [0, 0.5])
    with pytest.raises(ValueError, match="Denoising strength curve"):
        script_job(easel, "loopback", BASE, [2, 0.5, "Wobbly"])
    with pytest.raises(RequestError) as caught:
        easel.engine.submit(script_job(easel, "loopback", BASE.replace(batch_count=100), [4, 0.5]))
    assert caught.value.field == "script_args" and "400 images" in caught.value.message


def test_interrupt_keeps_the_loops_and_tiles_made(make_easel):
    easel = make_easel()

    def interrupt_at_seed_13(request):
        if request.seed == 13:
            easel.engine.worker.interrupt()  # the running job: the script's
        return request

    easel.registry.before_generate.append(interrupt_at_seed_13)
    job = easel.engine.submit(script_job(easel, "loopback", BASE, [4, 0.2]), source="ui")
    job.wait(600)
    assert job.state == JobState.INTERRUPTED
    assert job.result.info["grids"] == 1 and len(job.result.images) == 1 + 2  # the grid, the two loops made
    assert [parse_infotext(t)["Loopback"] for t in job.result.infotexts[1:]] == ["1/4", "2/4"]
    # SD upscale: tiles 0 and 1 made (seeds 11, 12); the rest keep the upscaled image
    job = easel.engine.submit(script_job(easel, "sd upscale", BASE, [None, 16, "Lanczos", 2]), source="ui")
    job.wait(600)
    assert job.state == JobState.INTERRUPTED and len(job.result.images) == 1
    out = pixels(job.result.images[0])
    upscaled = pixels(gradient().resize((128, 128), Image.LANCZOS))
    assert np.array_equal(out[64:, :], upscaled[64:, :])  # the bottom row of tiles was never repainted
    assert not np.array_equal(out[:32, :32], upscaled[:32, :32])  # the first tile was


def test_sd_upscale_with_an_esrgan_model(make_easel):
    from tests.tiny_upscalers import make_tiny_esrgan

    easel = make_easel()
    make_tiny_esrgan(easel.settings.models_dir / "ESRGAN" / "2x-tiny.safetensors", scale=2)
    easel.engine.upscalers.refresh()
    job = script_job(easel, "sd upscale", BASE, [None, 32, 3, 2])  # 3: the first model, after None, Lanczos, Nearest
    done = easel.engine.generate(job, source="ui", timeout=600)
    assert done.state == JobState.DONE, done.error
    assert done.result.images[0].size == (128, 128)
    assert parse_infotext(done.result.infotexts[0])["SD upscale upscaler"] == "2x-tiny"
