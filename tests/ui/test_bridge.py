"""Domain errors reach the browser as one readable gr.Error line; nothing else leaks a traceback."""
from __future__ import annotations

import asyncio
import inspect

import gradio as gr
import pytest

from webui.requests import RequestError
from webui.ui.bridge import guard, job_failed, to_gr_error


class QueueFullError(RuntimeError):
    """Same name as the engine's: recognised by name, since ui/ does not import the engine."""


class ModelLoadError(OSError):
    pass


@pytest.mark.parametrize("exc,message", [
    (RequestError("steps", "must be at most 150, got 900"), "steps: must be at most 150, got 900"),
    (ValueError("mask: the mask is empty; paint the area to repaint"), "mask: the mask is empty; paint the area to repaint"),
    (LookupError("checkpoint: no model named 'x'"), "checkpoint: no model named 'x'"),
    (KeyError("no such VAE"), "no such VAE"),
    (QueueFullError("the queue is full (64 jobs waiting); try again shortly"), "the queue is full (64 jobs waiting); try again shortly"),
    (ModelLoadError("could not load <model>"), "could not load &lt;model&gt;"),
])
def test_domain_errors_keep_their_message(exc: Exception, message: str) -> None:
    error = to_gr_error(exc)
    assert isinstance(error, gr.Error) and error.message == message


def test_unexpected_errors_are_one_line_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    error = to_gr_error(ZeroDivisionError("division by zero\nsecond line"))
    assert error.message == "Unexpected error (ZeroDivisionError): division by zero. Details are in the server log."
    assert "Traceback" not in error.message
    assert any("unexpected error" in r.message for r in caplog.records)


def test_guard_wraps_functions_and_generators() -> None:
    @guard
    def plain(x: int) -> int:
        if x < 0:
            raise RequestError("seed", "must be at least -1, got -5")
        return x

    @guard
    def stream(n: int):
        yield 1
        raise ValueError(f"steps: bad {n}")

    assert plain(3) == 3
    with pytest.raises(gr.Error, match="seed: must be at least -1"):
        plain(-5)
    gen = stream(2)
    assert next(gen) == 1
    with pytest.raises(gr.Error, match="steps: bad 2"):
        next(gen)
    assert plain.__wrapped__.__name__ == "plain"


def test_guard_keeps_async_handlers_async() -> None:
    """Gradio runs an async handler on its event loop (no thread); the wrapper must stay async to keep that."""
    @guard
    async def plain(x: int) -> int:
        if x < 0:
            raise RequestError("seed", "must be at least -1, got -5")
        return x

    @guard
    async def stream(n: int):
        yield 1
        raise ValueError(f"steps: bad {n}")

    assert inspect.iscoroutinefunction(plain) and inspect.isasyncgenfunction(stream)
    assert asyncio.run(plain(3)) == 3
    with pytest.raises(gr.Error, match="seed: must be at least -1"):
        asyncio.run(plain(-5))
    seen: list[int] = []

    async def drain() -> None:
        async for item in stream(2):
            seen.append(item)

    with pytest.raises(gr.Error, match="steps: bad 2"):
        asyncio.run(drain())
    assert seen == [1] and stream.__wrapped__.__name__ == "stream"


def test_gr_errors_pass_through_and_job_failures_are_escaped() -> None:
    original = gr.Error("already for users")
    assert to_gr_error(original) is original
    assert job_failed("Out of <memory>").message == "Out of &lt;memory&gt;"
    assert job_failed(None).message.startswith("the job failed")
