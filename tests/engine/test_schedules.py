"""Schedule types, flow samplers and seamless tiling, on the tiny SD 1.x model and the schedule formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest
from diffusers import EulerDiscreteScheduler

from tests.api.conftest import TINY, info_of
from tests.conftest import api_client
from webui.engine.samplers import FLOW_FAMILY_SAMPLERS, Samplers
from webui.engine.schedules import training_sigmas
from webui.infotext import parse_infotext, request_updates
from webui.model_manager.identify import Arch
from webui.requests import SCHEDULE_LABELS, RequestError, Txt2ImgRequest

SD_CONFIG = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").config
STEPS = 8


def euler_sigmas(schedule: str, steps: int = STEPS, arch: Arch = Arch.SD1) -> np.ndarray:
    scheduler = Samplers().make_scheduler("Euler", arch, SD_CONFIG, schedule)
    scheduler.set_timesteps(steps)
    return scheduler.sigmas.numpy().astype(np.float64)


def table() -> np.ndarray:
    return training_sigmas(EulerDiscreteScheduler.from_config(SD_CONFIG).alphas_cumprod.numpy())


def expected(schedule: str, n: int) -> list[float]:
    """Each schedule's formula, written out independently of webui.engine.schedules."""
    s = table()
    lo, hi = s[0], s[-1]
    log = np.log(s)

    def t_to_sigma(t: float) -> float:
        low = int(math.floor(t))
        high = min(low + 1, len(s) - 1)
        return math.exp((1 - (t - low)) * log[low] + (t - low) * log[high])

    def sigma_to_t(sigma: float) -> float:
        return float(np.interp(math.log(sigma), log, np.arange(len(s))))

    if schedule == "Karras":
        return [(hi ** (1 / 7) + i / (n - 1) * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7 for i in range(n)] + [0.0]
    if schedule in ("Exponential", "Polyexponential"):  # polyexponential's rho is 1: the same curve
        return [math.exp(math.log(hi) + i / (n - 1) * (math.log(lo) - math.log(hi))) for i in range(n)] + [0.0]
    if schedule == "KL Optimal":
        return [math.tan(i / n * math.atan(lo) + (1 - i / n) * math.atan(hi)) for i in range(n + 1)]
    if schedule == "Uniform":
        return [t_to_sigma(999 - i * 999 / (n - 1)) for i in range(n)] + [0.0]
    if schedule == "Normal":
        start, end = sigma_to_t(hi), sigma_to_t(lo)
        return [t_to_sigma(start + i * (end - start) / (n - 1)) for i in range(n)] + [0.0]
    if schedule == "SGM Uniform":
        start, end = sigma_to_t(hi), sigma_to_t(lo)
        return [t_to_sigma(start + i * (end - start) / n) for i in range(n)] + [0.0]
    if schedule == "Simple":
        return [s[-(1 + int(i * 1000 / n))] for i in range(n)] + [0.0]
    if schedule == "DDIM":
        return [s[t] for t in range(1, 1000, 1000 // n)][::-1] + [0.0]
    if schedule == "Beta":
        from scipy.stats import beta

        return [s[int(round(beta.ppf(1 - i / n, 0.6, 0.6) * 999))] for i in range(n)] + [0.0]
    if schedule == "Align Your Steps":
        ays = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
        xs = np.linspace(0, 1, len(ays))
        return list(np.exp(np.interp(np.linspace(0, 1, n), xs, np.log(ays[::-1])))[::-1]) + [0.0]
    raise AssertionError(schedule)


@pytest.mark.parametrize("schedule", [label for label in SCHEDULE_LABELS if label != "Automatic"])
def test_each_schedule_type_gives_the_sigmas_of_its_formula(schedule):
    got = euler_sigmas(schedule)
    assert got == pytest.approx(expected(schedule, STEPS), rel=2e-5, abs=1e-6)


@pytest.mark.parametrize("sampler", ["Euler a", "LMS", "DPM++ 2M", "DPM++ SDE"])
def test_other_samplers_step_through_the_same_sigmas_and_survive_long_schedules(sampler):
    import torch

    for schedule in ("Karras", "KL Optimal", "Beta"):
        scheduler = Samplers().make_scheduler(sampler, Arch.SD1, SD_CONFIG, schedule)
        scheduler.set_timesteps(STEPS)
        assert scheduler.sigmas.numpy().astype(np.float64) == pytest.approx(expected(schedule, STEPS), rel=2e-5)
    scheduler = Samplers().make_scheduler(sampler, Arch.SD1, SD_CONFIG, "Beta")
    scheduler.set_timesteps(150)  # Beta repeats training sigmas at 150 steps: the repeats are dropped
    sigmas = scheduler.sigmas.numpy()
    assert len(sigmas) < 151 and (np.diff(sigmas) < 0).all()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=generator) * scheduler.init_noise_sigma
    extra = {"generator": generator} if sampler in ("Euler a", "DPM++ SDE") else {}
    for t in scheduler.timesteps:
        scheduler.scale_model_input(x, t)  # as a pipeline does before each step
        x = scheduler.step(0.1 * torch.randn(1, 4, 8, 8, generator=generator), t, x, **extra).prev_sample
    assert torch.isfinite(x).all()


def test_schedule_types_differ_and_align_your_steps_uses_the_published_list_at_11_steps():
    curves = {label: tuple(np.round(euler_sigmas(label), 4)) for label in SCHEDULE_LABELS if label != "Automatic"}
    assert curves["Polyexponential"] == curves["Exponential"]  # rho 1 makes them one curve, as their formulas say
    assert curves["Normal"] == curves["Uniform"]  # both space timesteps evenly from the top to the bottom sigma
    del curves["Polyexponential"], curves["Normal"]
    assert len(set(curves.values())) == len(curves)
    assert euler_sigmas("Align Your Steps", 11)[:-1] == pytest.approx(
        [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029], rel=1e-6)
    assert euler_sigmas("Align Your Steps", 11, Arch.SDXL)[1] == pytest.approx(6.315, rel=1e-6)


def test_automatic_is_the_samplers_own_schedule():
    own = EulerDiscreteScheduler.from_config(SD_CONFIG)
    own.set_timesteps(STEPS)
    assert np.array_equal(euler_sigmas("Automatic"), own.sigmas.numpy().astype(np.float64))
    assert type(Samplers().make_scheduler("Euler", Arch.SD1, SD_CONFIG)) is EulerDiscreteScheduler


def test_combinations_that_cannot_run_name_scheduler_and_flow_lists_are_per_family():
    samplers = Samplers()
    with pytest.raises(RequestError, match="scheduler: the sampler DDIM cannot run the schedule type Karras.*"
                                           "choose one of Automatic"):
        samplers.check_schedule("DDIM", "Karras", Arch.SD1)
    assert samplers.check_schedule("DPM2", "Karras", Arch.SD1) == "Karras"  # through the scheduler's own flag
    assert samplers.check_schedule("DPM++ 2M Karras", "Automatic", Arch.SD1) == "Karras"  # an older name
    with pytest.raises(RequestError, match="scheduler: .*choose one of Automatic"):
        samplers.check_schedule("Euler", "Beta", Arch.FLUX)
    with pytest.raises(RequestError, match="sampler_name: unknown sampler 'Heun' for flux models; choose one of "
                                           "Euler, Euler a, DPM\\+\\+ 2M, UniPC"):
        samplers.resolve("Heun", Arch.FLUX)
    assert samplers.names(Arch.EASEL) == list(FLOW_FAMILY_SAMPLERS[Arch.EASEL])


def test_api_scheduler_runs_refuses_and_round_trips_through_png_info(make_easel):
    easel = make_easel()
    with api_client(easel) as client:
        listed = client.get("/sdapi/v1/schedulers").json()
        assert [s["label"] for s in listed] == list(SCHEDULE_LABELS)
        karras = next(s for s in listed if s["name"] == "karras")
        assert karras == {"name": "karras", "label": "Karras", "aliases": None, "default_rho": 7.0,
                          "need_inner_model": False}

        body = {"prompt": "x", "seed": 3, "sampler_name": "Euler", **TINY}
        plain = client.post("/sdapi/v1/txt2img", json=body).json()
        beta = client.post("/sdapi/v1/txt2img", json={**body, "scheduler": "beta", "tiling": True}).json()
        assert plain["images"][0] != beta["images"][0]
        text = info_of(beta)["infotexts"][0]
        assert "Schedule type: Beta" in text and "Tiling: True" in text
        assert "Schedule type" not in info_of(plain)["infotexts"][0]
        parsed = client.post("/sdapi/v1/png-info", json={"image": beta["images"][0]}).json()["parameters"]
        assert parsed["Schedule type"] == "Beta" and parsed["Tiling"] == "True"
        restored = request_updates(parsed)
        assert restored["scheduler"] == "Beta" and restored["tiling"] is True and restored["sampler"] == "Euler"

        old = client.post("/sdapi/v1/txt2img", json={**body, "sampler_name": "DPM++ 2M Karras"}).json()
        new = client.post("/sdapi/v1/txt2img", json={**body, "sampler_name": "DPM++ 2M", "scheduler": "Karras"}).json()
        assert old["images"][0] == new["images"][0] and info_of(old)["sampler_name"] == "DPM++ 2M"

        refused = client.post("/sdapi/v1/txt2img", json={**body, "sampler_name": "DDIM", "scheduler": "karras"})
        assert refused.status_code == 422 and "scheduler" in refused.text and "Automatic" in refused.text
        unknown = client.post("/sdapi/v1/txt2img", json={**body, "scheduler": "wobbly"})
        assert unknown.status_code == 422 and "scheduler" in unknown.text


def test_an_old_infotext_with_the_schedule_in_the_sampler_parses_into_both():
    text = "a fox\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 64x64"
    updates = request_updates(parse_infotext(text), Txt2ImgRequest)
    assert updates["sampler"] == "DPM++ 2M" and updates["scheduler"] == "Karras"
    newer = request_updates(parse_infotext("x\nSteps: 20, Sampler: DPM++ 2M, Schedule type: sgm_uniform, "
                                           "CFG scale: 7, Seed: 1"), Txt2ImgRequest)
    assert newer["scheduler"] == "SGM Uniform"


def test_tiling_makes_the_image_wrap_around(tiny_sd1_dir):
    """With circular padding every layer treats the picture as a torus: noise shifted sideways gives the image
    shifted the same way, so the column across the left/right seam is made like any inner column (to float
    precision). Without tiling the edges are made differently (zero padding) and the shift changes the image.
    (A tiny random model draws near-noise, so comparing edge pixels directly would measure nothing.)"""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from webui.engine.context import seamless

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd1_dir)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    f = pipe.vae_scale_factor
    latents = torch.randn(1, 4, 64 // f, 64 // f, generator=torch.Generator().manual_seed(0))

    def seam_error(tiling: bool) -> float:
        with seamless(pipe, tiling):
            image = pipe(prompt="x", latents=latents, num_inference_steps=2, output_type="np").images[0]
            shifted = pipe(prompt="x", latents=torch.roll(latents, 2, dims=3), num_inference_steps=2,
                           output_type="np").images[0]
        return float(np.abs(np.roll(image, 2 * f, axis=1) - shifted).max())

    tiled, plain = seam_error(True), seam_error(False)
    assert tiled < 1e-4 and plain > 0.05, (tiled, plain)


def test_tiling_is_undone_for_the_next_job(make_easel):
    easel = make_easel()
    base = dict(prompt="x", seed=5, width=64, height=64, steps=2, checkpoint="tiny-sd1", sampler="Euler")
    before = easel.engine.generate(Txt2ImgRequest(**base), timeout=120).result.images[0]
    tiled = easel.engine.generate(Txt2ImgRequest(**base, tiling=True), timeout=120).result.images[0]
    after = easel.engine.generate(Txt2ImgRequest(**base), timeout=120).result.images[0]
    assert not np.array_equal(np.asarray(before), np.asarray(tiled))
    assert np.array_equal(np.asarray(before), np.asarray(after))
    pipe = easel.manager.get("tiny-sd1", "txt2img").pipe
    assert all(m.padding_mode == "zeros" for part in (pipe.unet, pipe.vae) for m in part.modules()
               if m.__class__.__name__ == "Conv2d")


@pytest.mark.parametrize("family", ["sd3", "flux", "zimage", "qwenimage"])
def test_each_listed_flow_sampler_runs_on_its_family(make_easel, tmp_path, tmp_path_factory, family):
    """Every sampler listed for a flow family runs through the engine with its own name in the infotext and its
    own image; Heun, which these pipelines' custom sigmas rule out, is listed for SD3 only."""
    import shutil

    from tests import tiny_models

    made = getattr(tiny_models, f"make_tiny_{family}")(tmp_path_factory.mktemp(family) / f"tiny-{family}")
    shutil.copytree(made, tmp_path / "data" / "models" / "diffusers" / f"tiny-{family}")
    easel = make_easel(install_sd1=False)
    arch = easel.manager.catalogue.find_checkpoint(f"tiny-{family}").arch
    images = {}
    for name in easel.sampler_choices(f"tiny-{family}"):
        request = Txt2ImgRequest(prompt="x", seed=2, width=64, height=64, steps=3, checkpoint=f"tiny-{family}",
                                 sampler=name, cfg_scale=2.0)
        job = easel.engine.generate(request, timeout=120)
        assert job.state.name == "DONE", (name, job.error)
        assert parse_infotext(job.result.infotexts[0])["Sampler"] == name
        images[name] = job.result.images[0].tobytes()
    assert list(images) == list(FLOW_FAMILY_SAMPLERS[arch])
    assert {"Euler", "Euler a", "DPM++ 2M", "UniPC"} <= set(images) and ("Heun" in images) == (family == "sd3")
    assert len(set(images.values())) == len(images)
