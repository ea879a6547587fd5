"""The Detail fixer accordion in a real browser: tick it, say what to find, generate (a tiny CLIPSeg finds the
regions on the tiny SD model), read the passes in the infotext; then send the image back through PNG Info and see
the accordion filled."""
from __future__ import annotations

import shutil
from typing import Iterator

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import SHOTS, Server, free_port, serving
from tests.browser.helpers import generate_one, open_tab, set_number, tiny_txt2img


@pytest.fixture
def server(make_easel, tmp_path, tmp_path_factory) -> Iterator[Server]:
    from tests.tiny_models import make_tiny_clipseg

    clipseg = make_tiny_clipseg(tmp_path_factory.mktemp("clipseg") / "tiny-clipseg")
    shutil.copytree(clipseg, tmp_path / "data" / "models" / "clipseg" / "tiny-clipseg")
    yield from serving(make_easel(port=free_port()))


def test_detail_fixer_accordion_runs_a_pass_and_comes_back_from_png_info(page, server) -> None:
    tiny_txt2img(page, "a red circle", seed=7)
    page.click("#txt2img_detail")  # open the accordion
    page.click("#txt2img_detail_enable input[type=checkbox]")
    page.fill("#txt2img_detail_query input", "the red circle")
    set_number(page, "txt2img_detail_denoising", 0.5)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "txt2img-detail-fixer-desktop.png"), full_page=True)
    saved, text = generate_one(page, server.outputs)
    assert 'Detail 1 query: the red circle, Detail 1 denoising: 0.5' in text and "Detail 1 regions:" in text

    page.reload()
    page.wait_for_selector("#txt2img_generate")
    open_tab(page, "png_info")
    page.set_input_files("#png_info_image input[type=file]", str(saved))
    expect(page.locator("#png_info_text textarea")).to_have_value(text)
    page.click("#png_info_send_to_txt2img")
    expect(page.locator("button[role=tab][data-tab-id='txt2img']")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#txt2img_detail_enable input[type=checkbox]")).to_be_checked()
    expect(page.locator("#txt2img_detail_query input")).to_have_value("the red circle")
    expect(page.locator("#txt2img_detail_denoising input[type=number]")).to_have_value("0.5")
    page.screenshot(path=str(SHOTS / "txt2img-detail-fixer-sent-desktop.png"), full_page=True)
