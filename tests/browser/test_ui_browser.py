"""End-to-end: a real Easel server and headless Chromium.

Pick the first model, type a prompt, Generate → an image in the gallery and a saved PNG whose parameters text
carries the prompt and seed; paint a mask on the Inpaint editor and inpaint (pixels far from the strokes stay
as they were); start a long job with Ctrl+Enter and interrupt it; PNG Info → Send to txt2img fills the controls.
Screenshots of every tab at desktop and phone width go to /tmp/easel-shots/.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, PngImagePlugin
from playwright.sync_api import expect

from tests.browser.conftest import DESKTOP, PHONE, SHOTS
from tests.browser.helpers import (assert_shown_whole, tiny_txt2img, draw_stroke, fill_prompt, open_tab, pick_first_checkpoint,
                                   saved_pngs, set_number, wait_for_result)

pytestmark = pytest.mark.browser


def test_txt2img_generates_and_saves_the_infotext(page, server) -> None:
    name = tiny_txt2img(page, "a small red house", seed=1234, steps=3)
    page.click("#txt2img_generate")
    wait_for_result(page, "txt2img")

    files = saved_pngs(server.outputs, "txt2img")
    assert len(files) == 1 and files[0].name.endswith("-1234.png")
    with Image.open(files[0]) as image:
        text = image.info["parameters"]
        assert image.size == (64, 64)
    assert text.startswith("a small red house\n")
    assert "Steps: 3," in text and "Seed: 1234," in text and f"Model: {name}" in text
    expect(page.locator("#txt2img_info textarea")).to_have_value(text)
    # the single result is shown whole, inside the gallery's visible area (not cut off below its fold)
    assert_shown_whole(page, "txt2img_gallery", 200)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "txt2img-result-desktop.png"), full_page=True)

    # Send the result on to img2img: the image and its parameters come along.
    page.click("#txt2img_send_to_img2img")
    expect(page.locator("button[role=tab][data-tab-id='img2img']")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#img2img_prompt textarea")).to_have_value("a small red house")
    expect(page.locator("#img2img_seed input")).to_have_value("1234")
    expect(page.locator("#img2img_steps input[type=number]")).to_have_value("3")
    expect(page.locator("#img2img_image img").first).to_be_visible()

    # ... and to Inpaint, whose editor gets the picture to paint on.
    open_tab(page, "txt2img")
    page.click("#txt2img_send_to_inpaint")
    expect(page.locator("button[role=tab][data-tab-id='inpaint']")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#inpaint_prompt textarea")).to_have_value("a small red house")
    expect(page.locator("#inpaint_width input[type=number]")).to_have_value("64")
    expect(page.locator("#inpaint_editor canvas").first).to_be_visible()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(SHOTS / "inpaint-received-desktop.png"), full_page=False)

    # ... and to Segment, whose image input gets it.
    open_tab(page, "txt2img")
    page.click("#txt2img_send_to_segment")
    expect(page.locator("button[role=tab][data-tab-id='segment']")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#segment_image img").first).to_be_visible()


def _input_picture(path: Path) -> Path:
    image = Image.new("RGB", (64, 64), (40, 90, 200))
    ImageDraw.Draw(image).ellipse((20, 20, 44, 44), fill=(230, 200, 30))
    image.save(path)
    return path


def test_inpaint_with_a_mask_drawn_in_the_browser(page, server, tmp_path: Path) -> None:
    pick_first_checkpoint(page)
    open_tab(page, "inpaint")
    picture = _input_picture(tmp_path / "picture.png")
    expect(page.locator("#inpaint_editor canvas").first).to_be_visible()  # the editor has set itself up
    page.wait_for_timeout(500)
    page.set_input_files("#inpaint_editor input[type=file]", str(picture))
    expect(page.locator("#inpaint_width input[type=number]")).to_have_value("64")  # size follows the upload
    fill_prompt(page, "inpaint", "a green square")
    set_number(page, "inpaint_steps", 3)

    # Nothing painted yet: the error names the mask, in words, not a traceback.
    page.click("#inpaint_generate")
    expect(page.get_by_text(re.compile("a mask is required"))).to_be_visible()
    assert not saved_pngs(server.outputs, "inpaint")

    page.click("#inpaint_editor button[aria-label=Brush]")
    draw_stroke(page, "#inpaint_editor canvas", [(0.46, 0.47), (0.50, 0.50), (0.54, 0.53)])
    page.click("#inpaint_generate")
    wait_for_result(page, "inpaint")

    files = saved_pngs(server.outputs, "inpaint")
    assert len(files) == 1
    with Image.open(files[0]) as image:
        text = image.info["parameters"]
        result = np.asarray(image.convert("RGB")).astype(int)  # (64, 64, 3)
    assert "a green square" in text and "Mask blur: 4" in text and "Masked content: original" in text
    original = np.asarray(Image.open(picture).convert("RGB")).astype(int)
    changed = np.abs(result - original).max(axis=-1) > 0  # (64, 64)
    assert changed[28:36, 28:36].any(), "the painted middle was not repainted"
    for corner in (changed[:4, :4], changed[:4, -4:], changed[-4:, :4], changed[-4:, -4:]):
        assert not corner.any(), "pixels far from the strokes changed"
    page.screenshot(path=str(SHOTS / "inpaint-result-desktop.png"), full_page=True)


def test_interrupt_stops_a_long_job(page, server) -> None:
    pick_first_checkpoint(page)
    fill_prompt(page, "txt2img", "a long job")
    set_number(page, "txt2img_width", 128)
    set_number(page, "txt2img_height", 128)
    set_number(page, "txt2img_steps", 150)
    page.click("#txt2img_prompt textarea")
    page.keyboard.press("Control+Enter")  # the shortcut starts it
    progress = page.locator("#txt2img_progress")
    expect(progress).to_contain_text(re.compile(r"Step ([4-9]|\d\d+)/150"), timeout=120_000)
    expect(page.locator("#txt2img_preview img")).to_be_visible()  # a live preview every 4 steps
    page.screenshot(path=str(SHOTS / "txt2img-running-desktop.png"), full_page=False)
    page.click("#txt2img_interrupt")
    expect(progress).to_contain_text("Interrupted", timeout=60_000)

    jobs = list(server.easel.engine.worker.jobs.values())
    assert len(jobs) == 1
    job = jobs[0]
    assert str(getattr(job.state, "value", job.state)) == "interrupted"
    assert job.total_steps == 150 and job.step < 75, f"stopped at step {job.step}"
    expect(progress).to_contain_text(f"Interrupted at step {job.step}/150")


def test_models_tab_hashes_and_loads(page, server) -> None:
    open_tab(page, "models")
    table = page.locator("#models_table")
    expect(table).to_contain_text(server.easel.checkpoint_choices()[0])
    page.click("#models_hash")
    expect(table).to_contain_text(re.compile(r"\b[0-9a-f]{10}\b"))
    page.click("#models_load")
    expect(table).to_contain_text("on device", timeout=60_000)
    expect(page.locator("#models_memory textarea")).to_have_value(re.compile(r"1/2 models cached"))
    page.screenshot(path=str(SHOTS / "models-loaded-desktop.png"), full_page=True)
    page.click("#models_unload_all")
    expect(page.locator("#models_memory textarea")).to_have_value(re.compile(r"0/2 models cached"), timeout=60_000)
    assert server.easel.manager.memory_report()["held"] == []


def test_settings_apply_validates_and_persists(page, server) -> None:
    open_tab(page, "settings")
    side = page.locator("#setting_max_side input")
    side.fill("100")
    page.click("#settings_apply")
    expect(page.get_by_text("max_side: must be a multiple of 8 and at least 64")).to_be_visible()
    assert not server.easel.settings.config_path.exists()

    side.fill("1024")
    page.locator("#setting_max_steps input").fill("60")
    page.click("#settings_apply")
    expect(page.locator("#settings_status")).to_contain_text("Settings saved.")
    stored = json.loads(server.easel.settings.config_path.read_text())
    assert stored["max_side"] == 1024 and stored["max_steps"] == 60
    open_tab(page, "txt2img")
    expect(page.locator("#txt2img_steps input[type=number]")).to_have_attribute("max", "60")
    expect(page.locator("#txt2img_width input[type=number]")).to_have_attribute("max", "1024")


A1111_PARAMETERS = (
    "portrait of a cat, (oil painting:1.2)\n"
    "Negative prompt: blurry\n"
    "Steps: 7, Sampler: {sampler}, Schedule type: Automatic, CFG scale: 4.5, Seed: 99, Size: 96x80, "
    "Model hash: 0123456789, Model: {model}, Denoising strength: 0.4, Clip skip: 2, Hires upscale: 1.5, "
    "Hires steps: 3, Hires upscaler: Latent, Version: v1.10.1"
)


def test_png_info_send_to_txt2img_fills_the_controls(page, server, tmp_path: Path) -> None:
    model = server.easel.checkpoint_choices()[0]
    sampler = server.easel.sampler_choices(model)[-1]  # not the default one, so the change shows
    parameters = A1111_PARAMETERS.format(model=model, sampler=sampler)
    path = tmp_path / "from-a1111.png"
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", parameters)
    Image.new("RGB", (96, 80), (120, 10, 10)).save(path, pnginfo=meta)

    open_tab(page, "png_info")
    page.set_input_files("#png_info_image input[type=file]", str(path))
    expect(page.locator("#png_info_text textarea")).to_have_value(parameters)
    expect(page.locator("#png_info_fields")).to_contain_text(sampler)
    page.screenshot(path=str(SHOTS / "png-info-desktop.png"), full_page=True)
    page.click("#png_info_send_to_txt2img")

    expect(page.locator("button[role=tab][data-tab-id='txt2img']")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#txt2img_prompt textarea")).to_have_value("portrait of a cat, (oil painting:1.2)")
    expect(page.locator("#txt2img_negative_prompt textarea")).to_have_value("blurry")
    for elem_id, value in (("txt2img_steps", "7"), ("txt2img_cfg_scale", "4.5"), ("txt2img_width", "96"),
                           ("txt2img_height", "80"), ("txt2img_clip_skip", "2"), ("txt2img_hr_scale", "1.5"),
                           ("txt2img_hr_second_pass_steps", "3"), ("txt2img_hr_denoising_strength", "0.4")):
        expect(page.locator(f"#{elem_id} input[type=number]")).to_have_value(value)
    expect(page.locator("#txt2img_seed input")).to_have_value("99")
    expect(page.locator("#txt2img_sampler input")).to_have_value(sampler)
    expect(page.locator("#checkpoint input")).to_have_value(model)
    expect(page.locator("#txt2img_enable_hr input[type=checkbox]")).to_be_checked()


def test_screenshots_at_desktop_and_phone_width(browser, server) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport)
        page = context.new_page()
        page.goto(server.url)
        page.wait_for_selector("#txt2img_generate")
        for tab_id in ("txt2img", "img2img", "inpaint", "png_info", "models", "settings"):
            button = page.locator(f"button[role=tab][data-tab-id='{tab_id}']")
            if not button.is_visible():  # at phone width some tabs sit behind the "More tabs" menu
                page.click("#tabs button[aria-label='More tabs']")
                button = page.locator("#tabs .overflow-dropdown button", has_text=_TAB_LABELS[tab_id])
            button.click()
            expect(page.locator(f"#tab_{tab_id}")).to_be_visible()
            page.wait_for_timeout(400)
            page.screenshot(path=str(SHOTS / f"{tab_id}-{label}.png"), full_page=True)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{tab_id} is {overflow}px wider than the {label} viewport"
        context.close()


_TAB_LABELS = {"txt2img": "txt2img", "img2img": "img2img", "inpaint": "Inpaint", "png_info": "PNG Info",
               "models": "Models", "settings": "Settings"}


def test_segment_tab_masks_and_sends_to_inpaint(browser, make_easel, tmp_path: Path) -> None:
    """Upload, query, Segment (tiny CLIPSeg) → a mask is shown; Send to Inpaint → the mask arrives as the
    inpainting mask (Generate runs instead of asking for one)."""
    from tests.browser.conftest import free_port
    from tests.tiny_models import make_tiny_clipseg
    from webui.app import create_server

    make_tiny_clipseg(tmp_path / "data" / "models" / "clipseg" / "tiny-clipseg")
    easel = make_easel(port=free_port())
    _, url = create_server(easel, block=False)
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        page.goto(url)
        pick_first_checkpoint(page)
        open_tab(page, "segment")
        expect(page.locator("#segment_checkpoint input")).to_have_value("tiny-clipseg (CLIPSeg)")
        page.set_input_files("#segment_image input[type=file]", str(_input_picture(tmp_path / "picture.png")))
        page.fill("#segment_query textarea", "the yellow circle")
        set_number(page, "segment_mask_threshold", 0)
        page.click("#segment_run")
        expect(page.locator("#segment_progress")).to_contain_text("Done", timeout=120_000)
        expect(page.locator("#segment_mask img")).to_be_visible()
        expect(page.locator("#segment_message")).to_contain_text("the yellow circle")
        page.click("#segment_send_to_inpaint")
        expect(page.locator("button[role=tab][data-tab-id='inpaint']")).to_have_attribute("aria-selected", "true")
        expect(page.locator("#inpaint_width input[type=number]")).to_have_value("64")
        expect(page.locator("#inpaint_mask_upload img")).to_be_visible()  # the mask, shown where it is used
        fill_prompt(page, "inpaint", "a green square")
        set_number(page, "inpaint_steps", 2)
        page.click("#inpaint_generate")
        wait_for_result(page, "inpaint")
        page.screenshot(path=str(SHOTS / "segment-sent-to-inpaint.png"), full_page=False)
        # At phone width the tab fits the screen.
        phone = browser.new_context(viewport=PHONE).new_page()
        phone.goto(url)
        phone.wait_for_selector("#txt2img_generate")
        button = phone.locator("button[role=tab][data-tab-id='segment']")
        if not button.is_visible():
            phone.click("#tabs button[aria-label='More tabs']")
            button = phone.locator("#tabs .overflow-dropdown button", has_text="Segment")
        button.click()
        expect(phone.locator("#tab_segment")).to_be_visible()
        phone.screenshot(path=str(SHOTS / "segment-phone.png"), full_page=True)
        assert phone.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 1
        phone.context.close()
    finally:
        context.close()
        blocks = easel.extras.get("blocks")
        if blocks is not None:
            blocks.close()


def test_train_tab_trains_and_shows_a_single_sample_whole(page, server, tmp_path: Path) -> None:
    """A config loaded from a YAML file trains a LoRA on a tiny built-in model; its one sample image is shown
    whole inside the samples gallery (not cut off below the gallery's fold). The model, the dataset and the
    LoRA are in the server's folders, where training may read and write (models/diffusers, data/, models/Lora)."""
    from tests.builtin.conftest import make_tiny_pipeline
    from tests.training.conftest import make_dataset

    settings = server.easel.settings
    make_tiny_pipeline().save_pretrained(str(settings.models_dir / "diffusers" / "tiny-easel"))
    make_dataset(settings.data_dir / "data" / "dataset")
    config = tmp_path / "tab.yaml"
    config.write_text("base_model: tiny-easel\ndataset: data/dataset\ntrigger: zork\noutput_name: tab-lora\n"
                      "steps: 2\nbatch_size: 2\nrank: 4\n"
                      "sample_prompts: [\"a red [trigger]\"]\nsample_steps: 2\n", encoding="utf-8")
    open_tab(page, "train")
    with page.expect_file_chooser() as chooser:
        page.click("#train_upload")
    chooser.value.set_files(str(config))
    expect(page.locator("#train_config")).to_contain_text("tab-lora")
    page.click("#train_start")
    expect(page.locator("#train_status")).to_contain_text("finished at step 2/2", timeout=120_000)
    assert (settings.models_dir / "Lora" / "tab-lora.safetensors").is_file()
    expect(page.locator("#train_samples .thumbnail-item").first).to_be_visible()
    assert_shown_whole(page, "train_samples", 100)
