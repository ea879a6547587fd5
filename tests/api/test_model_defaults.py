"""The API and per-model defaults: omitted fields take the model's defaults and sent ones stay as sent; a size the
built-in model cannot draw renders at its own size and is resized; `override_settings` is undone afterwards, on a
fresh server too; and every field of AUTOMATIC1111's txt2img and img2img bodies is honoured, accepted at its
default, or refused with a 422 naming it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import b64_png, gradient, info_of, open_b64
from tests.conftest import api_client
from webui.api.a1111_fields import FIELDS_BY_ENDPOINT, unhonoured
from webui.api.schemas import StableDiffusionImg2ImgProcessingAPI, StableDiffusionTxt2ImgProcessingAPI

BODIES = {"txt2img": StableDiffusionTxt2ImgProcessingAPI, "img2img": StableDiffusionImg2ImgProcessingAPI}
TINY = {"width": 64, "height": 64, "steps": 2}


def declare(folder: Path, **defaults: Any) -> None:
    """Give a diffusers folder its own defaults in model_index.json."""
    index = json.loads((folder / "model_index.json").read_text())
    index["easel_defaults"] = defaults
    (folder / "model_index.json").write_text(json.dumps(index))


def parameters_of(result: dict[str, Any]) -> str:
    return info_of(result)["infotexts"][0]


def test_omitted_fields_take_the_models_defaults_and_sent_fields_stay(make_easel) -> None:
    easel = make_easel()
    declare(easel.settings.data_dir / "models" / "diffusers" / "tiny-sd1", width=64, height=72, steps=3,
            cfg_scale=5.5, sampler="DDIM")
    with api_client(easel) as client:
        omitted = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "seed": 1})
        assert omitted.status_code == 200, omitted.text
        info = info_of(omitted.json())
        assert (info["width"], info["height"], info["steps"], info["cfg_scale"]) == (64, 72, 3, 5.5)
        assert info["sampler_name"] == "DDIM"
        assert open_b64(omitted.json()["images"][0]).size == (64, 72)
        assert "Steps: 3, Sampler: DDIM, CFG scale: 5.5" in parameters_of(omitted.json())

        sent = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "seed": 1, "width": 64, "height": 64,
                                                       "steps": 2, "cfg_scale": 7, "sampler_name": "Euler"})
        assert sent.status_code == 200, sent.text
        info = info_of(sent.json())
        assert (info["width"], info["height"], info["steps"], info["cfg_scale"], info["sampler_name"]) == \
            (64, 64, 2, 7, "Euler")
        nulls = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "steps": None, "width": None,
                                                        "height": None, "cfg_scale": None})
        assert nulls.status_code == 200 and info_of(nulls.json())["steps"] == 3, "null means the default, as omitted"


@pytest.fixture(scope="module")
def builtin_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.builtin.conftest import make_tiny_pipeline

    root = tmp_path_factory.mktemp("builtin")
    make_tiny_pipeline(seed=3).save_pretrained(root / "easel-tiny")
    return root


def test_the_builtin_model_renders_512_at_its_own_size_and_resizes(make_easel, builtin_root: Path) -> None:
    easel = make_easel(builtin_dir=builtin_root, install_sd1=False)
    with api_client(easel) as client:
        # an AUTOMATIC1111 client's defaults: 512x512, 20 steps, CFG 7
        answer = client.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", "width": 512, "height": 512,
                                                         "steps": 20, "cfg_scale": 7, "seed": 4})
        assert answer.status_code == 200, answer.text
        image = open_b64(answer.json()["images"][0])
        text = parameters_of(answer.json())
        assert image.size == (512, 512)
        assert "Size: 512x512" in text and "Rendered size: 64x64" in text
        own = client.post("/sdapi/v1/txt2img", json={"prompt": "a red circle"})
        assert own.status_code == 200, own.text
        assert open_b64(own.json()["images"][0]).size == (64, 64)
        assert "Rendered size" not in parameters_of(own.json())
        assert "CFG scale: 4" in parameters_of(own.json()), "the built-in model's own CFG scale"

        edited = client.post("/sdapi/v1/img2img", json={"prompt": "a red circle", "init_images": [b64_png(
            gradient(512, 512))], "width": 512, "height": 512, "steps": 2, "denoising_strength": 0.5})
        assert edited.status_code == 200, edited.text
        assert open_b64(edited.json()["images"][0]).size == (512, 512)
        assert "Rendered size: 64x64" in parameters_of(edited.json())


def test_a_model_that_refuses_a_size_answers_422_naming_width_and_its_range(make_easel) -> None:
    easel = make_easel()
    declare(easel.settings.data_dir / "models" / "diffusers" / "tiny-sd1", width=64, height=64, min_side=64,
            max_side=128, outside="refuse")
    with api_client(easel) as client:
        answer = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "width": 512, "height": 512})
        assert answer.status_code == 422
        assert answer.json()["field"] == "width" and "64 to 128 pixels per side" in answer.json()["detail"]


def two_checkpoint_easel(make_easel):
    easel = make_easel()
    diffusers = easel.settings.data_dir / "models" / "diffusers"
    shutil.copytree(diffusers / "tiny-sd1", diffusers / "tiny-sd1-other")
    easel.manager.refresh()
    return easel


def test_override_settings_is_undone_after_the_request_on_a_fresh_server(make_easel) -> None:
    easel = two_checkpoint_easel(make_easel)
    default = easel.default_checkpoint()
    other = next(name for name in easel.checkpoint_choices() if name != default)
    assert easel.manager.current() is None, "a fresh server: no checkpoint chosen yet"
    with api_client(easel) as client:
        first = client.post("/sdapi/v1/txt2img", json={"prompt": "a", **TINY,
                                                        "override_settings": {"sd_model_checkpoint": other}})
        assert first.status_code == 200, first.text
        assert info_of(first.json())["sd_model_name"] == other
        later = client.post("/sdapi/v1/txt2img", json={"prompt": "a", **TINY})
        assert later.status_code == 200 and info_of(later.json())["sd_model_name"] == default
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith(default)

        # with a model chosen, the override is undone by loading that model again
        again = client.post("/sdapi/v1/txt2img", json={"prompt": "a", **TINY,
                                                        "override_settings": {"sd_model_checkpoint": other}})
        assert again.status_code == 200 and info_of(again.json())["sd_model_name"] == other
        assert easel.manager.current().name == default

        kept = client.post("/sdapi/v1/txt2img", json={"prompt": "a", **TINY, "override_settings_restore_afterwards":
                                                       False, "override_settings": {"sd_model_checkpoint": other}})
        assert kept.status_code == 200
        after = client.post("/sdapi/v1/txt2img", json={"prompt": "a", **TINY})
        assert info_of(after.json())["sd_model_name"] == other, "restore_afterwards false keeps the override"


def a1111_defaults(endpoint: str) -> dict[str, Any]:
    """Every field of AUTOMATIC1111's body at its AUTOMATIC1111 default (nulls included)."""
    return {name: spec.default for name, spec in FIELDS_BY_ENDPOINT[endpoint].items()}


