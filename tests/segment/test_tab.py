"""The Segment tab's handlers, called directly over a real Easel (built-in model, tiny CLIPSeg): controls and
defaults, model switching, a segmentation streamed through the engine queue, messages for absent referents,
errors as gr.Error, and sending the mask to Inpaint (where it becomes the inpainting mask) or the cutout on."""
from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from tests.segment.conftest import CLIPSEG_LABEL, scene_image
from tests.tab_helpers import Slot, built_tabs, collect, values
from webui.requests import RequestError, SegmentRequest
from webui.ui.bridge import guard
from webui.ui.controls import build_request
from webui.ui.tabs import inpaint, segment


@pytest.fixture
def tab_ui(seg_easel):
    with built_tabs(seg_easel, segment.build_tab) as built:
        yield built


def slot_tab(tab):
    """The same tab with placeholder outputs, so a test reads the updates by name."""
    names = ("progress", "message", "show", "edited", "mask", "overlay", "cutout", "mask_files", "info", "state",
             "job")
    return segment.SegmentTab(tab.controls, tab.image, *[Slot(n) for n in names])


def final(ui, tab, request: SegmentRequest) -> tuple[dict, segment.SegmentTab]:
    slots = slot_tab(tab)
    updates = collect(segment.stream_segmentation(ui, slots, request))
    assert updates[0][slots.job] and "easel-progress" in updates[0][slots.progress]
    return {slot.name: value for slot, value in updates[-1].items()}, slots


def test_controls_default_to_the_builtin_model_and_its_template(tab_ui):
    ui, tab = tab_ui
    assert tab.controls["checkpoint"].value == "easel-shapes"
    assert tab.controls["checkpoint"].choices == [("easel-shapes", "easel-shapes"), (CLIPSEG_LABEL, CLIPSEG_LABEL)]
    assert tab.controls["template"].value == "highlight {query} in {colour}"
    request = segment.segment_request(values(tab, query="the red circle"))
    assert request == SegmentRequest(query="the red circle", checkpoint="easel-shapes",
                                     template="highlight {query} in {colour}")
    with pytest.raises(RequestError) as caught:
        segment.segment_request(values(tab, steps="lots"))
    assert caught.value.field == "steps"


def test_picking_a_model_sets_its_template_and_controls(tab_ui):
    ui, _ = tab_ui
    assert segment.model_updates(ui, CLIPSEG_LABEL) == ("", [False], [True])
    assert segment.model_updates(ui, "easel-shapes") == ("highlight {query} in {colour}", [True], [False])


def test_segment_streams_masks_overlay_cutouts_and_files(tab_ui):
    ui, tab = tab_ui
    image = Image.new("RGB", (40, 48), (30, 160, 60))
    request = segment.segment_request(values(tab, image=image, query="the green square\nthe frog",
                                             checkpoint=CLIPSEG_LABEL, mask_threshold=0.0))
    out, _ = final(ui, tab, request)
    state = out["state"]
    assert [i["query"] for i in state["items"]] == ["the green square", "the frog"]
    assert out["show"].visible is True and out["show"].choices == [("the green square", "the green square"),
                                                                   ("the frog", "the frog")]
    assert out["mask"].mode == "L" and out["mask"].size == image.size
    assert out["cutout"].mode == "RGBA" and out["overlay"].size == image.size
    assert len(out["mask_files"]) == 2 and all(Image.open(p).size == image.size for p in out["mask_files"])
    assert "\u2714" in out["message"] and "the frog" in out["message"] and "Query: the green square" in out["info"]
    assert "Done" in out["progress"]
    edited, mask, _, text = segment.shown_outputs(state, "the frog")
    assert mask is state["items"][1]["mask"] and "Query: the frog" in text


