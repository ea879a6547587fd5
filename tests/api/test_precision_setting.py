"""The weight_precision setting: how each transformer/UNet loaded next is stored, changed in the Settings tab or
POST /sdapi/v1/options, refused with the reason where bitsandbytes cannot run, never a per-request override."""
from __future__ import annotations

from tests.api.conftest import TINY
from tests.conftest import api_client
from webui.model_manager.formats import storage_of


def _unet_storage(easel) -> str:
    return storage_of(easel.manager.get("tiny-sd1", "txt2img").pipe.unet)


def test_precision_setting_applies_to_the_next_load_and_refuses_bitsandbytes_without_cuda(make_easel) -> None:
    easel = make_easel()
    with api_client(easel) as client:
        assert client.get("/sdapi/v1/options").json()["weight_precision"] == "default"
        assert client.post("/sdapi/v1/txt2img", json={"prompt": "a cube", **TINY}).status_code == 200
        assert _unet_storage(easel) == ""  # loaded in the compute dtype
        for option in ("nf4", "int8"):
            refused = client.post("/sdapi/v1/options", json={"weight_precision": option})
            assert refused.status_code == 422, refused.text
            assert "weight_precision" in refused.text and "CUDA" in refused.text and "fp8" in refused.text
        bad = client.post("/sdapi/v1/options", json={"weight_precision": "fp4"})
        assert bad.status_code == 422 and "weight_precision" in bad.text and "default, fp8, nf4, int8" in bad.text
        assert easel.settings.user.weight_precision == "default"  # nothing changed
        assert client.post("/sdapi/v1/options", json={"weight_precision": "fp8"}).status_code == 200
        response = client.post("/sdapi/v1/txt2img", json={"prompt": "a cube", **TINY})
        assert response.status_code == 200, response.text
        assert _unet_storage(easel) == "fp8 e4m3fn"  # the cached checkpoint was loaded again, in fp8
        assert (easel.settings.data_dir / "config.json").read_text().count('"weight_precision": "fp8"') == 1
        assert client.post("/sdapi/v1/options", json={"weight_precision": "default"}).status_code == 200
        assert _unet_storage(easel) == ""


def test_precision_is_not_a_per_request_override(make_easel) -> None:
    easel = make_easel()
    with api_client(easel) as client:
        response = client.post("/sdapi/v1/txt2img", json={"prompt": "a cube", **TINY,
                                                          "override_settings": {"weight_precision": "fp8"}})
        assert response.status_code == 422 and "override_settings.weight_precision" in response.text
        same = client.post("/sdapi/v1/txt2img", json={"prompt": "a cube", **TINY,
                                                      "override_settings": {"weight_precision": "default"}})
        assert same.status_code == 200, same.text


def test_precision_flag_overrides_the_setting() -> None:
    from webui.settings import Settings, UserSettings

    assert Settings(precision="fp8", user=UserSettings(weight_precision="default")).weight_storage() == "fp8"
    assert Settings(precision="auto", user=UserSettings(weight_precision="fp8")).weight_storage() == "fp8"
    assert Settings(precision="full", user=UserSettings()).weight_storage() == ""
