"""The AUTOMATIC1111 routes beyond generation: options keys, upscalers and extra-single-image, LoRAs, embeddings,
memory, flags, unload/reload, API scripts, override_settings_restore_afterwards and the OpenAPI docs."""
from __future__ import annotations

import shutil

import pytest
import torch

from tests.api.conftest import TINY, b64_png, gradient, info_of, open_b64
from tests.tiny_upscalers import make_tiny_esrgan
from webui.extensions import ExtensionAPI
from webui.infotext import parse_infotext
from webui.model_manager.lora_writer import write_lora


@pytest.fixture
def esrgan(easel):
    make_tiny_esrgan(easel.settings.models_dir / "ESRGAN" / "2x-tiny.safetensors", scale=2)
    easel.engine.upscalers.refresh()
    return "2x-tiny"


def test_options_carry_the_keys_clients_read(client, easel):
    options = client.get("/sdapi/v1/options").json()
    for key in ("sd_model_checkpoint", "sd_checkpoint_hash", "sd_vae", "CLIP_stop_at_last_layers", "samples_save",
                "samples_format", "outdir_samples", "outdir_txt2img_samples", "outdir_img2img_samples",
                "outdir_extras_samples", "live_previews_enable", "show_progress_every_n_steps", "sd_checkpoint_cache",
                "enable_pnginfo", "eta_noise_seed_delta", "ESRGAN_tile", "ESRGAN_tile_overlap",
                "disabled_extensions"):
        assert key in options, key
    assert options["sd_model_checkpoint"].startswith("tiny-sd1") and options["sd_vae"] == "Automatic"
    assert options["outdir_extras_samples"] == "outputs/extras-images"  # relative to the data folder


def test_listings(client, easel, esrgan):
    upscalers = client.get("/sdapi/v1/upscalers").json()
    assert [u["name"] for u in upscalers] == ["None", "Lanczos", "Nearest", "2x-tiny"]
    model = upscalers[-1]
    assert model["scale"] == 2 and model["model_path"] == "2x-tiny.safetensors"
    assert {"name": "Latent"} in client.get("/sdapi/v1/latent-upscale-modes").json()
    assert [s["name"] for s in client.get("/sdapi/v1/schedulers").json()] == [
        "automatic", "uniform", "karras", "exponential", "polyexponential", "sgm_uniform", "kl_optimal",
        "align_your_steps", "simple", "normal", "ddim", "beta"]

    lora = easel.settings.models_dir / "Lora" / "tiny-style.safetensors"
    write_lora(lora, {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
                      torch.zeros(4, 768)})
    (easel.settings.models_dir / "embeddings").mkdir(parents=True, exist_ok=True)
    (easel.settings.models_dir / "embeddings" / "bad-hands.pt").write_bytes(b"\0")
    assert client.post("/sdapi/v1/refresh-loras").status_code == 200
    loras = client.get("/sdapi/v1/loras").json()
    assert [(x["name"], x["path"]) for x in loras] == [("tiny-style", lora.name)]
    assert loras[0]["metadata"]["ss_base_model_version"] == "sd1"
    embeddings = client.get("/sdapi/v1/embeddings").json()
    assert embeddings["loaded"] == {} and "convert" in embeddings["skipped"]["bad-hands"]["reason"]

    memory = client.get("/sdapi/v1/memory").json()
    assert memory["ram"]["total"] > memory["ram"]["free"] > 0
    assert "error" in memory["cuda"] and memory["easel"]["device"] == "cpu"
    flags = client.get("/sdapi/v1/cmd-flags").json()
    assert flags["enable_insecure_extension_access"] is False and flags["esrgan_models_path"] == []
    assert client.post("/sdapi/v1/refresh-vae").status_code == 200


