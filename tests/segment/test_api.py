"""POST /easel/v1/segment: good input through the engine queue (built-in model, tiny CLIPSeg), and bad input
answered with a 4xx naming the field."""
from __future__ import annotations

import numpy as np
from PIL import Image

from tests.segment.conftest import CLIPSEG_LABEL, b64_png, binary_values, open_b64, scene_image

STEPS = 2


def test_segment_with_the_builtin_model(seg_client):
    image, scene = scene_image()
    obj = scene.objects[0]
    response = seg_client.post("/easel/v1/segment", json={
        "image": b64_png(image), "query": f"the {obj.color} {obj.shape}", "steps": STEPS, "seed": 5})
    assert response.status_code == 200, response.text
    data = response.json()
    mask, edited = open_b64(data["mask"]), open_b64(data["edited"])
    assert mask.mode == "L" and mask.size == image.size and binary_values(mask) <= {0, 255}
    assert edited.mode == "RGB" and edited.size == image.size
    assert isinstance(data["found"], bool) and (data["found"] or binary_values(mask) == {0})
    info = data["info"]
    assert info["model"] == "easel-shapes" and info["method"] == "generative" and info["seed"] == 5
    assert info["prompts"] == [f"highlight the {obj.color} {obj.shape} in magenta"]
    assert info["queries"] == [f"the {obj.color} {obj.shape}"] and len(info["messages"]) == 1
    assert "masks" not in data and "Query: " in info["infotexts"][0]
    # The same request with the same seed gives the same mask.
    again = seg_client.post("/easel/v1/segment", json={
        "image": b64_png(image), "query": f"the {obj.color} {obj.shape}", "steps": STEPS, "seed": 5}).json()
    assert again["mask"] == data["mask"]


def test_several_queries_give_a_mask_each_and_an_overlay(seg_client):
    image, _ = scene_image()
    response = seg_client.post("/easel/v1/segment", json={
        "image": b64_png(image), "query": "the red circle\n\nthe star on the left\n", "steps": STEPS,
        "highlight": "cyan", "keep_largest": True, "threshold": 20})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["info"]["queries"] == ["the red circle", "the star on the left"]
    assert len(data["masks"]) == 2 and len(data["edited_images"]) == 2
    assert data["masks"][0] == data["mask"]
    assert open_b64(data["overlay"]).size == image.size
    assert all(p.endswith("in cyan") for p in data["info"]["prompts"])


def test_clipseg_baseline_and_a_missing_referent(seg_client):
    image = Image.new("RGB", (48, 40), (30, 90, 200))
    found = seg_client.post("/easel/v1/segment", json={
        "image": b64_png(image), "query": "the blue square", "model": CLIPSEG_LABEL, "mask_threshold": 0.0}).json()
    assert found["info"]["method"] == "CLIPSeg" and found["info"]["model"] == "tiny-clipseg"
    assert found["found"] is True and open_b64(found["mask"]).size == (48, 40)
    # Nothing reaches a probability of 1: the referent is absent, the mask empty and the message says so.
    absent = seg_client.post("/easel/v1/segment", json={
        "image": b64_png(image), "query": "the dog", "model": "tiny-clipseg", "mask_threshold": 1.0}).json()
    assert absent["found"] is False and binary_values(open_b64(absent["mask"])) == {0}
    assert "nothing matching" in absent["info"]["messages"][0]


def test_generative_edit_that_highlights_nothing_is_not_found(seg_client):
    """A source already in the highlight colour: whatever the edit repaints, no pixel can both change by more than
    the threshold and end near magenta, so the answer is found = false with an empty mask, whatever the weights."""
    image = Image.new("RGB", (64, 64), (255, 0, 255))
    data = seg_client.post("/easel/v1/segment", json={
        "image": b64_png(image), "query": "the purple ring", "steps": 2, "threshold": 100}).json()
    assert data["found"] is False and binary_values(open_b64(data["mask"])) == {0}


