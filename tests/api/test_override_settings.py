"""override_settings on txt2img: every key honoured for that request only, or a 422 naming `override_settings.<key>`;
requests with different overrides side by side do not see each other's."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.api.conftest import TINY, b64_png, gradient, info_of
from webui.engine.samplers import steps_for_strength

BASE = {"prompt": "a red house", "seed": 7, "sampler_name": "Euler a", **TINY}


def generate(client, **body):
    response = client.post("/sdapi/v1/txt2img", json={**BASE, **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_randn_source_applies_to_one_request_only(client, easel):
    plain = generate(client)
    nv = generate(client, override_settings={"randn_source": "NV"})
    assert "RNG: NV" in info_of(nv)["infotexts"][0] and "RNG:" not in info_of(plain)["infotexts"][0]
    assert nv["images"][0] != plain["images"][0], "the NV source draws other starting noise"
    assert easel.settings.user.randn_source == "CPU"
    assert client.get("/sdapi/v1/options").json()["randn_source"] == "CPU"
    again = generate(client)
    assert again["images"][0] == plain["images"][0] and "RNG:" not in info_of(again)["infotexts"][0]


def test_samples_save_override_saves_or_not_for_that_request(client, easel):
    assert easel.settings.user.save_images is True
    off = info_of(generate(client, save_images=True, override_settings={"samples_save": False}))
    assert off["paths"] == [] and easel.settings.user.save_images is True
    on = info_of(generate(client, save_images=True))
    assert len(on["paths"]) == 1
    assert client.post("/sdapi/v1/options", json={"samples_save": False}).status_code == 200
    forced = info_of(generate(client, save_images=True, override_settings={"samples_save": True}))
    assert len(forced["paths"]) == 1, "saved for this request although the setting is off"
    assert info_of(generate(client, save_images=True))["paths"] == []


def test_enable_pnginfo_false_leaves_the_parameters_out_of_that_requests_pngs(client, easel):
    import base64
    import io

    from PIL import Image

    def parameters(b64: str) -> str | None:
        return Image.open(io.BytesIO(base64.b64decode(b64))).info.get("parameters")

    bare = generate(client, save_images=True, override_settings={"enable_pnginfo": False})
    info = info_of(bare)
    assert parameters(bare["images"][0]) is None and Image.open(easel.settings.data_dir / info["paths"][0]).info.get("parameters") is None
    assert info["infotexts"][0].startswith("a red house")  # the info JSON still carries it
    assert easel.settings.user.enable_pnginfo is True
    plain = generate(client, save_images=True)
    assert parameters(plain["images"][0]) == info_of(plain)["infotexts"][0]
    assert Image.open(easel.settings.data_dir / info_of(plain)["paths"][0]).info["parameters"] == info_of(plain)["infotexts"][0]
    assert client.post("/sdapi/v1/options", json={"enable_pnginfo": False}).status_code == 200
    assert parameters(generate(client)["images"][0]) is None


def test_fixed_and_current_values_are_accepted(client):
    options = client.get("/sdapi/v1/options").json()
    body = generate(client, override_settings={
        "samples_format": "PNG", "enable_pnginfo": True, "eta_noise_seed_delta": 0, "img2img_fix_steps": False,
        "sd_vae_overrides_per_model_preferences": False, "sd_checkpoint_cache": options["sd_checkpoint_cache"],
        "show_progress_every_n_steps": -1, "live_previews_enable": False, "sd_model_checkpoint": None})
    assert len(body["images"]) == 1


@pytest.mark.parametrize("override, field, words", [
    ({"CLIP_stop_at_last_layer": 2}, "CLIP_stop_at_last_layer", "CLIP_stop_at_last_layers"),  # a typo: unknown
    ({"randn_source": "dice"}, "randn_source", "CPU, GPU, NV"),
    ({"samples_save": "sometimes"}, "samples_save", "true or false"),
    ({"flow_shift": -3}, "flow_shift", "0 to 100"),
    ({"show_progress_every_n_steps": 2.5}, "show_progress_every_n_steps", "whole number"),
    ({"samples_format": "jpg"}, "samples_format", "PNG"),
    ({"eta_noise_seed_delta": 31337}, "eta_noise_seed_delta", "no offset"),
    ({"img2img_fix_steps": "yes"}, "img2img_fix_steps", "true or false"),
    ({"enable_pnginfo": "no"}, "enable_pnginfo", "true or false"),
    ({"sd_checkpoint_cache": 99}, "sd_checkpoint_cache", "not applied per request"),
    ({"max_steps": 10000}, "max_steps", "not applied per request"),
    ({"samples_save": False, "save_images": True}, "save_images", "override_settings.samples_save"),
])
def test_bad_or_unknown_override_is_a_422_naming_it(client, easel, override, field, words):
    response = client.post("/sdapi/v1/txt2img", json={**BASE, "override_settings": override})
    assert response.status_code == 422, response.text
    data = response.json()
    assert data["field"] == f"override_settings.{field}", data
    assert words in data["detail"], data
    assert easel.engine.worker.queue_length() == 0 and not easel.engine.worker.jobs


def test_restore_afterwards_false_keeps_settings_as_options_does(client, easel):
    plain = generate(client)
    kept = generate(client, override_settings={"randn_source": "NV", "samples_save": False},
                    override_settings_restore_afterwards=False)
    assert "RNG: NV" in info_of(kept)["infotexts"][0]
    options = client.get("/sdapi/v1/options").json()
    assert options["randn_source"] == "NV" and options["samples_save"] is False
    assert '"randn_source": "NV"' in easel.settings.config_path.read_text(encoding="utf-8")
    later = generate(client)
    assert "RNG: NV" in info_of(later)["infotexts"][0] and later["images"][0] != plain["images"][0]


def test_concurrent_requests_keep_their_own_overrides(client):
    plain = generate(client)["images"][0]
    nv = generate(client, override_settings={"randn_source": "NV"})["images"][0]
    bodies = [{}, {"override_settings": {"randn_source": "NV"}}] * 3
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda extra: client.post("/sdapi/v1/txt2img", json={**BASE, **extra}), bodies))
    for extra, answer in zip(bodies, answers):
        assert answer.status_code == 200, answer.text
        wanted = nv if extra else plain
        assert answer.json()["images"][0] == wanted, extra
        assert ("RNG: NV" in info_of(answer.json())["infotexts"][0]) == bool(extra)


def test_img2img_fix_steps_runs_the_steps_asked_for_one_request(client, easel):
    assert steps_for_strength(2, 0.5) == (2, 0.5) and steps_for_strength(2, 0.5, exact=True) == (4, 0.5)
    assert steps_for_strength(3, 0.3, exact=True)[0] == 10 and steps_for_strength(20, 0.75, exact=True)[0] == 27
    body = {**BASE, "init_images": [b64_png(gradient())], "denoising_strength": 0.5}

    def img2img(**extra):
        answer = client.post("/sdapi/v1/img2img", json={**body, **extra})
        assert answer.status_code == 200, answer.text
        return answer.json()["images"][0]

    plain = img2img()  # one step of a two-step schedule
    fixed = img2img(override_settings={"img2img_fix_steps": True})  # two steps of a four-step schedule
    assert fixed != plain
    assert easel.settings.user.img2img_fix_steps is False
    assert client.get("/sdapi/v1/options").json()["img2img_fix_steps"] is False
    assert img2img() == plain
    assert client.post("/sdapi/v1/options", json={"img2img_fix_steps": True}).status_code == 200
    assert img2img() == fixed
