"""Load on loopback: 16 concurrent clients x 5 requests each against the server users run (Gradio UI with the
API beside it), tiny SD 1.x model, 1 step. Every answer carries its own image: the seed and the prompt in the
PNG's infotext (and in `info`) are the ones that request sent; none is lost, duplicated or swapped. With a
bounded queue, requests past its size get a 503 with a clear message, and once it drains everything works again.

Half of the 16 clients post to `/sdapi/v1/txt2img`, the other half press the txt2img tab's Generate button through
Gradio's queue with `gradio_client`; both end in the same engine queue. The bounded-queue test fills that queue
from both sides too.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.security.conftest import infotext_of, one_worker_thread, ui_generate, wait_until_up
from webui.infotext import parse_infotext
from webui.requests import Txt2ImgRequest
from webui.settings import UserSettings

pytestmark = pytest.mark.slow

CLIENTS, PER_CLIENT = 16, 5
ONE_STEP = {"width": 64, "height": 64, "steps": 1}


def test_sixteen_clients_each_get_their_own_images(serve) -> None:
    """Half the clients use the API, half the txt2img tab's Generate button through Gradio's queue."""
    easel, url = serve(api=True, user=UserSettings(queue_size=CLIENTS * PER_CLIENT, live_preview_every=0))
    one_worker_thread(easel)
    wait_until_up(url)

    def api_client(number: int) -> list[tuple[str, int, dict]]:
        answers = []
        with httpx.Client(base_url=url, timeout=600) as http:
            for turn in range(PER_CLIENT):
                prompt, seed = f"api client {number} request {turn} circle", 10_000 * number + turn
                response = http.post("/sdapi/v1/txt2img", json={"prompt": prompt, "seed": seed, **ONE_STEP})
                assert response.status_code == 200, response.text
                body = response.json()
                info = json.loads(body["info"])
                assert len(body["images"]) == 1 and info["prompt"] == prompt and info["all_seeds"] == [seed]
                answers.append((prompt, seed, infotext_of(body["images"][0])))
        return answers

    def ui_client(number: int) -> list[tuple[str, int, dict]]:
        generate = ui_generate(url)
        answers = []
        for turn in range(PER_CLIENT):
            prompt, seed = f"ui client {number} request {turn} square", 10_000 * number + turn
            answers.append((prompt, seed, parse_infotext(generate(prompt, seed))))
        return answers

    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(api_client if number % 2 else ui_client, number) for number in range(CLIENTS)]
        results = [answer for future in futures for answer in future.result()]

    assert len(results) == CLIENTS * PER_CLIENT
    for prompt, seed, text in results:
        assert text["Prompt"] == prompt and int(text["Seed"]) == seed, (prompt, seed, text)
    assert len({seed for _, seed, _ in results}) == CLIENTS * PER_CLIENT
    worker = easel.engine.worker
    assert worker.alive and worker.queue_length() == 0
    jobs = [job for job in worker.jobs.values() if job.source in ("api", "ui")]
    assert sorted(job.source for job in jobs) == ["api"] * 40 + ["ui"] * 40
    assert all(job.state.value == "done" for job in jobs)
    for job in jobs:  # and the worker's own record agrees with what each client got back
        assert job.result.seeds == [job.request.seed] and str(job.request.seed // 10_000) in job.request.prompt


def test_a_full_queue_answers_503_and_recovers(serve) -> None:
    easel, url = serve(api=True, user=UserSettings(queue_size=3, live_preview_every=0))
    one_worker_thread(easel)
    wait_until_up(url)
    gate, entered = threading.Event(), threading.Event()

    def hold(module, args):  # keeps the first job inside the pipeline until the queue has filled up
        entered.set()
        gate.wait(120)

    unet = easel.manager.get("tiny-sd1", "txt2img").pipe.unet
    handle = unet.register_forward_pre_hook(hold)
    ui_job = easel.engine.submit(Txt2ImgRequest(prompt="ui job", checkpoint="tiny-sd1", seed=77, **ONE_STEP),
                                 source="ui")  # a job from the Generate button: runs first, holds the worker
    assert entered.wait(120)

    def post(number: int) -> httpx.Response:
        return httpx.post(f"{url}/sdapi/v1/txt2img", timeout=300,
                          json={"prompt": f"burst {number}", "seed": number, **ONE_STEP})

    generate_in_page = ui_generate(url)
    try:
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(post, n) for n in range(8)]
            deadline = time.monotonic() + 120
            while sum(f.done() for f in futures) < 5 and time.monotonic() < deadline:
                time.sleep(0.05)  # 3 requests fit in the queue; the other 5 are answered at once
            full = [f for f in futures if f.done()]
            assert easel.engine.worker.queue_length() == 3
            refused = [f.result() for f in full]
            assert len(refused) == 5 and all(r.status_code == 503 for r in refused)
            body = refused[0].json()
            assert body["error"] == "QueueFull" and "queue is full (3 jobs waiting)" in body["detail"]
            assert refused[0].headers["retry-after"] == "5"
            with pytest.raises(Exception, match="queue is full"):  # the page shows the same message
                generate_in_page("from the page", 5)
            gate.set()
            accepted = [f.result() for f in futures if f not in full]
        assert [r.status_code for r in accepted] == [200, 200, 200]
    finally:
        gate.set()
        handle.remove()
    assert ui_job.wait(120) and ui_job.state.value == "done" and ui_job.result.seeds == [77]
    again = [post(100 + n) for n in range(4)]  # more than the queue size, one after another: all served
    assert [r.status_code for r in again] == [200] * 4
    assert [json.loads(r.json()["info"])["seed"] for r in again] == [100, 101, 102, 103]
    assert parse_infotext(generate_in_page("from the page", 6))["Seed"] == "6"
