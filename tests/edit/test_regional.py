"""Regional prompts through /sdapi/v1/txt2img's `alwayson_scripts["regional prompter"]`: on the shipped built-in
model each half of the image takes its own prompt's background colour (the plain prompt alone gives neither);
the grid shortcut gives the same regions as explicit boxes; the regions are in the infotext; bad arguments are
refused with a 422 naming the field, and so is img2img on the built-in model."""
from __future__ import annotations

import json

import numpy as np

from tests.edit.conftest import open_b64
from webui.builtin.data import PALETTE

BASE = {"prompt": "a red circle and a green square", "width": 64, "height": 64, "steps": 8, "seed": 0,
        "cfg_scale": 4}
HALVES = {"base_weight": 0.2, "regions": [
    {"box": [0, 0, 0.5, 1], "prompt": "a red circle on a blue background"},
    {"box": [0.5, 0, 1, 1], "prompt": "a green square on a yellow background", "weight": 1.0}]}


def txt2img(client, status: int = 200, **body) -> dict:
    response = client.post("/sdapi/v1/txt2img", json={**BASE, "sampler_name": "Euler", **body})
    assert response.status_code == status, response.text
    return response.json()


def median_colour(image, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.median(np.asarray(image.convert("RGB"), np.int16)[y0:y1, x0:x1].reshape(-1, 3), axis=0)


def near(colour: np.ndarray, name: str, tolerance: float = 30) -> bool:
    return bool(np.abs(colour - np.array(PALETTE[name])).max() <= tolerance)


def test_each_half_takes_its_prompts_colour_on_the_builtin_model(edit_client):
    data = txt2img(edit_client, alwayson_scripts={"regional prompter": {"args": [HALVES]}})
    image = open_b64(data["images"][0])
    left, right = median_colour(image, (0, 0, 32, 64)), median_colour(image, (32, 0, 64, 64))
    assert near(left, "blue") and near(right, "yellow"), (left, right)
    info = json.loads(data["info"])
    text = info["infotexts"][0]
    assert "Regional prompts: " in text and "a green square on a yellow background" in text
    # Without regions the same prompt and seed give neither colour on either side.
    plain = open_b64(txt2img(edit_client)["images"][0])
    left, right = median_colour(plain, (0, 0, 32, 64)), median_colour(plain, (32, 0, 64, 64))
    assert not near(left, "blue") and not near(right, "yellow"), (left, right)


def test_the_grid_shortcut_is_the_same_as_boxes(edit_client):
    boxes = txt2img(edit_client, alwayson_scripts={"regional prompter": {"args": [HALVES]}})
    strips = txt2img(edit_client, alwayson_scripts={"Regional Prompter": {"args": [{
        "divide": "columns", "ratios": "1,1", "base_weight": 0.2,
        "prompts": ["a red circle on a blue background", "a green square on a yellow background"]}]}})
    assert strips["images"][0] == boxes["images"][0]


def test_bad_arguments_and_other_families_are_refused(edit_client):
    def refused(args, status: int = 422, **body) -> dict:
        data = txt2img(edit_client, status, alwayson_scripts={"regional prompter": {"args": [args]}}, **body)
        assert data["field"] == "alwayson_scripts.regional prompter", data
        return data

    assert "regions[0].box" in refused({"regions": [{"box": [0.5, 0, 0.2, 1], "prompt": "x"}]})["detail"]
    assert "regions[0].box" in refused({"regions": [{"box": [0, 0, 2, 1], "prompt": "x"}]})["detail"]
    assert "regions[0].prompt" in refused({"regions": [{"box": [0, 0, 1, 1], "prompt": " "}]})["detail"]
    assert "regions[0].weight" in refused({"regions": [{"box": [0, 0, 1, 1], "prompt": "x", "weight": -1}]})[
        "detail"]
    assert "regions[0].colour" in refused({"regions": [{"box": [0, 0, 1, 1], "prompt": "x", "colour": 1}]})[
        "detail"]
    assert "ratios" in refused({"prompts": ["a", "b"], "ratios": "1"})["detail"]
    assert "limit is 8" in refused({"prompts": ["a"] * 9})["detail"]
    # SD 1.x runs them by attention coupling (tests/engine/test_regional_attention.py), with the regions written.
    sd = txt2img(edit_client, alwayson_scripts={"regional prompter": {"args": [HALVES]}}, steps=1,
                 override_settings={"sd_model_checkpoint": "tiny-sd1"}, sampler_name="Euler a")
    assert "Regional prompts: " in json.loads(sd["info"])["infotexts"][0]


def test_the_txt2img_accordion_gives_the_same_arguments(edit_easel):
    """The accordion's values, through the parser the API uses: ticked, two columns; unticked, nothing."""
    import gradio as gr

    from webui.ui.regional import REGIONAL_NAME, build_regional_accordion, region_prompts

    with gr.Blocks() as blocks:
        [(name, inputs)] = build_regional_accordion("txt2img")
    blocks.close()
    assert name == REGIONAL_NAME and len(inputs.components) == 6
    assert region_prompts("a BREAK b\n\n c ") == ["a", "b", "c"]
    args = inputs.to_args(True, "Columns", "1,3", "left one BREAK right one", 0.5)
    parsed = edit_easel.registry.parse_request_args({REGIONAL_NAME: args})[REGIONAL_NAME]
    assert [r.box for r in parsed.regions] == [(0.0, 0.0, 0.25, 1.0), (0.25, 0.0, 1.0, 1.0)]
    assert [r.prompt for r in parsed.regions] == ["left one", "right one"] and parsed.base_weight == 0.5
    rows = edit_easel.registry.parse_request_args({REGIONAL_NAME: inputs.to_args(True, "Rows", "1,1", "a\nb", 0)})
    assert [r.box for r in rows[REGIONAL_NAME].regions] == [(0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0)]
    off = inputs.to_args(False, "Columns", "1,1", "", 0.2)
    assert edit_easel.registry.parse_request_args({REGIONAL_NAME: off})[REGIONAL_NAME] is None
    # Painted: each layer with paint is a region's mask (its alpha), in layer order; unpainted layers are skipped.
    from PIL import Image, ImageDraw

    layers = [Image.new("RGBA", (32, 32), (0, 0, 0, 0)) for _ in range(3)]
    ImageDraw.Draw(layers[0]).rectangle([0, 0, 15, 31], fill=(255, 64, 64, 255))
    ImageDraw.Draw(layers[2]).rectangle([16, 0, 31, 15], fill=(64, 160, 255, 255))
    painted = inputs.to_args(True, "Painted masks", "", "left BREAK top right", 0.3, {"layers": layers})
    parsed = edit_easel.registry.parse_request_args({REGIONAL_NAME: painted})[REGIONAL_NAME]
    assert [r.box for r in parsed.regions] == [(0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 0.5)]
    assert [r.prompt for r in parsed.regions] == ["left", "top right"] and parsed.base_weight == 0.3
    import pytest

    from webui.requests import RequestError

    with pytest.raises(RequestError, match="masks: needs one mask per prompt"):
        edit_easel.registry.parse_request_args({REGIONAL_NAME: inputs.to_args(
            True, "Painted masks", "", "a BREAK b BREAK c", 0.2, {"layers": layers})})


def test_img2img_with_regions_is_refused_on_the_builtin_model_too(edit_client):
    from tests.edit.conftest import b64_png, red_circle_scene

    source, _, _ = red_circle_scene()
    response = edit_client.post("/sdapi/v1/img2img", json={
        "init_images": [b64_png(source)], "prompt": "a red circle", "steps": 2, "width": 64, "height": 64,
        "alwayson_scripts": {"regional prompter": {"args": [HALVES]}}})
    assert response.status_code == 422, response.text
    data = response.json()
    assert data["field"] == "alwayson_scripts.regional prompter" and "in img2img" in data["detail"]
