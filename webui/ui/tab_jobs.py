"""Pieces the Edit and Segment tabs share: following a queued job, and the Interrupt, refresh and send buttons.

`follow_job` yields a job's queue position and progress as it runs (waiting holds no thread); `raise_if_failed`
turns a failed job into a gr.Error after the last updates are out. The `wire_*` helpers connect the buttons every
single-image tab has; `send_targets` lists the components a "Send to …" button fills in a generation tab.
"""
from __future__ import annotations

from typing import Any, AsyncIterator, Callable

import gradio as gr

from webui.ui.bridge import guard, job_failed
from webui.ui.context import UIContext
from webui.ui.generation import status_html


async def follow_job(ui: UIContext, job: Any, progress: Any,
                     first: dict[Any, Any]) -> AsyncIterator[dict[Any, Any]]:
    """`first` with the job's queue position in `progress`, then each change of its status until it finishes."""
    worker = ui.easel.engine.worker
    yield {**first, progress: status_html(job, worker.position(job))}
    version, last = -1, ""
    while not job.finished_state:
        status = status_html(job, worker.position(job))
        if status != last:
            last = status
            yield {progress: status}
        version = await job.wait_for_update_async(version, timeout=0.5)


def raise_if_failed(job: Any) -> None:
    """A gr.Error with the job's error when it failed."""
    if str(getattr(job.state, "value", job.state)) == "failed":
        raise job_failed(job.error)


def wire_interrupt(ui: UIContext, button: Any, job: Any) -> None:
    """`button` interrupts the job whose id the gr.State `job` holds."""
    @guard
    def on_interrupt(current: str | None) -> None:
        if current:
            ui.easel.engine.worker.interrupt(current)

    button.click(on_interrupt, inputs=job, outputs=None, concurrency_limit=None, show_progress="hidden")


def wire_refresh(ui: UIContext, button: Any, picker: Any, choices: Callable[[], list[str]],
                 default: Callable[[], str | None]) -> None:
    """`button` rescans the model folders and refills `picker`, keeping its value while it is still a choice."""
    @guard
    def on_refresh(current: str | None) -> Any:
        ui.easel.manager.refresh()
        names = choices()
        return gr.Dropdown(choices=names, value=current if current in names else (default() or None))

    button.click(on_refresh, inputs=picker, outputs=picker, show_progress="hidden")


def send_targets(ui: UIContext, other: Any) -> list[Any]:
    """The components a "Send to" button fills in generation tab `other` (the tab switch and checkpoint first)."""
    targets = [ui.tabs, ui.checkpoint, ui.sized_for, *other.controls.components(), *other.reveal.values()]
    if other.image_input is not None:
        targets.append(other.image_input)
    return targets
