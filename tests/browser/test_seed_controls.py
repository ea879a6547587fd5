"""The "Extra" seed controls in a real browser: open them, set a variation seed and strength, generate, read the
infotext; then paste that image through PNG Info and see the controls filled and shown again."""
from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import SHOTS
from tests.browser.helpers import generate_one, open_tab, set_number, tiny_txt2img


def test_extra_seed_controls_make_a_variation(page, server) -> None:
    tiny_txt2img(page, "a small red house", seed=1234)

    expect(page.locator("#txt2img_subseed input")).to_be_hidden()
    page.click("#txt2img_subseed_show input[type=checkbox]")
    expect(page.locator("#txt2img_subseed input")).to_be_visible()
    page.fill("#txt2img_subseed input", "77")
    page.locator("#txt2img_subseed input").press("Tab")
    set_number(page, "txt2img_subseed_strength", 0.5)
    set_number(page, "txt2img_seed_resize_from_w", 96)
    set_number(page, "txt2img_seed_resize_from_h", 32)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "txt2img-seed-extra-desktop.png"), full_page=True)
    saved, text = generate_one(page, server.outputs)
    assert "Seed: 1234," in text
    assert "Variation seed: 77, Variation seed strength: 0.5, Seed resize from: 96x32" in text
    expect(page.locator("#txt2img_info textarea")).to_have_value(text)

    # a fresh page: PNG Info sends the image's parameters back, ticking "Extra" so they show
    page.reload()
    page.wait_for_selector("#txt2img_generate")
    expect(page.locator("#txt2img_subseed input")).to_be_hidden()
    open_tab(page, "png_info")
    page.set_input_files("#png_info_image input[type=file]", str(saved))
    expect(page.locator("#png_info_text textarea")).to_have_value(text)
    page.click("#png_info_send_to_txt2img")
    expect(page.locator("button[role=tab][data-tab-id='txt2img']")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#txt2img_subseed_show input[type=checkbox]")).to_be_checked()
    expect(page.locator("#txt2img_subseed input")).to_be_visible()
    expect(page.locator("#txt2img_subseed input")).to_have_value("77")
    expect(page.locator("#txt2img_subseed_strength input[type=number]")).to_have_value("0.5")
    expect(page.locator("#txt2img_seed_resize_from_w input[type=number]")).to_have_value("96")
    expect(page.locator("#txt2img_seed_resize_from_h input[type=number]")).to_have_value("32")
