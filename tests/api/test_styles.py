"""Prompt styles through /sdapi/v1: the prompt-styles list, `styles` applied to txt2img and img2img, an unknown
style answered 422 naming the field, and the infotext's `Styles array` read back by /png-info."""
from __future__ import annotations

import base64
import io

import numpy as np
from PIL import PngImagePlugin

from tests.api.conftest import TINY, b64_png, gradient, info_of, open_b64
from webui.infotext import parse_infotext

STYLES = ('name,prompt,negative_prompt\n'
          'ink,"ink wash painting of {prompt}, monochrome",blurry\n'
          'grain,film grain,\n')


def add_styles(easel) -> None:
    (easel.settings.data_dir / "styles.csv").write_text(STYLES, encoding="utf-8")
    (easel.settings.data_dir / "styles-extra.csv").write_text("name,prompt,negative_prompt\nneon,neon glow,dull\n"
                                                              "ink,shadowed,\n", encoding="utf-8")


def test_prompt_styles_lists_every_file_with_styles_csv_first(client, easel) -> None:
    assert client.get("/sdapi/v1/prompt-styles").json() == []
    add_styles(easel)
    response = client.get("/sdapi/v1/prompt-styles")
    assert response.status_code == 200
    assert response.json() == [
        {"name": "ink", "prompt": "ink wash painting of {prompt}, monochrome", "negative_prompt": "blurry"},
        {"name": "grain", "prompt": "film grain", "negative_prompt": ""},
        {"name": "neon", "prompt": "neon glow", "negative_prompt": "dull"},
    ]


def test_styles_are_applied_and_recorded(client, easel) -> None:
    add_styles(easel)
    body = {"prompt": "a red cube", "negative_prompt": "dark", "seed": 11, "sampler_name": "Euler", **TINY}
    styled = client.post("/sdapi/v1/txt2img", json={**body, "styles": ["ink", "grain"]})
    assert styled.status_code == 200, styled.text
    typed = client.post("/sdapi/v1/txt2img", json={**body, "prompt": "ink wash painting of a red cube, monochrome, "
                                                                     "film grain", "negative_prompt": "dark, blurry"})
    plain = client.post("/sdapi/v1/txt2img", json=body)
    assert styled.json()["images"][0] != plain.json()["images"][0]
    info = info_of(styled.json())
    assert info["styles"] == ["ink", "grain"] and info["prompt"] == "a red cube"
    assert info["all_prompts"] == ["ink wash painting of a red cube, monochrome, film grain"]
    assert info["all_negative_prompts"] == ["dark, blurry"]
    params = parse_infotext(info["infotexts"][0])
    assert params["Prompt"] == "a red cube" and params["Styles array"] == '["ink", "grain"]'
    # the image is the one the typed-out prompt gives (same seed); only the infotexts differ
    typed_info = info_of(typed.json())
    assert typed_info["styles"] == [] and "Styles array" not in typed_info["infotexts"][0]
    assert np.array_equal(np.asarray(open_b64(styled.json()["images"][0]).convert("RGB")),
                          np.asarray(open_b64(typed.json()["images"][0]).convert("RGB")))


def test_img2img_applies_styles_too(client, easel) -> None:
    add_styles(easel)
    body = {"init_images": [b64_png(gradient())], "prompt": "a cube", "seed": 3, "denoising_strength": 0.6, **TINY}
    response = client.post("/sdapi/v1/img2img", json={**body, "styles": ["neon"]})
    assert response.status_code == 200, response.text
    info = info_of(response.json())
    assert info["all_prompts"] == ["a cube, neon glow"] and info["all_negative_prompts"] == ["dull"]


def test_an_unknown_style_is_a_422_naming_styles_and_listing_the_known_ones(client, easel) -> None:
    add_styles(easel)
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "styles": ["ink", "nope"], **TINY})
    assert response.status_code == 422
    data = response.json()
    assert data["field"] == "styles"
    assert data["detail"] == "styles: unknown style 'nope'; the styles are: 'ink', 'grain', 'neon'"
    wrong_type = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "styles": "ink", **TINY})
    assert wrong_type.status_code == 422 and wrong_type.json()["field"] == "styles"


def test_png_info_gives_the_styles_back_as_a_list(client, easel) -> None:
    add_styles(easel)
    made = client.post("/sdapi/v1/txt2img", json={"prompt": "a cube", "styles": ["grain", "ink"], "seed": 2, **TINY})
    image = made.json()["images"][0]
    data = client.post("/sdapi/v1/png-info", json={"image": image}).json()
    assert data["parameters"]["Styles array"] == ["grain", "ink"]
    assert data["parameters"]["Prompt"] == "a cube"
    # what a client sends back gives the same image
    params = data["parameters"]
    again = client.post("/sdapi/v1/txt2img", json={"prompt": params["Prompt"], "styles": params["Styles array"],
                                                   "seed": int(params["Seed"]), **TINY})
    assert again.json()["images"][0] == image

    # an AUTOMATIC1111 image holds the prompts with the styles' texts in them: the known styles are taken out
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", "ink wash painting of a cube, monochrome\nNegative prompt: blurry\n"
                                "Steps: 20, Sampler: Euler, Seed: 5, Size: 64x64, Version: v1.10.1")
    buffer = io.BytesIO()
    gradient().save(buffer, format="PNG", pnginfo=meta)
    a1111 = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(buffer.getvalue()).decode()}).json()
    assert a1111["parameters"]["Styles array"] == ["ink"]
    assert (a1111["parameters"]["Prompt"], a1111["parameters"]["Negative prompt"]) == ("a cube", "")
