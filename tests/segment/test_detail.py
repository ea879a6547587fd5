"""The detail fixer through the engine and the API: regions found by a text query (the built-in model's generative
segmentation with a colour query, or a tiny CLIPSeg) are repainted and every other pixel stays exactly as it was;
a query that finds nothing leaves the image byte-identical; ADetailer-style arguments work and unknown keys are
refused; each pass is recorded in the infotext and read back from it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.segment.conftest import CLIPSEG_LABEL, open_b64
from webui.engine.detail import grow
from webui.engine.detail_args import (DetailPass, parse_adetailer_args, parse_detail_args, pass_infotext,
                                      passes_from_infotext)
from webui.engine.worker import JobState
from webui.infotext import format_infotext, parse_infotext, read_png_parameters
from webui.requests import Txt2ImgRequest

SD = {"checkpoint": "tiny-sd1", "width": 64, "height": 64, "steps": 2, "seed": 5, "sampler": "Euler"}


def generate(easel, request) -> tuple[np.ndarray, str]:
    job = easel.engine.generate(request, timeout=300)
    assert job.state == JobState.DONE, job.error
    return np.asarray(job.result.images[0].convert("RGB")).astype(int), job.result.infotexts[0]


def with_detail(request, *passes: dict):
    return request.replace(extension_args={"easel detail": list(passes)})


def clipseg_probs(easel, image: np.ndarray, query: str) -> np.ndarray:
    from webui.engine.clipseg import probabilities

    entry = easel.manager.find_segmenter(CLIPSEG_LABEL)
    loaded = easel.manager.get_segmenter(entry.name)
    return probabilities(entry.kind, loaded.model, loaded.processor, Image.fromarray(image.astype(np.uint8)),
                         [query], loaded.device)[0]


# Arguments ----------------------------------------------------------------------------------------------------
def test_adetailer_keys_map_and_unknown_keys_are_named() -> None:
    passes = parse_adetailer_args([True, False, {"ad_model": "face_yolov8n.pt", "ad_prompt": "a smile",
                                                 "ad_denoising_strength": 0.3, "ad_dilate_erode": -2,
                                                 "ad_mask_blur": 6, "ad_inpaint_width": 128,
                                                 "ad_inpaint_height": 96, "ad_use_inpaint_width_height": True,
                                                 "ad_steps": 9, "ad_cfg_scale": 5}, {"ad_model": "None"}])
    assert passes == [DetailPass(query="face", prompt="a smile", denoising_strength=0.3, dilate_erode=-2,
                                 mask_blur=6, inpaint_width=128, inpaint_height=96)]  # ad_use_steps off: ignored
    assert parse_adetailer_args([False, False, {"ad_model": "hands"}]) == []
    assert parse_adetailer_args([True, True, {"ad_model": "hands"}])[0].skip_img2img is True
    assert parse_adetailer_args({"ad_model": "the red circle"})[0].query == "the red circle"
    with pytest.raises(ValueError, match="ad_bogus"):
        parse_adetailer_args([True, False, {"ad_model": "face", "ad_bogus": 1}])
    with pytest.raises(ValueError, match="colour"):
        parse_detail_args({"query": "face", "colour": "red"})
    with pytest.raises(ValueError, match="denoising_strength: must be between 0 and 1"):
        parse_detail_args([{"query": "face"}, {"query": "hand", "denoising_strength": 2}])
    with pytest.raises(ValueError, match="query"):
        parse_detail_args({"prompt": "x"})
    with pytest.raises(ValueError, match="inpaint_width"):
        parse_detail_args({"query": "face", "inpaint_width": 100})


def test_passes_round_trip_through_the_infotext() -> None:
    passes = [DetailPass(query="the red circle", prompt="a shiny red circle, detailed", denoising_strength=0.45,
                         dilate_erode=6, mask_blur=3, inpaint_width=128, inpaint_height=128, steps=7,
                         cfg_scale=4.5),
              DetailPass(query="face", negative_prompt="blurry: ugly", confidence=0.5)]
    params = {"Steps": 2}
    params.update(pass_infotext(1, passes[0], "easel-shapes", 1, "found"))
    params.update(pass_infotext(2, passes[1], "tiny-clipseg", 0, "nothing matching the query was found"))
    parsed = parse_infotext(format_infotext("a red circle", "", params))
    assert parsed["Detail 1 query"] == "the red circle" and parsed["Detail 2 regions"] == "0"
    assert parsed["Detail 2 result"] == "nothing matching the query was found"
    back = parse_detail_args(passes_from_infotext(parsed))
    assert back[0] == passes[0].__class__(**{**passes[0].__dict__, "finder": "easel-shapes"})
    assert back[1] == passes[1].__class__(**{**passes[1].__dict__, "finder": "tiny-clipseg"})


# CLIPSeg finder on tiny SD --------------------------------------------------------------------------------
def test_clipseg_regions_are_repainted_and_nothing_else(seg_easel) -> None:
    plain, plain_text = generate(seg_easel, Txt2ImgRequest(prompt="a red circle", **SD))
    probs = clipseg_probs(seg_easel, plain, "the red circle")
    threshold = float(np.quantile(probs, 0.7))  # about 30% of the image is "found"
    detail = {"query": "the red circle", "finder": CLIPSEG_LABEL, "confidence": threshold,
              "denoising_strength": 1.0, "dilate_erode": 2, "mask_blur": 0, "padding": 8, "steps": 2,
              "max_regions": 3}  # a random CLIPSeg finds many specks: the three largest are repainted
    fixed, text = generate(seg_easel, with_detail(Txt2ImgRequest(prompt="a red circle", **SD), detail))
    from webui.engine.detail import split_regions

    found = probs > threshold
    from webui.engine.mask_extraction import clean_mask

    regions = split_regions(clean_mask(found, found), DetailPass(query="x", max_regions=3))
    allowed = np.zeros_like(found)
    for region in regions:
        allowed |= grow(region, 2)
    changed = (fixed != plain).any(axis=-1)
    assert changed.any(), "the found regions were not repainted"
    assert not changed[~allowed].any(), "pixels outside the found regions changed"
    params = parse_infotext(text)
    assert params["Detail 1 query"] == "the red circle" and int(params["Detail 1 regions"]) == len(regions) == 3
    assert params["Detail 1 finder"] == "tiny-clipseg" and params["Detail 1 denoising"] == "1"
    assert "Detail 1 query" not in plain_text

    # With a blur the repaint feathers out a little, and still stops short of the rest of the image.
    blurred, _ = generate(seg_easel, with_detail(Txt2ImgRequest(prompt="a red circle", **SD),
                                                 {**detail, "mask_blur": 2}))
    changed = (blurred != plain).any(axis=-1)
    assert changed.any() and not changed[~grow(allowed, 8)].any()


def test_a_query_that_finds_nothing_leaves_the_image_byte_identical(seg_easel) -> None:
    plain, _ = generate(seg_easel, Txt2ImgRequest(prompt="a red circle", **SD))
    detail = {"query": "a purple elephant", "finder": CLIPSEG_LABEL, "confidence": 1.0}
    fixed, text = generate(seg_easel, with_detail(Txt2ImgRequest(prompt="a red circle", **SD), detail))
    assert np.array_equal(fixed, plain)
    params = parse_infotext(text)
    assert params["Detail 1 regions"] == "0" and params["Detail 1 result"] == "nothing matching the query was found"


# The built-in model finds a colour query -------------------------------------------------------------------
def test_builtin_model_finds_the_red_circle_and_repaints_only_there(seg_easel) -> None:
    from webui.engine.detail import split_regions
    from webui.engine.modes.segment import segment_query

    base = {"checkpoint": "easel-shapes", "width": 64, "height": 64, "steps": 8, "seed": 3, "cfg_scale": 4.0,
            "sampler": "Euler"}
    prompt = "a red circle on the left, a blue square on the right"
    plain, _ = generate(seg_easel, Txt2ImgRequest(prompt=prompt, **base))
    detail = {"query": "the red circle", "denoising_strength": 0.9, "dilate_erode": 1, "mask_blur": 0,
              "padding": 4, "steps": 6, "prompt": "a yellow circle", "finder_steps": 12}
    fixed, text = generate(seg_easel, with_detail(Txt2ImgRequest(prompt=prompt, **base), detail))
    params = parse_infotext(text)
    assert params["Detail 1 finder"] == "easel-shapes" and params["Detail 1 prompt"] == "a yellow circle"
    assert int(params["Detail 1 regions"]) >= 1, params.get("Detail 1 result")
    loaded = seg_easel.manager.get("easel-shapes", "edit")
    found = segment_query(loaded.pipe, loaded.arch, Image.fromarray(plain.astype(np.uint8)), "the red circle",
                          steps=12, seed=0)
    assert found.found
    allowed = np.zeros_like(found.mask)
    for region in split_regions(found.mask, DetailPass(query="x")):
        allowed |= grow(region, 1)
    red = np.abs(plain - np.array([220, 40, 40])).sum(-1) < 120  # the drawn circle's pixels (roughly)
    assert (allowed & red).sum() >= 0.5 * red.sum() > 0, "the found region is not the red circle"
    changed = (fixed != plain).any(axis=-1)
    assert changed.any() and not changed[~allowed].any()


# The API ----------------------------------------------------------------------------------------------------
def test_adetailer_args_through_the_api_and_unknown_keys_422(seg_client) -> None:
    body = {"prompt": "a red circle", "seed": 5, "width": 64, "height": 64, "steps": 2,
            "override_settings": {"sd_model_checkpoint": "tiny-sd1"}}
    response = seg_client.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {"ADetailer": {"args": [
        True, False, {"ad_model": "the red circle", "ad_denoising_strength": 0.5, "ad_dilate_erode": 2,
                      "ad_mask_blur": 1, "ad_steps": 2, "ad_use_steps": True}]}}})
    assert response.status_code == 200, response.text
    data = response.json()
    text = read_png_parameters(open_b64(data["images"][0]))
    info = parse_infotext(text)
    assert info["Detail 1 query"] == "the red circle" and info["Detail 1 denoising"] == "0.5"
    assert info["Detail 1 steps"] == "2" and "Detail 1 regions" in info
    assert json.loads(data["info"])["infotexts"][0] == text  # the response's info carries the same text

    bad = seg_client.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {"ADetailer": {"args": [
        True, False, {"ad_model": "face", "ad_controlnet_model": "None"}]}}})
    assert bad.status_code == 422 and "ad_controlnet_model" in bad.text
    bad = seg_client.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {"easel detail": {"args": [
        {"query": "face", "denoise": 0.3}]}}})
    assert bad.status_code == 422 and "denoise" in bad.text and "alwayson_scripts" in bad.text


def test_img2img_runs_its_passes_and_skip_img2img_is_honoured(seg_easel) -> None:
    from webui.engine.detail import split_regions
    from webui.engine.mask_extraction import clean_mask
    from webui.requests import Img2ImgRequest
    from tests.segment.conftest import scene_image

    source, _ = scene_image()
    base = Img2ImgRequest(prompt="a red circle", init_image=source, denoising_strength=0.5, **SD)
    plain, _ = generate(seg_easel, base)
    probs = clipseg_probs(seg_easel, plain, "the circle")
    threshold = float(np.quantile(probs, 0.8))
    detail = {"query": "the circle", "finder": CLIPSEG_LABEL, "confidence": threshold, "max_regions": 1,
              "dilate_erode": 0, "mask_blur": 0, "denoising_strength": 1.0, "padding": 4}
    fixed, text = generate(seg_easel, with_detail(base, detail))
    found = probs > threshold
    [region] = split_regions(clean_mask(found, found), DetailPass(query="x", max_regions=1))
    changed = (fixed != plain).any(axis=-1)
    assert changed.any() and not changed[~region].any()
    assert parse_infotext(text)["Detail 1 regions"] == "1"

    skipped, text = generate(seg_easel, base.replace(extension_args={"ADetailer": [True, True, {
        "ad_model": "the circle"}]}))
    assert np.array_equal(skipped, plain) and "Detail 1" not in text


def test_interrupting_a_pass_keeps_the_image_as_the_mode_made_it(seg_easel) -> None:
    plain, _ = generate(seg_easel, Txt2ImgRequest(prompt="a red circle", **SD))

    def interrupt_inpaint(call, run):
        if call.task == "inpaint":  # the detail fixer's repaint: interrupt it while it runs
            seg_easel.engine.worker.interrupt()
        return run(call)

    seg_easel.registry.pipeline_wrappers.append(interrupt_inpaint)
    try:
        detail = {"query": "the red circle", "finder": CLIPSEG_LABEL, "confidence": 0.0, "max_regions": 1,
                  "steps": 2}
        job = seg_easel.engine.generate(with_detail(Txt2ImgRequest(prompt="a red circle", **SD), detail),
                                        timeout=300)
    finally:
        seg_easel.registry.pipeline_wrappers.remove(interrupt_inpaint)
    assert job.state == JobState.INTERRUPTED and len(job.result.images) == 1
    assert np.array_equal(np.asarray(job.result.images[0].convert("RGB")).astype(int), plain)
    assert "Detail 1" not in job.result.infotexts[0]


def test_a_finder_that_cannot_segment_fails_the_job_naming_the_pass(seg_easel) -> None:
    job = seg_easel.engine.generate(with_detail(Txt2ImgRequest(prompt="a red circle", **SD),
                                                {"query": "face", "finder": "tiny-sd1"}), timeout=300)
    assert job.state == JobState.FAILED
    assert job.error.startswith("alwayson_scripts: detail pass 1: finder:") and "cannot edit" in job.error


def test_passes_beyond_the_limits_are_refused_before_queueing(seg_easel) -> None:
    from webui.requests import RequestError

    limits = seg_easel.settings.user.limits()
    request = with_detail(Txt2ImgRequest(prompt="a red circle", **SD),
                          {"query": "face", "prompt": "x" * (limits.max_prompt_chars + 1)})
    with pytest.raises(RequestError, match="detail pass 1: prompt"):
        seg_easel.engine.submit(request)
    with pytest.raises(RequestError, match="denoising_strength"):  # a request made in code is parsed too
        seg_easel.engine.submit(with_detail(Txt2ImgRequest(prompt="x", **SD),
                                            {"query": "face", "denoising_strength": 3}))


def test_a_pass_repaints_at_most_64_regions_largest_first() -> None:
    from webui.engine.detail import MAX_REGIONS, split_regions

    mask = np.zeros((100, 100), bool)
    for k in range(100):  # 100 separate specks, the k-th one k+1 pixels long
        row, col = (k // 10) * 10, (k % 10) * 10
        mask[row, col:col + 1 + k % 9] = True
    everything = split_regions(mask, DetailPass(query="x", max_regions=0))
    assert len(everything) == MAX_REGIONS == 64
    sizes = [int(r.sum()) for r in everything]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 9
    assert len(split_regions(mask, DetailPass(query="x", max_regions=3))) == 3
