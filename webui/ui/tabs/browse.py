"""The Browse tab: every image under outputs/, newest first, searchable, with favourites and a trash.

It reads the image browser's index (`easel.gallery`, a `webui.gallery_index.GalleryIndex`): opening the tab
rescans the outputs folder quickly (only new and changed files are read), so images copied in or removed by hand
show up. A page of thumbnails, filters (prompt words, seed, model, mode, days, favourites), and the picked image
with its parameters; "Send to" fills a generation tab as PNG Info does (and Extras gets the image); Delete moves
the file to the trash folder in the data dir, and the Trash view restores it.
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from webui.ui.bridge import guard
from webui.ui.context import UIContext
from webui.ui.generation import load_image, wire_send

PER_PAGE = 24
ALL = "All"
IMAGES, TRASH = "Images", "Trash"
TARGETS = {"txt2img": "Send to txt2img", "img2img": "Send to img2img", "inpaint": "Send to inpaint"}


def gallery_of(ui: UIContext) -> Any:
    index = getattr(ui.easel, "gallery", None)
    if index is None:
        raise ValueError("image browser: this Easel keeps no image index")
    return index


def to_page(value: Any) -> int:
    try:
        page = int(float(value)) if value not in (None, "") else 1
    except (TypeError, ValueError):
        raise ValueError(f"page: must be a whole number, got {value!r}") from None
    if page < 1:
        raise ValueError(f"page: must be 1 or more, got {page}")
    return page


def load_page(ui: UIContext, view: str, words: str, seed: Any, model: str, mode: str, date_from: str, date_to: str,
              favourites: bool, page: Any) -> tuple[list[tuple[Any, str]], list[Any], str, int]:
    """(thumbnails with captions, the key of each: a path or a trash id, status line, page shown)."""
    index = gallery_of(ui)
    number = to_page(page)
    if view == TRASH:
        found = index.trash(number, PER_PAGE)
        items = [(index.trash_thumbnail(t.id), t.original.rsplit("/", 1)[-1]) for t in found.items]
        keys: list[Any] = [t.id for t in found.items]
        what = "deleted image" if found.total == 1 else "deleted images"
    else:
        query = gallery_query(index, words, seed, model, mode, date_from, date_to, favourites)
        found = index.search(query, number, PER_PAGE)
        items = [(index.thumbnail(e), caption(e)) for e in found.items]
        keys = [e.path for e in found.items]
        what = "image" if found.total == 1 else "images"
    status = f"{found.total} {what} · page {found.page} of {found.pages}"
    return items, keys, status, found.page


def gallery_query(index: Any, words: str, seed: Any, model: str, mode: str, date_from: str, date_to: str,
                  favourites: bool) -> Any:
    """The index's query for the filter controls (`GalleryIndex.query`: ui/ never imports the index itself)."""
    return index.query(words=words or "", seed=None if seed in (None, "") else str(seed), model=model or "",
                     mode="" if mode in (None, "", ALL) else mode, date_from=date_from or "", date_to=date_to or "",
                     favourites=bool(favourites))


def caption(entry: Any) -> str:
    """A thumbnail's caption: a star for a favourite, then the seed."""
    seed = "" if entry.seed is None else f"seed {entry.seed}"
    return f"\u2605 {seed}".strip() if entry.favourite else seed


def describe(ui: UIContext, selected: dict | None) -> tuple[Any, str, str]:
    """(image, parameters text, details line) of the picked image."""
    if not selected:
        return None, "", ""
    index = gallery_of(ui)
    if selected["kind"] == "trash":
        entry = index.trashed(selected["key"])
        return (load_image(index.trash_file(entry.id)), entry.infotext,
                f"In the trash; was `{entry.original}`" + (" · ★ favourite" if entry.favourite else ""))
    entry = index.get(selected["key"])
    size = f"{entry.width}x{entry.height}" if entry.width else "?"
    details = (f"`{entry.path}` · {entry.mode} · {entry.day} · {size} · {entry.bytes // 1024} KiB"
               + (" · ★ favourite" if entry.favourite else ""))
    return str(index.file(entry.path)), entry.infotext, details