def test_absent_referent_shows_an_empty_mask_and_says_so(tab_ui):
    ui, tab = tab_ui
    request = segment.segment_request(values(tab, image=Image.new("RGB", (32, 32)), query="the dog",
                                             checkpoint=CLIPSEG_LABEL, mask_threshold=1.0))
    out, _ = final(ui, tab, request)
    assert out["mask"].getbbox() is None and "\u2718" in out["message"]
    assert "nothing matching the query was found" in out["message"] and out["show"].visible is False


def test_errors_reach_the_browser_as_one_line(tab_ui):
    ui, tab = tab_ui
    slots = slot_tab(tab)
    failing = segment.segment_request(values(tab, image=scene_image()[0], query="the star", highlight="lime",
                                             steps=1))
    with pytest.raises(gr.Error) as caught:
        collect(guard(segment.stream_segmentation)(ui, slots, failing))
    assert caught.value.message.startswith("highlight:") and "Traceback" not in caught.value.message
    empty = segment.segment_request(values(tab, image=scene_image()[0], query=" "))
    with pytest.raises(gr.Error) as caught:
        collect(guard(segment.stream_segmentation)(ui, slots, empty))
    assert caught.value.message.startswith("query:")
    with pytest.raises(gr.Error, match="press Segment first"):
        guard(segment.inpaint_updates)(ui, segment.empty_state(), None, None, None)


def test_send_to_inpaint_fills_the_image_and_the_mask(tab_ui):
    ui, tab = tab_ui
    image = Image.new("RGB", (96, 80), (200, 200, 30))
    request = segment.segment_request(values(tab, image=image, query="the yellow square",
                                             checkpoint=CLIPSEG_LABEL, mask_threshold=0.0))
    out, _ = final(ui, tab, request)
    mask = out["state"]["items"][0]["mask"].copy()
    mask.paste(0, (0, 0, 40, 80))  # a mask that is not the whole picture
    out["state"]["items"][0]["mask"] = mask
    updates = segment.inpaint_updates(ui, out["state"], None, image, "tiny-sd1")
    target = ui.generation["inpaint"]
    upload = target.controls["mask_upload"]
    assert updates[ui.tabs].selected == "inpaint"
    assert updates[target.image_input]["background"].size == image.size
    assert updates[upload] is mask or np.array_equal(np.asarray(updates[upload]), np.asarray(mask))
    assert updates[upload.parent].open is True  # the "Upload a mask instead" box shows it
    assert updates[target.controls["width"]] == 96 and updates[target.controls["height"]] == 80
    # What the Inpaint tab then builds: the same picture, and exactly this mask.
    by_component = {c.component: getattr(c.component, "value", None) for c in target.controls.controls.values()}
    by_component[target.image_input] = updates[target.image_input]
    by_component[upload] = updates[upload]
    request = build_request(target.request_cls, inpaint.finalize(target.controls.field_values(by_component)))
    assert np.array_equal(np.asarray(request.mask) > 127, np.asarray(mask) > 127)
    assert np.array_equal(np.asarray(request.init_image), np.asarray(image))
    out["state"]["items"][0]["mask"] = Image.new("L", (96, 80), 0)
    with pytest.raises(ValueError, match="is empty"):
        segment.inpaint_updates(ui, out["state"], None, image, "tiny-sd1")


def test_send_cutout_to_img2img_over_white(tab_ui):
    ui, tab = tab_ui
    state = {"items": [{"query": "q", "found": True, "message": "", "edited": None, "mask": None,
                        "cutout": Image.new("RGBA", (16, 16), (0, 0, 0, 0)), "mask_path": ""}],
             "infotexts": [""], "overlay": None}
    updates = segment.img2img_updates(ui, state, "q", None)
    sent = updates[ui.generation["img2img"].image_input]
    assert updates[ui.tabs].selected == "img2img" and sent.getpixel((3, 3)) == (255, 255, 255)
    state["items"][0]["found"] = False
    with pytest.raises(ValueError, match="nothing was found"):
        segment.img2img_updates(ui, state, "q", None)
