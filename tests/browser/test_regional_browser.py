"""The txt2img tab's Regional prompts accordion in Chromium on the tiny SD 1.x model: tick it, two columns with
their prompts, Generate → the image is saved with `Regional prompts` in its infotext (attention coupling ran on
the SD UNet); then Painted masks: Generate with nothing painted is an error naming the masks, a brush stroke on
the editor's first layer is the region (`"mask": "painted WxH"` in the infotext)."""
from __future__ import annotations

import json
import re

from PIL import Image
from playwright.sync_api import expect

from tests.browser.helpers import draw_stroke, generate_one, saved_pngs, tiny_txt2img, wait_for_result
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

    # Painted masks: nothing painted yet is an error naming the masks; a stroke on layer 1 is the region.
    page.locator("#txt2img_regional_divide label", has_text="Painted masks").click()
    page.fill("#txt2img_regional_prompts textarea", "red apple")
    page.click("#txt2img_regional_paint_box")
    expect(page.locator("#txt2img_regional_paint canvas").first).to_be_visible()
    page.click("#txt2img_generate")
    expect(page.get_by_text(re.compile(r"masks: needs one mask per prompt"))).to_be_visible()
    assert len(saved_pngs(server.outputs, "txt2img")) == 1
    page.click("#txt2img_regional_paint button[aria-label=Brush]")
    page.locator("#txt2img_regional_paint").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    draw_stroke(page, "#txt2img_regional_paint canvas", [(0.3, 0.3), (0.35, 0.5), (0.4, 0.7)])
    page.wait_for_timeout(500)
    page.screenshot(path=SHOT.format("painted"), full_page=False)
    page.click("#txt2img_generate")
    # the progress still says Done from the first image: wait for this image's parameters instead
    expect(page.locator("#txt2img_info textarea")).to_have_value(re.compile("painted"), timeout=180_000)
    wait_for_result(page, "txt2img")
    files = saved_pngs(server.outputs, "txt2img")
    assert len(files) == 2, files
    with Image.open(files[-1]) as saved:
        regions = json.loads(parse_infotext(saved.info["parameters"])["Regional prompts"])["regions"]
    assert len(regions) == 1 and regions[0]["prompt"] == "red apple", regions
    assert regions[0]["mask"].startswith("painted "), regions
