"""The API over real HTTP: API-only (uvicorn), mounted beside the Gradio UI, with logins, and via `webuiapi`."""
from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.api.conftest import TINY, b64_png, gradient, info_of, open_b64
from webui.infotext import parse_infotext


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, timeout: float = 60, auth: tuple[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/sdapi/v1/sd-models", timeout=5, auth=auth).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def stop(easel) -> None:
    server = easel.extras.get("server")
    if server is not None:
        server.should_exit = True
    blocks = easel.extras.get("blocks")
    if blocks is not None:
        blocks.close()


@pytest.fixture
def api_only(make_easel):
    from webui.app import create_server

    port = free_port()
    easel = make_easel(port=port, api=True, nowebui=True)
    _, url = create_server(easel, block=False)
    assert url == f"http://127.0.0.1:{port}"
    wait_until_up(url)
    yield easel, url
    stop(easel)


def test_api_only_server_generates(api_only):
    _, url = api_only
    response = httpx.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "over http", "seed": 11, **TINY}, timeout=120)
    assert response.status_code == 200, response.text
    data = response.json()
    image = open_b64(data["images"][0])
    assert parse_infotext(image.info["parameters"])["Prompt"] == "over http"
    assert info_of(data)["seed"] == 11
    bad = httpx.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "x", "steps": "abc"}, timeout=30)
    assert bad.status_code == 422 and bad.json()["field"] == "steps"
    assert httpx.get(f"{url}/", timeout=10).status_code == 404  # no UI


def test_api_only_img2img_and_progress(api_only):
    _, url = api_only
    response = httpx.post(f"{url}/sdapi/v1/img2img", json={"init_images": [b64_png(gradient())], "seed": 1, **TINY},
                          timeout=120)
    assert response.status_code == 200, response.text
    progress = httpx.get(f"{url}/sdapi/v1/progress", timeout=10).json()
    assert progress["progress"] == 0.0 and progress["state"]["job_count"] == 0


def test_webuiapi_client(api_only):
    webuiapi = pytest.importorskip("webuiapi")
    _, url = api_only
    port = int(url.rsplit(":", 1)[1])
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port, steps=2)
    result = api.txt2img(prompt="from webuiapi", seed=5, width=64, height=64, cfg_scale=6)
    assert result.image.size == (64, 64)
    assert result.info["seed"] == 5 and result.info["all_seeds"] == [5]
    assert result.parameters["prompt"] == "from webuiapi"
    assert "from webuiapi" in result.image.info["parameters"]
    edited = api.img2img(images=[gradient()], prompt="edit", seed=5, width=64, height=64, denoising_strength=0.5)
    assert edited.image.size == (64, 64)
    assert [m["model_name"] for m in api.get_sd_models()] == ["tiny-sd1"]
    assert "Euler a" in [s["name"] for s in api.get_samplers()]
    assert api.get_options()["sd_model_checkpoint"]
    assert api.png_info(result.image).info == result.info["infotexts"][0]


def test_api_mounted_beside_the_gradio_ui(make_easel):
    from webui.app import create_server

    port = free_port()
    easel = make_easel(port=port, api=True, nowebui=False)
    try:
        app, url = create_server(easel, block=False)
        url = url.rstrip("/")
        wait_until_up(url)
        assert httpx.get(f"{url}/", timeout=30).status_code == 200  # the UI is there too
        response = httpx.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "beside gradio", "seed": 3, **TINY},
                              timeout=120)
        assert response.status_code == 200, response.text
        assert info_of(response.json())["seed"] == 3
        bad = httpx.post(f"{url}/sdapi/v1/img2img", json={"prompt": "x", "init_images": ["@@"]}, timeout=30)
        assert bad.status_code == 422 and bad.json()["field"] == "init_images"
        docs = httpx.get(f"{url}/docs", timeout=30)  # the OpenAPI page, also beside the UI
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        schema = httpx.get(f"{url}/openapi.json", timeout=30).json()
        assert {"/sdapi/v1/txt2img", "/sdapi/v1/options", "/sdapi/v1/extra-single-image"} <= set(schema["paths"])
    finally:
        stop(easel)


