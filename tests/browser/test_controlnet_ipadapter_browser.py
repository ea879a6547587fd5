"""An IP-Adapter unit in the browser: open txt2img's ControlNet accordion, enable unit 0, upload a reference image,
pick the ip-adapter_clip_sd15 module and the tiny IP-Adapter, Generate → the gallery shows the image, its infotext
records the unit ("ControlNet 0: Module: ip-adapter_clip_sd15, Model: tiny-ip [...]") and the picture differs from
the same seed without the unit."""
from __future__ import annotations

import re
import shutil
from typing import Iterator

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.browser.conftest import SHOTS, Server, free_port, serving
from tests.browser.helpers import saved_pngs, tiny_txt2img, wait_for_result
from tests.controlnet.conftest import shapes


@pytest.fixture
def server(make_easel, tmp_path, tiny_sd1_dir, tmp_path_factory) -> Iterator[Server]:
    from tests.tiny_adapters import make_tiny_clip_vision, make_tiny_ip_adapter

    root = tmp_path_factory.mktemp("ip-browser")
    models = tmp_path / "data" / "models"
    make_tiny_ip_adapter(models / "ipadapter" / "tiny-ip.safetensors", tiny_sd1_dir / "unet", embed_dim=32, seed=5)
    shutil.copytree(make_tiny_clip_vision(root / "tiny-vit-h", seed=6), models / "clip_vision" / "tiny-vit-h")
    yield from serving(make_easel(port=free_port()))


def choose(page, elem_id: str, value: str) -> None:
    """Pick `value` in the Gradio dropdown `elem_id`."""
    page.click(f"#{elem_id} input")
    page.locator(f"[role=option][aria-label='{value}']").click()
    expect(page.locator(f"#{elem_id} input")).to_have_value(value)


def test_ip_adapter_unit_in_the_controlnet_accordion(page, server, tmp_path) -> None:
    reference = shapes()
    reference.paste((220, 40, 40), (0, 0, 24, 24))
    picture = tmp_path / "reference.png"
    reference.save(picture)
    tiny_txt2img(page, "a house", seed=21)
    page.click("#txt2img_generate")
    wait_for_result(page, "txt2img")
    plain_files = saved_pngs(server.outputs, "txt2img")
    assert len(plain_files) == 1

    page.locator("#tab_txt2img .label-wrap", has_text="ControlNet").first.click()  # open the accordion
    expect(page.locator("#txt2img_controlnet_0_enabled")).to_be_visible()
    page.click("#txt2img_controlnet_0_enabled input[type=checkbox]")
    page.set_input_files("#txt2img_controlnet_0_image input[type=file]", str(picture))
    expect(page.locator("#txt2img_controlnet_0_image img").first).to_be_visible()
    choose(page, "txt2img_controlnet_0_module", "ip-adapter_clip_sd15")
    choose(page, "txt2img_controlnet_0_model", "tiny-ip")
    page.click("#txt2img_generate")
    # the progress line still says "Done" from the first job: wait for the new infotext instead
    expect(page.locator("#txt2img_info textarea")).to_have_value(re.compile("ControlNet 0"), timeout=180_000)
    expect(page.locator("#txt2img_progress")).to_contain_text("Done")
    files = [f for f in saved_pngs(server.outputs, "txt2img") if f not in plain_files]
    assert len(files) == 1, files
    with Image.open(files[0]) as image:
        text = image.info["parameters"]
        prompted = np.asarray(image.convert("RGB"), np.int16)
    assert 'ControlNet 0: "Module: ip-adapter_clip_sd15, Model: tiny-ip [' in text, text
    expect(page.locator("#txt2img_info textarea")).to_have_value(text)
    expect(page.locator("#txt2img_gallery img").first).to_be_visible()
    with Image.open(plain_files[0]) as image:
        plain = np.asarray(image.convert("RGB"), np.int16)
    assert np.abs(prompted - plain).mean() > 1.0  # the reference image steered the generation
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#txt2img_controlnet_0_enabled").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "txt2img-ip-adapter-unit-desktop.png"), full_page=True)
