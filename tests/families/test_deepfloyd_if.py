"""DeepFloyd IF end to end on a tiny three-stage cascade: stage folders found in one folder or side by side, the
later stages listed but not loadable alone, one generation through all stages with per-stage steps, the API."""
from __future__ import annotations

import json
import shutil

import numpy as np

from tests.conftest import api_client
from tests.families.conftest import failed, run
from webui.infotext import parse_infotext
from webui.requests import Txt2ImgRequest


def test_the_cascade_runs_as_one_generation_from_one_folder(family_easel, tiny_if_dir):
    easel = family_easel(tiny_if=tiny_if_dir)
    stage_one = easel.manager.find_checkpoint("tiny-if/stage_I")
    assert stage_one.arch.value == "deepfloyd_if" and stage_one.supported
    assert "later stages found: stage II, upscaler" in stage_one.reason
    stage_two = easel.manager.find_checkpoint("tiny-if/stage_II")
    assert not stage_two.supported and "stage I" in stage_two.reason
    request = Txt2ImgRequest(prompt="a red circle", checkpoint="tiny-if/stage_I", steps=2, stage2_steps=1,
                             stage3_steps=2, width=128, height=128, seed=6, sampler="Default")
    first = run(easel, request)
    assert first.images[0].size == (128, 128)
    params = parse_infotext(first.infotexts[0])
    assert params["Stages"] == "8 → 32 → 128"
    assert params["Stage II steps"] == "1" and params["Stage III steps"] == "2"
    again = run(easel, request)
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(first.images[0]))
    error = failed(easel, request.replace(width=120))
    assert error.field == "width" and "multiple of 128" in error.message


def test_stage_folders_side_by_side(family_easel, tiny_if_dir, tmp_path):
    side_by_side = tmp_path / "side"
    for stage, name in (("stage_I", "IF-I-tiny"), ("stage_II", "IF-II-tiny"), ("stage_III", "x4-upscaler")):
        shutil.copytree(tiny_if_dir / stage, side_by_side / name)
    easel = family_easel(**{"IF-I-tiny": side_by_side / "IF-I-tiny", "IF-II-tiny": side_by_side / "IF-II-tiny",
                            "x4-upscaler": side_by_side / "x4-upscaler"})
    assert easel.manager.find_checkpoint("IF-I-tiny").supported
    with api_client(easel) as client:
        body = {"prompt": "a red circle", "steps": 1, "width": 128, "height": 128, "seed": 2,
                "override_settings": {"sd_model_checkpoint": "IF-I-tiny"}}
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        assert "Stages: 8 → 32 → 128" in json.loads(response.json()["info"])["infotexts"][0]
        response = client.post("/sdapi/v1/txt2img", json={**body, "stage2_steps": 500})
        assert response.status_code == 422 and "stage2_steps" in response.text
