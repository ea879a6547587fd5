"""Faults: out of memory inside a pipeline, Interrupt mid-job, a save that fails half-way, a corrupt settings file.

The out-of-memory error is raised by a forward pre-hook on the tiny UNet (torch's own extension point), so it
comes from inside the real diffusers pipeline call. Interrupt and the worker's queue are also covered on a
scripted runner in tests/core/test_worker.py and over the API in tests/api/test_generation.py.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import time
import weakref

import pytest
import torch
from PIL import Image

from tests.security.conftest import TINY
from webui.engine import outputs
from webui.engine.worker import JobState
from webui.requests import Txt2ImgRequest
from webui.settings import Settings, build_parser, settings_from_args


def request(**changes) -> Txt2ImgRequest:
    return Txt2ImgRequest(**{"prompt": "a red square", "checkpoint": "tiny-sd1", "seed": 1, **TINY, **changes})


def unet_of(easel):
    return easel.manager.get("tiny-sd1", "txt2img").pipe.unet


def test_out_of_memory_inside_the_pipeline(api_client, caplog, monkeypatch) -> None:
    easel, client = api_client(api=True)
    caplog.set_level(logging.CRITICAL, logger="webui.engine.worker")  # a kept log record would keep the frames
    emptied: list[bool] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # take the CUDA path of the clean-up
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    ballast: list[weakref.ref] = []

    def out_of_memory(module, args):
        held = torch.zeros(256, 1024)  # what a real step would hold when the allocation fails
        ballast.append(weakref.ref(held))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    handle = unet_of(easel).register_forward_pre_hook(out_of_memory)
    try:
        job = easel.engine.generate(request(), source="ui", timeout=120)
        assert job.state == JobState.FAILED
        assert job.error.startswith("Out of memory while generating") and "--medvram" in job.error
        assert isinstance(job.exception, torch.OutOfMemoryError) and job.exception.__traceback__ is None
        assert emptied, "the CUDA cache was not emptied"
        gc.collect()
        assert ballast and ballast[0]() is None, "the failed job's tensors are still alive"

        response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY})
        assert response.status_code == 500 and "Out of memory while generating" in response.json()["detail"]
    finally:
        handle.remove()
    assert easel.engine.worker.alive
    after = easel.engine.generate(request(), source="ui", timeout=120)
    assert after.state == JobState.DONE and len(after.result.images) == 1
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY}).status_code == 200


def test_interrupt_mid_job_leaves_the_worker_healthy(make_easel) -> None:
    easel = make_easel()
    worker = easel.engine.worker
    calls: list[int] = []

    def press_interrupt(module, args):
        calls.append(1)
        if len(calls) == 1:
            worker.interrupt()

    handle = unet_of(easel).register_forward_pre_hook(press_interrupt)
    try:
        job = easel.engine.generate(request(steps=8, batch_count=3), source="ui", timeout=120)
    finally:
        handle.remove()
    assert job.state == JobState.INTERRUPTED
    assert len(calls) <= 2, f"{len(calls)} UNet calls after Interrupt (8 steps x 3 batches were asked)"
    deadline = time.monotonic() + 10
    while worker.current is not None and time.monotonic() < deadline:
        time.sleep(0.01)  # the worker lets go of the job just after publishing its end
    assert worker.alive and worker.current is None and worker.queue_length() == 0
    after = easel.engine.generate(request(seed=9), source="ui", timeout=120)
    assert after.state == JobState.DONE and after.result.seeds == [9]


class FailingFile:
    """A file that accepts `budget` bytes, then fails as a full disk does."""

    def __init__(self, handle, budget: int) -> None:
        self.handle, self.budget = handle, budget

    def write(self, data: bytes) -> int:
        if self.budget < len(data):
            self.handle.write(bytes(data[: self.budget]))
            self.handle.flush()
            raise OSError(28, "No space left on device")
        self.budget -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name: str):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def test_a_save_that_fails_half_way_leaves_no_png(make_easel, monkeypatch, tmp_path) -> None:
    folder = tmp_path / "day"
    image = Image.effect_noise((64, 64), 50).convert("RGB")
    first = outputs.save_image(image, folder, 1, "a prompt\nSeed: 1")
    real_fdopen = os.fdopen
    def failing_fdopen(fd, mode="r", *args, **kwargs):
        handle = real_fdopen(fd, mode, *args, **kwargs)
        return FailingFile(handle, 300) if mode == "wb" else handle

    monkeypatch.setattr(outputs.os, "fdopen", failing_fdopen)
    with pytest.raises(OSError, match="No space left"):
        outputs.save_image(image, folder, 2, "a prompt\nSeed: 2")
    assert sorted(p.name for p in folder.iterdir()) == [first.name]  # no truncated PNG, no temporary file
    Image.open(first).verify()

    easel = make_easel()  # the same through a job: a clear failure, then the next job saves normally
    job = easel.engine.generate(request(), source="ui", timeout=120)
    assert job.state == JobState.FAILED and "No space left on device" in job.error
    saved = list(easel.settings.outputs_dir.rglob("*"))
    assert not [p for p in saved if p.is_file()], saved
    monkeypatch.undo()
    after = easel.engine.generate(request(), source="ui", timeout=120)
    assert after.state == JobState.DONE and after.result.paths[0].name.startswith("00000-")
    Image.open(after.result.paths[0]).verify()


@pytest.mark.parametrize("content", [b"{ not json", b"[1, 2]", b"\xff\xfe\x00garbage",
                                     json.dumps({"max_side": "huge"}).encode(),
                                     json.dumps({"ram_cache_size": 0, "save_images": True}).encode()])
def test_a_corrupt_settings_file_is_kept_aside_and_defaults_used(tmp_path, content: bytes, caplog) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "config.json").write_bytes(content)
    caplog.set_level(logging.WARNING)
    settings = settings_from_args(build_parser().parse_args(["--data-dir", str(data)]))
    assert settings.user == Settings().user
    assert (data / "config.json.bak").read_bytes() == content
    assert not (data / "config.json").exists()
    assert settings.load_message and "config.json could not be read" in settings.load_message
    assert "config.json.bak" in settings.load_message and "defaults are used" in settings.load_message
    assert settings.load_message in caplog.text
    settings.user.max_steps = 40
    settings.save_user_settings()  # the next save writes a good file again
    again = Settings(data_dir=data)
    again.load_user_settings()
    assert again.user.max_steps == 40 and again.load_message is None


def test_an_unreadable_settings_path_does_not_stop_the_start(tmp_path) -> None:
    data = tmp_path / "data"
    (data / "config.json").mkdir(parents=True)  # a folder where the file should be
    settings = Settings(data_dir=data)
    settings.load_user_settings()
    assert settings.user == Settings().user and settings.load_message
    assert "config.json could not be read" in settings.load_message