@pytest.mark.parametrize("nowebui", [True, False], ids=["api-only", "with-ui"])
def test_logins_protect_the_api(make_easel, nowebui):
    from webui.app import create_server

    port = free_port()
    easel = make_easel(port=port, api=True, nowebui=nowebui, gradio_auth="ann:secret")
    try:
        _, url = create_server(easel, block=False)
        url = url.rstrip("/")
        wait_until_up(url, auth=("ann", "secret"))
        refused = httpx.get(f"{url}/sdapi/v1/options", timeout=10)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        wrong = httpx.get(f"{url}/sdapi/v1/options", timeout=10, auth=("ann", "nope"))
        assert wrong.status_code == 401
        assert httpx.get(f"{url}/sdapi/v1/options", timeout=10, auth=("ann", "secret")).status_code == 200
    finally:
        stop(easel)


def test_webuiapi_inpaint_extras_model_switch_progress_and_interrupt(api_only, tiny_sd1_dir):
    """The rest of what clients do through `webuiapi`: img2img with a mask, extra-single-image, listings, switching
    the model through the options, then watching progress (with its preview) and interrupting a long job."""
    import shutil
    import threading

    import numpy as np
    from PIL import Image

    webuiapi = pytest.importorskip("webuiapi")
    easel, url = api_only
    api = webuiapi.WebUIApi(host="127.0.0.1", port=int(url.rsplit(":", 1)[1]), steps=2)

    source = gradient()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpainted = api.img2img(images=[source], mask_image=mask, mask_blur=0, inpainting_fill=1,
                            inpaint_full_res=False, denoising_strength=1.0, prompt="a cat", seed=4, width=64,
                            height=64)
    result = np.asarray(inpainted.image.convert("RGB")).astype(int)
    outside = np.asarray(mask) == 0
    assert np.array_equal(result[outside], np.asarray(source).astype(int)[outside])
    assert np.abs(result[~outside] - np.asarray(source).astype(int)[~outside]).mean() > 1
    assert parse_infotext(inpainted.image.info["parameters"])["Masked content"] == "original"

    upscaled = api.extra_single_image(image=gradient(32, 24), upscaler_1="Lanczos", upscaling_resize=2)
    assert upscaled.image.size == (64, 48) and "Postprocess upscaler: Lanczos" in upscaled.info
    batch = api.extra_batch_images(images=[gradient(16, 16), gradient(8, 12)], upscaler_1="Nearest", upscaling_resize=2)
    assert [image.size for image in batch.images] == [(32, 32), (16, 24)]
    assert [u["name"] for u in api.get_upscalers()][:3] == ["None", "Lanczos", "Nearest"]
    assert {"automatic", "karras"} <= set(api.util_get_scheduler_names())
    assert api.get_cmd_flags()["nowebui"] is True and "ram" in api.get_memory()
    assert api.get_embeddings() == {"loaded": {}, "skipped": {}} and api.get_loras() == []

    shutil.copytree(tiny_sd1_dir, easel.settings.models_dir / "diffusers" / "tiny-sd1-b")
    api.refresh_checkpoints()
    assert len(api.util_get_model_names()) == 2
    api.util_set_model("tiny-sd1-b")
    assert api.util_get_current_model().startswith("tiny-sd1-b") and easel.manager.current().name == "tiny-sd1-b"
    switched = api.txt2img(prompt="switched", seed=1, width=64, height=64)
    assert switched.info["sd_model_name"] == "tiny-sd1-b"

    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(result=api.txt2img(
        prompt="long", seed=1, width=64, height=64, steps=150, n_iter=50)))
    thread.start()
    seen = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        state = api.get_progress()
        if state["state"]["sampling_step"] >= 5 and state["current_image"]:
            seen = state
            break
        time.sleep(0.05)
    assert seen is not None, "no progress with a preview was reported"
    assert 0 < seen["progress"] < 1 and seen["state"]["sampling_steps"] == 150
    assert open_b64(seen["current_image"]).size[0] > 0
    api.interrupt()
    thread.join(300)
    assert not thread.is_alive()
    interrupted = outcome["result"]
    assert interrupted.info["interrupted"] is True and 1 <= len(interrupted.images) < 50
    assert api.get_progress()["progress"] == 0.0
