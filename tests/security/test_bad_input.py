"""Bad input against the limits in the settings: the API answers 4xx naming the field, the page's Generate
handler shows a readable message naming it, and nothing is queued. Uploads are limited in size and in decoded
pixels. (The API's per-field cases at default limits, malformed base64, wrong types and unknown sampler or
model names are in tests/api/test_errors.py; test_fuzz.py sends random bodies.)
"""
from __future__ import annotations

import asyncio
import base64
import io

import gradio as gr
import httpx
import pytest
from PIL import Image

from tests.security.conftest import wait_until_up
from webui.settings import UserSettings

TIGHT = UserSettings(max_side=128, max_pixels=128 * 96, max_steps=5, max_batch_size=2, max_batch_count=3,
                     max_prompt_chars=50, max_images=5)
OK = {"prompt": "fine", "width": 64, "height": 64, "steps": 1}

CASES = [
    ({"width": 136}, "width", "128"),
    ({"height": 256}, "height", "128"),
    ({"width": 128, "height": 128}, "width", "12288"),  # each side is fine, the pixel count is not
    ({"steps": 6}, "steps", "5"),
    ({"batch_size": 3}, "batch_size", "2"),
    ({"n_iter": 4}, "n_iter", "3"),
    ({"batch_size": 2, "n_iter": 3}, "n_iter", "5 images"),  # each fine, their product is not
    ({"prompt": "p" * 51}, "prompt", "50"),
    ({"negative_prompt": "n" * 51}, "negative_prompt", "50"),
]


async def drain(stream) -> None:
    async for _ in stream:
        pass


def png_b64(size: tuple[int, int], mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, size, 0).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize("changes, field, limit", CASES, ids=[c[1] + "-" + str(i) for i, c in enumerate(CASES)])
def test_settings_limits_apply_to_the_api(api_client, changes, field, limit) -> None:
    easel, client = api_client(api=True, user=TIGHT)
    response = client.post("/sdapi/v1/txt2img", json={**OK, **changes})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field and body["detail"].startswith(f"{field}: ") and limit in body["detail"], body
    assert not easel.engine.worker.jobs
    assert client.post("/sdapi/v1/txt2img", json=OK).status_code == 200  # at the limits' inside: fine


def test_settings_limits_reach_the_page_as_readable_messages(make_easel) -> None:
    from webui.ui.app import build_ui

    easel = make_easel(user=TIGHT)
    blocks, ui = build_ui(easel)
    controls = ui.generation["txt2img"].controls
    component = {name: control.component for name, control in controls.controls.items()}
    generate = next(f.fn for f in blocks.fns.values()
                    if getattr(f.fn, "__name__", "") == "on_generate" and component["width"] in f.inputs)
    defaults = {c.component: c.component.value for c in controls.controls.values()}
    ui_cases = [({"width": 136}, "width", "128"), ({"width": 128, "height": 128}, "width", "12288"),
                ({"steps": 6}, "steps", "5"), ({"batch_size": 3}, "batch_size", "2"),
                ({"batch_count": 4}, "n_iter", "3"), ({"prompt": "p" * 51}, "prompt", "50"),
                ({"sampler": "No Such Sampler"}, "sampler", "No Such Sampler"),
                ({"checkpoint": "no-such-model"}, "checkpoint", "no-such-model"),
                ({"steps": "many"}, "steps", "many")]
    for changes, field, words in ui_cases:
        values = {**defaults, component["width"]: 64, component["height"]: 64, component["steps"]: 1}
        values.update({component[name]: value for name, value in changes.items() if name in component})
        with pytest.raises(gr.Error) as caught:
            asyncio.run(drain(generate(values)))  # the Generate handler is an async generator
        message = str(caught.value.message)
        assert field in message and words in message, (changes, message)
        assert "Traceback" not in message and "Unexpected error" not in message, message
    assert not [job for job in easel.engine.worker.jobs.values() if job.state.value == "done"]


def test_uploads_are_limited_in_bytes_and_pixels(serve, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # the server lowers it; restore after
    easel, url = serve(api=True, user=TIGHT, max_upload_bytes=200_000)
    wait_until_up(url)
    big = b"\x89PNG" + b"\x00" * 300_000
    uploaded = httpx.post(f"{url}/gradio_api/upload", files={"files": ("big.png", big)}, timeout=30)
    assert uploaded.status_code == 413, uploaded.text  # Gradio's max_file_size, from the same setting
    too_long = httpx.post(f"{url}/sdapi/v1/img2img", timeout=30,
                          json={**OK, "init_images": [base64.b64encode(big).decode()]})
    assert too_long.status_code == 413 and too_long.json()["field"] == "body"
    bomb = png_b64((8000, 8000), "1")  # a few kB that decode to 64 million pixels
    assert len(bomb) < 200_000
    refused = httpx.post(f"{url}/sdapi/v1/img2img", json={**OK, "init_images": [bomb]}, timeout=30)
    assert refused.status_code == 422 and refused.json()["field"] == "init_images"
    assert "too large to decode" in refused.json()["detail"]
    png_info = httpx.post(f"{url}/sdapi/v1/png-info", json={"image": bomb}, timeout=30)
    assert png_info.status_code == 422 and png_info.json()["field"] == "image"
    # What the page decodes (Gradio opens uploads with Pillow) is capped by the same limit.
    assert Image.MAX_IMAGE_PIXELS == TIGHT.max_pixels * 4
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(base64.b64decode(bomb))).load()
    ok = httpx.post(f"{url}/sdapi/v1/img2img", json={**OK, "init_images": [png_b64((64, 64))]}, timeout=120)
    assert ok.status_code == 200, ok.text
