"""Small Playwright helpers for Easel's Gradio page (elements are found by the elem_ids the UI sets)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from PIL import Image
from playwright.sync_api import expect


def open_tab(page: Any, tab_id: str) -> None:
    page.click(f"button[role=tab][data-tab-id='{tab_id}']")
    expect(page.locator(f"button[role=tab][data-tab-id='{tab_id}']")).to_have_attribute("aria-selected", "true")


def pick_first_checkpoint(page: Any) -> str:
    """Open the checkpoint dropdown, choose the first model listed, return its name."""
    page.click("#checkpoint input")
    option = page.locator("[role=option]").first
    expect(option).to_be_visible()
    name = option.get_attribute("aria-label") or option.inner_text().strip()
    option.click()
    expect(page.locator("#checkpoint input")).to_have_value(name)
    return name


def set_number(page: Any, elem_id: str, value: float | int) -> None:
    """Type into the number box of a slider or number control and leave it, so Gradio takes the value."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")
    expect(box).to_have_value(str(value))


def fill_prompt(page: Any, mode: str, text: str) -> None:
    page.fill(f"#{mode}_prompt textarea", text)


def tiny_txt2img(page: Any, prompt: str, seed: int, steps: int = 2, size: int = 64) -> str:
    """Pick the first checkpoint and set a small txt2img job (prompt, size x size, steps, seed); its name."""
    name = pick_first_checkpoint(page)
    fill_prompt(page, "txt2img", prompt)
    set_number(page, "txt2img_width", size)
    set_number(page, "txt2img_height", size)
    set_number(page, "txt2img_steps", steps)
    page.fill("#txt2img_seed input", str(seed))
    return name


def generate_one(page: Any, outputs: Path, mode: str = "txt2img") -> tuple[Path, str]:
    """Press Generate, wait for the result, and return the one PNG saved and its infotext."""
    page.click(f"#{mode}_generate")
    wait_for_result(page, mode)
    files = saved_pngs(outputs, mode)
    assert len(files) == 1, files
    with Image.open(files[0]) as image:
        return files[0], image.info["parameters"]


def wait_for_result(page: Any, mode: str, timeout: float = 180_000) -> None:
    """Wait until the job ended (progress says Done) and the gallery shows an image."""
    expect(page.locator(f"#{mode}_progress")).to_contain_text(re.compile(r"Done|Failed|Interrupted"),
                                                               timeout=timeout)
    expect(page.locator(f"#{mode}_progress")).to_contain_text("Done")
    expect(page.locator(f"#{mode}_gallery img").first).to_be_visible()


def saved_pngs(outputs: Path, mode: str) -> list[Path]:
    return sorted((outputs / f"{mode}-images").rglob("*.png"))


def draw_stroke(page: Any, canvas_selector: str, points: list[tuple[float, float]]) -> None:
    """Drag the mouse through `points`, given as fractions (0..1) of the canvas box."""
    box = page.locator(canvas_selector).first.bounding_box()
    assert box is not None, "the canvas is not visible"

    def at(point: tuple[float, float]) -> tuple[float, float]:
        return box["x"] + point[0] * box["width"], box["y"] + point[1] * box["height"]

    page.mouse.move(*at(points[0]))
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*at(point), steps=4)
    page.mouse.up()


def assert_shown_whole(page: Any, gallery_id: str, min_height: float) -> None:
    """The gallery's first result is drawn at least `min_height` px tall and lies inside the gallery's visible
    area (not cut off below its fold)."""
    shown = page.locator(f"#{gallery_id} .thumbnail-item").first.bounding_box()
    area = page.locator(f"#{gallery_id} .grid-wrap").first.bounding_box()
    assert shown["height"] > min_height and shown["y"] + shown["height"] <= area["y"] + area["height"] + 1, \
        (shown, area)
