"""Every edit family through POST /easel/v1/edit on tiny random weights: InstructPix2Pix (with its image
guidance), FLUX.1 Kontext, Qwen-Image-Edit and Qwen-Image-Edit Plus (with two reference images). Random weights
draw noise, so these prove the route drives each pipeline (sizes, arguments, infotext, the mask) — not quality."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import api_client
from tests.edit.conftest import b64_png, open_b64


def make_tiny_qwenimage_edit_plus(folder):
    from tests.segment.test_mode import make_tiny_qwenimage_edit_plus as make

    return make(folder)


FAMILIES = {"instruct-pix2pix": "InstructPix2Pix", "flux-kontext": "FLUX.1 Kontext",
            "qwenimage-edit": "Qwen-Image-Edit", "qwenimage-edit-plus": "Qwen-Image-Edit Plus"}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_edit_family_runs_through_the_route(make_easel, tmp_path, family):
    from tests.tiny_models import EDIT_BUILDERS

    builders = {**EDIT_BUILDERS, "qwenimage-edit-plus": make_tiny_qwenimage_edit_plus}
    builders[family](tmp_path / "data" / "models" / "diffusers" / family)
    easel = make_easel()  # tiny-sd1 too, which cannot edit
    source = Image.new("RGB", (48, 40), (200, 40, 40))
    source.paste((30, 60, 200), (0, 0, 24, 40))
    mask = Image.new("L", source.size, 0)
    mask.paste(255, (24, 0, 48, 40))  # the right half may change
    body = {"image": b64_png(source), "instruction": "make the red square blue", "model": family, "steps": 1,
            "seed": 3, "guidance": 2.0, "image_guidance": 1.2, "mask": b64_png(mask)}
    if family == "qwenimage-edit-plus":
        body["images"] = [b64_png(Image.new("RGB", (32, 32), (0, 200, 0))), b64_png(Image.new("RGB", (16, 24)))]
    with api_client(easel) as client:
        models = {m["name"]: m for m in client.get("/easel/v1/edit/models").json()}
        assert set(models) == {family} and models[family]["family"] == FAMILIES[family]
        assert models[family]["max_images"] == (3 if family == "qwenimage-edit-plus" else 1)
        response = client.post("/easel/v1/edit", json=body)
        assert response.status_code == 200, response.text
        data = response.json()
        result = open_b64(data["image"]).convert("RGB")
        assert result.size == source.size
        assert np.array_equal(np.asarray(result)[:, :24], np.asarray(source)[:, :24])  # outside the mask
        info = data["info"]
        assert info["model"] == family and info["family"] == FAMILIES[family] and info["seed"] == 3
        assert info["references"] == (2 if family == "qwenimage-edit-plus" else 0)
        text = data["infotext"]
        assert text.startswith("make the red square blue\n") and f"Edit model: {FAMILIES[family]}" in text
        assert ("Image CFG scale: 1.2" in text) == (family == "instruct-pix2pix")
        assert ("Reference images: 2" in text) == (family == "qwenimage-edit-plus")
        if family != "qwenimage-edit-plus":  # one image only: references are refused naming the field
            refused = client.post("/easel/v1/edit", json={**body, "images": [b64_png(source)]})
            assert refused.status_code == 422 and refused.json()["field"] == "images"
        # A checkpoint that cannot edit: 422 on `model`, listing the ones that can.
        refused = client.post("/easel/v1/edit", json={**body, "model": "tiny-sd1"})
        assert refused.status_code == 422 and refused.json()["field"] == "model"
        assert family in refused.json()["detail"]