# What the `webuiapi` package (0.9.17) sends from WebUIApi().txt2img(prompt=...) with its own defaults.
WEBUIAPI_TXT2IMG = {
    "enable_hr": False, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 0, "hr_resize_x": 0,
    "hr_resize_y": 0, "hr_checkpoint_name": None, "hr_sampler_name": None, "hr_scheduler": None, "hr_prompt": "",
    "hr_negative_prompt": "", "denoising_strength": 0.7, "firstphase_width": 0, "firstphase_height": 0,
    "prompt": "a cat", "styles": [], "seed": -1, "subseed": -1, "subseed_strength": 0.0, "seed_resize_from_h": 0,
    "seed_resize_from_w": 0, "batch_size": 1, "n_iter": 1, "steps": 20, "cfg_scale": 7.0, "width": 512,
    "height": 512, "restore_faces": False, "tiling": False, "do_not_save_samples": False, "do_not_save_grid": False,
    "negative_prompt": "", "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1, "override_settings": {},
    "override_settings_restore_afterwards": True, "sampler_name": "Euler a", "scheduler": "automatic",
    "sampler_index": "Euler a", "script_name": None, "script_args": [], "send_images": True, "save_images": False,
    "alwayson_scripts": {},
}
WEBUIAPI_IMG2IMG_EXTRA = {
    "resize_mode": 0, "denoising_strength": 0.75, "mask_blur": 4, "inpainting_fill": 0, "inpaint_full_res": True,
    "inpaint_full_res_padding": 0, "inpainting_mask_invert": 0, "initial_noise_multiplier": 1, "image_cfg_scale": 1.5,
    "include_init_images": False,
}


def test_every_a1111_field_at_its_default_and_webuiapis_payloads_are_accepted(client) -> None:
    image = b64_png(gradient())
    txt = {**a1111_defaults("txt2img"), "prompt": "a cat", **TINY}
    answer = client.post("/sdapi/v1/txt2img", json=txt)
    assert answer.status_code == 200, answer.text
    img = {**a1111_defaults("img2img"), "prompt": "a cat", "init_images": [image], **TINY}
    answer = client.post("/sdapi/v1/img2img", json=img)
    assert answer.status_code == 200, answer.text

    payload = {key: value for key, value in WEBUIAPI_TXT2IMG.items() if not key.startswith("hr_")
               and key not in ("enable_hr", "firstphase_width", "firstphase_height")}
    answer = client.post("/sdapi/v1/txt2img", json={**WEBUIAPI_TXT2IMG, **TINY})
    assert answer.status_code == 200, answer.text
    answer = client.post("/sdapi/v1/img2img", json={**payload, **WEBUIAPI_IMG2IMG_EXTRA, "init_images": [image],
                                                    **TINY})
    assert answer.status_code == 200, answer.text


