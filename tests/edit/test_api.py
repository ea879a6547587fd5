"""POST /easel/v1/edit on the shipped built-in model: a recolouring that changes the object and (nearly) nothing
else, a masked edit that leaves every pixel outside the mask as it was, the infotext, and bad input answered with
a 4xx naming the field."""
from __future__ import annotations

import base64

import numpy as np
from PIL import Image

from tests.edit.conftest import b64_png, open_b64, red_circle_scene
from webui.infotext import parse_infotext

STEPS = 8


def edit(client, status: int = 200, **body) -> dict:
    response = client.post("/easel/v1/edit", json=body)
    assert response.status_code == status, response.text
    return response.json()


def test_builtin_model_recolours_the_red_circle_and_leaves_the_rest(edit_client):
    source, coverage, target = red_circle_scene()
    data = edit(edit_client, image=b64_png(source), instruction="make the red circle blue", steps=STEPS, seed=1)
    result = np.asarray(open_b64(data["image"]).convert("RGB"), np.int16)  # [64, 64, 3]
    src, tgt = np.asarray(source, np.int16), np.asarray(target, np.int16)
    inside, untouched = coverage > 0.99, coverage < 0.01  # fully covered pixels / pixels the circle never touches
    # The circle is now blue: within a few levels of the renderer's blue circle (red is 180 levels away).
    assert np.abs(result - tgt)[inside].mean() < 12
    assert np.abs(src - tgt)[inside].mean() > 100
    # Everything the circle does not touch (background, green square) stays within a small tolerance.
    assert np.abs(result - src)[untouched].mean() < 2.0
    info = data["info"]
    assert info["model"] == "easel-shapes" and info["family"] == "built-in" and info["seed"] == 1
    assert info["steps"] == STEPS and info["masked"] is False and 0 < info["changed_share"] < 0.2
    text = data["infotext"]
    assert text.splitlines()[0] == "make the red circle blue"
    params = parse_infotext(text)
    assert params["Seed"] == "1" and params["Steps"] == str(STEPS) and params["Model"] == "easel-shapes"
    # The PNG carries the same parameters text.
    assert open_b64(data["image"]).info.get("parameters") == text


def test_masked_edit_changes_nothing_outside_the_mask(edit_client):
    source, coverage, _ = red_circle_scene()
    mask = Image.new("L", source.size, 0)
    mask.paste(255, (0, 0, 32, 64))  # the left half, where the circle is
    data = edit(edit_client, image=b64_png(source), instruction="make the red circle blue", steps=STEPS, seed=1,
                mask=b64_png(mask))
    result, src = np.asarray(open_b64(data["image"]).convert("RGB")), np.asarray(source)
    assert np.array_equal(result[:, 32:], src[:, 32:])  # bit for bit
    assert np.abs(result[:, :32].astype(int) - src[:, :32]).max() > 100  # the circle inside did change
    assert data["info"]["masked"] is True and "Edit mask: 50.0%" in data["infotext"]
    # A mask that excludes the circle: the instruction has nothing it may change, so nothing changes at all.
    away = Image.new("L", source.size, 0)
    away.paste(255, (40, 0, 64, 10))  # a strip of background at the top right
    kept = edit(edit_client, image=b64_png(source), instruction="make the red circle blue", steps=STEPS, seed=1,
                mask=b64_png(away))
    result = np.asarray(open_b64(kept["image"]).convert("RGB"))
    outside = np.asarray(away) < 128
    assert np.array_equal(result[outside], src[outside])


def test_models_listing(edit_client):
    models = edit_client.get("/easel/v1/edit/models").json()
    assert models == [{"name": "easel-shapes", "family": "built-in", "max_images": 1}]


def bad(client, body: dict, status: int = 422) -> dict:
    response = client.post("/easel/v1/edit", json=body)
    assert response.status_code == status, response.text
    return response.json()


