"""Helpers for tests that call a tab's handlers directly: draining a handler's stream, stand-ins for output
components, the tab's default field values, and a Blocks with the tabs a "Send to" button needs."""
from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import gradio as gr

from webui.ui.context import UIContext


def collect(stream) -> list:
    """Every update of an async stream (the tab's handlers are async generators), in order."""

    async def drain() -> list:
        return [update async for update in stream]

    return asyncio.run(drain())


class Slot:
    """Stands in for an output component (hashable, like Gradio's)."""

    def __init__(self, name: str) -> None:
        self.name = name


def values(tab, **changes) -> dict:
    """The tab's field values as the controls hold them by default, with `changes`."""
    by_component = {c.component: getattr(c.component, "value", None) for c in tab.controls.controls.values()}
    out = tab.controls.field_values(by_component)
    out.update(changes)
    return out


@contextmanager
def built_tabs(easel: Any, *builders: Callable[[UIContext], Any]) -> Iterator[tuple[UIContext, Any]]:
    """(ui, the last builder's tab) with the header, img2img, Inpaint and then `builders`' tabs built."""
    from webui.ui.app import build_header
    from webui.ui.tabs import img2img, inpaint

    ui = UIContext(easel)
    with gr.Blocks() as blocks:
        build_header(ui)
        with gr.Tabs() as tabs:
            ui.tabs = tabs
            img2img.build(ui)
            inpaint.build(ui)
            tab = [build(ui) for build in builders][-1]
        ui.finish()
    yield ui, tab
    blocks.close()
