"""Small requests that would make the server allocate far more memory than they carry: each is refused with a 4xx
naming the field and the limit (or, for the Extras crop, served without the huge intermediate), and the process's
peak resident memory grows by less than a stated bound while the request is handled. The server is uvicorn in this
process on a loopback port (`--nowebui`), so its memory is this process's.

Peak memory is the kernel's high-water mark (`VmHWM`), reset before each request by writing 5 to
`/proc/self/clear_refs`; freed heap memory is handed back first (`malloc_trim`), so what an earlier test freed
cannot hide growth. Requests are sent from a child process, so the client's own copies of a body are not counted. Before these bounds, the same requests took
+1352 MiB (extras batch), +1683 MiB (png-info), +525 MiB (the 8x1024 crop) and +286 MiB (template); the 1x16384
crop would have needed about a terabyte.
"""
from __future__ import annotations

import base64
import ctypes
import gc
import io
import json
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import threading
import time

import httpx
import pytest
from PIL import Image, ImageDraw

from tests.security.conftest import wait_until_up
from webui.engine.tasks import CallTask
from webui.settings import UserSettings

CLEAR_REFS = Path("/proc/self/clear_refs")
pytestmark = pytest.mark.skipif(not CLEAR_REFS.exists(), reason="needs Linux's /proc/self/clear_refs")
MiB = 2**20


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{key} is not in /proc/self/status")


