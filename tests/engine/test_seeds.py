"""Variation seeds, seed resize and the random number source, end to end on tiny real pipelines (SD 1.x, SDXL, the
built-in model), through the engine, the infotext and the API."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import api_client
from webui.engine.noise import NoisePlan, noise_plan, place_centred, slerp
from webui.engine.rng_philox import PhiloxRandn
from webui.engine.worker import JobState
from webui.infotext import parse_infotext, read_png_parameters, request_updates
from webui.model_manager.identify import Arch
from webui.requests import Img2ImgRequest, RequestError, Txt2ImgRequest
from webui.settings import UserSettings

SMALL = dict(prompt="a red circle", width=64, height=64, steps=2, checkpoint="tiny-sd1", sampler="Euler")


def run(easel, request):
    job = easel.engine.generate(request, timeout=120)
    assert job.state == JobState.DONE, job.error
    return job.result


def image(easel, **fields) -> np.ndarray:
    return np.asarray(run(easel, Txt2ImgRequest(**{**SMALL, **fields})).images[0].convert("RGB")).astype(int)


# The noise itself ---------------------------------------------------------------------------------------------------
def test_slerp_ends_are_exact_and_the_middle_keeps_the_norm() -> None:
    a = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(1))
    b = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(slerp(0.0, a, b), a) and torch.equal(slerp(1.0, a, b), b)
    mid = slerp(0.5, a, b)
    assert not torch.equal(mid, a) and not torch.equal(mid, b)
    assert abs(float(mid.norm()) - float((a.norm() + b.norm()) / 2)) < 0.05 * float(a.norm())  # not lerp's shrink
    assert float((0.5 * a + 0.5 * b).norm()) < 0.8 * float(mid.norm())


def test_place_centred_crops_and_pads() -> None:
    big = torch.zeros(1, 1, 6, 6)
    small = torch.arange(16.0).reshape(1, 1, 4, 4)
    padded = place_centred(small, big)
    assert torch.equal(padded[..., 1:5, 1:5], small) and padded[..., 0, :].abs().sum() == 0
    cropped = place_centred(torch.arange(64.0).reshape(1, 1, 8, 8), torch.zeros(1, 1, 4, 4))
    assert torch.equal(cropped[0, 0, 0], torch.tensor([18.0, 19.0, 20.0, 21.0]))  # rows 2..5, columns 2..5


def test_noise_plan_draws_each_source_and_advances_the_generators() -> None:
    plan = NoisePlan(0.0, None, "NV", channels=4, scale=8)
    gens = [torch.Generator().manual_seed(3)]
    latents = plan.latents([3], [9], gens, 64, 64)
    assert latents.shape == (1, 4, 8, 8)
    assert np.array_equal(latents.numpy(), PhiloxRandn(3).randn((1, 4, 8, 8)))
    after = torch.Generator().manual_seed(3)
    torch.randn((1, 4, 8, 8), generator=after)
    assert torch.equal(gens[0].get_state(), after.get_state())  # as if the pipeline had drawn its noise
    cpu = NoisePlan(1.0, None, "CPU", channels=4, scale=8).latents([3], [9], [torch.Generator()], 64, 64)
    assert torch.equal(cpu, torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(9)))


def test_families_without_built_noise_refuse_on_the_field() -> None:
    with pytest.raises(RequestError) as caught:
        noise_plan(Txt2ImgRequest(subseed_strength=0.5), Arch.FLUX, None, "CPU")
    assert caught.value.field == "subseed_strength" and "Flux" in caught.value.message
    with pytest.raises(RequestError) as caught:
        noise_plan(Txt2ImgRequest(seed_resize_from_w=256, seed_resize_from_h=256), Arch.SD3, None, "CPU")
    assert caught.value.field == "seed_resize_from_w"
    assert noise_plan(Txt2ImgRequest(), Arch.FLUX, None, "NV") is None  # the source falls back to the CPU there
    assert noise_plan(Txt2ImgRequest(subseed=5), Arch.SD1, None, "CPU") is None  # strength 0: nothing to build


# SD 1.x through the engine ------------------------------------------------------------------------------------------
def test_variation_strength_0_and_1_and_between(make_easel) -> None:
    easel = make_easel()
    plain, other = image(easel, seed=5), image(easel, seed=9)
    assert np.array_equal(image(easel, seed=5, subseed=9, subseed_strength=0.0), plain)
    # the built noise path: strength 1 with the seed as its own variation seed gives the plain image bit for bit
    assert np.array_equal(image(easel, seed=5, subseed=5, subseed_strength=1.0), plain)
    assert np.array_equal(image(easel, seed=5, subseed=9, subseed_strength=1.0), other)
    half = image(easel, seed=5, subseed=9, subseed_strength=0.5)
    assert not np.array_equal(half, plain) and not np.array_equal(half, other)
    # an ancestral sampler runs with a variation too (its per-step noise still follows the seed)
    a1 = image(easel, seed=5, subseed=9, subseed_strength=0.5, sampler="Euler a")
    assert np.array_equal(a1, image(easel, seed=5, subseed=9, subseed_strength=0.5, sampler="Euler a"))


def test_seed_resize_changes_the_image_and_its_own_size_does_not(make_easel) -> None:
    easel = make_easel()
    plain = image(easel, seed=5)
    assert np.array_equal(image(easel, seed=5, seed_resize_from_w=64, seed_resize_from_h=64), plain)
    assert np.array_equal(image(easel, seed=5, seed_resize_from_w=128, seed_resize_from_h=0), plain)  # one side: off
    smaller = image(easel, seed=5, seed_resize_from_w=32, seed_resize_from_h=32)
    larger = image(easel, seed=5, seed_resize_from_w=128, seed_resize_from_h=96)
    assert not np.array_equal(smaller, plain) and not np.array_equal(larger, plain)
    assert not np.array_equal(smaller, larger)


def test_infotext_records_and_restores_the_variation(make_easel) -> None:
    easel = make_easel()
    result = run(easel, Txt2ImgRequest(**SMALL, seed=5, subseed=-1, subseed_strength=0.25, seed_resize_from_w=96,
                                       seed_resize_from_h=32, batch_size=2))
    params = [parse_infotext(read_png_parameters(Image.open(path))) for path in result.paths]
    first_subseed = int(params[0]["Variation seed"])
    assert int(params[1]["Variation seed"]) == first_subseed + 1  # consecutive, like the seeds
    assert params[0]["Variation seed strength"] == "0.25" and params[0]["Seed resize from"] == "96x32"
    assert "RNG" not in params[0]
    updates = request_updates(params[0])
    assert (updates["subseed"], updates["subseed_strength"]) == (first_subseed, 0.25)
    assert (updates["seed_resize_from_w"], updates["seed_resize_from_h"]) == (96, 32)
    again = run(easel, Txt2ImgRequest(**{**SMALL, **updates, "checkpoint": "tiny-sd1", "sampler": "Euler",
                                         "batch_size": 2}))  # the same batch: the same batched arithmetic
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(result.images[0]))
    plain = parse_infotext(run(easel, Txt2ImgRequest(**SMALL, seed=5, subseed=7)).infotexts[0])
    assert not {"Variation seed", "Variation seed strength", "Seed resize from", "RNG"} & set(plain)
    # AUTOMATIC1111's own text parses the same way
    a1111 = parse_infotext("x\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, "
                           "Variation seed: 77, Variation seed strength: 0.3, Seed resize from: 768x512")
    assert {k: request_updates(a1111)[k] for k in ("subseed", "subseed_strength", "seed_resize_from_w",
                                                  "seed_resize_from_h")} == \
        {"subseed": 77, "subseed_strength": 0.3, "seed_resize_from_w": 768, "seed_resize_from_h": 512}


def test_img2img_refuses_a_variation_on_the_field(make_easel) -> None:
    easel = make_easel()
    request = Img2ImgRequest(**SMALL, init_image=Image.new("RGB", (64, 64), "red"), subseed_strength=0.5)
    job = easel.engine.generate(request, timeout=120)
    assert job.state == JobState.FAILED and "subseed_strength" in str(job.error)


@pytest.mark.parametrize("source", ["NV", "GPU"])
def test_random_number_sources(make_easel, source) -> None:
    cpu_easel = make_easel()
    plain = image(cpu_easel, seed=5)
    easel = make_easel(user=UserSettings(randn_source=source))
    result = run(easel, Txt2ImgRequest(**SMALL, seed=5))
    assert parse_infotext(result.infotexts[0])["RNG"] == source
    drawn = np.asarray(result.images[0].convert("RGB")).astype(int)
    if source == "NV":
        assert not np.array_equal(drawn, plain)
        nv = run(easel, Txt2ImgRequest(**SMALL, seed=5, subseed=5, subseed_strength=1.0)).images[0]
        assert np.array_equal(np.asarray(nv.convert("RGB")).astype(int), drawn)
    else:  # this machine's device is the CPU: its generator is torch's CPU one
        assert np.array_equal(drawn, plain)


def test_the_setting_is_checked_and_served_as_an_option(make_easel) -> None:
    with pytest.raises(ValueError, match="randn_source"):
        UserSettings(randn_source="TPU").validate()
    easel = make_easel()
    with api_client(easel) as client:
        assert client.get("/sdapi/v1/options").json()["randn_source"] == "CPU"
        assert client.post("/sdapi/v1/options", json={"randn_source": "NV"}).status_code == 200
        assert easel.settings.user.randn_source == "NV"
        assert client.get("/sdapi/v1/options").json()["randn_source"] == "NV"
        bad = client.post("/sdapi/v1/options", json={"randn_source": "TPU"})
        assert bad.status_code == 422 and "randn_source" in bad.text
    assert json.loads(easel.settings.config_path.read_text())["randn_source"] == "NV"


# The API --------------------------------------------------------------------------------------------------------------
def test_api_txt2img_honours_the_variation_fields(make_easel) -> None:
    easel = make_easel()
    body = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 2, "sampler_name": "Euler", "seed": 5,
            "subseed": 11, "subseed_strength": 0.4, "seed_resize_from_w": 96, "seed_resize_from_h": 96,
            "batch_size": 2}
    with api_client(easel) as client:
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        info = json.loads(response.json()["info"])
        assert info["subseed"] == 11 and info["all_subseeds"] == [11, 12] and info["subseed_strength"] == 0.4
        assert (info["seed_resize_from_w"], info["seed_resize_from_h"]) == (96, 96)
        assert "Variation seed: 11, Variation seed strength: 0.4, Seed resize from: 96x96" in info["infotexts"][0]
        plain = json.loads(client.post("/sdapi/v1/txt2img", json={**body, "subseed_strength": 0,
                                                                  "seed_resize_from_w": -1}).json()["info"])
        assert plain["subseed"] == -1 and plain["subseed_strength"] == 0 and plain["seed_resize_from_w"] == -1
        for field, value in (("subseed_strength", 1.5), ("subseed", -2), ("seed_resize_from_w", 99999)):
            refused = client.post("/sdapi/v1/txt2img", json={**body, field: value})
            assert refused.status_code == 422 and field in refused.text, refused.text


# Other families -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_sd2_and_sdxl_variation(make_easel, tmp_path: Path, tmp_path_factory, family) -> None:
    import shutil

    from tests import tiny_models

    folder = getattr(tiny_models, f"make_tiny_{family}")(tmp_path_factory.mktemp(f"seeds-{family}") / f"tiny-{family}")
    shutil.copytree(folder, tmp_path / "data" / "models" / "diffusers" / f"tiny-{family}")
    easel = make_easel(install_sd1=False)
    xl = dict(checkpoint=f"tiny-{family}")
    plain, other = image(easel, seed=5, **xl), image(easel, seed=9, **xl)
    assert np.array_equal(image(easel, seed=5, subseed=9, subseed_strength=1.0, **xl), other)
    half = image(easel, seed=5, subseed=9, subseed_strength=0.5, **xl)
    assert not np.array_equal(half, plain) and not np.array_equal(half, other)
    assert not np.array_equal(image(easel, seed=5, seed_resize_from_w=32, seed_resize_from_h=32, **xl), plain)


def test_builtin_model_variation(make_easel, tmp_path: Path) -> None:
    from tests.builtin.conftest import make_tiny_pipeline
    from webui.builtin.pipeline import EaselPipeline

    tiny = make_tiny_pipeline(seed=3)
    EaselPipeline(tiny.transformer, tiny.text_encoder, tiny.scheduler, plan_layout=True).save_pretrained(
        tmp_path / "builtin" / "easel-tiny")
    easel = make_easel(builtin_dir=tmp_path / "builtin", install_sd1=False)
    own = dict(checkpoint="easel-tiny", prompt="a red circle, a blue star")
    plain = run(easel, Txt2ImgRequest(**{**SMALL, **own}, seed=5))
    # the built noise, as the pipeline's own: same image, same planned layout (the generator advanced alike)
    same = run(easel, Txt2ImgRequest(**{**SMALL, **own}, seed=5, subseed=5, subseed_strength=1.0))
    assert np.array_equal(np.asarray(same.images[0]), np.asarray(plain.images[0]))
    assert parse_infotext(same.infotexts[0]).get("Planned prompt") == parse_infotext(plain.infotexts[0]).get(
        "Planned prompt")
    half = run(easel, Txt2ImgRequest(**{**SMALL, **own}, seed=5, subseed=9, subseed_strength=0.5))
    assert not np.array_equal(np.asarray(half.images[0]), np.asarray(plain.images[0]))
