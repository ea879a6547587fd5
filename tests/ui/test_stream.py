"""The Generate handler's stream: it awaits the job's updates and yields queue position, progress, preview
and finally the images with their infotext (or raises a readable gr.Error when the job failed)."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import gradio as gr
import pytest
from PIL import Image

from webui.ui.context import UIContext
from webui.ui.generation import PanelOutputs, stream_job


class ScriptedJob:
    """Walks through a list of states, one per `wait_for_update_async` call, like the worker would publish them."""

    def __init__(self, script: list[dict]) -> None:
        self.id = "job-1"
        self.script = list(script)
        self.waits: list[tuple[int, float | None]] = []
        self.version = 0
        self.state, self.step, self.total_steps, self.batch_index, self.batch_total = "queued", 0, 0, 0, 1
        self.preview = None
        self.result = None
        self.error = None
        self.created, self.started, self.finished = 0.0, 0.0, None
        self.progress = 0.0

    @property
    def finished_state(self) -> bool:
        return self.state in ("done", "failed", "interrupted")

    async def wait_for_update_async(self, seen: int, timeout: float | None = None) -> int:
        self.waits.append((seen, timeout))
        if self.script:
            for key, value in self.script.pop(0).items():
                setattr(self, key, value)
            self.version += 1
        return self.version


class Worker:
    def __init__(self, positions: list[int]) -> None:
        self.positions = positions

    def position(self, job) -> int:
        return self.positions.pop(0) if len(self.positions) > 1 else self.positions[0]


class Slot:
    """Stands for an output component (hashable, like Gradio's)."""

    def __init__(self, name: str) -> None:
        self.name = name


def outputs() -> PanelOutputs:
    return PanelOutputs(*[Slot(n) for n in ("progress", "preview", "gallery", "info", "result", "job")])


def collect(stream, seen: list[dict] | None = None) -> list[dict]:
    """Every update of an async stream, in order (into `seen` as they come, when given)."""
    seen = [] if seen is None else seen

    async def drain() -> list[dict]:
        async for update in stream:
            seen.append(update)
        return seen

    return asyncio.run(drain())


def run(job: ScriptedJob, positions: list[int]) -> tuple[list[dict], PanelOutputs]:
    out = outputs()
    easel = SimpleNamespace(engine=SimpleNamespace(worker=Worker(positions)))
    return collect(stream_job(UIContext(easel), job, out)), out


def test_stream_reports_queue_progress_preview_then_results() -> None:
    preview = Image.new("RGB", (8, 8))
    image = Image.new("RGB", (16, 16))
    result = SimpleNamespace(images=[image], infotexts=["a cat\nSteps: 2, Seed: 5"], seeds=[5], paths=[])
    job = ScriptedJob([
        {},  # nothing new: a timeout while still queued
        {"state": "running", "total_steps": 2, "step": 1, "progress": 0.5, "preview": preview},
        {"step": 2, "progress": 1.0},
        {"state": "done", "result": result, "finished": 1.0},
    ])
    updates, out = run(job, [2, 1, 0])
    assert "Waiting in queue: position 2" in updates[0][out.progress] and updates[0][out.job] == "job-1"
    assert any("position 1" in u.get(out.progress, "") for u in updates)
    running = next(u for u in updates if "Step 1/2" in u.get(out.progress, ""))
    assert running[out.preview].value is not None and running[out.preview].visible is True
    final = updates[-1]
    assert "Done: 1 image" in final[out.progress] and final[out.job] is None
    assert final[out.gallery] == [image] and final[out.info] == "a cat\nSteps: 2, Seed: 5"
    assert final[out.result]["seeds"] == [5] and final[out.preview].visible is False
    assert all(timeout == 0.5 for _, timeout in job.waits)  # blocks on the job, never sleeps


def test_saved_paths_are_shown_when_every_image_was_saved(tmp_path) -> None:
    image = Image.new("RGB", (4, 4))
    path = tmp_path / "00000-5.png"
    result = SimpleNamespace(images=[image], infotexts=["x"], seeds=[5], paths=[path])
    updates, out = run(ScriptedJob([{"state": "done", "result": result}]), [0])
    assert updates[-1][out.gallery] == [str(path)]


def test_failed_job_ends_with_a_readable_error() -> None:
    job = ScriptedJob([{"state": "running", "total_steps": 4}, {"state": "failed", "error": "Out of memory <GPU>"}])
    stream = stream_job(UIContext(SimpleNamespace(engine=SimpleNamespace(worker=Worker([0])))), job, outputs())
    seen: list[dict] = []
    with pytest.raises(gr.Error) as info:
        collect(stream, seen)
    assert info.value.message == "Out of memory &lt;GPU&gt;"
    assert any("Failed: Out of memory" in str(v) for u in seen for v in u.values())


def test_interrupted_job_keeps_partial_images() -> None:
    image = Image.new("RGB", (4, 4))
    result = SimpleNamespace(images=[image], infotexts=["x"], seeds=[1], paths=[])
    job = ScriptedJob([{"state": "interrupted", "step": 3, "total_steps": 150, "result": result}])
    updates, out = run(job, [0])
    assert "Interrupted at step 3/150 (1 image kept)" in updates[-1][out.progress]
    assert updates[-1][out.gallery] == [image]
