"""An image made in several passes (the base, the refiner, the hires fix) counts one step count, as AUTOMATIC1111
does: its total is every pass's steps, the second pass counts on from the first, and the progress only goes
forward. Every state the job publishes is recorded by a job that keeps them, run by the engine's runner as the
worker runs a job. Tiny real SD 1.x models (two weight seeds installed as two checkpoints)."""
from __future__ import annotations

import pytest
from PIL import Image

from webui.engine.samplers import steps_for_strength
from webui.engine.worker import Job
from webui.requests import Img2ImgRequest, Txt2ImgRequest

SMALL = dict(width=64, height=64, steps=3, checkpoint="tiny-sd1", sampler="Euler", seed=11)
HIRES = dict(enable_hr=True, hr_scale=2.0, hr_denoising_strength=0.6, hr_second_pass_steps=4)
REFINER = dict(refiner_checkpoint="tiny-sd1b", refiner_switch_at=0.5)


class RecordingJob(Job):
    """A job that keeps each state it publishes: (progress, batch_index, step, total_steps)."""

    def __init__(self, request) -> None:
        super().__init__(request, "test")
        self.seen: list[tuple[float, int, int, int]] = []

    def update(self, **changes) -> None:
        super().update(**changes)
        self.seen.append((self.progress, self.batch_index, self.step, self.total_steps))


@pytest.fixture
def easel(two_sd1_easel):
    return two_sd1_easel


def run_recorded(easel, request) -> RecordingJob:
    easel.engine.check_generation(request)
    job = RecordingJob(request)
    job.result = easel.engine.run_job(job)
    return job


def steps_at(strength: float, steps: int) -> int:
    """The steps an img2img-style pass runs at `strength` of a `steps`-long schedule."""
    length, strength = steps_for_strength(steps, strength)
    return int(length * strength)


def assert_one_count(job: RecordingJob, batches: int, total: int) -> None:
    progress = [seen[0] for seen in job.seen]
    assert all(a <= b for a, b in zip(progress, progress[1:])), f"the progress went back: {progress}"
    for batch in range(batches):
        counts = [(step, of) for _, index, step, of in job.seen if index == batch and of]
        assert {of for _, of in counts} == {total}, f"batch {batch}: the total changed: {counts}"
        steps = [step for step, _ in counts]
        assert steps == sorted(steps), f"batch {batch}: the step went back: {steps}"
        assert steps[-1] == total, f"batch {batch}: {steps}"


def test_hires_fix_counts_both_passes_as_one(easel) -> None:
    job = run_recorded(easel, Txt2ImgRequest(prompt="a red circle", batch_count=2, **SMALL, **HIRES))
    assert [image.size for image in job.result.images] == [(128, 128)] * 2
    assert_one_count(job, 2, 3 + steps_at(0.6, 4))  # 3 + 2


def test_refiner_and_hires_fix_count_every_pass(easel) -> None:
    job = run_recorded(easel, Txt2ImgRequest(prompt="a red circle", **SMALL, **HIRES, **REFINER,
                                             hr_upscaler="Latent"))
    assert job.result.images[0].size == (128, 128)
    assert_one_count(job, 1, 3 + steps_at(0.5, 3) + steps_at(0.6, 4))  # base, refiner, hires


def test_img2img_refiner_counts_on_from_the_base(easel) -> None:
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    job = run_recorded(easel, Img2ImgRequest(prompt="x", init_image=init, denoising_strength=0.8, **SMALL,
                                             **REFINER))
    assert_one_count(job, 1, steps_at(0.8, 3) + steps_at(0.5, 3))
