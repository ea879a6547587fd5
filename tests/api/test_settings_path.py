"""One path for settings changes: the Settings tab and `POST /sdapi/v1/options` check a value the same way, say
the same thing about a bad one and change nothing, and persist a good one the same way."""
from __future__ import annotations

import dataclasses
import html
import json
from types import SimpleNamespace

import gradio as gr
import pytest

from webui.settings import SettingError
from webui.ui.bridge import guard
from webui.ui.tabs.settings import apply_values

# (Settings tab key, AUTOMATIC1111 option, a value neither accepts)
BAD = [("live_preview_every", "show_progress_every_n_steps", "often"),
       ("live_preview_every", "show_progress_every_n_steps", 2.5),
       ("live_preview_every", "show_progress_every_n_steps", -3),
       ("save_images", "samples_save", "maybe"),
       ("save_images", "samples_save", None)]


@pytest.mark.parametrize("key,option,value", BAD)
def test_a_bad_value_gets_the_same_message_from_the_tab_and_the_api(easel, client, key, option, value) -> None:
    settings = easel.settings
    before = settings.user
    ui = SimpleNamespace(easel=easel)
    with pytest.raises(SettingError) as refused:
        apply_values(ui, {key: value, "max_steps": 40})  # a good value beside it is not applied either
    assert refused.value.key == key and str(refused.value) == f"{key}: {refused.value.message}"
    with pytest.raises(gr.Error) as shown:  # what the tab's handler shows in the browser
        guard(lambda: apply_values(ui, {key: value}))()
    assert shown.value.message == html.escape(str(refused.value), quote=False)  # gr.Error renders HTML

    response = client.post("/sdapi/v1/options", json={option: value, "CLIP_stop_at_last_layers": 2})
    assert response.status_code == 422
    data = response.json()
    assert data["field"] == option and data["detail"] == f"{option}: {refused.value.message}"
    assert settings.user is before and not settings.config_path.exists()
    assert client.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 1


def test_a_good_value_is_persisted_the_same_way(easel, client) -> None:
    settings = easel.settings
    ui = SimpleNamespace(easel=easel)
    assert client.post("/sdapi/v1/options", json={"samples_save": 0, "show_progress_every_n_steps": "3"}
                       ).status_code == 200
    by_api = settings.config_path.read_bytes()
    assert settings.user.save_images is False and settings.user.live_preview_every == 3
    assert json.loads(by_api) == dataclasses.asdict(settings.user)

    apply_values(ui, {"save_images": True, "live_preview_every": 4})
    assert json.loads(settings.config_path.read_text())["save_images"] is True
    new = apply_values(ui, {"save_images": False, "live_preview_every": 3.0})
    assert settings.user is new and settings.config_path.read_bytes() == by_api
    assert not settings.config_path.with_name("config.json.tmp").exists()  # written beside, then renamed

    assert client.post("/sdapi/v1/options", json={"show_progress_every_n_steps": -1}).status_code == 200
    assert settings.user.live_preview_every == 0  # AUTOMATIC1111's -1: no previews
    assert json.loads(settings.config_path.read_text())["live_preview_every"] == 0


def test_options_posted_back_as_read_are_accepted_and_nothing_is_ignored(client) -> None:
    """A client may post back the whole GET answer; a key Easel does not know, or a fixed option at another value,
    is a 422 naming it and changes nothing else in the body."""
    read = client.get("/sdapi/v1/options").json()
    assert client.post("/sdapi/v1/options", json=read).status_code == 200

    for key, value, says in [("not_an_option", 1, "not an option Easel knows"),
                             ("samples_format", "jpg", "Easel saves PNG images only"),
                             ("eta_noise_seed_delta", 31337, "only 0 is accepted"),
                             ("ESRGAN_tile", read["ESRGAN_tile"] + 64, "not settable through the API")]:
        response = client.post("/sdapi/v1/options", json={key: value, "samples_save": not read["samples_save"],
                                                          "CLIP_stop_at_last_layers": 3})
        assert response.status_code == 422, key
        data = response.json()
        assert data["field"] == key and says in data["detail"], data
        after = client.get("/sdapi/v1/options").json()
        assert after["samples_save"] == read["samples_save"]
        assert after["CLIP_stop_at_last_layers"] == read["CLIP_stop_at_last_layers"]
