"""The Browse tab in the browser: an image generated in txt2img and images copied into outputs/ by hand are all
listed; a search finds one, picking it shows its parameters, Send to txt2img fills the prompt; Delete moves a
file to the trash and Restore brings it back."""
from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import DESKTOP, PHONE, SHOTS
from tests.browser.helpers import generate_one, open_tab, tiny_txt2img
from tests.core.test_gallery_index import write

pytestmark = pytest.mark.browser


@pytest.fixture
def copied_in(tmp_path: Path) -> Path:
    """Three PNGs put into the outputs folder outside Easel, before the server starts."""
    outputs = tmp_path / "data" / "outputs"
    for number, prompt in enumerate(["a red circle", "a blue square", "a yellow star"]):
        write(outputs, f"img2img-images/2026-11-2{number}/0000{number}-{number}.png", prompt, 100 + number,
              mtime=1_700_000_000 + number)
    return outputs


def test_browse_search_send_delete_and_restore(copied_in, page, server) -> None:
    tiny_txt2img(page, "a green moon", seed=5)
    generated, _ = generate_one(page, server.outputs)

    open_tab(page, "browse")
    expect(page.locator("#browse_status")).to_contain_text("4 images · page 1 of 1")
    expect(page.locator("#browse_gallery .thumbnail-item")).to_have_count(4)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "browse-all-desktop.png"), full_page=True)
    page.fill("#browse_search textarea", "moon")
    page.press("#browse_search textarea", "Enter")
    expect(page.locator("#browse_status")).to_contain_text("1 image · page 1 of 1")
    page.locator("#browse_gallery .thumbnail-item").first.click()
    info = page.locator("#browse_info textarea")
    expect(info).not_to_have_value("")
    assert info.input_value().startswith("a green moon") and "Seed: 5" in info.input_value()
    expect(page.locator("#browse_details")).to_contain_text(generated.name)
    expect(page.locator("#browse_image img")).to_be_visible()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "browse-search-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    expect(page.locator("#browse_gallery .thumbnail-item")).to_have_count(1)
    page.screenshot(path=str(SHOTS / "browse-search-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)

    page.click("#browse_send_to_txt2img")
    expect(page.locator("button[role=tab][data-tab-id='txt2img']")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#txt2img_prompt textarea")).to_have_value("a green moon")

    open_tab(page, "browse")
    page.fill("#browse_search textarea", "square")
    page.click("#browse_run")
    expect(page.locator("#browse_status")).to_contain_text("1 image · page 1 of 1")
    page.locator("#browse_gallery .thumbnail-item").first.click()
    expect(page.locator("#browse_details")).to_contain_text("00001-1.png")
    square = copied_in / "img2img-images/2026-11-21/00001-1.png"
    content = square.read_bytes()
    page.click("#browse_delete")
    expect(page.locator("#browse_status")).to_contain_text("0 images · page 1 of 1")  # the search still applies
    assert not square.exists()
    trash = server.easel.settings.data_dir / "gallery" / "trash"
    [stored] = list(trash.iterdir())
    assert stored.read_bytes() == content

    page.locator("#browse_view label", has_text="Trash").click()
    expect(page.locator("#browse_status")).to_contain_text("1 deleted image · page 1 of 1")
    page.locator("#browse_gallery .thumbnail-item").first.click()
    expect(page.locator("#browse_details")).to_contain_text("In the trash; was img2img-images/2026-11-21/00001-1.png")
    page.screenshot(path=str(SHOTS / "browse-trash-desktop.png"), full_page=True)
    page.click("#browse_restore")
    expect(page.locator("#browse_status")).to_contain_text("0 deleted images")
    assert square.read_bytes() == content and list(trash.iterdir()) == []
    page.locator("#browse_view label", has_text="Images").click()
    expect(page.locator("#browse_status")).to_contain_text("1 image · page 1 of 1")
    page.fill("#browse_search textarea", "")
    page.click("#browse_run")
    expect(page.locator("#browse_status")).to_contain_text("4 images · page 1 of 1")


def test_browse_on_a_phone_shows_the_buttons_of_its_view_and_whole_date_hints(copied_in, page) -> None:
    open_tab(page, "browse")  # (a phone folds the tab row into a menu)
    expect(page.locator("#browse_status")).to_contain_text("3 images · page 1 of 1")
    page.set_viewport_size(PHONE)
    expect(page.locator("#browse_delete")).to_be_visible()
    expect(page.locator("#browse_restore")).to_be_hidden()
    for name in ("from", "to"):  # the hint is on one line (an <input>), whole: its text fits inside the box
        box = page.locator(f"#browse_{name} input, #browse_{name} textarea").first
        expect(box).to_be_visible()
        assert box.evaluate("e => e.tagName") == "INPUT", name
        room, needed = box.evaluate("""e => {
            const style = getComputedStyle(e);
            const context = document.createElement("canvas").getContext("2d");
            context.font = style.font;
            const room = e.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
            return [room, context.measureText(e.placeholder).width];
        }""")
        assert needed <= room, f"{name}: the hint needs {needed:.0f} px, the box has {room:.0f}"
    favourites = page.locator("#browse_favourites").evaluate("e => e.getBoundingClientRect().width")
    assert favourites >= 120, f"'Favourites only' squeezed into {favourites:.0f} px"
    page.locator("#browse_from").screenshot(path="/tmp/rest34b-browse-date-phone.png")
    page.screenshot(path="/tmp/rest34b-browse-images-phone.png", full_page=True)
    page.locator("#browse_view label", has_text="Trash").click()
    expect(page.locator("#browse_status")).to_contain_text("0 deleted images")
    expect(page.locator("#browse_restore")).to_be_visible()
    expect(page.locator("#browse_delete")).to_be_hidden()
    expect(page.locator("#browse_favourite")).to_be_hidden()
    page.screenshot(path="/tmp/rest34b-browse-trash-phone.png", full_page=True)
