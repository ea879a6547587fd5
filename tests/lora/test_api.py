"""LoRAs over the AUTOMATIC1111 API: /sdapi/v1/loras, /refresh-loras, and `<lora:…>` in API prompts."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def client(make_easel, sd1_lora):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api.routes import create_api

    easel = make_easel()
    app = FastAPI()
    create_api(app, easel)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        test_client.easel = easel
        yield test_client


def image_of(body: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).convert("RGB")).astype(int)


def test_list_refresh_and_prompt_tags(client, sd1_lora) -> None:
    folder = client.easel.settings.models_dir / "Lora"
    assert client.get("/sdapi/v1/loras").json() == []
    tags = json.dumps({"data": {"zqx": 12, "red cube": 3}})
    sd1_lora(folder / "styles", "ink", seed=1, metadata={"ss_base_model_version": "sd_v1", "ss_tag_frequency": tags,
                                                         "ss_output_name": "ink-v2"})
    assert client.post("/sdapi/v1/refresh-loras").status_code == 200
    (row,) = client.get("/sdapi/v1/loras").json()
    assert row["name"] == "styles/ink" and row["alias"] == "ink-v2" and row["path"] == "styles/ink.safetensors"
    assert row["metadata"]["ss_tag_frequency"] == {"data": {"zqx": 12, "red cube": 3}}  # JSON values decoded
    assert row["arch"] == "sd1" and row["format"] == "kohya" and row["trigger_words"] == ["zqx", "red cube"]
    assert len(row["hash"]) == 12

    body = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2, "seed": 3, "sampler_name": "Euler",
            "override_settings": {"sd_model_checkpoint": "tiny-sd1"}}
    base = client.post("/sdapi/v1/txt2img", json=body).json()
    styled = client.post("/sdapi/v1/txt2img", json={**body, "prompt": "a red cube <lora:styles/ink:0.9>"}).json()
    assert not np.array_equal(image_of(base), image_of(styled))
    info = json.loads(styled["info"])
    assert f'Lora hashes: "styles/ink: {row["hash"]}"' in info["infotexts"][0]
    again = client.post("/sdapi/v1/txt2img", json=body).json()
    assert np.array_equal(image_of(base), image_of(again))

    missing = client.post("/sdapi/v1/txt2img", json={**body, "prompt": "x <lora:nope:1>"})
    assert missing.status_code == 422 and missing.json()["field"] == "prompt" and "nope" in missing.json()["detail"]
