"""Per-model defaults read off real tiny models: each family's size, steps, CFG, sampler and distilled guidance,
Flux.1 schnell told from dev by the transformer's config, the built-in model's own size, a folder's and a single
file's declarations, and what a size outside a model's range does."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.tiny_models import save_sd1_single_file
from webui.model_manager.defaults import ModelDefaults, entry_defaults, size_plan
from webui.requests import RequestError

SHIPPED = REPO / "models" / "builtin" / "easel-shapes"


def test_each_family_has_its_defaults(world, tiny) -> None:
    for family in ("sd1", "sdxl", "sd3", "flux", "zimage"):
        world.install_folder(tiny[family], f"tiny-{family}")
    schnell = world.install_folder(tiny["flux"], "tiny-schnell")
    config_path = schnell / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config["guidance_embeds"] = False  # what a schnell folder says
    config_path.write_text(json.dumps(config))
    manager = world.manager(device="cpu")
    own = {name: entry_defaults(manager.find_checkpoint(name)) for name in
           ("tiny-sd1", "tiny-sdxl", "tiny-sd3", "tiny-flux", "tiny-schnell", "tiny-zimage")}

    assert (own["tiny-sd1"].width, own["tiny-sd1"].height, own["tiny-sd1"].cfg_scale) == (512, 512, 7.0)
    assert (own["tiny-sdxl"].width, own["tiny-sdxl"].height) == (1024, 1024)
    assert (own["tiny-sd3"].steps, own["tiny-sd3"].cfg_scale, own["tiny-sd3"].sampler) == (28, 4.5, "Euler")
    dev, fast = own["tiny-flux"], own["tiny-schnell"]
    assert (dev.cfg_scale, dev.distilled_cfg_scale, dev.steps) == (1.0, 3.5, 20)
    assert (fast.cfg_scale, fast.distilled_cfg_scale, fast.steps) == (1.0, None, 4)
    assert (own["tiny-zimage"].steps, own["tiny-zimage"].cfg_scale) == (8, 0.0)
    assert all(d.outside == "allow" and d.source == "family" for d in own.values())


@pytest.mark.skipif(not (SHIPPED / "model_index.json").is_file(), reason="the built-in model is not shipped here")
def test_the_builtin_model_runs_at_its_own_64_pixels(world) -> None:
    shutil.copytree(SHIPPED, world.builtin / "easel-shapes")
    own = entry_defaults(world.manager(device="cpu").find_checkpoint("easel-shapes"))
    size = json.loads((SHIPPED / "transformer" / "config.json").read_text())["sample_size"]
    assert (own.width, own.height, own.cfg_scale, own.outside) == (size, size, 4.0, "resize") and size == 64
    assert own.fits(64, 64) and not own.fits(512, 512)
    assert size_plan(own, 512, 512) == (64, 64)
    assert size_plan(own, 512, 768) == (56, 80)  # its own area, the asked aspect ratio, within its range
    assert size_plan(own, 96, 64) is None


def test_a_folder_and_a_single_file_declare_their_own(world, tiny) -> None:
    folder = world.install_folder(tiny["sd1"], "declared")
    index = json.loads((folder / "model_index.json").read_text())
    index["easel_defaults"] = {"steps": 12, "cfg_scale": 5, "width": 640, "sampler": "DPM++ 2M",
                               "outside": "refuse", "min_side": 64, "max_side": 768, "height": "tall"}
    (folder / "model_index.json").write_text(json.dumps(index))
    world.install_single_file(tiny["sd1"], "single", save_sd1_single_file)
    (world.checkpoints / "single.defaults.json").write_text(json.dumps({"steps": 9, "outside": "sideways"}))
    manager = world.manager(device="cpu")

    declared = entry_defaults(manager.find_checkpoint("declared"))
    assert (declared.steps, declared.cfg_scale, declared.width, declared.sampler) == (12, 5.0, 640, "DPM++ 2M")
    assert declared.height == 512, "a value of the wrong kind is ignored, the family's stays"
    assert declared.source == "model_index.json"
    with pytest.raises(RequestError) as refused:
        size_plan(declared, 1024, 512)
    assert refused.value.field == "width" and "64 to 768" in refused.value.message
    assert size_plan(declared, 512, 512) is None

    single = entry_defaults(manager.find_checkpoint("single"))
    assert (single.steps, single.outside, single.source) == (9, "allow", "single.defaults.json")


def test_render_size_keeps_sides_on_multiples_of_8() -> None:
    own = ModelDefaults(64, 64, outside="resize", min_side=48, max_side=128)
    assert own.render_size(2048, 256) == (128, 48)
    assert all(side % 8 == 0 for side in own.render_size(1000, 600))
