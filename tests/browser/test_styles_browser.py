"""Prompt styles in the browser: pick a style beside the prompt and generate (the saved PNG keeps the prompt as
typed and names the style), apply a style into the prompt box, save a new style from the editor (every tab lists
it; an empty name is refused naming the field), delete it (styles.csv.bak keeps the previous file), and paste
parameters that name a style back from PNG Info."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.browser.conftest import SHOTS
from tests.browser.helpers import fill_prompt, open_tab, saved_pngs, tiny_txt2img, wait_for_result
from webui.infotext import parse_infotext
from webui.styles import read_style_file

pytestmark = pytest.mark.browser

STYLES = 'name,prompt,negative_prompt\nink,"ink wash painting of {prompt}",blurry\ngrain,film grain,\n'


@pytest.fixture
def styles_csv(tmp_path: Path) -> Path:
    """styles.csv in the data dir the server fixture builds its Easel over (tmp_path/data), before it starts."""
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    path = data / "styles.csv"
    path.write_text(STYLES, encoding="utf-8")
    return path


def choose(page, elem_id: str, option: str) -> None:
    """Open a dropdown and click one of its options."""
    page.click(f"#{elem_id} input")
    page.locator("[role=option]", has_text=option).first.click()


def test_pick_a_style_generate_and_apply_it_to_the_prompt(styles_csv, page, server) -> None:
    tiny_txt2img(page, "a red cube", seed=5)
    choose(page, "txt2img_styles", "ink")
    page.keyboard.press("Escape")
    expect(page.locator("#txt2img_styles")).to_contain_text("ink")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "styles-picked-desktop.png"), full_page=True)
    page.click("#txt2img_generate")
    wait_for_result(page, "txt2img")

    [saved] = saved_pngs(server.outputs, "txt2img")
    with Image.open(saved) as image:
        params = parse_infotext(image.info["parameters"])
    assert params["Prompt"] == "a red cube" and params["Styles array"] == '["ink"]'
    assert params["Negative prompt"] == ""  # as typed: the style's negative text is not written into it

    page.click("#txt2img_styles_apply")
    expect(page.locator("#txt2img_prompt textarea")).to_have_value("ink wash painting of a red cube")
    expect(page.locator("#txt2img_negative_prompt textarea")).to_have_value("blurry")
    expect(page.locator("#txt2img_styles")).not_to_contain_text("ink")

    # PNG Info -> Send to txt2img: the prompts as typed and the style selected again
    open_tab(page, "png_info")
    page.set_input_files("#png_info_image input[type=file]", str(saved))
    expect(page.locator("#png_info_fields")).to_contain_text("Styles array")
    page.click("#png_info_send_to_txt2img")
    expect(page.locator("#txt2img_prompt textarea")).to_have_value("a red cube")
    expect(page.locator("#txt2img_negative_prompt textarea")).to_have_value("")
    expect(page.locator("#txt2img_styles")).to_contain_text("ink")


def test_save_a_style_from_the_editor_and_delete_it(styles_csv, page, server) -> None:
    fill_prompt(page, "txt2img", "a castle, sepia tone")
    page.click("#txt2img_styles_editor")
    page.click("#txt2img_style_save")  # no name yet
    expect(page.get_by_text("style name: is empty")).to_be_visible()
    assert styles_csv.read_text(encoding="utf-8") == STYLES

    page.click("#txt2img_style_copy")
    expect(page.locator("#txt2img_style_prompt textarea")).to_have_value("a castle, sepia tone")
    page.fill("#txt2img_style_prompt textarea", "{prompt}, sepia tone")
    page.fill("#txt2img_style_negative textarea", "colour")
    name_box = page.locator("#txt2img_style_name input")
    name_box.fill("sepia")
    name_box.press("Enter")
    page.click("#txt2img_style_save")
    expect(page.get_by_text("Style 'sepia' saved in styles.csv")).to_be_visible()
    assert [(s.name, s.prompt, s.negative_prompt) for s in read_style_file(styles_csv).styles()][-1] == \
        ("sepia", "{prompt}, sepia tone", "colour")
    assert (styles_csv.parent / "styles.csv.bak").read_text(encoding="utf-8") == STYLES
    page.screenshot(path=str(SHOTS / "styles-editor-desktop.png"), full_page=True)

    # every generation tab lists the new style at once
    open_tab(page, "img2img")
    page.click("#img2img_styles input")
    expect(page.locator("[role=option]", has_text="sepia")).to_be_visible()
    page.keyboard.press("Escape")

    # picking a style in the editor loads its texts; Delete removes it from the file
    open_tab(page, "txt2img")
    page.fill("#txt2img_style_prompt textarea", "")
    choose(page, "txt2img_style_name", "grain")
    expect(page.locator("#txt2img_style_prompt textarea")).to_have_value("film grain")
    page.click("#txt2img_style_delete")
    expect(page.get_by_text("Style 'grain' deleted from styles.csv")).to_be_visible()
    assert [s.name for s in read_style_file(styles_csv).styles()] == ["ink", "sepia"]
    assert server.easel.styles.names() == ["ink", "sepia"]