def test_extra_single_image(client, easel, esrgan):
    source = gradient(32, 24)
    response = client.post("/sdapi/v1/extra-single-image", json={
        "image": b64_png(source), "upscaler_1": esrgan, "upscaling_resize": 2})
    assert response.status_code == 200, response.text
    data = response.json()
    image = open_b64(data["image"])
    assert image.size == (64, 48)
    assert parse_infotext(data["html_info"])["Postprocess upscaler"] == "2x-tiny"
    assert not list(easel.settings.outputs_dir.glob("**/*.png"))  # saved only when asked

    sized = client.post("/sdapi/v1/extra-single-image", json={
        "image": b64_png(source), "upscaler_1": "Lanczos", "resize_mode": 1, "upscaling_resize_w": 50,
        "upscaling_resize_h": 50, "upscaling_crop": True, "upscaler_2": esrgan, "extras_upscaler_2_visibility": 0.5,
        "save_images": True})
    assert sized.status_code == 200, sized.text
    assert open_b64(sized.json()["image"]).size == (50, 50)
    assert len(list(easel.settings.outputs_dir.glob("extras-images/*/*.png"))) == 1

    unchanged = client.post("/sdapi/v1/extra-single-image", json={"image": b64_png(source)}).json()
    assert open_b64(unchanged["image"]).tobytes() == source.tobytes() and unchanged["html_info"] == ""

    for body, field in (({"upscaler_1": "R-ESRGAN 4x+"}, "upscaler_1"),
                        ({"upscaler_1": "Lanczos", "upscaling_resize": 20}, "upscaling_resize"),
                        ({"upscaler_1": "Lanczos", "gfpgan_visibility": 1}, "gfpgan_visibility"),
                        ({"upscaler_1": "Lanczos", "resize_mode": 3}, "resize_mode")):
        bad = client.post("/sdapi/v1/extra-single-image", json={"image": b64_png(source), **body})
        assert bad.status_code == 422 and bad.json()["field"] == field, (body, bad.text)
    bad = client.post("/sdapi/v1/extra-single-image", json={"image": "@@", "upscaler_1": "Lanczos"})
    assert bad.status_code == 422 and bad.json()["field"] == "image"


def test_hires_upscaler_is_checked_before_queueing(client, esrgan):
    body = {"prompt": "p", "seed": 2, **TINY, "enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 2,
            "denoising_strength": 0.5}
    bad = client.post("/sdapi/v1/txt2img", json={**body, "hr_upscaler": "SwinIR_4x"})
    assert bad.status_code == 422 and bad.json()["field"] == "hr_upscaler" and "2x-tiny" in bad.json()["detail"]
    good = client.post("/sdapi/v1/txt2img", json={**body, "hr_upscaler": esrgan})
    assert good.status_code == 200, good.text
    image = open_b64(good.json()["images"][0])
    assert image.size == (96, 96) and parse_infotext(image.info["parameters"])["Hires upscaler"] == "2x-tiny"


def test_unload_and_reload_checkpoint(client, easel):
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **TINY}).status_code == 200
    assert easel.manager.current().name == "tiny-sd1"
    assert client.post("/sdapi/v1/unload-checkpoint").status_code == 200
    assert easel.manager.current() is None and easel.manager.loaded_names() == []
    assert client.post("/sdapi/v1/reload-checkpoint").status_code == 200
    assert easel.manager.current().name == "tiny-sd1"


def test_override_settings_restore_afterwards(client, easel, tiny_sd1_dir):
    shutil.copytree(tiny_sd1_dir, easel.settings.models_dir / "diffusers" / "tiny-sd1-b")
    client.post("/sdapi/v1/refresh-checkpoints")
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd1-b"}).status_code == 200
    body = {"prompt": "x", "seed": 1, **TINY,
            "override_settings": {"sd_model_checkpoint": "tiny-sd1", "CLIP_stop_at_last_layers": 2}}
    info = info_of(client.post("/sdapi/v1/txt2img", json=body).json())
    assert info["sd_model_name"] == "tiny-sd1" and info["clip_skip"] == 2
    assert easel.manager.current().name == "tiny-sd1-b"  # restored (the default)
    assert client.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 1

    info = info_of(client.post("/sdapi/v1/txt2img", json={**body, "override_settings_restore_afterwards": False}).json())
    assert info["sd_model_name"] == "tiny-sd1"
    assert easel.manager.current().name == "tiny-sd1"  # kept
    options = client.get("/sdapi/v1/options").json()
    assert options["sd_model_checkpoint"].startswith("tiny-sd1 ") and options["CLIP_stop_at_last_layers"] == 2
    later = info_of(client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **TINY}).json())
    assert later["sd_model_name"] == "tiny-sd1" and later["clip_skip"] == 2