def test_models_listing(seg_client):
    models = seg_client.get("/easel/v1/segment/models").json()
    assert {"name": "easel-shapes", "kind": "edit", "template": "highlight {query} in {colour}"} in models
    assert {"name": CLIPSEG_LABEL, "kind": "clipseg", "template": ""} in models
    assert all(m["name"] != "tiny-sd1" for m in models)


def bad(client, body: dict, status: int = 422) -> dict:
    response = client.post("/easel/v1/segment", json=body)
    assert response.status_code == status, response.text
    return response.json()


def test_bad_input_names_the_field(seg_client):
    image = b64_png(Image.new("RGB", (32, 32)))
    assert bad(seg_client, {"image": "not base64!!", "query": "x"})["field"] == "image"
    assert bad(seg_client, {"image": b64_png(Image.new("RGB", (1, 1))).replace("A", "")[:-4] + "@", "query": "x"})[
        "field"] == "image"
    assert bad(seg_client, {"query": "x"})["field"] == "image"
    assert bad(seg_client, {"image": image, "query": "  \n "})["field"] == "query"
    assert bad(seg_client, {"image": image})["field"] == "query"
    assert bad(seg_client, {"image": image, "query": "x", "steps": "many"})["field"] == "steps"
    assert bad(seg_client, {"image": image, "query": "x", "steps": 0})["field"] == "steps"
    assert bad(seg_client, {"image": image, "query": "x", "seed": 1.5})["field"] == "seed"
    assert bad(seg_client, {"image": image, "query": "x", "highlight": "orange"})["field"] == "highlight"
    assert bad(seg_client, {"image": image, "query": "x", "template": "paint it {colour}"})["field"] == "template"
    assert bad(seg_client, {"image": image, "query": "x", "keep_largest": "yes"})["field"] == "keep_largest"
    assert bad(seg_client, {"image": image, "query": "x", "colour": "cyan"})["field"] == "colour"
    assert bad(seg_client, {"image": image, "query": "x", "model": "no-such-model"}, 404)["field"] == "model"
    refused = bad(seg_client, {"image": image, "query": "x", "model": "tiny-sd1"})
    assert refused["field"] == "model" and "cannot segment" in refused["detail"]
    # The built-in model paints only magenta or cyan: found while running, still a 4xx naming the field.
    assert bad(seg_client, {"image": image, "query": "x", "highlight": "lime", "steps": 1})["field"] == "highlight"
    many = "\n".join(f"the shape {i}" for i in range(9))
    assert bad(seg_client, {"image": image, "query": many})["field"] == "query"
    response = seg_client.post("/easel/v1/segment", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["field"] == "body"


def test_huge_image_is_refused_naming_the_field(seg_client, seg_easel):
    side = int(seg_easel.settings.user.limits().max_pixels ** 0.5) + 8
    huge = Image.new("RGB", (side, side), (10, 20, 30))
    data = bad(seg_client, {"image": b64_png(huge), "query": "the red circle"})
    assert data["field"] == "image" and "limit" in data["detail"]
    assert seg_easel.engine.worker.current is None


def test_login_is_required_like_the_rest_of_the_api(make_easel, builtin_root):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api.routes import create_api

    easel = make_easel(builtin_dir=builtin_root, api_auth="bob:pw")
    app = FastAPI()
    create_api(app, easel)
    image = b64_png(Image.new("RGB", (32, 32)))
    with TestClient(app, raise_server_exceptions=False) as client:
        refused = client.post("/easel/v1/segment", json={"image": image, "query": "x"})
        assert refused.status_code == 401
        assert client.get("/easel/v1/segment/models").status_code == 401
        ok = client.post("/easel/v1/segment", json={"image": image, "query": "the red circle", "steps": 1},
                         auth=("bob", "pw"))
        assert ok.status_code == 200, ok.text
        assert np.asarray(open_b64(ok.json()["mask"])).shape == (32, 32)
