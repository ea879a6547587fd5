"""One memory policy for every loaded model, on real tiny models: byte budgets with least-recently-used eviction,
the running job's models pinned, demotion from the device tier to RAM and back (the same image after), every kind
(checkpoint, VAE, segmenter, upscaler, ControlNet) counted by `/sdapi/v1/memory`, and an unload asked for in the
Models tab while a job runs: the job finishes with its image, then the model leaves."""
from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from tests.api.conftest import b64_png
from tests.conftest import api_client
from tests.tiny_models import make_tiny_clipseg, make_tiny_sd_controlnet, save_vae_single_file
from tests.tiny_upscalers import make_tiny_esrgan
from webui.engine.worker import JobState
from webui.model_manager.memory import Budgets, MemoryCache, budgets_for, total_ram
from webui.requests import SegmentRequest, Txt2ImgRequest

TINY = {"width": 64, "height": 64, "steps": 2, "sampler": "Euler", "seed": 5}


def generate(loaded) -> np.ndarray:
    """Two denoising steps at 32x32, as floats in [0, 1]."""
    return np.asarray(loaded.pipe(prompt="a red cube", num_inference_steps=2, height=32, width=32,
                                  generator=torch.Generator("cpu").manual_seed(0), output_type="np").images[0])


def held(manager, kind: str = "pipeline") -> dict[str, dict]:
    return {h["name"]: h for h in manager.memory_report()["held"] if h["kind"] == kind}


class Adjustable:
    """Budgets a test changes while the manager runs (the app reads the user settings the same way)."""

    def __init__(self, device: int, ram: int) -> None:
        self.value = Budgets(device, ram)

    def __call__(self) -> Budgets:
        return self.value


@pytest.fixture
def three(world, tiny):
    for name in "abc":
        world.install_folder(tiny["sd1"], name)
    probe = world.manager()
    probe.get("a", "txt2img")
    size = probe.memory.find("pipeline", "a").bytes
    assert size > 0 and size == held(probe)["a"]["bytes"]
    probe.unload()
    return size


