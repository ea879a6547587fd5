"""Waiting requests do not starve the server: on the server users run (the page with the API beside it, behind a
login), one job holds the worker and 40 more wait in a queue of 40 — 32 posted to `/sdapi/v1/txt2img` (one by a
client that hangs up while it waits), 8 from the txt2img tab's Generate button through Gradio's queue. While they
wait, no thread of the process is parked on a job; `/sdapi/v1/progress` answers in under a second, so do
`/sdapi/v1/interrupt`, the page, `/login` and `/theme.css`; the next request gets the documented 503 with
`Retry-After` at once. Then everything drains and every queued job ends with its own image. A plain-function
extension route that blocks runs on a few threads of its own (`webui.api.threads.in_lane`), not on the shared
pool.

The worker is held by a `before_generate` hook blocked on an event, never by sleeping; "at once" is measured.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import httpx
import pytest

from tests.security.conftest import (free_port, infotext_of, one_worker_thread, stop_server, ui_generate,
                                     wait_until_up)
from webui.api.threads import ROUTE_THREADS
from webui.engine.worker import Job, JobState
from webui.extensions import RouteContribution
from webui.infotext import parse_infotext
from webui.settings import UserSettings

pytestmark = pytest.mark.slow

SECRET = "starve-Pa55"
LOGIN = ("ann", SECRET)
QUEUED, API_CLIENTS, UI_CLIENTS = 40, 32, 8
ONE_STEP = {"width": 64, "height": 64, "steps": 1}
HELD = "the long job"
PROMPT = 1.0  # seconds: what "answers promptly" means here


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = call()
    return response, time.perf_counter() - start


def threads_waiting_on_jobs() -> int:
    """Threads of this process whose stack is inside `Job.wait` or `Job.wait_for_update` (a blocked handler)."""
    codes = {Job.wait.__code__, Job.wait_for_update.__code__}
    count = 0
    for frame in sys._current_frames().values():
        while frame is not None and frame.f_code not in codes:
            frame = frame.f_back
        count += frame is not None
    return count


def test_waiting_requests_leave_the_server_answering(serve) -> None:
    easel, url = serve(api=True, gradio_auth=f"ann:{SECRET}",
                       user=UserSettings(queue_size=QUEUED, live_preview_every=0))
    one_worker_thread(easel)
    entered, gate = threading.Event(), threading.Event()

    def hold(request: Any) -> None:  # keeps the first job on the worker until the test lets it go
        if getattr(request, "prompt", "") == HELD:
            entered.set()
            gate.wait(600)

    easel.engine.before_generate.append(hold)
    wait_until_up(url, auth=LOGIN)
    blocks = easel.extras["blocks"]  # Gradio's own pool, and a slot for every job a full queue holds plus 40
    assert blocks.max_threads == QUEUED + 1 + 40 and blocks.limiter is not None
    generators = [ui_generate(url, LOGIN, timeout=600) for _ in range(UI_CLIENTS + 1)]  # logged in before the load starts
    worker = easel.engine.worker

    def post(prompt: str, seed: int, timeout: httpx.Timeout | float = 600) -> httpx.Response:
        return httpx.post(f"{url}/sdapi/v1/txt2img", auth=LOGIN, timeout=timeout,
                          json={"prompt": prompt, "seed": seed, **ONE_STEP})

    def hang_up() -> str:
        """Posts, then gives up waiting for the answer and closes the connection."""
        try:
            post("api client 0 hangs up", 0, httpx.Timeout(600, read=2))
        except httpx.ReadTimeout:
            return "hung up"
        return "answered"

    pool = ThreadPoolExecutor(1 + API_CLIENTS + UI_CLIENTS)
    try:
        held = pool.submit(post, HELD, 7)
        assert entered.wait(300)
        api = [pool.submit(post, f"api client {n}", n) for n in range(1, API_CLIENTS)]
        gone = pool.submit(hang_up)
        ui = [pool.submit(generators[n], f"ui client {n}", 1000 + n) for n in range(UI_CLIENTS)]

        filling: list[float] = []
        deadline = time.monotonic() + 300
        while True:  # the progress route itself says when the queue is full (each answer within its timeout)
            response, seconds = timed(lambda: httpx.get(f"{url}/sdapi/v1/progress", auth=LOGIN, timeout=30))
            filling.append(seconds)
            assert response.status_code == 200
            if response.json()["state"]["queue_length"] == QUEUED or time.monotonic() > deadline:
                break
            threading.Event().wait(0.05)  # between polls only; nothing is timed by it
        print(f"/progress while 40 requests arrived: {len(filling)} polls, slowest {max(filling):.2f} s")
        assert worker.queue_length() == QUEUED, worker.queue_length()
        assert threads_waiting_on_jobs() == 0  # 41 requests wait, and no thread waits for them

        for _ in range(5):
            progress, seconds = timed(lambda: httpx.get(f"{url}/sdapi/v1/progress", auth=LOGIN, timeout=30))
            print(f"/progress with {QUEUED} waiting: {seconds:.3f} s")
            assert progress.status_code == 200 and seconds < PROMPT, seconds
            assert progress.json()["state"]["queue_length"] == QUEUED
        for path in ("/", "/theme.css"):
            page, seconds = timed(lambda: httpx.get(f"{url}{path}", timeout=30))
            print(f"{path} with {QUEUED} waiting: {seconds:.3f} s")
            assert page.status_code == 200 and seconds < PROMPT, (path, page.status_code, seconds)
        login, seconds = timed(lambda: httpx.post(f"{url}/login", data={"username": "ann", "password": SECRET},
                                                  timeout=30))
        assert login.status_code == 200 and login.json() == {"success": True} and seconds < PROMPT, seconds

        refused, seconds = timed(lambda: post("one too many", 99, 30))
        assert refused.status_code == 503 and seconds < PROMPT, (refused.status_code, seconds)
        assert refused.headers["retry-after"] == "5"
        assert refused.json()["error"] == "QueueFull"
        assert f"queue is full ({QUEUED} jobs waiting)" in refused.json()["detail"]
        with pytest.raises(Exception, match="queue is full"):  # the page's Generate says the same
            generators[-1]("one too many from the page", 98)

        interrupted, seconds = timed(lambda: httpx.post(f"{url}/sdapi/v1/interrupt", auth=LOGIN, timeout=30))
        assert interrupted.status_code == 200 and seconds < PROMPT, seconds
        assert interrupted.json() == {"interrupted": True}  # the held job stops as soon as it is let go
        assert gone.result(timeout=60) == "hung up"
        assert threads_waiting_on_jobs() == 0
    finally:
        gate.set()
        answers = [future.result(timeout=600) for future in api]
        pages = [future.result(timeout=600) for future in ui]
        first = held.result(timeout=600)
        pool.shutdown()

    assert first.status_code == 200 and json.loads(first.json()["info"])["interrupted"] is True
    for number, response in enumerate(answers, start=1):
        assert response.status_code == 200, response.text
        text = infotext_of(response.json()["images"][0])
        assert text["Prompt"] == f"api client {number}" and int(text["Seed"]) == number, text
    for number, parameters in enumerate(pages):
        text = parse_infotext(parameters)
        assert text["Prompt"] == f"ui client {number}" and int(text["Seed"]) == 1000 + number, text

    jobs = [job for job in worker.jobs.values()]
    assert all(job.wait(120) for job in jobs)
    by_prompt = {job.request.prompt: job for job in jobs}
    assert by_prompt[HELD].state == JobState.INTERRUPTED
    assert len(jobs) == 1 + QUEUED  # the refused requests never reached the queue
    for prompt, job in by_prompt.items():
        if prompt != HELD:  # the client that hung up still had its image made
            assert job.state == JobState.DONE and job.result.seeds == [job.request.seed], prompt
    assert by_prompt["api client 0 hangs up"].result.images

    after = httpx.get(f"{url}/sdapi/v1/progress", auth=LOGIN, timeout=30).json()
    assert after["state"]["queue_length"] == 0 and worker.alive
    again = post("after the drain", 5)
    assert again.status_code == 200 and json.loads(again.json()["info"])["all_seeds"] == [5]


def test_a_blocking_extension_route_runs_on_threads_of_its_own(make_easel) -> None:
    """Twelve calls to a plain-function extension route that blocks: at most `ROUTE_THREADS` run at once, the
    rest wait without a thread, and the API's plain routes and /progress keep answering (`--nowebui`)."""
    from webui.app import create_server

    gate, lock = threading.Event(), threading.Lock()
    inside, most = [0], [0]
    filled = threading.Event()

    def blocking() -> dict[str, bool]:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            if inside[0] == ROUTE_THREADS:
                filled.set()
        gate.wait(120)
        with lock:
            inside[0] -= 1
        return {"done": True}

    easel = make_easel(port=free_port(), nowebui=True, api=True)
    easel.registry.routes.append(RouteContribution("/extensions/slowpoke/wait", blocking, ["GET"], "slowpoke"))
    _, url = create_server(easel, block=False)
    try:
        wait_until_up(url)
        with ThreadPoolExecutor(12) as pool:
            calls = [pool.submit(httpx.get, f"{url}/extensions/slowpoke/wait", timeout=120) for _ in range(12)]
            try:
                assert filled.wait(60)
                for path in ("/sdapi/v1/progress", "/sdapi/v1/sd-models", "/sdapi/v1/cmd-flags"):
                    response, seconds = timed(lambda: httpx.get(f"{url}{path}", timeout=30))
                    assert response.status_code == 200 and seconds < PROMPT, (path, seconds)
                assert inside[0] == ROUTE_THREADS
            finally:
                gate.set()
            assert [c.result().json() for c in calls] == [{"done": True}] * 12
        assert most[0] == ROUTE_THREADS
    finally:
        stop_server(easel)
