"""The detail fixer's progress: the job's batches (the API's `job_count`/`job_no`) count every pass's finding and
repainting after the mode's own batches, the step counts cover each region's inpainting steps, and the progress
only goes forward; Interrupt during a pass ends the job with what was done, Skip ends one image's passes.

Every state a job publishes is recorded by a job that keeps them (`RecordingJob`, run by the engine's runner as the
worker runs a job); the API is read while a repaint is held at its start by a pipeline wrapper."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.segment.conftest import CLIPSEG_LABEL
from tests.segment.test_detail import SD, clipseg_probs, generate, with_detail
from webui.engine.worker import Job, JobState
from webui.infotext import parse_infotext
from webui.requests import Txt2ImgRequest

EVERYWHERE = {"query": "the red circle", "finder": CLIPSEG_LABEL, "confidence": 0.0, "max_regions": 1,
              "steps": 2, "denoising_strength": 1.0, "mask_blur": 0}  # the whole image is one region
NOWHERE = {"query": "a purple elephant", "finder": CLIPSEG_LABEL, "confidence": 1.0}  # finds nothing


class RecordingJob(Job):
    """A job that keeps each state it publishes: (progress, batch_index, batch_total, step, total_steps)."""

    def __init__(self, request) -> None:
        super().__init__(request, "test")
        self.seen: list[tuple[float, int, int, int, int]] = []
        self.stages: list[str] = []  # each stage once, in the order they came

    def update(self, **changes) -> None:
        super().update(**changes)
        self.seen.append((self.progress, self.batch_index, self.batch_total, self.step, self.total_steps))
        if not self.stages or self.stages[-1] != self.stage:
            self.stages.append(self.stage)


def run_recorded(easel, request) -> RecordingJob:
    """Check `request` as `Engine.submit` does, then run it as the worker runs a job (on this thread)."""
    from webui.engine.script_job import ScriptJob

    check = easel.engine.check_script if isinstance(request, ScriptJob) else easel.engine.check_generation
    check(request)
    job = RecordingJob(request)
    job.result = easel.engine.run_job(job)
    return job


def assert_forward(job: RecordingJob) -> None:
    progress = [seen[0] for seen in job.seen]
    assert all(a <= b for a, b in zip(progress, progress[1:])), f"the progress went back: {progress}"
    batches = [seen[1] for seen in job.seen]
    assert all(a <= b for a, b in zip(batches, batches[1:])), f"the batch went back: {batches}"


def test_the_batches_count_every_pass_and_the_progress_only_goes_forward(seg_easel) -> None:
    request = with_detail(Txt2ImgRequest(prompt="a red circle", batch_count=2, **SD), EVERYWHERE, NOWHERE)
    job = run_recorded(seg_easel, request)
    assert len(job.result.images) == 2
    assert all("Detail 2 regions: 0" in text and "Detail 1 regions: 1" in text for text in job.result.infotexts)
    # 2 generated batches, then per image and pass: finding, repainting -> 2 + 2 * 2 * 2
    assert {seen[2] for seen in job.seen} == {10}, "the job's batch count changed while it ran"
    assert_forward(job)
    assert sorted({seen[1] for seen in job.seen}) == [0, 1, 2, 3, 4, 6, 7, 8]  # nothing to repaint: 5, 9 pass by
    by_batch: dict[int, list[tuple[int, int]]] = {}
    for progress, batch, _, step, total in job.seen:
        by_batch.setdefault(batch, []).append((step, total))
    for finding in (2, 4, 6, 8):  # a CLIPSeg finder: one step
        assert by_batch[finding][-1] == (1, 1)
    for repainting in (3, 7):  # one region, 2 inpainting steps at strength 1
        assert by_batch[repainting][-1] == (2, 2)
        assert [step for step, _ in by_batch[repainting]] == sorted(step for step, _ in by_batch[repainting])
    per_image = ["Detail pass 1: finding 'the red circle'", "", "Detail pass 1: repainting 1 region", "",
                 "Detail pass 2: finding 'a purple elephant'", ""]  # (nothing found: no repainting)
    assert job.stages == [""] + per_image * 2  # what the status line and the API's textinfo add
    made = [p for p, batch, *_ in job.seen if batch < 2]
    assert max(made) <= 0.2, "the generation took the whole bar: the passes are not counted"
    assert max(p for p, *_ in job.seen) <= 1.0 and job.seen[-1][0] >= 0.9


def test_a_pass_counts_the_steps_of_every_region_it_repaints(seg_easel) -> None:
    plain, _ = generate(seg_easel, Txt2ImgRequest(prompt="a red circle", **SD))
    threshold = float(np.quantile(clipseg_probs(seg_easel, plain, "the red circle"), 0.7))  # many specks
    detail = {**EVERYWHERE, "confidence": threshold, "max_regions": 3, "dilate_erode": 2, "padding": 8}
    job = run_recorded(seg_easel, with_detail(Txt2ImgRequest(prompt="a red circle", **SD), detail))
    assert parse_infotext(job.result.infotexts[0])["Detail 1 regions"] == "3"
    assert {seen[2] for seen in job.seen} == {3}
    assert_forward(job)
    repainting = [(step, total) for _, batch, _, step, total in job.seen if batch == 2]
    assert {total for _, total in repainting if total} == {6}  # 3 regions x 2 steps, one count
    steps = [step for step, _ in repainting]
    assert steps == sorted(steps) and set(steps) == set(range(7))  # region after region, one count


def test_a_generative_finder_counts_its_steps(seg_easel) -> None:
    base = {"checkpoint": "easel-shapes", "width": 64, "height": 64, "steps": 2, "seed": 3, "sampler": "Euler"}
    detail = {"query": "the red circle", "finder_steps": 3, "steps": 2, "denoising_strength": 0.5}
    job = run_recorded(seg_easel, with_detail(Txt2ImgRequest(prompt="a red circle", **base), detail))
    assert parse_infotext(job.result.infotexts[0])["Detail 1 finder"] == "easel-shapes"
    assert {seen[2] for seen in job.seen} == {3}
    assert_forward(job)
    finding = [(step, total) for _, batch, _, step, total in job.seen if batch == 1]
    assert {total for _, total in finding if total} == {3} and finding[-1] == (3, 3)  # the edit's 3 steps
    assert [step for step, _ in finding] == sorted(step for step, _ in finding)


def test_the_progress_route_reads_the_passes(seg_easel, seg_client) -> None:
    inside, go = threading.Event(), threading.Event()

    def hold_the_repaint(call, run):
        if call.task == "inpaint":  # the detail fixer's repaint, about to run
            inside.set()
            assert go.wait(60)
        return run(call)

    seg_easel.registry.pipeline_wrappers.append(hold_the_repaint)
    try:
        job = seg_easel.engine.submit(with_detail(Txt2ImgRequest(prompt="a red circle", **SD), EVERYWHERE))
        assert inside.wait(300), job.error
        data = seg_client.get("/sdapi/v1/progress").json()
        go.set()
        assert job.wait(300)
    finally:
        go.set()
        seg_easel.registry.pipeline_wrappers.remove(hold_the_repaint)
    assert job.state == JobState.DONE, job.error
    state = data["state"]
    assert (state["job_count"], state["job_no"]) == (3, 2)  # the image, finding, repainting
    assert (state["sampling_step"], state["sampling_steps"]) == (0, 2)
    assert data["progress"] == pytest.approx(2 / 3, abs=1e-3) and data["eta_relative"] > 0
    assert data["textinfo"] == "Batch 3 of 3, step 0 of 2, Detail pass 1: repainting 1 region"


def stop_at_repaint(easel, number: int, stop) -> object:
    """A pipeline wrapper that calls `stop()` at the `number`-th detail repaint (1-based), before it runs."""
    calls = []

    def wrapper(call, run):
        if call.task == "inpaint":
            calls.append(call)
            if len(calls) == number:
                stop()
        return run(call)

    easel.registry.pipeline_wrappers.append(wrapper)
    return wrapper


def two_plain_images(easel) -> list[np.ndarray]:
    job = easel.engine.generate(Txt2ImgRequest(prompt="a red circle", batch_count=2, **SD), timeout=300)
    assert job.state == JobState.DONE, job.error
    return [np.asarray(image.convert("RGB")).astype(int) for image in job.result.images]


def test_interrupt_during_the_second_images_pass_keeps_what_was_done(seg_easel) -> None:
    plain = two_plain_images(seg_easel)
    wrapper = stop_at_repaint(seg_easel, 2, seg_easel.engine.worker.interrupt)
    try:
        job = seg_easel.engine.generate(with_detail(Txt2ImgRequest(prompt="a red circle", batch_count=2, **SD),
                                                    EVERYWHERE), timeout=300)
    finally:
        seg_easel.registry.pipeline_wrappers.remove(wrapper)
    assert job.state == JobState.INTERRUPTED and len(job.result.images) == len(job.result.paths) == 2
    first, second = (np.asarray(image.convert("RGB")).astype(int) for image in job.result.images)
    assert not np.array_equal(first, plain[0]) and "Detail 1 regions: 1" in job.result.infotexts[0]
    assert np.array_equal(second, plain[1]) and "Detail 1" not in job.result.infotexts[1]
    assert (job.batch_total, job.batch_index) == (2 + 2 * 2, 5)  # it stopped in the second image's repainting
    assert seg_easel.engine.worker.alive


def test_skip_during_a_pass_ends_that_images_passes_and_goes_on(seg_easel) -> None:
    plain = two_plain_images(seg_easel)
    wrapper = stop_at_repaint(seg_easel, 1, seg_easel.engine.worker.skip)
    try:
        job = seg_easel.engine.generate(with_detail(Txt2ImgRequest(prompt="a red circle", batch_count=2, **SD),
                                                    EVERYWHERE), timeout=300)
    finally:
        seg_easel.registry.pipeline_wrappers.remove(wrapper)
    assert job.state == JobState.DONE, job.error
    first, second = (np.asarray(image.convert("RGB")).astype(int) for image in job.result.images)
    assert np.array_equal(first, plain[0]) and "Detail 1" not in job.result.infotexts[0]
    assert not np.array_equal(second, plain[1]) and "Detail 1 regions: 1" in job.result.infotexts[1]


def test_a_script_jobs_batches_count_its_requests_passes(seg_easel) -> None:
    from webui.engine.script_job import ScriptJob

    base = with_detail(Txt2ImgRequest(prompt="a red circle | big", **SD), EVERYWHERE)
    plot = seg_easel.registry.scripts["prompt matrix"].run(base, [False, False, "positive", "comma", 0])
    assert isinstance(plot, ScriptJob) and len(plot.requests) == 2
    job = run_recorded(seg_easel, plot)
    assert len(job.result.images) == 1 + 2 and all("Detail 1 regions: 1" in t for t in job.result.infotexts[1:])
    assert {seen[2] for seen in job.seen} == {2 * (1 + 2)}  # per request: its image, finding, repainting
    assert_forward(job)
    assert sorted({seen[1] for seen in job.seen}) == list(range(6))


def test_sd_upscale_runs_the_passes_once_on_the_upscaled_picture(seg_easel) -> None:
    from PIL import Image

    from webui.requests import Img2ImgRequest

    init = Image.new("RGB", (64, 64), (200, 30, 30))
    base = with_detail(Img2ImgRequest(prompt="a red circle", init_image=init, denoising_strength=0.5, **SD),
                       EVERYWHERE)
    plot = seg_easel.registry.scripts["sd upscale"].run(base, [None, 16, "Lanczos", 2])  # 128x128: 3x3 tiles
    assert len(plot.requests) == 9
    assert not any(request.extension_args for request in plot.requests), "a tile would run the passes"
    repaints = []

    def count_repaints(call, run):
        if call.task == "inpaint":
            repaints.append(call.kwargs["image"])
        return run(call)

    seg_easel.registry.pipeline_wrappers.append(count_repaints)
    try:
        job = run_recorded(seg_easel, plot)
    finally:
        seg_easel.registry.pipeline_wrappers.remove(count_repaints)
    assert len(job.result.images) == 1 and job.result.images[0].size == (128, 128)
    assert len(repaints) == 1, "the passes ran on each tile"  # the whole picture is one region, repainted once
    params = parse_infotext(job.result.infotexts[0])
    assert params["Detail 1 regions"] == "1" and params["SD upscale upscaler"] == "Lanczos"
    assert {seen[2] for seen in job.seen} == {9 + 2}  # the tiles, then the picture's finding and repainting
    assert_forward(job)
    assert sorted({seen[1] for seen in job.seen}) == list(range(11))
    assert job.stages[-2:] == ["Detail pass 1: repainting 1 region", ""]
