"""The txt2img tab's Regional prompts accordion in Chromium on the tiny SD 1.x model: tick it, two columns with
their prompts, Generate → the image is saved with `Regional prompts` in its infotext (attention coupling ran on
the SD UNet); the painted-masks editor opens under it."""
from __future__ import annotations

import json

from playwright.sync_api import expect

from tests.browser.helpers import generate_one, tiny_txt2img
from webui.infotext import parse_infotext

SHOT = "/tmp/regional37-{}.png"


def test_regional_accordion_on_an_sd_model(page, server) -> None:
    page.wait_for_selector("#txt2img_generate")
    tiny_txt2img(page, "a photo", seed=3, steps=2, size=64)
    page.click("#txt2img_regional")
    page.locator("#txt2img_regional_enable input").check()
    expect(page.locator("#txt2img_regional_prompts textarea")).to_be_visible()
    page.fill("#txt2img_regional_prompts textarea", "red apple BREAK blue sky")
    page.locator("#txt2img_regional_ratios input").fill("1,2")
    page.locator("#txt2img_regional").scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    page.screenshot(path=SHOT.format("accordion"), full_page=False)
    _, text = generate_one(page, server.outputs)
    regions = json.loads(parse_infotext(text)["Regional prompts"])["regions"]
    assert [r["prompt"] for r in regions] == ["red apple", "blue sky"], text
    assert regions[1]["box"] == [0.3333, 0.0, 1.0, 1.0], text  # ratios 1,2: the right column is two thirds
    page.click("#txt2img_regional_paint_box")
    expect(page.locator("#txt2img_regional_paint canvas").first).to_be_visible()
    page.locator("#txt2img_regional_paint").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=SHOT.format("painted"), full_page=False)
