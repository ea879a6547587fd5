"""Picking a checkpoint in the browser sets each tab's size, steps and CFG scale to that model's defaults, and keeps
the values the user edited."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Server, free_port, serving
from tests.browser.helpers import open_tab, set_number

pytestmark = pytest.mark.browser


def declare(folder: Path, **defaults: Any) -> None:
    index = json.loads((folder / "model_index.json").read_text())
    index["easel_defaults"] = defaults
    (folder / "model_index.json").write_text(json.dumps(index))


@pytest.fixture
def server(make_easel) -> Iterator[Server]:
    """Two tiny SD 1.x checkpoints that declare different defaults."""
    easel = make_easel(port=free_port())
    diffusers = easel.settings.data_dir / "models" / "diffusers"
    shutil.copytree(diffusers / "tiny-sd1", diffusers / "tiny-sd1-wide")
    declare(diffusers / "tiny-sd1", width=96, height=96, steps=7, cfg_scale=3)
    declare(diffusers / "tiny-sd1-wide", width=128, height=80, steps=9, cfg_scale=5.5)
    easel.manager.refresh()
    yield from serving(easel)


def value_of(page: Any, elem_id: str) -> str:
    return page.locator(f"#{elem_id} input[type=number]").input_value()


def test_a_checkpoint_pick_sets_its_defaults_but_keeps_the_users_edits(page, server) -> None:
    assert server.easel.default_checkpoint() == "tiny-sd1"
    expect(page.locator("#txt2img_width input[type=number]")).to_have_value("96")
    expect(page.locator("#txt2img_steps input[type=number]")).to_have_value("7")
    set_number(page, "txt2img_steps", 13)  # the user's own edit

    page.click("#checkpoint input")
    option = page.locator("[role=option][aria-label='tiny-sd1-wide']")
    expect(option).to_be_visible()
    option.click()
    expect(page.locator("#checkpoint input")).to_have_value("tiny-sd1-wide")

    expect(page.locator("#txt2img_width input[type=number]")).to_have_value("128")
    expect(page.locator("#txt2img_height input[type=number]")).to_have_value("80")
    expect(page.locator("#txt2img_cfg_scale input[type=number]")).to_have_value("5.5")
    assert value_of(page, "txt2img_steps") == "13", "the steps the user set are kept"
    open_tab(page, "img2img")
    expect(page.locator("#img2img_steps input[type=number]")).to_have_value("9")  # not edited there: the model's
    expect(page.locator("#img2img_width input[type=number]")).to_have_value("128")
