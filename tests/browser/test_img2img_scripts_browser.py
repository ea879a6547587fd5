"""The img2img tab's Script dropdown in the browser: SD upscale and Loopback show their own controls once picked,
and generating with them on the tiny model gives the upscaled picture (twice the size, one image) and the loops
(a grid of the loops first, then each loop's image, with its strength and number in the infotext)."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import expect

from tests.browser.conftest import SHOTS
from tests.browser.helpers import open_tab, pick_first_checkpoint, saved_pngs, set_number, wait_for_result
from tests.browser.test_scripts_browser import choose
from webui.infotext import parse_infotext

pytestmark = pytest.mark.browser


def tiny_img2img(page, tmp_path: Path, prompt: str) -> None:
    """Pick the first checkpoint, open img2img, upload a 64x64 picture and set 2 steps and seed 5."""
    pick_first_checkpoint(page)
    open_tab(page, "img2img")
    picture = Image.new("RGB", (64, 64), (40, 90, 200))
    ImageDraw.Draw(picture).ellipse((20, 20, 44, 44), fill=(230, 200, 30))
    picture.save(tmp_path / "picture.png")
    page.set_input_files("#img2img_image input[type=file]", str(tmp_path / "picture.png"))
    expect(page.locator("#img2img_width input[type=number]")).to_have_value("64")  # the size follows the upload
    expect(page.locator("#img2img_height input[type=number]")).to_have_value("64")
    page.fill("#img2img_prompt textarea", prompt)
    set_number(page, "img2img_steps", 2)
    page.fill("#img2img_seed input", "5")


def gallery_sizes(page) -> list[tuple[int, int]]:
    """The natural sizes of the images the gallery shows, in its order."""
    return [tuple(size) for size in page.locator("#img2img_gallery .thumbnail-item img").evaluate_all(
        "images => images.map(i => [i.naturalWidth, i.naturalHeight])")]


def test_sd_upscale_from_the_img2img_script_dropdown(page, server, tmp_path: Path) -> None:
    tiny_img2img(page, tmp_path, "a yellow ball")
    expect(page.locator("#img2img_sd_upscale_overlap")).to_be_hidden()  # its controls show once it is picked
    choose(page, "img2img_script", "SD upscale")
    expect(page.locator("#img2img_sd_upscale_overlap")).to_be_visible()
    expect(page.locator("#img2img_sd_upscale_scale")).to_be_visible()
    expect(page.locator("#img2img_sd_upscale_upscaler")).to_be_visible()
    expect(page.locator("#img2img_loopback_loops")).to_be_hidden()
    set_number(page, "img2img_sd_upscale_overlap", 16)
    set_number(page, "img2img_sd_upscale_scale", 2)
    page.locator("#img2img_sd_upscale_upscaler label", has_text="Lanczos").click()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path="/tmp/rest34-sd-upscale-controls.png", full_page=True)

    page.click("#img2img_generate")
    wait_for_result(page, "img2img")
    expect(page.locator("#img2img_gallery .thumbnail-item")).to_have_count(1)  # the picture, not its tiles
    page.screenshot(path="/tmp/rest34-sd-upscale-result.png", full_page=True)
    assert gallery_sizes(page) == [(128, 128)]
    [saved] = saved_pngs(server.outputs, "img2img")
    with Image.open(saved) as image:
        assert image.size == (128, 128)
        params = parse_infotext(image.info["parameters"])
    assert params["SD upscale overlap"] == "16" and params["SD upscale upscaler"] == "Lanczos"
    assert params["Size"] == "64x64"  # each tile's size
    info = page.locator("#img2img_info textarea").input_value()
    assert "SD upscale overlap: 16" in info
    assert not (server.outputs / "img2img-grids").exists()


def test_loopback_from_the_img2img_script_dropdown(page, server, tmp_path: Path) -> None:
    tiny_img2img(page, tmp_path, "a yellow ball")
    expect(page.locator("#img2img_loopback_loops")).to_be_hidden()
    choose(page, "img2img_script", "Loopback")
    expect(page.locator("#img2img_loopback_loops")).to_be_visible()
    expect(page.locator("#img2img_loopback_final")).to_be_visible()
    expect(page.locator("#img2img_loopback_curve")).to_be_visible()
    expect(page.locator("#img2img_sd_upscale_overlap")).to_be_hidden()
    set_number(page, "img2img_loopback_loops", 3)
    set_number(page, "img2img_loopback_final", 0.2)
    page.screenshot(path="/tmp/rest34-loopback-controls.png", full_page=True)

    page.click("#img2img_generate")
    wait_for_result(page, "img2img")
    expect(page.locator("#img2img_gallery .thumbnail-item")).to_have_count(1 + 3)  # the grid, then the loops
    page.screenshot(path="/tmp/rest34-loopback-result.png", full_page=True)
    assert gallery_sizes(page) == [(3 * 64, 64)] + [(64, 64)] * 3
    loops = saved_pngs(server.outputs, "img2img")
    assert len(loops) == 3
    params = []
    for path in loops:
        with Image.open(path) as image:
            params.append(parse_infotext(image.info["parameters"]))
    assert [p["Loopback"] for p in params] == ["1/3", "2/3", "3/3"]
    assert [p["Seed"] for p in params] == ["5", "6", "7"]
    assert params[-1]["Denoising strength"] == "0.2" and {p["Final denoising strength"] for p in params} == {"0.2"}
    [grid] = sorted((server.outputs / "img2img-grids").rglob("*.png"))
    with Image.open(grid) as image:
        assert image.size == (3 * 64, 64)
