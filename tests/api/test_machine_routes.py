"""The AUTOMATIC1111 listing routes realesrgan-models, face-restorers, hypernetworks and sd-modules (shapes,
relative paths, empty when nothing is installed) and the server routes: absent without --api-server-stop,
behind the API's logins with it."""
from __future__ import annotations

from safetensors.torch import save_file
import torch

from tests.conftest import api_client
from tests.tiny_upscalers import make_tiny_esrgan


def write_tensors(path, tensors=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors or {"weight": torch.zeros(2, 2)}, str(path))


def test_listings_are_empty_when_nothing_is_installed(client):
    for route in ("realesrgan-models", "face-restorers", "hypernetworks", "sd-modules"):
        response = client.get(f"/sdapi/v1/{route}")
        assert response.status_code == 200, route
        assert response.json() == [], route


def test_listings_show_installed_files_in_automatic1111_shapes(client, easel, tmp_path):
    models = easel.settings.models_dir
    make_tiny_esrgan(models / "ESRGAN" / "2x-tiny.safetensors", scale=2)
    easel.engine.upscalers.refresh()
    write_tensors(models / "GFPGAN" / "GFPGANv1.4.safetensors")
    write_tensors(models / "Codeformer" / "sub" / "codeformer-v0.1.0.safetensors")
    write_tensors(models / "hypernetworks" / "anime.safetensors")
    (models / "hypernetworks" / "old.pt").write_bytes(b"\x80\x02}q\x00.")  # listed, never opened
    (models / "hypernetworks" / "notes.txt").write_text("not a model")
    write_tensors(models / "hypernetworks" / ".hidden" / "secret.safetensors")
    write_tensors(models / "VAE" / "tiny-vae.safetensors")
    client.post("/sdapi/v1/refresh-vae")

    assert client.get("/sdapi/v1/realesrgan-models").json() == [
        {"name": "2x-tiny", "path": "2x-tiny.safetensors", "scale": 2}]
    assert client.get("/sdapi/v1/face-restorers").json() == [
        {"name": "GFPGAN", "cmd_dir": "GFPGAN", "files": ["GFPGAN/GFPGANv1.4.safetensors"]},
        {"name": "CodeFormer", "cmd_dir": "Codeformer", "files": ["Codeformer/sub/codeformer-v0.1.0.safetensors"]}]
    assert client.get("/sdapi/v1/hypernetworks").json() == [
        {"name": "anime", "path": "hypernetworks/anime.safetensors"},
        {"name": "old", "path": "hypernetworks/old.pt"}]
    modules = client.get("/sdapi/v1/sd-modules").json()
    assert {"model_name": "tiny-vae", "filename": "tiny-vae.safetensors"} in modules
    assert all(set(m) == {"model_name", "filename"} for m in modules)
    for route in ("realesrgan-models", "face-restorers", "hypernetworks", "sd-modules"):
        text = client.get(f"/sdapi/v1/{route}").text
        assert str(tmp_path) not in text and '"/' not in text, f"{route} shows an absolute path: {text}"


def test_server_routes_are_absent_without_the_flag(client):
    for route in ("server-stop", "server-restart", "server-kill"):
        assert client.post(f"/sdapi/v1/{route}").status_code == 404, route
    assert client.get("/sdapi/v1/cmd-flags").json()["api_server_stop"] is False


def test_server_routes_need_the_api_login_and_a_launched_easel(make_easel):
    easel = make_easel(api_server_stop=True, api_auth="admin:s3cret")
    with api_client(easel) as client:
        for route in ("server-stop", "server-restart", "server-kill"):
            assert client.post(f"/sdapi/v1/{route}").status_code == 401, route
            assert client.post(f"/sdapi/v1/{route}", auth=("admin", "wrong")).status_code == 401, route
            # An Easel built in this process (not by launch.py) has nothing the API could stop: it says so.
            response = client.post(f"/sdapi/v1/{route}", auth=("admin", "s3cret"))
            assert response.status_code == 501, (route, response.text)
            assert "not started by launch.py" in response.json()["detail"]
        for route in ("realesrgan-models", "face-restorers", "hypernetworks", "sd-modules"):
            assert client.get(f"/sdapi/v1/{route}").status_code == 401, route
            assert client.get(f"/sdapi/v1/{route}", auth=("admin", "s3cret")).status_code == 200, route
        assert client.get("/sdapi/v1/cmd-flags", auth=("admin", "s3cret")).json()["api_server_stop"] is True