def other_value(default: Any) -> Any:
    """A value unlike an AUTOMATIC1111 default (or any neutral value) of the same kind."""
    if isinstance(default, bool) or default is None:
        return not default if isinstance(default, bool) else True
    if isinstance(default, (int, float)):
        return default + 3
    if isinstance(default, str):
        return default + "something else"
    if isinstance(default, list):
        return ["something"]
    if isinstance(default, dict):
        return {"something": 1}
    raise TypeError(default)


@pytest.mark.parametrize("endpoint", ["txt2img", "img2img"])
def test_each_unhonoured_field_with_another_value_is_a_422_naming_it(client, endpoint: str) -> None:
    refused = unhonoured(endpoint, set(BODIES[endpoint].model_fields))
    assert "restore_faces" not in refused
    honoured = {"restore_faces", "styles", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h", "scheduler",
                "tiling", "refiner_checkpoint", "refiner_switch_at", "distilled_cfg_scale"}
    if endpoint == "txt2img":
        honoured |= {"hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt", "hr_checkpoint_name"}
    assert not honoured & set(refused), "declared by a request field: honoured, never refused"
    assert honoured <= set(BODIES[endpoint].model_fields)
    base = {"prompt": "a cat", **TINY}
    if endpoint == "img2img":
        base["init_images"] = [b64_png(gradient())]
    any_value = {name for name, spec in refused.items() if spec.accepts(other_value(spec.default))}
    assert any_value == {"do_not_save_samples", "do_not_save_grid"}, "both values leave these as Easel works"
    for name, spec in refused.items():
        value = other_value(spec.default)
        if name in any_value:
            continue
        answer = client.post(f"/sdapi/v1/{endpoint}", json={**base, name: value})
        assert answer.status_code == 422, (name, value, answer.text)
        assert answer.json()["field"] == name and answer.json()["detail"].startswith(f"{name}: "), answer.text
    faces = client.post(f"/sdapi/v1/{endpoint}", json={**base, "restore_faces": True})  # no restorer installed
    assert faces.status_code == 422 and faces.json()["field"] == "restore_faces", faces.text
    assert "CodeFormer is not installed" in faces.json()["detail"] and "Codeformer" in faces.json()["detail"]


def test_a_field_neither_easel_nor_a1111_has_is_a_422_naming_it(client) -> None:
    answer = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", **TINY, "cfg_sclae": 5})
    assert answer.status_code == 422
    assert answer.json()["field"] == "cfg_sclae" and "unknown field" in answer.json()["detail"]
    wrong_endpoint = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", **TINY, "mask_round": True})
    assert wrong_endpoint.status_code == 422 and "field of img2img" in wrong_endpoint.json()["detail"]


@pytest.fixture(scope="module")
def tiny_flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_flux

    return make_tiny_flux(tmp_path_factory.mktemp("flux") / "tiny-flux")


def test_flux_dev_runs_at_cfg_1_with_distilled_guidance_and_schnell_without(make_easel, tiny_flux_dir: Path) -> None:
    from webui.infotext import parse_infotext, request_updates
    from webui.requests import Txt2ImgRequest

    easel = make_easel(install_sd1=False)
    diffusers = easel.settings.data_dir / "models" / "diffusers"
    shutil.copytree(tiny_flux_dir, diffusers / "tiny-flux")
    shutil.copytree(tiny_flux_dir, diffusers / "tiny-schnell")
    config_path = diffusers / "tiny-schnell" / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config["guidance_embeds"] = False
    config_path.write_text(json.dumps(config))
    easel.manager.refresh()
    small = {"prompt": "a cat", "seed": 5, **TINY}
    with api_client(easel) as client:
        dev = client.post("/sdapi/v1/txt2img", json={**small, "override_settings": {
            "sd_model_checkpoint": "tiny-flux"}})
        assert dev.status_code == 200, dev.text
        text = parameters_of(dev.json())
        assert "CFG scale: 1," in text and "Distilled CFG Scale: 3.5" in text and "Sampler: Euler," in text
        assert request_updates(parse_infotext(text), Txt2ImgRequest)["distilled_cfg_scale"] == 3.5
        stronger = client.post("/sdapi/v1/txt2img", json={**small, "distilled_cfg_scale": 9, "override_settings": {
            "sd_model_checkpoint": "tiny-flux"}})
        assert "Distilled CFG Scale: 9" in parameters_of(stronger.json())
        assert stronger.json()["images"][0] != dev.json()["images"][0], "the distilled guidance reaches the model"

        schnell = client.post("/sdapi/v1/txt2img", json={**small, "override_settings": {
            "sd_model_checkpoint": "tiny-schnell"}})
        assert schnell.status_code == 200, schnell.text
        assert info_of(schnell.json())["cfg_scale"] == 1
        assert "Distilled CFG Scale" not in parameters_of(schnell.json())
