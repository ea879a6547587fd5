"""The Browse tab's handlers over a real index of real PNGs: opening rescans, search and pages, picking shows the
infotext, Send to fills txt2img and Extras, favourite, delete to the trash and restore; mistakes name the field."""
from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from tests.core.test_gallery_index import write
from webui.gallery_index import GalleryIndex
from webui.ui.tabs import browse


@pytest.fixture
def browse_ui(stub_easel):
    from webui.ui.app import build_ui

    outputs = stub_easel.settings.outputs_dir
    for number in range(30):
        write(outputs, f"txt2img-images/2026-12-0{1 + number % 3}/{number:05d}-{number}.png",
              "a red circle" if number % 2 else "a blue square", number, mtime=1_700_000_000 + number)
    stub_easel.gallery = GalleryIndex(outputs, stub_easel.settings.data_dir / "gallery")
    blocks, ui = build_ui(stub_easel)
    yield blocks, ui
    blocks.close()
    stub_easel.gallery.close()


def by_id(blocks, elem_id: str):
    found = [b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == elem_id]
    assert len(found) == 1, elem_id
    return found[0]


def handler(blocks, elem_id: str, event: str = "click"):
    component = by_id(blocks, elem_id)
    found = [f for f in blocks.fns.values() if (component._id, event) in f.targets]
    assert len(found) == 1, (elem_id, event)
    return found[0].fn


def select(index: int) -> gr.SelectData:
    return gr.SelectData(None, {"index": index, "value": None, "selected": True})


FILTERS = dict(view=browse.IMAGES, words="", seed="", model="", mode=browse.ALL, date_from="", date_to="",
               favourites=False, page=1)


def values(**changes) -> list:
    return list({**FILTERS, **changes}.values())


def test_open_search_page_pick_and_send(browse_ui) -> None:
    blocks, ui = browse_ui
    items, keys, status, page, *_rest, mode = handler(blocks, "tab_browse", "select")(*values())
    assert status == "30 images · page 1 of 2" and page == 1 and len(items) == 24
    assert keys[0] == "txt2img-images/2026-12-03/00029-29.png"  # newest first
    assert [c[0] for c in mode.choices] == ["All", "txt2img"]
    assert items[0][0].size == (16, 12) and items[0][1] == "seed 29"
    items, keys, status, page, *_ = handler(blocks, "browse_next")(*values())
    assert status == "30 images · page 2 of 2" and len(keys) == 6 and page == 2
    items, keys, status, *_ = handler(blocks, "browse_run")(*values(words="red", date_from="2026-12-02"))
    assert status == "10 images · page 1 of 1" and all(int(k.split("-")[-1][:-4]) % 2 for k in keys)
    picked, image, info, details = handler(blocks, "browse_gallery", "select")(keys, browse.IMAGES, select(0))
    assert picked == {"kind": "image", "key": keys[0]} and Path(image).name == Path(keys[0]).name
    assert info.startswith("a red circle") and "Seed: 29" in info and "2026-12-03" in details

    updates = handler(blocks, "browse_send_to_txt2img")(picked, "tiny-sd1")
    tab = ui.generation["txt2img"]
    assert updates[ui.tabs].selected == "txt2img"
    assert updates[tab.controls["prompt"]] == "a red circle"
    assert updates[tab.controls["seed"]] == 29
    sent = handler(blocks, "browse_send_to_extras")(picked)
    assert sent[ui.tabs].selected == "extras" and sent[ui.extras_image].size == (16, 12)


def test_favourite_delete_and_restore(browse_ui) -> None:
    blocks, ui = browse_ui
    index = ui.easel.gallery
    _, keys, *_ = handler(blocks, "tab_browse", "select")(*values())
    picked = {"kind": "image", "key": keys[0]}
    _, _, details = handler(blocks, "browse_favourite")(picked)
    assert "favourite" in details and index.get(keys[0]).favourite
    _, _, status, *_ = handler(blocks, "browse_run")(*values(favourites=True))
    assert status == "1 image · page 1 of 1"

    file = index.outputs_dir / keys[0]
    _, after, status, *_ = handler(blocks, "browse_delete")(picked, *values())
    assert status == "29 images · page 1 of 2" and keys[0] not in after and not file.exists()
    items, trash_keys, status, *_ = handler(blocks, "browse_run")(*values(view=browse.TRASH))
    assert status == "1 deleted image · page 1 of 1" and items[0][0].size == (16, 12)
    trashed, image, info, details = handler(blocks, "browse_gallery", "select")(trash_keys, browse.TRASH, select(0))
    assert trashed["kind"] == "trash" and "was `" + keys[0] in details and "Seed: 29" in info
    with pytest.raises(gr.Error, match="image: this image is in the trash; restore it first"):
        handler(blocks, "browse_send_to_txt2img")(trashed, "tiny-sd1")
    _, _, status, *_ = handler(blocks, "browse_restore")(trashed, *values(view=browse.TRASH))
    assert status == "0 deleted images · page 1 of 1" and file.is_file() and index.get(keys[0]).favourite


def test_mistakes_name_the_field(browse_ui) -> None:
    blocks, _ = browse_ui
    search = handler(blocks, "browse_run")
    with pytest.raises(gr.Error, match="seed: must be a whole number"):
        search(*values(seed="12a"))
    with pytest.raises(gr.Error, match="date_to: must be a date as YYYY-MM-DD"):
        search(*values(date_to="12/07/2026"))
    with pytest.raises(gr.Error, match="image: pick an image in the gallery first"):
        handler(blocks, "browse_send_to_img2img")(None, "tiny-sd1")
    with pytest.raises(gr.Error, match="image: pick a deleted image in the Trash view"):
        handler(blocks, "browse_restore")({"kind": "image", "key": "x.png"}, *values())
    with pytest.raises(gr.Error, match="image: '../config.json' points outside outputs"):
        handler(blocks, "browse_delete")({"kind": "image", "key": "../config.json"}, *values())


def test_delete_shows_in_the_images_view_and_restore_in_the_trash(browse_ui) -> None:
    blocks, _ = browse_ui
    delete, restore, favourite = (by_id(blocks, f"browse_{name}") for name in ("delete", "restore", "favourite"))
    assert delete.visible and favourite.visible and not restore.visible  # the page opens on the Images view
    handler(blocks, "tab_browse", "select")(*values())
    switch = handler(blocks, "browse_view", "change")
    *listing, shown_delete, shown_restore, shown_favourite = switch(*values(view=browse.TRASH))
    assert listing[2] == "0 deleted images · page 1 of 1"  # the view's listing comes with the buttons
    assert (shown_delete["visible"], shown_restore["visible"], shown_favourite["visible"]) == (False, True, False)
    *listing, shown_delete, shown_restore, shown_favourite = switch(*values(view=browse.IMAGES))
    assert listing[2] == "30 images · page 1 of 2"
    assert (shown_delete["visible"], shown_restore["visible"], shown_favourite["visible"]) == (True, False, True)


def test_the_date_boxes_hint_fits_one_line(browse_ui) -> None:
    blocks, _ = browse_ui
    for name in ("from", "to"):
        box = by_id(blocks, f"browse_{name}")
        assert box.max_lines == 1, "a many-line box wraps its hint on a phone"  # one line: an <input>
        assert box.placeholder == "YYYY-MM-DD"