def test_script_name_and_script_args(client, easel, tmp_path):
    api = ExtensionAPI(easel, easel.registry, "variations", tmp_path)

    def variations(request, args):
        """One request per word in args[0], each with the word appended to the prompt."""
        words = args[0] if args else []
        if not isinstance(words, list) or not words:
            raise ValueError("args[0] must be a non-empty list of words")
        return [request.replace(prompt=f"{request.prompt}, {word}") for word in words]

    api.add_script("Prompt variations", variations, modes=("txt2img",), args=("words",))
    alwayson = sorted(name.lower() for name in easel.registry.request_args)  # bundled ControlNet, when loaded
    builtin = ["x/y/z plot", "prompt matrix", "prompts from file or textbox"]  # Easel's own (webui.scripts)
    img2img_only = ["sd upscale", "loopback"]
    assert client.get("/sdapi/v1/scripts").json() == {"txt2img": [*builtin, "prompt variations", *alwayson],
                                                      "img2img": [*builtin, *img2img_only, *alwayson]}
    info = [row for row in client.get("/sdapi/v1/script-info").json()
            if not row["is_alwayson"] and row["name"] not in builtin + img2img_only]
    assert info == [{"name": "prompt variations", "is_alwayson": False, "is_img2img": False,
                     "args": [{"label": "words", "value": None, "minimum": None, "maximum": None, "step": None,
                               "choices": None}]}]
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "seed": 4, **TINY,
                                                      "script_name": "prompt variations",
                                                      "script_args": [["red", "blue"]]})
    assert response.status_code == 200, response.text
    data = response.json()
    prompts = [parse_infotext(open_b64(i).info["parameters"])["Prompt"] for i in data["images"]]
    assert prompts == ["a cat, red", "a cat, blue"] and len(info_of(data)["infotexts"]) == 2

    bad = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "script_name": "prompt variations",
                                                 "script_args": ["nope"]})
    assert bad.status_code == 422 and bad.json()["field"] == "script_args" and "args[0]" in bad.json()["detail"]
    missing = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "script_name": "loopback wave"})
    assert missing.status_code == 422 and missing.json()["field"] == "script_name"
    assert "prompt variations" in missing.json()["detail"]
    wrong_mode = client.post("/sdapi/v1/img2img", json={"init_images": [b64_png(gradient())], **TINY,
                                                        "script_name": "prompt variations"})
    assert wrong_mode.status_code == 422 and wrong_mode.json()["field"] == "script_name"


def test_openapi_docs(client):
    assert "swagger" in client.get("/docs").text.lower()
    schema = client.get("/openapi.json").json()
    for path in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/options", "/sdapi/v1/extra-single-image",
                 "/sdapi/v1/unload-checkpoint", "/sdapi/v1/loras", "/sdapi/v1/memory"):
        assert path in schema["paths"], path
    body = schema["components"]["schemas"]["StableDiffusionTxt2ImgProcessingAPI"]["properties"]
    assert {"prompt", "steps", "override_settings", "script_name", "script_args", "send_images"} <= set(body)


def test_extensions_route_lists_them_with_status(make_easel, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api.routes import create_api

    root = tmp_path / "data" / "extensions"
    (root / "demo").mkdir(parents=True)
    (root / "demo" / "extension.json").write_text('{"name": "demo", "version": "0.2", "api_version": 1}')
    (root / "demo" / "extension.py").write_text("def setup(api):\n    pass\n")
    (root / "broken").mkdir()
    (root / "broken" / "extension.py").write_text("raise RuntimeError('boom')\n")
    easel = make_easel()
    app = FastAPI()
    create_api(app, easel)
    with TestClient(app) as client:
        rows = {row["name"]: row for row in client.get("/sdapi/v1/extensions").json()}
    assert rows["demo"]["version"] == "0.2" and rows["demo"]["enabled"] is True and rows["demo"]["status"] == "loaded"
    assert rows["broken"]["status"] == "failed" and "boom" in rows["broken"]["error"]
    assert set(rows["demo"]) >= {"name", "remote", "branch", "commit_hash", "version", "commit_date", "enabled"}


def test_extra_batch_images(client, easel, esrgan):
    images = [gradient(32, 24), gradient(16, 16)]
    body = {"imageList": [{"data": b64_png(image), "name": f"image{i}"} for i, image in enumerate(images)],
            "upscaler_1": esrgan, "upscaling_resize": 2, "save_images": True}
    response = client.post("/sdapi/v1/extra-batch-images", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert [open_b64(i).size for i in data["images"]] == [(64, 48), (32, 32)]
    assert parse_infotext(data["html_info"])["Postprocess upscaler"] == "2x-tiny"
    assert len(list(easel.settings.outputs_dir.glob("extras-images/*/*.png"))) == 2

    same = client.post("/sdapi/v1/extra-batch-images", json={**body, "upscaler_1": "None"}).json()
    assert [open_b64(i).tobytes() for i in same["images"]] == [i.tobytes() for i in images]
    for changes, field in (({"imageList": []}, "imageList"),
                           ({"imageList": [{"data": b64_png(images[0])}, {"data": "@@"}]}, "imageList.1.data"),
                           ({"upscaling_resize": 20}, "upscaling_resize"),
                           ({"upscaler_1": "nope"}, "upscaler_1")):
        bad = client.post("/sdapi/v1/extra-batch-images", json={**body, **changes})
        assert bad.status_code == 422 and bad.json()["field"] == field, (changes, bad.text)
    assert len(list(easel.settings.outputs_dir.glob("extras-images/*/*.png"))) == 2  # nothing queued for those
