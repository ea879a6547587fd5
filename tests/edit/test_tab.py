"""The Edit tab's handlers, called directly over a real Easel (the shipped built-in model): the request built
from the editor (strokes = mask), an edit streamed through the engine queue into the before/after slider and the
history, a second edit starting from the first's result, Undo going back step by step, sending the result on,
and errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.edit.conftest import red_circle_scene
from tests.tab_helpers import Slot, built_tabs, collect, values
from webui.requests import RequestError
from webui.ui.tabs import edit, segment


@pytest.fixture
def tab_ui(edit_easel):
    with built_tabs(edit_easel, segment.build_tab, edit.build_tab) as built:
        yield built


def slot_tab(tab):
    names = ("editor", "progress", "slider", "info", "gallery", "history", "job")
    return edit.EditTab(tab.controls, *[Slot(n) for n in names])


def same(a: Image.Image, b: Image.Image) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b))


def named(updates: dict) -> dict:
    return {slot.name: value for slot, value in updates.items()}


def test_controls_default_to_the_builtin_model(tab_ui):
    _, tab = tab_ui
    assert tab.controls["checkpoint"].value == "easel-shapes"
    assert tab.controls["checkpoint"].choices == [("easel-shapes", "easel-shapes")]
    assert tab.controls["steps"].value == 20 and tab.controls["guidance"].value == 4.0


def test_request_from_the_editor_strokes_are_the_mask(tab_ui):
    _, tab = tab_ui
    source, _, _ = red_circle_scene()
    stroke = Image.new("RGBA", source.size, (0, 0, 0, 0))
    stroke.paste((255, 255, 255, 255), (0, 0, 32, 64))
    request = edit.edit_request(values(tab, editor={"background": source.convert("RGBA"), "layers": [stroke],
                                                    "composite": source}, instruction="make the red circle blue"))
    assert request.image.mode == "RGB" and np.array_equal(np.asarray(request.image), np.asarray(source))
    mask = np.asarray(request.mask) > 127
    assert mask[:, :32].all() and not mask[:, 32:].any()
    assert request.checkpoint == "easel-shapes" and request.references == ()
    plain = edit.edit_request(values(tab, editor={"background": source, "layers": [], "composite": source},
                                     instruction="x", reference_1=Image.new("RGB", (8, 8))))
    assert plain.mask is None and len(plain.references) == 1


def test_successive_edits_and_undo(tab_ui):
    ui, tab = tab_ui
    slots = slot_tab(tab)
    source, _, _ = red_circle_scene()
    first = edit.edit_request(values(tab, editor=edit.editor_value(source), instruction="make the red circle blue",
                                     steps=4, seed=1))
    updates = collect(edit.stream_edit(ui, slots, first, []))
    assert updates[0][slots.job] and "easel-progress" in updates[0][slots.progress]
    out = named(updates[-1])
    history = out["history"]
    assert len(history) == 1 and out["job"] is None
    before, after = out["slider"]
    assert same(before, source) and after is history[0]["result"]
    assert out["editor"]["background"] is after  # the next edit starts from the result
    assert out["info"].startswith("make the red circle blue\n") and len(out["gallery"]) == 1
    # The second edit takes the first's result as its input.
    second = edit.edit_request(values(tab, editor=out["editor"], instruction="make the green square yellow",
                                      steps=4, seed=1))
    out2 = named(collect(edit.stream_edit(ui, slots, second, history))[-1])
    assert len(out2["history"]) == 2
    assert np.array_equal(np.asarray(out2["history"][1]["source"]), np.asarray(after))
    assert [caption for _, caption in out2["gallery"]] == ["1. make the red circle blue",
                                                           "2. make the green square yellow"]
    # Undo: back to after the first edit (the editor holds its result again), then to the start.
    back = named(edit.undo_updates(slots, out2["history"]))
    assert len(back["history"]) == 1 and same(back["slider"][0], source) and back["slider"][1] is after
    assert np.array_equal(np.asarray(back["editor"]["background"]), np.asarray(after))
    start = named(edit.undo_updates(slots, back["history"]))
    assert start["history"] == [] and start["slider"] is None and start["info"] == ""
    assert same(start["editor"]["background"], source)
    with pytest.raises(ValueError, match="no edit to undo"):
        edit.undo_updates(slots, [])


def test_send_the_result_on(tab_ui):
    ui, _ = tab_ui
    result = Image.new("RGB", (64, 64), (40, 90, 220))
    history = [{"source": Image.new("RGB", (64, 64)), "result": result, "instruction": "x", "infotext": "x"}]
    to_segment = edit.segment_updates(ui, history)
    assert to_segment[ui.tabs].selected == "segment" and to_segment[ui.segment_image] is result
    to_img2img = edit.send_updates(ui, "img2img", "", edit.last_result(history), "easel-shapes")
    assert to_img2img[ui.tabs].selected == "img2img"
    with pytest.raises(ValueError, match="press Edit first"):
        edit.last_result([])


def test_errors_name_the_field(tab_ui):
    ui, tab = tab_ui
    slots = slot_tab(tab)
    no_image = edit.edit_request(values(tab, editor=None, instruction="make it blue"))
    with pytest.raises(RequestError) as caught:
        collect(edit.stream_edit(ui, slots, no_image, []))
    assert caught.value.field == "image"
    no_text = edit.edit_request(values(tab, editor=edit.editor_value(Image.new("RGB", (64, 64))), instruction=""))
    with pytest.raises(RequestError) as caught:
        collect(edit.stream_edit(ui, slots, no_text, []))
    assert caught.value.field == "instruction"
