"""Files sent to the browser are only outputs and Gradio's own upload/cache files.

A real Gradio server (UI + API) is asked, through every route that reads a file by a path it is given
(Gradio 6.31: `/gradio_api/file=`, `/gradio_api/file/`, `/gradio_api/proxy=`, `/static/`, `/assets/`,
`/gradio_api/custom_component/`) and Easel's own routes, for: absolute paths, `../` traversal (plain, URL-encoded,
double-encoded, backslashes), paths relative to the working directory, symbolic links in outputs pointing out of
it, model files, the settings file and URLs back to the machine itself. Every one is refused and no response
carries the secret bytes; an image in outputs and a file uploaded through Gradio are served.
"""
from __future__ import annotations

import http.client
import os
import urllib.parse
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.security.conftest import wait_until_up

SECRET = b"EASEL-TEST-SECRET-7f3a"


def raw_get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET `path` exactly as written (http.client does not normalise `..` or re-encode the path)."""
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture
def world(serve, tmp_path_factory):
    """A running Easel (no logins: the worst case) whose disk holds secrets next to its outputs."""
    outside = tmp_path_factory.mktemp("outside")
    secret = outside / "secret.txt"
    secret.write_bytes(SECRET)
    easel, url = serve(api=True, ckpt_dirs=[])
    settings = easel.settings
    outputs = settings.outputs_dir
    day = outputs / "txt2img-images" / "2024-01-01"
    day.mkdir(parents=True, exist_ok=True)
    image = day / "00000-1.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(image)
    model = settings.models_dir / "Stable-diffusion" / "model.safetensors"
    model.write_bytes(SECRET + b" model weights")
    settings.config_path.write_text('{"note": "' + SECRET.decode() + '"}', encoding="utf-8")
    links = {
        "secret": outputs / "link-to-secret.txt",
        "model": day / "link-to-model.safetensors",
        "models_dir": outputs / "models-link",
        "config": outputs / "config-link.json",
    }
    os.symlink(secret, links["secret"])
    os.symlink(model, links["model"])
    os.symlink(settings.models_dir, links["models_dir"], target_is_directory=True)
    os.symlink(settings.config_path, links["config"])
    wait_until_up(url, "/", ok=(200,))
    return {"url": url, "easel": easel, "secret": secret, "model": model, "image": image, "links": links,
            "outputs": outputs, "config": settings.config_path}


def file_routes(target: str) -> list[str]:
    """Every way of naming `target` (an absolute path or path fragment) to Gradio's file routes."""
    return [f"/gradio_api/file={target}", f"/gradio_api/file/{target}", f"/file={target}"]


def attempts(w: dict) -> list[str]:
    outputs, secret, model, config = str(w["outputs"]), str(w["secret"]), str(w["model"]), str(w["config"])
    up_to_root = "/..".join([""] * (len(Path(outputs).parts) + 1))  # enough ../ to reach /
    to_secret = up_to_root + secret
    quoted = urllib.parse.quote
    paths: list[str] = []
    for target in (secret, model, config, "/etc/passwd", str(w["links"]["secret"]), str(w["links"]["model"]),
                   str(w["links"]["config"]), str(w["links"]["models_dir"] / "Stable-diffusion" / "model.safetensors"),
                   outputs + to_secret, outputs + "/../config.json", outputs + "/../models/Stable-diffusion/model.safetensors",
                   os.path.relpath(secret), os.path.relpath(model)):
        paths += file_routes(target)
        paths += file_routes(quoted(target, safe=""))  # every character percent-encoded
    encoded_dots = outputs + to_secret.replace("..", "%2e%2e").replace("/", "%2f")
    double = outputs + to_secret.replace("..", "%252e%252e").replace("/", "%252f")
    backslashes = outputs + to_secret.replace("/", "\\")
    for target in (encoded_dots, double, backslashes, quoted(backslashes, safe="")):
        paths += file_routes(target)
    for prefix in ("/static/", "/assets/", "/gradio_api/custom_component/x/client/y/"):
        paths += [prefix + "../" * 12 + secret.lstrip("/"), prefix + "%2e%2e%2f" * 12 + quoted(secret.lstrip("/")),
                  prefix + "..%5c" * 12 + quoted(secret.lstrip("/"))]
    for url in (f"file://{secret}", f"{w['url']}/gradio_api/file={w['image']}", "http://127.0.0.1:1/secret",
                "http://169.254.169.254/latest/meta-data/"):
        paths += [f"/gradio_api/file={url}", f"/gradio_api/proxy={url}", f"/gradio_api/file={quoted(url, safe='')}"]
    return paths


def test_outputs_and_uploads_are_served(world) -> None:
    url = world["url"]
    status, body = raw_get(url, f"/gradio_api/file={world['image']}")
    assert status == 200 and body.startswith(b"\x89PNG")
    with httpx.Client(timeout=30) as client:
        uploaded = client.post(f"{url}/gradio_api/upload", files={"files": ("up.png", world["image"].read_bytes())})
        assert uploaded.status_code == 200, uploaded.text
        path = uploaded.json()[0]
        assert client.get(f"{url}/gradio_api/file={path}").status_code == 200


def test_nothing_else_is_served_through_any_file_route(world) -> None:
    url = world["url"]
    tried = attempts(world)
    assert len(tried) > 100
    leaks = []
    for path in tried:
        status, body = raw_get(url, path)
        if status == 200 or SECRET in body or b"root:" in body:
            leaks.append((path, status, body[:80]))
    assert not leaks, leaks


def test_model_folders_are_blocked_even_inside_outputs(serve, tmp_path) -> None:
    """A checkpoint folder placed inside outputs (a valid if odd --ckpt-dir) is still never served."""
    easel, url = serve(api=True, ckpt_dirs=[tmp_path / "data" / "outputs" / "ckpts"])
    folder = easel.settings.outputs_dir / "ckpts"
    folder.mkdir(parents=True)
    (folder / "weights.safetensors").write_bytes(SECRET)
    wait_until_up(url, "/", ok=(200,))
    status, body = raw_get(url, f"/gradio_api/file={folder / 'weights.safetensors'}")
    assert status != 200 and SECRET not in body
    allowed, blocked = easel.settings.served_paths()
    assert allowed == [str(easel.settings.outputs_dir.resolve())]
    assert str(folder.resolve()) in blocked and str(easel.settings.models_dir.resolve()) in blocked
    assert str(easel.settings.config_path.resolve()) in blocked


def test_easel_routes_take_no_file_paths(world) -> None:
    """Easel's API reads images only from the request body: a path where an image is expected is bad input."""
    url = world["url"]
    for body in ({"image": str(world["secret"])}, {"image": f"file://{world['secret']}"},
                 {"image": f"data:image/png;base64,{world['secret']}"}):
        response = httpx.post(f"{url}/sdapi/v1/png-info", json=body, timeout=30)
        assert response.status_code == 422 and SECRET not in response.content
    response = httpx.post(f"{url}/sdapi/v1/img2img", json={"init_images": [str(world["secret"])], "steps": 1},
                          timeout=30)
    assert response.status_code == 422 and SECRET not in response.content


def test_file_routes_need_the_login_when_there_is_one(serve) -> None:
    easel, url = serve(api=True, gradio_auth="ann:pw")
    image = easel.settings.outputs_dir / "x.png"
    Image.new("RGB", (4, 4)).save(image)
    wait_until_up(url, "/", ok=(200,))
    status, body = raw_get(url, f"/gradio_api/file={image}")
    assert status == 401 and not body.startswith(b"\x89PNG")