def picked_image(ui: UIContext, selected: dict | None) -> tuple[Any, str]:
    """(path of the picked image, its parameters text) for "Send to"; a deleted image must be restored first."""
    if not selected:
        raise ValueError("image: pick an image in the gallery first")
    if selected["kind"] == "trash":
        raise ValueError("image: this image is in the trash; restore it first")
    index = gallery_of(ui)
    entry = index.get(selected["key"])
    return str(index.file(entry.path)), entry.infotext


def build(ui: UIContext) -> None:
    with gr.Tab("Browse", id="browse", elem_id="tab_browse") as tab:
        with gr.Row(equal_height=False):
            words = gr.Textbox(label="Prompt words", placeholder="red circle", elem_id="browse_search", scale=3,
                               min_width=200)
            seed = gr.Textbox(label="Seed", elem_id="browse_seed", scale=1, min_width=100)
            model = gr.Textbox(label="Model", elem_id="browse_model", scale=1, min_width=120)
            mode = gr.Dropdown(choices=[ALL], value=ALL, label="Mode", elem_id="browse_mode", scale=1, min_width=120)
        with gr.Row(equal_height=False):
            # one line (an <input>; a many-line box wraps its hint), wide enough on a phone for the whole hint
            date_from = gr.Textbox(label="From day", placeholder="YYYY-MM-DD", max_lines=1, elem_id="browse_from",
                                   min_width=150)
            date_to = gr.Textbox(label="To day", placeholder="YYYY-MM-DD", max_lines=1, elem_id="browse_to",
                                 min_width=150)
            favourites = gr.Checkbox(label="Favourites only", elem_id="browse_favourites", min_width=120)
            view = gr.Radio([IMAGES, TRASH], value=IMAGES, label="View", elem_id="browse_view", min_width=160)
            run = gr.Button("Search", variant="primary", elem_id="browse_run", min_width=100)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=300):
                gallery = gr.Gallery(label="Images", columns=6, height=520, allow_preview=False, object_fit="contain",
                                     elem_id="browse_gallery", format="webp", interactive=False)
                with gr.Row(elem_classes="easel-send-row"):
                    previous = gr.Button("\u2190 Previous", size="sm", elem_id="browse_previous")
                    page = gr.Number(value=1, precision=0, label="Page", elem_id="browse_page", min_width=80)
                    following = gr.Button("Next \u2192", size="sm", elem_id="browse_next")
                status = gr.Markdown("", elem_id="browse_status")
            with gr.Column(scale=2, min_width=300):
                image = gr.Image(label="Image", type="filepath", interactive=False, height=360,
                                 elem_id="browse_image")
                details = gr.Markdown("", elem_id="browse_details")
                info = gr.Textbox(label="Parameters", lines=4, max_lines=12, interactive=False, buttons=["copy"],
                                  elem_id="browse_info", elem_classes="easel-info")
                with gr.Row(elem_classes="easel-send-row"):
                    buttons = {target: gr.Button(label, size="sm", elem_id=f"browse_send_to_{target}")
                               for target, label in TARGETS.items()}
                    to_extras = gr.Button("Send to extras", size="sm", elem_id="browse_send_to_extras")
                with gr.Row(elem_classes="easel-send-row"):
                    favourite = gr.Button("\u2605 Favourite", size="sm", elem_id="browse_favourite")
                    delete = gr.Button("Delete", size="sm", variant="stop", elem_id="browse_delete")
                    restore = gr.Button("Restore", size="sm", elem_id="browse_restore", visible=False)  # Trash
        keys = gr.State([])
        selected = gr.State(None)

    filters = [view, words, seed, model, mode, date_from, date_to, favourites]
    listing = [gallery, keys, status, page, selected, image, info, details]

    def listed(*values: Any) -> tuple[Any, ...]:
        items, found, line, shown = load_page(ui, *values)
        return items, found, line, shown, None, None, "", ""

    @guard
    def on_search(*values: Any) -> tuple[Any, ...]:
        return listed(*values[:-1], 1)

    @guard
    def on_view(*values: Any) -> tuple[Any, ...]:
        """The view's first page, and the buttons that apply to it: Delete and Favourite on images, Restore on
        deleted ones."""
        trash = values[0] == TRASH
        return (*listed(*values[:-1], 1), gr.update(visible=not trash), gr.update(visible=trash),
                gr.update(visible=not trash))

    @guard
    def on_page(*values: Any) -> tuple[Any, ...]:
        return listed(*values)

    @guard
    def on_previous(*values: Any) -> tuple[Any, ...]:
        return listed(*values[:-1], max(1, to_page(values[-1]) - 1))

    @guard
    def on_next(*values: Any) -> tuple[Any, ...]:
        return listed(*values[:-1], to_page(values[-1]) + 1)

    @guard
    def on_open(*values: Any) -> tuple[Any, ...]:
        index = gallery_of(ui)
        index.rescan()
        current = values[4]
        modes = [ALL, *index.modes()]
        return (*listed(*values), gr.Dropdown(choices=modes, value=current if current in modes else ALL))

    @guard
    def on_select(found: list[Any], current_view: str, evt: gr.SelectData) -> tuple[Any, ...]:
        position = evt.index if isinstance(evt.index, int) else (evt.index or [0])[0]
        if not 0 <= position < len(found):
            raise ValueError("image: that image is no longer on this page; search again")
        picked = {"kind": "trash" if current_view == TRASH else "image", "key": found[position]}
        return (picked, *describe(ui, picked))

    @guard
    def on_favourite(picked: dict | None) -> tuple[Any, ...]:
        if not picked or picked["kind"] != "image":
            raise ValueError("image: pick an image (not a deleted one) to mark as a favourite")
        index = gallery_of(ui)
        entry = index.set_favourite(picked["key"], not index.get(picked["key"]).favourite)
        gr.Info("Marked as a favourite" if entry.favourite else "No longer a favourite")
        return describe(ui, picked)

    @guard
    def on_delete(picked: dict | None, *values: Any) -> tuple[Any, ...]:
        if not picked or picked["kind"] != "image":
            raise ValueError("image: pick an image in the Images view to delete")
        moved = gallery_of(ui).delete(picked["key"])
        gr.Info(f"Moved {moved.original} to the trash (the Trash view restores it)")
        return listed(*values)

    @guard
    def on_restore(picked: dict | None, *values: Any) -> tuple[Any, ...]:
        if not picked or picked["kind"] != "trash":
            raise ValueError("image: pick a deleted image in the Trash view to restore")
        back = gallery_of(ui).restore(int(picked["key"]))
        gr.Info(f"Restored to {back.path}")
        return listed(*values)

    run.click(on_search, inputs=[*filters, page], outputs=listing, show_progress="hidden")
    words.submit(on_search, inputs=[*filters, page], outputs=listing, show_progress="hidden")
    view.change(on_view, inputs=[*filters, page], outputs=[*listing, delete, restore, favourite],
                show_progress="hidden")
    page.submit(on_page, inputs=[*filters, page], outputs=listing, show_progress="hidden")
    previous.click(on_previous, inputs=[*filters, page], outputs=listing, show_progress="hidden")
    following.click(on_next, inputs=[*filters, page], outputs=listing, show_progress="hidden")
    tab.select(on_open, inputs=[*filters, page], outputs=[*listing, mode], show_progress="hidden")
    gallery.select(on_select, inputs=[keys, view], outputs=[selected, image, info, details], show_progress="hidden")
    favourite.click(on_favourite, inputs=selected, outputs=[image, info, details], show_progress="hidden")
    delete.click(on_delete, inputs=[selected, *filters, page], outputs=listing, show_progress="hidden")
    restore.click(on_restore, inputs=[selected, *filters, page], outputs=listing, show_progress="hidden")

    def wire() -> None:
        for target, button in buttons.items():
            if target in ui.generation:
                wire_send(ui, button, target, [selected], lambda picked: picked_image(ui, picked))
            else:
                button.visible = False
        if ui.extras_image is None:
            to_extras.visible = False
            return

        @guard
        def send_to_extras(picked: dict | None) -> dict[Any, Any]:
            path, _ = picked_image(ui, picked)
            return {ui.tabs: gr.Tabs(selected="extras"), ui.extras_image: load_image(path)}

        to_extras.click(send_to_extras, inputs=selected, outputs=[ui.tabs, ui.extras_image], show_progress="hidden")

    ui.after_build(wire)