def test_bad_input_names_the_field(edit_client, edit_easel):
    image = b64_png(Image.new("RGB", (32, 32)))
    ok = {"image": image, "instruction": "make the red circle blue"}
    assert bad(edit_client, {"instruction": "x"})["field"] == "image"
    assert bad(edit_client, {**ok, "image": "not base64!!"})["field"] == "image"
    broken = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(40)).decode()  # a PNG signature, then nothing usable
    assert bad(edit_client, {**ok, "image": broken})["field"] == "image"
    assert bad(edit_client, {"image": image})["field"] == "instruction"
    assert bad(edit_client, {**ok, "instruction": "   "})["field"] == "instruction"
    assert bad(edit_client, {**ok, "steps": 0})["field"] == "steps"
    assert bad(edit_client, {**ok, "steps": "many"})["field"] == "steps"
    assert bad(edit_client, {**ok, "guidance": 99})["field"] == "guidance"
    assert bad(edit_client, {**ok, "seed": 1.5})["field"] == "seed"
    assert bad(edit_client, {**ok, "prompt": "x"})["field"] == "prompt"  # not an edit field: never dropped
    assert bad(edit_client, {**ok, "mask": "nope"})["field"] == "mask"
    empty = bad(edit_client, {**ok, "mask": b64_png(Image.new("L", (32, 32), 0))})
    assert empty["field"] == "mask" and "empty" in empty["detail"]
    assert bad(edit_client, {**ok, "images": image})["field"] == "images"
    assert bad(edit_client, {**ok, "images": [image] * 3})["field"] == "images"
    assert bad(edit_client, {**ok, "images": ["nope"]})["field"] == "images[0]"
    # The built-in model edits one image: references are refused, naming the field, after it loads.
    single = bad(edit_client, {**ok, "images": [image], "steps": 1})
    assert single["field"] == "images" and "Qwen-Image-Edit Plus" in single["detail"]
    assert bad(edit_client, {**ok, "model": "no-such-model"}, 404)["field"] == "model"
    assert bad(edit_client, {**ok, "model": 5})["field"] == "model"
    assert bad(edit_client, {**ok, "instruction": ["a"]})["field"] == "instruction"
    assert bad(edit_client, {**ok, "save_images": "yes"})["field"] == "save_images"
    assert bad(edit_client, {**ok, "images": [5]})["field"] == "images[0]"
    assert bad(edit_client, {**ok, "image_guidance": -1})["field"] == "image_guidance"
    assert bad(edit_client, [ok])["field"] == "body"
    refused = bad(edit_client, {**ok, "model": "tiny-sd1"})
    assert refused["field"] == "model" and "cannot edit" in refused["detail"] and "easel-shapes" in refused["detail"]
    side = int(edit_easel.settings.user.limits().max_pixels ** 0.5) + 8
    huge = bad(edit_client, {**ok, "image": b64_png(Image.new("RGB", (side, side)))})
    assert huge["field"] == "image" and "limit" in huge["detail"]
    response = edit_client.post("/easel/v1/edit", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["field"] == "body"
    assert edit_easel.engine.worker.current is None  # nothing left running


def test_the_default_model_is_the_current_one_when_it_can_edit(make_easel, builtin_root, tmp_path):
    """With no `model`: the current checkpoint when it edits, else the first edit-capable one (here the built-in
    model, while tiny-sd1 is the current checkpoint)."""
    from tests.conftest import api_client

    easel = make_easel(builtin_dir=builtin_root)
    easel.engine.load("tiny-sd1")
    with api_client(easel) as client:
        data = edit(client, image=b64_png(Image.new("RGB", (64, 64), (220, 40, 40))), instruction="make it blue",
                    steps=1)
    assert data["info"]["model"] == "easel-shapes"


def test_login_is_required_like_the_rest_of_the_api(make_easel, builtin_root):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api.routes import create_api

    easel = make_easel(builtin_dir=builtin_root, api_auth="bob:pw")
    app = FastAPI()
    create_api(app, easel)
    body = {"image": b64_png(Image.new("RGB", (32, 32))), "instruction": "make it blue", "steps": 1}
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/easel/v1/edit", json=body).status_code == 401
        assert client.get("/easel/v1/edit/models").status_code == 401
        ok = client.post("/easel/v1/edit", json=body, auth=("bob", "pw"))
        assert ok.status_code == 200, ok.text