@contextmanager
def peak_growth() -> Iterator[dict[str, float]]:
    """{"mb": ...}: how far the peak resident memory rose above the start, in MiB, once the block ends."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    CLEAR_REFS.write_text("5")
    before = _status("VmRSS")
    box: dict[str, float] = {}
    yield box
    box["mb"] = (_status("VmHWM") - before) / MiB


def png_b64(size: tuple[int, int], mode: str = "RGB", colour: int | tuple[int, ...] = 0) -> str:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def shapes_b64() -> str:
    image = Image.new("RGB", (64, 64))
    ImageDraw.Draw(image).rectangle((16, 16, 40, 48), fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


SOLID_4096 = png_b64((4096, 4096), colour=(200, 30, 30))  # 16.8 Mpx, the default per-image limit; ~50 kB of PNG


# The client runs in its own process, so only the server's memory is measured (httpx copies a body it sends).
CLIENT = """
import json, sys, httpx
body = sys.stdin.buffer.read()
response = httpx.post(sys.argv[1], content=body, headers={"content-type": "application/json"}, timeout=300)
json.dump({"status": response.status_code, "headers": dict(response.headers), "text": response.text}, sys.stdout)
"""


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def post(url: str, path: str, body: bytes) -> tuple[Answer, float]:
    """POST an encoded JSON body from another process; (answer, this process's peak memory growth in MiB)."""
    with peak_growth() as growth:
        done = subprocess.run([sys.executable, "-c", CLIENT, f"{url}{path}"], input=body, capture_output=True,
                              timeout=300, check=True)
    answer = json.loads(done.stdout)
    return Answer(answer["status"], answer["headers"], answer["text"]), growth["mb"]


def refusal(response: Answer | httpx.Response, status: int = 422) -> dict:
    assert response.status_code == status, response.text[:500]
    return response.json()


@pytest.fixture
def api(serve):
    easel, url = serve(api=True, nowebui=True, user=UserSettings(queue_size=1))
    wait_until_up(url)
    return easel, url


def test_batch_images_are_counted_from_their_headers_before_any_is_decoded(api) -> None:
    easel, url = api
    body = json.dumps({"imageList": [{"data": SOLID_4096, "name": f"{i}.png"} for i in range(10)],
                       "upscaler_1": "Lanczos", "upscaling_resize": 1}).encode()
    response, grown = post(url, "/sdapi/v1/extra-batch-images", body)
    print(f"extras batch bomb ({len(body) / MiB:.2f} MiB body): {response.status_code}, +{grown:.0f} MiB")
    refused = refusal(response)
    assert refused["field"] == "imageList.2.data", refused  # two fit in the 33.5 Mpx budget, the third does not
    assert "33554432 pixels per request (max_request_pixels)" in refused["detail"], refused
    assert grown < 30
    # Two images fit, but with the two 16.8 Mpx results they would hold 67 Mpx: refused before decoding too.
    body = json.dumps({"imageList": [{"data": SOLID_4096}] * 2, "upscaler_1": "Lanczos",
                       "upscaling_resize": 1}).encode()
    response, grown = post(url, "/sdapi/v1/extra-batch-images", body)
    refused = refusal(response)
    assert refused["field"] == "upscaling_resize" and "67108864 pixels" in refused["detail"], refused
    assert grown < 30, grown
    many = json.dumps({"imageList": [{"data": png_b64((8, 8))}] * 101}).encode()
    refused = refusal(post(url, "/sdapi/v1/extra-batch-images", many)[0])
    assert refused["field"] == "imageList.100.data" and "(max_request_images)" in refused["detail"], refused
    assert not easel.engine.worker.jobs


def test_png_info_json_bomb_is_refused_while_the_body_streams_in(api) -> None:
    easel, url = api
    body = b'{"image": "' + png_b64((8, 8)).encode() + b'", "junk": [' + b"[]," * (20 * MiB) + b"[]]}"
    response, grown = post(url, "/sdapi/v1/png-info", body)
    print(f"png-info JSON bomb ({len(body) / MiB:.0f} MiB body): {response.status_code}, +{grown:.0f} MiB")
    refused = refusal(response, 413)
    assert refused["field"] == "junk" and "more than 100000 JSON values" in refused["detail"], refused
    assert grown < 30
    wide = b'{"image": "x", "junk": "' + b"a" * (60 * MiB) + b'\\ud83d\\ude00"}'  # 4 bytes a character once parsed
    response, grown = post(url, "/sdapi/v1/png-info", wide)
    print(f"png-info wide string ({len(wide) / MiB:.0f} MiB body): {response.status_code}, +{grown:.0f} MiB")
    refused = refusal(response, 413)
    assert refused["field"] == "junk" and "non-ASCII" in refused["detail"], refused
    assert grown < 100  # the body itself, read before its last bytes turn the string wide; 448 MiB before
    deep = b'{"image": "x", "nested": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    refused = refusal(post(url, "/sdapi/v1/png-info", deep)[0])
    assert refused["field"] == "nested" and "32 levels" in refused["detail"], refused
    ok = httpx.post(f"{url}/sdapi/v1/png-info", json={"image": png_b64((8, 8)), "extra": [[1, 2]] * 1000})
    assert ok.status_code == 200, ok.text[:300]


@pytest.mark.parametrize("source, target", [((8, 1024), (1024, 1024)), ((1, 16384), (4096, 4096))],
                         ids=["8x1024-to-1024", "1x16384-to-4096"])
def test_extras_crop_never_makes_more_than_its_result(api, source, target) -> None:
    easel, url = api
    body = json.dumps({"image": png_b64(source, colour=(0, 90, 200)), "upscaler_1": "Lanczos",
                       "resize_mode": 1, "upscaling_resize_w": target[0], "upscaling_resize_h": target[1],
                       "upscaling_crop": True}).encode()
    response, grown = post(url, "/sdapi/v1/extra-single-image", body)
    print(f"extras crop {source} -> {target}: {response.status_code}, +{grown:.0f} MiB")
    assert response.status_code == 200, response.text[:300]
    result = Image.open(io.BytesIO(base64.b64decode(response.json()["image"])))
    assert result.size == target and result.convert("RGB").getpixel((target[0] // 2, 0)) == (0, 90, 200)
    result_mib = target[0] * target[1] * 3 / MiB  # the result itself, as RGB
    assert grown < result_mib * 2 + 30, (grown, result_mib)  # was 525 MiB for the first; ~1 TB for the second


def test_segment_template_is_filled_without_str_format(api) -> None:
    easel, url = api
    for template, words in (("{query:>300000000}{query}{nope}", "not {query:>300000000}"),
                            ("{query}{query.__class__}", "not {query.__class__}"),
                            ("{query} and {query}", "{query} once"), ("{query} {", "unmatched brace")):
        body = json.dumps({"image": png_b64((64, 64)), "query": "the red circle", "template": template}).encode()
        response, grown = post(url, "/easel/v1/segment", body)
        print(f"segment template {template!r}: {response.status_code}, +{grown:.0f} MiB")
        refused = refusal(response)
        assert refused["field"] == "template" and words in refused["detail"], refused
        assert grown < 10
    assert not easel.engine.worker.jobs


def test_controlnet_units_are_counted_and_their_images_budgeted(api) -> None:
    easel, url = api
    unit = {"enabled": False, "module": "canny", "model": "none"}
    body = json.dumps({"prompt": "x", "steps": 1, "width": 64, "height": 64,
                       "alwayson_scripts": {"ControlNet": {"args": [unit] * 11}}}).encode()
    refused = refusal(post(url, "/sdapi/v1/txt2img", body)[0])
    assert refused["field"] == "alwayson_scripts.ControlNet", refused
    assert "args: at most 10 ControlNet units in one request" in refused["detail"], refused
    units = [{"enabled": True, "image": SOLID_4096, "module": "canny", "model": "tiny-canny"}] * 3
    body = json.dumps({"prompt": "x", "steps": 1, "width": 64, "height": 64,
                       "alwayson_scripts": {"ControlNet": {"args": units}}}).encode()
    response, grown = post(url, "/sdapi/v1/txt2img", body)
    print(f"three 4096x4096 ControlNet units: {response.status_code}, +{grown:.0f} MiB")
    refused = refusal(response)
    assert refused["field"] == "alwayson_scripts.ControlNet.args.2.image", refused
    assert "(max_request_pixels)" in refused["detail"]
    assert grown < 30
    assert not easel.engine.worker.jobs


def test_controlnet_detect_waits_in_the_queue_and_is_budgeted(api) -> None:
    easel, url = api
    detect = {"controlnet_module": "canny", "controlnet_processor_res": 64, "controlnet_threshold_a": 50,
              "controlnet_threshold_b": 150}
    refused = refusal(httpx.post(f"{url}/controlnet/detect", timeout=60,
                                 json={**detect, "controlnet_input_images": [SOLID_4096] * 3}))
    assert refused["field"] == "controlnet_input_images.2" and "(max_request_pixels)" in refused["detail"]
    refused = refusal(httpx.post(f"{url}/controlnet/detect", timeout=60,
                                 json={**detect, "controlnet_input_images": [shapes_b64()] * 11}))
    assert refused["field"] == "controlnet_input_images" and "at most 10 images" in refused["detail"]

    gate, entered = threading.Event(), threading.Event()
    holder = easel.engine.submit(CallTask(call=lambda: (entered.set(), gate.wait(120)), label="test"))
    assert entered.wait(60)
    answers: list[httpx.Response] = []
    waiting = threading.Thread(target=lambda: answers.append(httpx.post(
        f"{url}/controlnet/detect", timeout=120, json={**detect, "controlnet_input_images": [shapes_b64()]})))
    try:
        waiting.start()
        deadline = time.monotonic() + 60
        while easel.engine.worker.queue_length() < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert easel.engine.worker.queue_length() == 1  # the detect call waits behind the running job
        full = httpx.post(f"{url}/controlnet/detect", timeout=60,
                          json={**detect, "controlnet_input_images": [shapes_b64()]})
        assert full.status_code == 503 and full.json()["error"] == "QueueFull", full.text
        assert full.headers["retry-after"] == "5" and not answers
    finally:
        gate.set()
        waiting.join(120)
    assert holder.wait(60) and holder.state.value == "done"
    assert answers and answers[0].status_code == 200, answers[0].text[:300]
    edges = Image.open(io.BytesIO(base64.b64decode(answers[0].json()["images"][0])))
    assert edges.size == (64, 64) and len(set(edges.convert("L").getdata())) == 2
    jobs = [job for job in easel.engine.worker.jobs.values() if job.request.mode == "extension"]
    assert [job.request.label for job in jobs] == ["test", "controlnet"]
