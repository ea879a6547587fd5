"""The Script dropdown in the browser: pick X/Y/Z plot on txt2img, set two axes, generate; the gallery shows the
grid first (saved under txt2img-grids with the axes in its infotext), then the four images."""
from __future__ import annotations

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.browser.conftest import SHOTS
from tests.browser.helpers import saved_pngs, tiny_txt2img, wait_for_result
from webui.infotext import parse_infotext

pytestmark = pytest.mark.browser


def choose(page, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    page.locator("[role=option]", has_text=option).first.click()


def test_xyz_plot_from_the_script_dropdown(page, server) -> None:
    tiny_txt2img(page, "a red cube", seed=5)
    expect(page.locator("#txt2img_xyz_x_values")).to_be_hidden()  # controls appear only once the script is picked
    choose(page, "txt2img_script", "X/Y/Z plot")
    expect(page.locator("#txt2img_xyz_x_values")).to_be_visible()
    choose(page, "txt2img_xyz_x_type", "Steps")
    page.fill("#txt2img_xyz_x_values textarea", "1, 2")
    choose(page, "txt2img_xyz_y_type", "CFG Scale")
    page.fill("#txt2img_xyz_y_values textarea", "3, 7")
    page.click("#txt2img_generate")
    wait_for_result(page, "txt2img")
    expect(page.locator("#txt2img_gallery .thumbnail-item")).to_have_count(5)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "xyz-plot-desktop.png"), full_page=True)

    [grid_path] = sorted((server.outputs / "txt2img-grids").rglob("*.png"))
    with Image.open(grid_path) as grid:
        params = parse_infotext(grid.info["parameters"])
        assert grid.width > 128 and grid.height > 128
    assert (params["Script"], params["X Type"], params["X Values"], params["Y Type"]) == \
        ("X/Y/Z plot", "Steps", "1, 2", "CFG Scale")
    cells = saved_pngs(server.outputs, "txt2img")
    assert len(cells) == 4
    # the gallery's first item is the grid: the parameters shown are the grid's, with the axes
    info = page.locator("#txt2img_info textarea").input_value()
    assert "X Type: Steps" in info and "Y Type: CFG Scale" in info
