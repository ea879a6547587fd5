"""A property-based fuzzer over Easel's API: random bodies (known field names with values of every JSON type,
unknown names, hostile strings, nested junk, raw bytes) sent to every route that takes input. Not one answer
may be a 5xx, every 4xx names what was wrong, and afterwards the worker is alive and a normal request works.

The Easel under test has tight limits (64 px, 2 steps, 2 images), so the few random bodies that are valid
generate quickly on the tiny SD 1.x model.
"""
from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from webui.api.schemas import (ExtrasSingleImageRequest, PNGInfoRequest, StableDiffusionImg2ImgProcessingAPI,
                               StableDiffusionTxt2ImgProcessingAPI)
from tests.security.conftest import one_worker_thread
from webui.settings import UserSettings

pytestmark = pytest.mark.slow

EXAMPLES = 40


def _png(size: tuple[int, int] = (8, 8), mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, size, 200).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


HOSTILE = ["", " ", "\x00", "../../etc/passwd", "/etc/passwd", "..\\..\\windows", "%2e%2e%2f", "tiny-sd1",
           "Euler", "Euler a", "DDIM", "karras", "Automatic", "None", "Lanczos", "nan", "-1", "1e309", "a" * 300,
           "<lora:../../etc/passwd:1>", "<lora:x:nan>", "data:image/png;base64,", "data:image/png;base64,@@@",
           "file:///etc/passwd", "http://127.0.0.1:1/x.png", _png(), "data:image/png;base64," + _png((64, 64)),
           _png((1, 1), "L"), base64.b64encode(b"GIF89a\x01\x00junk").decode(), "\ud800", "\u202e\u0000"]

scalars = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20) | st.sampled_from(HOSTILE))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=12) | st.sampled_from(["sd_model_checkpoint", "sd_vae",
                                                                                 "CLIP_stop_at_last_layers", "args"]),
                                        inner, max_size=3), max_leaves=6)

SMALL = {"prompt": "fuzz", "width": 64, "height": 64, "steps": 1}


def bodies(model: type, base: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """JSON bodies: mostly objects over the model's field names (sometimes on top of a small valid request),
    sometimes arrays, strings or numbers."""
    names = st.sampled_from(list(model.model_fields)) | st.text(max_size=10)
    objects = st.dictionaries(names, values, max_size=6)
    if base is not None:
        objects = objects | st.dictionaries(names, values, max_size=3).map(lambda extra: {**base, **extra})
    return objects | values


ROUTES: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("/sdapi/v1/txt2img", bodies(StableDiffusionTxt2ImgProcessingAPI, SMALL)),
    ("/sdapi/v1/img2img", bodies(StableDiffusionImg2ImgProcessingAPI, {**SMALL, "init_images": [_png((64, 64))]})),
    ("/sdapi/v1/png-info", bodies(PNGInfoRequest, {"image": _png()})),
    ("/sdapi/v1/extra-single-image", bodies(ExtrasSingleImageRequest, {"image": _png(), "upscaler_1": "Lanczos"})),
    ("/sdapi/v1/options", st.dictionaries(st.sampled_from(["sd_model_checkpoint", "CLIP_stop_at_last_layers", "sd_vae",
                                                           "samples_save", "show_progress_every_n_steps"])
                                          | st.text(max_size=10), values, max_size=4) | values),
]


@pytest.fixture
def fuzz_client(api_client):
    tight = UserSettings(max_side=64, max_pixels=64 * 64, max_steps=2, max_batch_size=2, max_batch_count=2,
                         max_prompt_chars=400, live_preview_every=0)
    easel, client = api_client(api=True, user=tight, max_upload_bytes=256 * 1024)
    one_worker_thread(easel)
    return easel, client


def check_answer(route: str, response: Any) -> None:
    assert response.status_code < 500, (route, response.status_code, response.text[:500])
    if response.status_code >= 400:
        data = response.json()
        assert data["detail"] and "error" in data, (route, data)


@pytest.mark.parametrize("route, strategy", ROUTES, ids=[r[0].rsplit("/", 1)[-1] for r in ROUTES])
def test_fuzzed_bodies_never_give_a_5xx(fuzz_client, route: str, strategy: st.SearchStrategy[Any]) -> None:
    easel, client = fuzz_client
    seen: dict[int, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(body=strategy)
    def send(body: Any) -> None:
        text = json.dumps(body, allow_nan=True)  # NaN and Infinity too, as some clients send them
        response = client.post(route, content=text, headers={"content-type": "application/json"})
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        check_answer(route, response)

    send()
    assert sum(seen.values()) >= EXAMPLES
    assert easel.engine.worker.alive
    after = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 3})
    assert after.status_code == 200, after.text


def test_fuzzed_raw_bytes_and_queries(fuzz_client) -> None:
    easel, client = fuzz_client

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(route=st.sampled_from([r for r, _ in ROUTES]), raw=st.binary(max_size=300),
           content_type=st.sampled_from(["application/json", "text/plain", "multipart/form-data", ""]),
           query=st.dictionaries(st.sampled_from(["skip_current_image", "id_task", "x"]), st.text(max_size=8),
                                 max_size=2))
    def send(route: str, raw: bytes, content_type: str, query: dict[str, str]) -> None:
        headers = {"content-type": content_type} if content_type else {}
        check_answer(route, client.post(route, content=raw, headers=headers))
        check_answer("/sdapi/v1/progress", client.get("/sdapi/v1/progress", params=query))

    send()
    oversized = client.post("/sdapi/v1/png-info", content=b"{" + b" " * (300 * 1024) + b"}",
                            headers={"content-type": "application/json"})
    assert oversized.status_code == 413 and oversized.json()["field"] == "body"
    assert easel.engine.worker.alive
    assert client.post("/sdapi/v1/txt2img", json=SMALL).status_code == 200
