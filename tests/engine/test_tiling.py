"""VAE tiling and tiled diffusion on the tiny random-weight SD 1.x model (its VAE scales by 2: a 128×128 image is
a 64×64 latent).

The VAE test decodes and encodes with diffusers' own tiling at a 32-pixel tile, so a 128×128 image really is cut
into tiles, and bounds the difference from the untiled pass. The seam test compares a blended tiling with a plain
one (no overlap): a seam is a jump at a tile border that the untiled image does not have, so the gradient of
(tiled − untiled) across the borders is compared with its gradient elsewhere."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from webui.engine.tiling import (AUTO_VAE_TILING_PIXELS, TileOptions, check_tiled_diffusion, ramp, tile_starts,
                                 tiled_denoiser, vae_plan, vae_tiling)
from webui.engine.worker import JobState
from webui.infotext import parse_infotext
from webui.requests import Img2ImgRequest, RequestError, Txt2ImgRequest, validate_request, Limits

SMALL = dict(steps=2, checkpoint="tiny-sd1", sampler="Euler", seed=3)
TILES = dict(tiled_diffusion=True, tiled_diffusion_tile_width=16, tiled_diffusion_tile_height=16,
             tiled_diffusion_overlap=8)
# The tolerances, as fractions of the untiled output's range (max - min). Each tile is normalised with its own
# GroupNorm statistics (diffusers' tiling, as on real VAEs), and a random-weight VAE's output depends little on its
# latents, so tiles differ more than on a trained VAE (measured: mean |tiled - untiled| 2.9% of the range for the
# decode, 5.1% for the encode, at a 32-pixel tile; 1.9% / 4.5% at 64 pixels).
DECODE_TOLERANCE = 0.04
ENCODE_TOLERANCE = 0.07
SEAM_FACTOR = 1.5  # blended: border gradient of (tiled - untiled) at most this many times the inner one


@pytest.fixture(scope="module")
def sd1_pipe(tiny_sd1_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd1_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def smooth_image(size: int = 128) -> torch.Tensor:
    """(1, 3, size, size) in [-1, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    return torch.stack([torch.sin(3 * xx), torch.cos(2 * yy), xx * yy])[None] * 0.8


def test_tiled_vae_decode_and_encode_match_the_untiled_ones_within_the_tolerance(sd1_pipe) -> None:
    vae = sd1_pipe.vae
    image = smooth_image(128)
    with torch.no_grad():
        latents = vae.encode(image).latent_dist.mean  # (1, 4, 64, 64)
        plain = vae.decode(latents).sample  # (1, 3, 128, 128)
        with vae_tiling(sd1_pipe, tile=True, slice_batch=False, tile_px=32) as notes:
            assert vae.use_tiling and vae.tile_latent_min_size == 16  # 64 latent cells: four tiles a side
            tiled = vae.decode(latents).sample
            tiled_latents = vae.encode(image).latent_dist.mean
    assert notes == {"Tiled VAE": "32px"}
    assert not vae.use_tiling and vae.tile_sample_min_size == 32 * 1  # put back: the VAE's own 32 (sample_size)
    assert tiled.shape == plain.shape and not torch.equal(tiled, plain)  # tiling really ran
    spread = float(plain.max() - plain.min())
    assert float((tiled - plain).abs().mean()) <= DECODE_TOLERANCE * spread
    with torch.no_grad(), vae_tiling(sd1_pipe, tile=True, slice_batch=False, tile_px=64):
        larger = vae.decode(latents).sample  # 64-pixel tiles: fewer borders, closer to the untiled pass
    assert float((larger - plain).abs().mean()) < float((tiled - plain).abs().mean())
    latent_spread = float(latents.max() - latents.min())
    assert float((tiled_latents - latents).abs().mean()) <= ENCODE_TOLERANCE * latent_spread


def test_the_vae_plan_tiles_large_images_and_slices_batches() -> None:
    side = int(AUTO_VAE_TILING_PIXELS ** 0.5)
    assert vae_plan("Automatic", 1024, 1024, 1) == (False, False)  # SDXL's own size never tiles
    assert vae_plan("Automatic", side + 8, side, 1) == (True, False)
    assert vae_plan("Automatic", 512, 512, 4) == (False, True)
    assert vae_plan("Automatic", 512, 512, 1, tiled_diffusion=True) == (True, False)
    assert vae_plan("Always", 64, 64, 1) == (True, True) and vae_plan("Never", 4096, 4096, 8) == (False, False)
    with pytest.raises(ValueError, match="vae_tiling must be one of Automatic, Always, Never"):
        vae_plan("sometimes", 64, 64, 1)


def test_tiles_cover_the_latent_and_weights_fall_off_only_towards_neighbours() -> None:
    assert tile_starts(64, 16, 8) == [0, 8, 16, 24, 32, 40, 48] and tile_starts(16, 32, 8) == [0]
    assert tile_starts(100, 48, 16) == [0, 32, 52]  # the last tile flush with the end
    assert tile_starts(64, 32, 16) == [0, 16, 32]
    first, middle = ramp(32, 0, 64, 16), ramp(32, 16, 64, 16)
    assert first[0] == 1 and first[-1] < 0.1 and torch.all(first > 0)  # flat at the image border
    assert middle[0] < 0.1 and middle[-1] < 0.1 and middle.max() > 0.9  # both sides overlap a neighbour


def seam_ratio(diff: torch.Tensor, borders: list[int]) -> float:
    """Mean |d/dx| of `diff` (C, H, W) across the columns `borders`, over its mean elsewhere."""
    grad = (diff[..., :, 1:] - diff[..., :, :-1]).abs().mean(dim=(0, 1))  # (W-1,): grad[c-1] = |d[c] - d[c-1]|
    at = torch.stack([grad[c - 1] for c in borders]).mean()
    inside = torch.ones_like(grad, dtype=torch.bool)
    for c in borders:
        inside[c - 2:c + 1] = False
    return float(at / grad[inside].mean())


def test_blended_tiles_leave_no_seams_where_a_plain_tiling_does(sd1_pipe) -> None:
    def generate(blend: bool | None) -> tuple[torch.Tensor, int]:
        kwargs = dict(prompt="a red cube", num_inference_steps=2, height=64, width=64, output_type="latent",
                      generator=torch.Generator().manual_seed(0))
        if blend is None:
            return sd1_pipe(**kwargs).images[0], 0
        with tiled_denoiser(sd1_pipe, TileOptions(16, 16, 8), (32, 32), blend=blend) as wrapper:
            latents = sd1_pipe(**kwargs).images[0]  # (4, 32, 32)
        assert sd1_pipe.unet is wrapper.inner  # put back
        return latents, wrapper.calls

    plain, _ = generate(None)
    blended, blended_calls = generate(True)
    naive, naive_calls = generate(False)
    assert blended.shape == plain.shape == (4, 32, 32)
    assert blended_calls > naive_calls > 0  # 3x3 overlapping tiles vs 2x2 per denoiser call
    blended_ratio = seam_ratio(blended - plain, [8, 16, 24])  # every inner tile edge
    naive_ratio = seam_ratio(naive - plain, [16])
    assert blended_ratio <= SEAM_FACTOR < naive_ratio, (blended_ratio, naive_ratio)


def test_tiled_diffusion_is_refused_where_the_denoiser_cannot_be_tiled() -> None:
    for family in ("flux", "sd3", "easel", "zimage"):
        with pytest.raises(RequestError, match="tiled diffusion runs on SD 1.x, SD 2.x and SDXL") as caught:
            check_tiled_diffusion(family, TileOptions())
        assert caught.value.field == "tiled_diffusion"
    check_tiled_diffusion("sdxl", TileOptions())
    with pytest.raises(RequestError) as caught:
        validate_request(Txt2ImgRequest(prompt="x", **{**TILES, "tiled_diffusion_overlap": 16}), Limits())
    assert caught.value.field == "tiled_diffusion_overlap" and "smaller than the tile" in caught.value.message
    with pytest.raises(RequestError, match="does not combine with seamless tiling") as caught:
        validate_request(Txt2ImgRequest(prompt="x", tiling=True, **TILES), Limits())
    assert caught.value.field == "tiled_diffusion"


def run(easel, request):
    job = easel.engine.generate(request, timeout=180)
    assert job.state == JobState.DONE, job.error
    return job.result


def test_txt2img_img2img_and_hires_fix_run_tiled_and_say_so(make_easel) -> None:
    from webui.settings import UserSettings

    easel = make_easel(user=UserSettings(vae_tiling="Never"))
    txt = run(easel, Txt2ImgRequest(prompt="x", width=128, height=96, **SMALL, **TILES))
    assert txt.images[0].size == (128, 96)
    params = parse_infotext(txt.infotexts[0])
    assert params["Tiled Diffusion"] == "True" and params["Tiled Diffusion tile width"] == "16"
    assert params["Tiled Diffusion overlap"] == "8" and "Tiled VAE" not in params
    image = txt.images[0]
    img = run(easel, Img2ImgRequest(prompt="x", init_image=image, width=128, height=96, denoising_strength=0.5,
                                    **SMALL, **TILES))
    assert img.images[0].size == (128, 96) and parse_infotext(img.infotexts[0])["Tiled Diffusion"] == "True"
    # hires fix: the 32x32 first pass fits one tile (nothing tiled), the 64x64 second pass is tiled
    hires = run(easel, Txt2ImgRequest(prompt="x", width=64, height=64, enable_hr=True, hr_scale=2.0,
                                      hr_denoising_strength=0.5, **SMALL, **{**TILES, "tiled_diffusion_tile_width": 24,
                                                                             "tiled_diffusion_tile_height": 24}))
    assert hires.images[0].size == (128, 128)
    assert parse_infotext(hires.infotexts[0])["Tiled Diffusion tile height"] == "24"
    untiled = run(easel, Txt2ImgRequest(prompt="x", width=128, height=96, **SMALL))
    assert "Tiled Diffusion" not in parse_infotext(untiled.infotexts[0])
    assert not np.array_equal(np.asarray(untiled.images[0]), np.asarray(image))


def test_the_vae_tiling_setting_tiles_every_call_and_the_infotext_says_so(make_easel) -> None:
    from webui.settings import UserSettings

    easel = make_easel(user=UserSettings(vae_tiling="Always", vae_tile_size=64))
    result = run(easel, Txt2ImgRequest(prompt="x", width=128, height=128, **SMALL))
    assert result.images[0].size == (128, 128)
    assert parse_infotext(result.infotexts[0])["Tiled VAE"] == "64px"
    easel.settings.user = UserSettings(vae_tiling="Automatic")  # 128x128 is far below the automatic threshold
    assert "Tiled VAE" not in parse_infotext(run(easel, Txt2ImgRequest(prompt="x", width=128, height=128,
                                                                         **SMALL)).infotexts[0])
