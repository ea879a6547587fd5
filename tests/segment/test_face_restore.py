"""Face restoration through the engine, the API and Extras, on tiny models: the faces are the regions the detail
fixer's finder (a tiny random CLIPSeg) finds for "face"; only their pixels change; the infotext says
"Face restoration: GFPGAN" (as AUTOMATIC1111 writes it) and PNG Info reads it back; a missing restorer, a missing
finder and a broken file are 422s naming the field, and the worker goes on."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from tests.segment.conftest import CLIPSEG_LABEL, b64_png, open_b64
from tests.segment.test_detail import SD, clipseg_probs, generate
from tests.conftest import api_client
from tests.tiny_face_restorers import make_tiny_codeformer, make_tiny_gfpgan
from webui.engine.detail import grow, split_regions
from webui.engine.detail_args import DetailPass
from webui.engine.face_restore import GROW
from webui.engine.mask_extraction import clean_mask
from webui.infotext import parse_infotext, request_updates
from webui.requests import Txt2ImgRequest


def face_settings(easel, image: np.ndarray, **more) -> np.ndarray:
    """Point face finding at the tiny CLIPSeg with a threshold that finds about 20% of `image`; the mask of the
    regions that may change (each found region grown as the restorer grows it)."""
    probs = clipseg_probs(easel, image, "face")
    threshold = float(np.quantile(probs, 0.8))
    easel.settings.user = dataclasses.replace(easel.settings.user, face_restoration_finder=CLIPSEG_LABEL,
                                              face_restoration_confidence=threshold, **more)
    found = probs > threshold
    allowed = np.zeros_like(found)
    for region in split_regions(clean_mask(found, found), DetailPass(query="face")):
        allowed |= grow(region, GROW)
    return allowed


def test_txt2img_restores_only_the_faces_found_and_says_so(seg_easel) -> None:
    make_tiny_gfpgan(seg_easel.settings.models_dir / "GFPGAN" / "GFPGANv1.4.safetensors")
    plain, plain_text = generate(seg_easel, Txt2ImgRequest(prompt="a portrait", **SD))
    allowed = face_settings(seg_easel, plain, face_restoration_model="GFPGAN")
    restored, text = generate(seg_easel, Txt2ImgRequest(prompt="a portrait", restore_faces=True, **SD))
    changed = (restored != plain).any(axis=-1)
    assert changed.any(), "no face was restored"
    assert not changed[~allowed].any(), "pixels outside the found faces changed"
    params = parse_infotext(text)
    assert params["Face restoration"] == "GFPGAN" and params["Face restoration finder"] == "tiny-clipseg"
    assert int(params["Face restoration faces"]) >= 1
    assert "Face restoration" not in parse_infotext(plain_text)
    assert request_updates(params)["restore_faces"] is True
    assert request_updates(parse_infotext(plain_text))["restore_faces"] is False


def test_api_round_trip_lists_restorers_and_refuses_what_cannot_run(seg_easel) -> None:
    models = seg_easel.settings.models_dir
    with api_client(seg_easel) as client:
        base = {"prompt": "a portrait", "width": 64, "height": 64, "steps": 2, "seed": 5, "sampler_name": "Euler"}
        assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd1"}).status_code == 200
        missing = client.post("/sdapi/v1/txt2img", json={**base, "restore_faces": True})
        assert missing.status_code == 422 and missing.json()["field"] == "restore_faces"
        assert "CodeFormer is not installed" in missing.json()["detail"]
        assert "models/Codeformer/" in missing.json()["detail"]

        make_tiny_codeformer(models / "Codeformer" / "codeformer-v0.1.0.safetensors")
        make_tiny_gfpgan(models / "GFPGAN" / "GFPGANv1.4.safetensors")
        assert client.get("/sdapi/v1/face-restorers").json() == [
            {"name": "GFPGAN", "cmd_dir": "GFPGAN", "files": ["GFPGAN/GFPGANv1.4.safetensors"]},
            {"name": "CodeFormer", "cmd_dir": "Codeformer", "files": ["Codeformer/codeformer-v0.1.0.safetensors"]}]
        plain = client.post("/sdapi/v1/txt2img", json=base).json()
        face_settings(seg_easel, np.asarray(open_b64(plain["images"][0]).convert("RGB")).astype(int))
        assert client.post("/sdapi/v1/options", json={"code_former_weight": 0.7}).status_code == 200
        assert client.get("/sdapi/v1/options").json()["face_restoration_model"] == "CodeFormer"
        answer = client.post("/sdapi/v1/txt2img", json={**base, "restore_faces": True})
        assert answer.status_code == 200, answer.text
        info = json.loads(answer.json()["info"])
        assert info["restore_faces"] is True and info["face_restoration_model"] == "CodeFormer"
        assert "Face restoration: CodeFormer, CodeFormer weight: 0.7" in info["infotexts"][0]
        assert answer.json()["images"][0] != plain["images"][0]
        png = client.post("/sdapi/v1/png-info", json={"image": answer.json()["images"][0]}).json()
        assert png["parameters"]["Face restoration"] == "CodeFormer"
        one_off = client.post("/sdapi/v1/txt2img", json={**base, "restore_faces": True, "override_settings": {
            "face_restoration_model": "gfpgan", "code_former_weight": 0.2}})
        assert one_off.status_code == 200, one_off.text
        assert "Face restoration: GFPGAN" in json.loads(one_off.json()["info"])["infotexts"][0]
        assert client.get("/sdapi/v1/options").json()["face_restoration_model"] == "CodeFormer", "for one request"
        for override, field in (({"face_restoration_model": "RestoreFormer"}, "override_settings.face_restoration_model"),
                                ({"code_former_weight": 3}, "override_settings.code_former_weight")):
            refused = client.post("/sdapi/v1/txt2img", json={**base, "restore_faces": True,
                                                            "override_settings": override})
            assert refused.status_code == 422 and refused.json()["field"] == field, refused.text

        bad = client.post("/sdapi/v1/options", json={"face_restoration_model": "RestoreFormer"})
        assert bad.status_code == 422 and bad.json()["field"] == "face_restoration_model"

        # a broken file: a 422 naming it, before anything is generated; the worker goes on
        (models / "Codeformer" / "codeformer-v0.1.0.safetensors").write_bytes(b"truncated")
        broken = client.post("/sdapi/v1/txt2img", json={**base, "restore_faces": True})
        assert broken.status_code == 422 and broken.json()["field"] == "restore_faces"
        assert "codeformer-v0.1.0.safetensors" in broken.json()["detail"]
        assert (models / "Codeformer" / "codeformer-v0.1.0.safetensors").read_bytes() == b"truncated"
        again = client.post("/sdapi/v1/txt2img", json=base)
        assert again.status_code == 200 and again.json()["images"][0] == plain["images"][0]


def test_extras_runs_gfpgan_and_codeformer_by_visibility(seg_easel) -> None:
    models = seg_easel.settings.models_dir
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    face_settings(seg_easel, np.asarray(image).astype(int))
    body = {"image": b64_png(image), "upscaler_1": "None"}
    with api_client(seg_easel) as client:
        missing = client.post("/sdapi/v1/extra-single-image", json={**body, "gfpgan_visibility": 1})
        assert missing.status_code == 422 and missing.json()["field"] == "gfpgan_visibility"
        assert "models/GFPGAN/" in missing.json()["detail"]
        make_tiny_gfpgan(models / "GFPGAN" / "GFPGANv1.4.safetensors")
        make_tiny_codeformer(models / "Codeformer" / "codeformer.safetensors")
        too_much = client.post("/sdapi/v1/extra-single-image", json={**body, "codeformer_visibility": 2})
        assert too_much.status_code == 422 and too_much.json()["field"] == "codeformer_visibility"
        done = client.post("/sdapi/v1/extra-single-image",
                           json={**body, "gfpgan_visibility": 1, "codeformer_visibility": 0.5,
                                 "codeformer_weight": 0.3})
        assert done.status_code == 200, done.text
        out = open_b64(done.json()["image"]).convert("RGB")
        assert out.size == image.size and out.tobytes() != image.tobytes()
        text = done.json()["html_info"]
        assert "GFPGAN visibility: 1" in text and "CodeFormer visibility: 0.5" in text
        assert "CodeFormer weight: 0.3" in text and "GFPGAN faces:" in text
        off = client.post("/sdapi/v1/extra-single-image", json={**body, "gfpgan_visibility": 0})
        assert off.status_code == 200 and open_b64(off.json()["image"]).convert("RGB").tobytes() == image.tobytes()


def test_without_a_face_finder_restore_faces_is_a_422_saying_so(make_easel) -> None:
    easel = make_easel()  # tiny SD 1.x only: it cannot edit, and no segmenter is installed
    make_tiny_gfpgan(easel.settings.models_dir / "GFPGAN" / "GFPGANv1.4.safetensors")
    easel.settings.user = dataclasses.replace(easel.settings.user, face_restoration_model="GFPGAN")
    with api_client(easel) as client:
        answer = client.post("/sdapi/v1/txt2img", json={"prompt": "a portrait", "width": 64, "height": 64,
                                                        "steps": 2, "restore_faces": True})
        assert answer.status_code == 422 and answer.json()["field"] == "restore_faces"
        assert "detail fixer's finders" in answer.json()["detail"] and "clipseg" in answer.json()["detail"]