def test_over_the_byte_budget_the_least_recently_used_leaves_and_the_jobs_models_stay(world, three) -> None:
    size = three
    budgets = Adjustable(device=int(size * 1.5), ram=0)  # room for one checkpoint on the device, none in RAM
    manager = world.manager(ram_cache_size=8, memory_budgets=budgets)
    manager.get("a", "txt2img")
    manager.get("b", "txt2img")
    assert manager.loaded_names() == ["b"] and manager.stats["evictions"] == 1  # a was used least recently
    assert held(manager)["b"]["tier"] == "device" and manager.memory.used("device") == size

    budgets.value = Budgets(device=size // 2, ram=0)  # smaller than one checkpoint
    with manager.memory.job():
        manager.get("b", "txt2img")
        manager.get("c", "txt2img")  # the job's own b stays, over budget, while the job runs
        assert manager.loaded_names() == ["b", "c"] and manager.memory.used("device") == 2 * size
        assert all(h["pinned"] for h in held(manager).values())
    assert manager.loaded_names() == ["b", "c"]  # what the last job used stays until another model needs room
    assert not any(h["pinned"] for h in held(manager).values())
    manager.get("a", "txt2img")  # outside a job nothing is pinned: both leave; a alone runs over the budget
    assert manager.loaded_names() == ["a"] and manager.stats["evictions"] == 3
    assert manager.stats["disk_loads"] == 4


def test_demoted_to_ram_and_promoted_back_gives_the_same_image(world, three) -> None:
    size = three
    manager = world.manager(memory_budgets=Budgets(device=int(size * 1.5), ram=size * 4))
    a = manager.get("a", "txt2img")
    unet = a.pipe.unet
    before = generate(a)
    manager.get("b", "txt2img")
    tiers = {name: h["tier"] for name, h in held(manager).items()}
    assert tiers == {"a": "ram", "b": "device"} and manager.memory.stats["demotions"] == 1
    assert manager.memory.used("ram") == size and manager.memory.used("device") == size
    again = manager.get("a", "txt2img")
    assert {name: h["tier"] for name, h in held(manager).items()} == {"a": "device", "b": "ram"}
    assert again.pipe.unet is unet and manager.stats["disk_loads"] == 2  # moved, never reread
    assert manager.memory.stats["promotions"] >= 3  # a, b on loading; a again
    np.testing.assert_array_equal(generate(again), before)


def test_the_ram_budget_drops_what_the_device_tier_lets_go(world, three) -> None:
    size = three
    manager = world.manager(ram_cache_size=8, memory_budgets=Budgets(device=int(size * 1.5), ram=int(size * 1.5)))
    for name in "abc":
        manager.get(name, "txt2img")
    assert {name: h["tier"] for name, h in held(manager).items()} == {"b": "ram", "c": "device"}
    assert manager.stats["evictions"] == 1 and manager.memory.stats["demotions"] == 2


def test_automatic_budgets_and_settings_in_mib() -> None:
    automatic = budgets_for("cpu")
    assert automatic.ram == int(total_ram() * 0.5) and automatic.device == int(total_ram() * 0.25)
    assert budgets_for("cpu", ram_mb=300, device_mb=100) == Budgets(100 * 2**20, 300 * 2**20)
    assert MemoryCache("cpu").limits() == automatic


# ------------------------------------------------------------------------------------------------ the app
def test_every_kind_is_counted_by_the_memory_route(make_easel, tmp_path, tiny_sd1_dir) -> None:
    models = tmp_path / "data" / "models"
    (models / "VAE").mkdir(parents=True)
    save_vae_single_file(tiny_sd1_dir, models / "VAE" / "tiny-vae.safetensors")
    make_tiny_sd_controlnet(models / "ControlNet" / "tiny-canny", tiny_sd1_dir, seed=3)
    make_tiny_esrgan(models / "ESRGAN" / "2x-tiny.safetensors", scale=2)
    make_tiny_clipseg(models / "clipseg" / "tiny-clipseg")
    easel = make_easel()
    unit = {"image": b64_png(Image.new("RGB", (64, 64), (255, 255, 255))), "module": "none", "model": "tiny-canny"}
    body = {"prompt": "a house", "seed": 1, "width": 64, "height": 64, "steps": 2, "enable_hr": True,
            "hr_scale": 1.5, "hr_upscaler": "2x-tiny", "denoising_strength": 0.5,
            "override_settings": {"sd_vae": "tiny-vae"}, "alwayson_scripts": {"controlnet": {"args": [unit]}}}
    with api_client(easel) as client:
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        segment = easel.engine.generate(SegmentRequest(image=Image.new("RGB", (32, 32), (200, 40, 40)),
                                                       query="the red square", checkpoint="tiny-clipseg (CLIPSeg)"),
                                        timeout=120)
        assert segment.state == JobState.DONE, segment.error
        report = client.get("/sdapi/v1/memory").json()["easel"]
    kinds = {h["kind"]: h for h in report["held"]}
    assert set(kinds) == {"pipeline", "vae", "controlnet", "upscaler", "segmenter"}, report["held"]
    assert all(h["bytes"] > 0 and h["tier"] in ("device", "ram") for h in report["held"])
    assert kinds["vae"]["name"] == "tiny-vae" and kinds["vae"]["part_of"] == "tiny-sd1"
    assert kinds["controlnet"]["name"] == "tiny-canny" and kinds["upscaler"]["name"] == "2x-tiny"
    assert report["tiers"]["device"] + report["tiers"]["ram"] == sum(h["bytes"] for h in report["held"])
    assert report["budgets"]["ram"] > 0 and report["budgets"]["device"] > 0
    # The Models tab's "Unload all" (a job on the worker queue, like the API's unload) frees every kind
    from webui.ui.app import build_ui
    from webui.ui.tabs.models import unload_all

    blocks, ui = build_ui(easel)
    try:
        job = unload_all(ui)
    finally:
        blocks.close()
    assert job.state == JobState.DONE and job.source == "ui"
    assert easel.manager.memory_report()["held"] == []


def test_settings_set_the_budgets(make_easel) -> None:
    from webui.settings import UserSettings

    easel = make_easel(user=UserSettings(ram_budget_mb=300, vram_budget_mb=100))
    assert easel.manager.memory.limits() == Budgets(100 * 2**20, 300 * 2**20)
    report = easel.manager.memory_report()
    assert report["budgets"] == {"device": 100 * 2**20, "ram": 300 * 2**20}


def test_an_unload_from_the_models_tab_waits_for_the_running_job(make_easel) -> None:
    from webui.ui.app import build_ui
    from webui.ui.tabs.models import held_rows, unload

    easel = make_easel()
    entered, release = threading.Event(), threading.Event()

    def hold(call, run):  # the job stops inside its pipeline call until the test lets it go on
        entered.set()
        assert release.wait(120)
        return run(call)

    easel.engine.pipeline_wrappers.append(hold)
    blocks, ui = build_ui(easel)
    try:
        job = easel.engine.submit(Txt2ImgRequest(prompt="a red cube", checkpoint="tiny-sd1", **TINY))
        assert entered.wait(120)
        unloading = unload(ui, "tiny-sd1", wait=False)
        assert unloading.state == JobState.QUEUED  # behind the running job, which keeps its model
        assert easel.manager.loaded_names() == ["tiny-sd1"]
        rows = held_rows(easel.manager.memory_report())
        assert rows[0][:3] == ["pipeline", "tiny-sd1", "on device"] and rows[0][4] == "yes"  # pinned by the job
        release.set()
        assert job.wait(120) and unloading.wait(120)
        assert job.state == JobState.DONE and len(job.result.images) == 1
        assert unloading.state == JobState.DONE and unloading.result.info["unloaded"] == "tiny-sd1"
        assert easel.manager.loaded_names() == [] and easel.manager.current() is None
        with pytest.raises(ValueError, match="checkpoint: pick"):
            unload(ui, "")
    finally:
        release.set()
        blocks.close()
    shutil.rmtree(easel.settings.models_dir / "diffusers" / "tiny-sd1")
    easel.manager.refresh()
    with pytest.raises(ValueError, match="could not be unloaded: checkpoint 'tiny-sd1' not found"):
        unload(ui, "tiny-sd1")  # gone from disk: the unload job fails and the tab says why
