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
