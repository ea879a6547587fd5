"""Listing and control routes: sd-models, samplers, options (model switch), png-info, VAEs, flags."""
from __future__ import annotations

import base64
import io
import shutil

from PIL import PngImagePlugin

from tests.api.conftest import TINY, b64_png, gradient, info_of
from webui.infotext import format_infotext


def test_sd_models_lists_the_installed_checkpoint(client, easel):
    models = client.get("/sdapi/v1/sd-models").json()
    assert [m["model_name"] for m in models] == ["tiny-sd1"]
    entry = easel.manager.find_checkpoint("tiny-sd1")
    assert models[0]["title"] == entry.title and models[0]["filename"] == "tiny-sd1"  # relative to its folder
    assert set(models[0]) >= {"title", "model_name", "hash", "sha256", "filename", "config"}


def test_refresh_checkpoints_finds_a_new_model(client, easel, tiny_sd1_dir):
    shutil.copytree(tiny_sd1_dir, easel.settings.models_dir / "diffusers" / "tiny-sd1-b")
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    names = {m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()}
    assert names == {"tiny-sd1", "tiny-sd1-b"}


def test_options_switch_the_model(client, easel, tiny_sd1_dir):
    shutil.copytree(tiny_sd1_dir, easel.settings.models_dir / "diffusers" / "tiny-sd1-b")
    client.post("/sdapi/v1/refresh-checkpoints")
    title = next(m["title"] for m in client.get("/sdapi/v1/sd-models").json() if m["model_name"] == "tiny-sd1-b")
    response = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": title})
    assert response.status_code == 200, response.text
    assert easel.manager.current().name == "tiny-sd1-b"
    # Loading hashes the model, so its title now carries the short hash, in both listings.
    titles = {m["model_name"]: m["title"] for m in client.get("/sdapi/v1/sd-models").json()}
    assert titles["tiny-sd1-b"].startswith(title)
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == titles["tiny-sd1-b"]
    info = info_of(client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **TINY}).json())
    assert info["sd_model_name"] == "tiny-sd1-b"
    # A per-request override picks the other model without changing the option.
    info = info_of(client.post("/sdapi/v1/txt2img", json={
        "prompt": "x", "seed": 1, "override_settings": {"sd_model_checkpoint": "tiny-sd1"}, **TINY}).json())
    assert info["sd_model_name"] == "tiny-sd1"


def test_options_unknown_model_is_a_4xx_naming_it(client):
    response = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "no-such-model"})
    assert response.status_code == 404
    data = response.json()
    assert data["field"] == "sd_model_checkpoint" and "no-such-model" in data["detail"]


def test_options_clip_skip_applies_to_later_requests(client):
    assert client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}).status_code == 200
    assert client.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
    data = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **TINY}).json()
    assert info_of(data)["clip_skip"] == 2
    bad = client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 0})
    assert bad.status_code == 422 and bad.json()["field"] == "CLIP_stop_at_last_layers"


def test_options_samples_save_is_persisted(client, easel):
    assert client.post("/sdapi/v1/options", json={"samples_save": False}).status_code == 200
    assert easel.settings.user.save_images is False
    assert '"save_images": false' in easel.settings.config_path.read_text()


def test_samplers_list_a1111_names(client):
    samplers = client.get("/sdapi/v1/samplers").json()
    names = [s["name"] for s in samplers]
    assert {"Euler a", "Euler", "DPM++ 2M", "DDIM", "UniPC", "Heun", "LMS"} <= set(names)
    assert all(set(s) == {"name", "aliases", "options"} for s in samplers)
    assert not [n for n in names if n.endswith(" Karras")]  # the schedule is its own choice (GET /schedulers)


def test_sampler_alias_and_scheduler_are_understood(client):
    data = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, "sampler_name": "DPM++ 2M",
                                                   "scheduler": "Karras", **TINY}).json()
    info = info_of(data)
    assert info["sampler_name"] == "DPM++ 2M" and "Schedule type: Karras" in info["infotexts"][0]
    data = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, "sampler_index": "k_euler_a", **TINY}).json()
    assert info_of(data)["sampler_name"] == "Euler a"


