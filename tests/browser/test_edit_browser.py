"""The Edit tab in Chromium on the shipped built-in model: upload a scene, "make the red circle blue", Edit →
the before/after slider and the history show the result (saved with its instruction as the infotext's first
line, the circle blue); Undo → the history is empty again and the editor holds the original picture."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import expect

from tests.browser.conftest import DESKTOP, free_port
from tests.browser.helpers import saved_pngs, set_number
from tests.edit.conftest import red_circle_scene
from tests.segment.conftest import builtin_root  # noqa: F401 - the fixture

SHOT = "/tmp/edit37-{}.png"


def open_edit_tab(page) -> None:
    button = page.locator("button[role=tab][data-tab-id='edit']")
    if not button.is_visible():  # the tab row overflowed into "More tabs"
        page.click("#tabs button[aria-label='More tabs']")
        button = page.locator("#tabs .overflow-dropdown button", has_text="Edit")
    button.click()
    expect(page.locator("#tab_edit")).to_be_visible()


def test_edit_tab_one_edit_and_undo(browser, make_easel, builtin_root, tmp_path: Path) -> None:  # noqa: F811
    from webui.app import create_server

    easel = make_easel(builtin_dir=builtin_root, port=free_port())
    _, url = create_server(easel, block=False)
    source, coverage, target = red_circle_scene()
    picture = tmp_path / "scene.png"
    source.save(picture)
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(30_000)
    expect.set_options(timeout=30_000)  # as the page fixture: a loaded machine takes longer than 5 s to draw a tab
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(url)
        page.wait_for_selector("#txt2img_generate")
        open_edit_tab(page)
        expect(page.locator("#edit_checkpoint input")).to_have_value("easel-shapes")
        expect(page.locator("#edit_editor canvas").first).to_be_visible()  # the editor has set itself up
        page.wait_for_timeout(500)
        page.set_input_files("#edit_editor input[type=file]", str(picture))
        page.fill("#edit_instruction textarea", "make the red circle blue")
        set_number(page, "edit_steps", 8)
        page.fill("#edit_seed input", "1")
        page.click("#edit_run")
        expect(page.locator("#edit_progress")).to_contain_text("Done", timeout=120_000)
        expect(page.locator("#edit_slider img").first).to_be_visible()
        expect(page.locator("#edit_history img")).to_have_count(1)
        expect(page.locator("#edit_info textarea")).to_have_value(
            __import__("re").compile(r"^make the red circle blue\nSeed: 1, Steps: 8"))
        page.wait_for_timeout(800)
        page.screenshot(path=SHOT.format("edited"), full_page=False)
        page.locator("#edit_history").screenshot(path=SHOT.format("history"))
        shown = page.locator("#edit_history img").first.bounding_box()
        assert shown is not None and shown["height"] > 40, shown  # the thumbnail is drawn, not collapsed

        files = saved_pngs(easel.settings.outputs_dir, "edit")
        assert len(files) == 1
        with Image.open(files[0]) as image:
            assert image.info["parameters"].startswith("make the red circle blue\n")
            result = np.asarray(image.convert("RGB"), np.int16)
        inside = coverage > 0.99
        assert np.abs(result - np.asarray(target, np.int16))[inside].mean() < 12  # the circle is blue

        page.click("#edit_undo")
        expect(page.locator("#edit_history img")).to_have_count(0)
        expect(page.locator("#edit_info textarea")).to_have_value("")
        expect(page.locator("#edit_slider img")).to_have_count(0)
        page.wait_for_timeout(800)
        page.screenshot(path=SHOT.format("undone"), full_page=False)
        # The txt2img tab's regional prompts accordion opens and shows its controls.
        page.click("button[role=tab][data-tab-id='txt2img']")
        page.click("#txt2img_regional")
        expect(page.locator("#txt2img_regional_prompts textarea")).to_be_visible()
        page.locator("#txt2img_regional").scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        page.screenshot(path=SHOT.format("regional-accordion"), full_page=False)
        assert not errors, f"JavaScript errors in the page: {errors}"
    finally:
        context.close()
        blocks = easel.extras.get("blocks")
        if blocks is not None:
            blocks.close()
