"""DiT end to end on a tiny class-conditional model: identified, listed, class names matched (exactly, fuzzily,
by number), negative prompt refused, infotext, the API and its 422s."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import api_client
from webui.engine.families.dit import match_class
from webui.engine.worker import JobState
from webui.infotext import parse_infotext, read_png_parameters
from webui.requests import RequestError, Txt2ImgRequest

LABELS = {"tench": 0, "Tinca tinca": 0, "golden retriever": 207, "Labrador retriever": 208, "tabby": 281,
          "tabby cat": 281, "tiger cat": 282, "giant panda": 388, "panda": 388}


def test_class_names_match_exactly_fuzzily_or_by_number():
    assert match_class("Golden Retriever", LABELS, 1000) == (207, "golden retriever")
    assert match_class("golden retreiver", LABELS, 1000) == (207, "golden retriever")  # a typo: one close name
    assert match_class("388", LABELS, 1000) == (388, "giant panda")
    with pytest.raises(RequestError) as caught:
        match_class("retriever dog", LABELS, 1000)  # two close names: which one is not guessed
    assert caught.value.field == "prompt" and "golden retriever" in str(caught.value)
    assert "Labrador retriever" in str(caught.value)
    with pytest.raises(RequestError, match="classes 0 to 999"):
        match_class("1200", LABELS, 1000)


def run(easel, request):
    job = easel.engine.generate(request, timeout=120)
    assert job.state == JobState.DONE, job.error
    return job.result


def test_dit_is_listed_and_draws_the_named_class(family_easel, tiny_dit_dir):
    easel = family_easel(tiny_dit=tiny_dit_dir)
    entry = easel.manager.find_checkpoint("tiny-dit")
    assert entry.arch.value == "dit" and entry.supported
    defaults = easel.model_defaults("tiny-dit")
    assert (defaults.width, defaults.height, defaults.sampler) == (64, 64, "Default")  # 32x32 latents, 2x VAE
    request = Txt2ImgRequest(prompt="golden retreiver", checkpoint="tiny-dit", steps=2, cfg_scale=4.0, seed=3,
                             width=64, height=64, sampler="Default", batch_size=2)
    result = run(easel, request)
    assert len(result.images) == 2 and result.images[0].size == (64, 64)
    params = parse_infotext(read_png_parameters(Image.open(result.paths[0])))
    assert params["Class"] == "golden retriever (207)" and params["Sampler"] == "Default"
    assert params["Model"] == "tiny-dit" and params["Steps"] == "2"
    again = run(easel, request)
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(result.images[0]))  # same seed, same image
    other = run(easel, request.replace(prompt="space shuttle"))
    assert not np.array_equal(np.asarray(other.images[0]), np.asarray(result.images[0]))  # the class matters
    bigger = run(easel, request.replace(width=128, height=128, batch_size=1))
    assert bigger.images[0].size == (128, 128)
    assert parse_infotext(bigger.infotexts[0])["Rendered size"] == "64x64"


def test_dit_refuses_a_negative_prompt_and_unknown_classes(family_easel, tiny_dit_dir):
    easel = family_easel(tiny_dit=tiny_dit_dir)
    base = Txt2ImgRequest(prompt="tabby", checkpoint="tiny-dit", steps=2, width=64, height=64, sampler="Default")
    job = easel.engine.generate(base.replace(negative_prompt="blurry"), timeout=120)
    assert job.state == JobState.FAILED and job.exception.field == "negative_prompt"
    job = easel.engine.generate(base.replace(prompt="a red circle"), timeout=120)
    assert job.state == JobState.FAILED and job.exception.field == "prompt" and "class names" in str(job.error)
    job = easel.engine.generate(base.replace(prompt="tabby <lora:x:1>"), timeout=120)
    assert job.state == JobState.FAILED and "LoRA" in str(job.error)


def test_dit_through_the_api(family_easel, tiny_dit_dir):
    easel = family_easel(tiny_dit=tiny_dit_dir)
    with api_client(easel) as client:
        models = client.get("/sdapi/v1/sd-models").json()
        assert any(m["model_name"] == "tiny-dit" for m in models)
        body = {"prompt": "giant panda", "steps": 2, "seed": 5,
                "override_settings": {"sd_model_checkpoint": "tiny-dit"}}
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        info = response.json()["info"]
        assert '"sampler_name": "Default"' in info and "Class: giant panda (388)" in info
        response = client.post("/sdapi/v1/txt2img", json={**body, "negative_prompt": "ugly"})
        assert response.status_code == 422 and "negative_prompt" in response.text
        response = client.post("/sdapi/v1/txt2img", json={**body, "prompt": "a panda in a tree"})
        assert response.status_code == 422 and "close names: " in response.text and "panda" in response.text
        response = client.post("/sdapi/v1/txt2img", json={**body, "enable_hr": True})
        assert response.status_code == 422 and "enable_hr" in response.text