def test_png_info_round_trip(client):
    data = client.post("/sdapi/v1/txt2img", json={"prompt": "a (red:1.2) fox", "negative_prompt": "dull",
                                                   "seed": 31, **TINY}).json()
    response = client.post("/sdapi/v1/png-info", json={"image": data["images"][0]})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["info"] == info_of(data)["infotexts"][0]
    params = result["parameters"]
    assert params["Prompt"] == "a (red:1.2) fox" and params["Negative prompt"] == "dull" and params["Seed"] == "31"
    assert params["Size"] == "64x64" and params["Model"] == "tiny-sd1"


def test_png_info_reads_an_automatic1111_image_and_extra_text(client):
    text = format_infotext("castle", "fog", {"Steps": 20, "Sampler": "DPM++ 2M", "Schedule type": "Karras",
                                             "CFG scale": 7, "Seed": 1, "Size": "512x768", "Model hash": "abcdef1234",
                                             "Model": "dream", "Lora hashes": "a: 1, b: 2"})
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", text)
    meta.add_text("Software", "AUTOMATIC1111")
    buffer = io.BytesIO()
    gradient(8, 8).save(buffer, format="PNG", pnginfo=meta)
    result = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(buffer.getvalue()).decode()}).json()
    assert result["info"] == text
    assert result["items"] == {"Software": "AUTOMATIC1111"}
    assert result["parameters"]["Lora hashes"] == "a: 1, b: 2" and result["parameters"]["Size"] == "512x768"


def test_png_info_without_parameters_is_empty(client):
    result = client.post("/sdapi/v1/png-info", json={"image": b64_png(gradient(8, 8))}).json()
    assert result == {"info": "", "items": {}, "parameters": {}}


def test_vae_flags_and_compat_routes(client, easel):
    assert client.get("/sdapi/v1/sd-vae").json() == []
    flags = client.get("/sdapi/v1/cmd-flags").json()
    assert flags["data_dir"] == easel.settings.data_dir.name and flags["nowebui"] is False  # never a full path
    alwayson = sorted(name.lower() for name in easel.registry.request_args)  # detail fixer, ControlNet, ...
    builtin = ["x/y/z plot", "prompt matrix", "prompts from file or textbox"]  # the built-in scripts come first
    assert client.get("/sdapi/v1/scripts").json() == {"txt2img": [*builtin, *alwayson],
                                                      "img2img": [*builtin, "sd upscale", "loopback", *alwayson]}
    assert "Lanczos" in [u["name"] for u in client.get("/sdapi/v1/upscalers").json()]
    assert client.post("/sdapi/v1/interrupt").json() == {"interrupted": False}
    assert client.post("/sdapi/v1/skip").json() == {"skipped": False}



def test_extension_routes_are_mounted_with_the_api(easel):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api.routes import create_api
    from webui.extensions import RouteContribution

    def hello(name: str = "world") -> dict:
        return {"hello": name}

    easel.registry.routes.append(RouteContribution("/extensions/demo/hello", hello, ["GET"], "demo"))
    easel.registry.routes.append(RouteContribution("/extensions/broken/x", "not callable", ["GET"], "broken"))
    app = FastAPI()
    create_api(app, easel)
    with TestClient(app) as client:
        assert client.get("/extensions/demo/hello", params={"name": "easel"}).json() == {"hello": "easel"}
        assert client.get("/sdapi/v1/options").status_code == 200


def test_vae_is_listed_and_used_per_request(client, easel, tiny_sd1_dir):
    from tests.tiny_models import save_vae_single_file

    save_vae_single_file(tiny_sd1_dir, easel.settings.models_dir / "VAE" / "tiny-vae.safetensors")
    client.post("/sdapi/v1/refresh-checkpoints")
    vaes = client.get("/sdapi/v1/sd-vae").json()
    assert [v["filename"] for v in vaes] == ["tiny-vae.safetensors"]
    name = vaes[0]["model_name"]
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **TINY,
                                                      "override_settings": {"sd_vae": "tiny-vae.safetensors"}})
    assert response.status_code == 200, response.text
    info = info_of(response.json())
    assert info["sd_vae_name"] == name and f"VAE: {name}" in info["infotexts"][0]
