"""PixArt-α/Σ, Sana and aMUSEd end to end on tiny models: identified and listed with their defaults, generated
through the engine (resolution bins recorded, seeds reproducible, aMUSEd img2img and inpaint keeping pixels outside
the mask) and the API, with hot swaps between them; what they cannot do is refused on its field."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from tests.conftest import api_client
from tests.families.conftest import failed, run
from webui.infotext import parse_infotext
from webui.requests import Img2ImgRequest, InpaintRequest, Txt2ImgRequest


def pixels(image):
    return np.asarray(image.convert("RGB")).astype(int)


def test_pixart_and_sana_are_identified_with_their_defaults(family_easel, tiny_pixart_dir, tiny_pixart_sigma_dir,
                                                            tiny_sana_dir):
    easel = family_easel(tiny_pixart=tiny_pixart_dir, tiny_pixart_sigma=tiny_pixart_sigma_dir,
                         tiny_sana=tiny_sana_dir)
    pixart, sigma, sana = (easel.manager.find_checkpoint(n) for n in ("tiny-pixart", "tiny-pixart-sigma",
                                                                        "tiny-sana"))
    assert (pixart.arch.value, pixart.variant, sigma.variant, sana.arch.value) == ("pixart", "alpha", "sigma", "sana")
    assert all(e.supported for e in (pixart, sigma, sana))
    assert easel.sampler_choices("tiny-sana") == ["Default"]
    own = easel.model_defaults("tiny-pixart")
    assert (own.width, own.steps, own.sampler) == (1024, 20, "Default")


def test_pixart_draws_at_its_resolution_bin_and_sana_as_asked(family_easel, tiny_pixart_dir, tiny_sana_dir):
    easel = family_easel(tiny_pixart=tiny_pixart_dir, tiny_sana=tiny_sana_dir)
    request = Txt2ImgRequest(prompt="a red circle", negative_prompt="blue", checkpoint="tiny-pixart", steps=2,
                             width=64, height=64, seed=4, sampler="Default", cfg_scale=4.5)
    first = run(easel, request)
    params = parse_infotext(first.infotexts[0])
    assert first.images[0].size == (64, 64)
    assert params["Resolution bin"] == "256x256"  # the 256-pixel table's square bin, resized to the asked size
    assert params["Negative prompt"] == "blue" and params["Sampler"] == "Default" and params["Model"] == "tiny-pixart"
    assert np.array_equal(pixels(run(easel, request).images[0]), pixels(first.images[0]))
    other = run(easel, request.replace(prompt="a green square"))
    assert not np.array_equal(pixels(other.images[0]), pixels(first.images[0]))  # the T5 prompt matters
    sana = run(easel, request.replace(checkpoint="tiny-sana", width=64, height=96, batch_size=2))
    assert [img.size for img in sana.images] == [(64, 96), (64, 96)]
    assert "Resolution bin" not in parse_infotext(sana.infotexts[0])  # a transformer size without a bin table
    assert easel.manager.current().name == "tiny-sana"  # hot-swapped
    back = run(easel, request)
    assert np.array_equal(pixels(back.images[0]), pixels(first.images[0]))


def test_text_families_refuse_what_they_cannot_do(family_easel, tiny_pixart_dir, tiny_sana_dir):
    easel = family_easel(tiny_pixart=tiny_pixart_dir, tiny_sana=tiny_sana_dir)
    base = Txt2ImgRequest(prompt="x", checkpoint="tiny-sana", steps=2, width=64, height=64, sampler="Default")
    assert failed(easel, base.replace(enable_hr=True)).field == "enable_hr"
    assert failed(easel, base.replace(subseed_strength=0.5)).field == "subseed_strength"
    assert failed(easel, base.replace(prompt="x <lora:style:1>")).field == "prompt"
    assert failed(easel, base.replace(sampler="Euler a")).field == "sampler_name"
    image = Image.new("RGB", (64, 64), "gray")
    error = failed(easel, Img2ImgRequest(prompt="x", checkpoint="tiny-pixart", steps=2, width=64, height=64,
                                         sampler="Default", init_image=image))
    assert error.field == "checkpoint" and "txt2img" in error.message


def test_amused_txt2img_img2img_and_inpaint(family_easel, tiny_amused_dir):
    easel = family_easel(tiny_amused=tiny_amused_dir)
    assert easel.model_defaults("tiny-amused").steps == 12
    request = Txt2ImgRequest(prompt="a red circle", checkpoint="tiny-amused", steps=2, width=64, height=64, seed=9,
                             sampler="Default", batch_size=2)
    first = run(easel, request)
    assert [img.size for img in first.images] == [(64, 64), (64, 64)] and first.seeds == [9, 10]
    single = run(easel, request.replace(seed=10, batch_size=1))
    assert np.array_equal(pixels(single.images[0]), pixels(first.images[1]))  # each image its own seed
    source = Image.new("RGB", (64, 64), "navy")
    ImageDraw.Draw(source).ellipse((16, 16, 48, 48), fill="yellow")
    varied = run(easel, Img2ImgRequest(prompt="a red circle", checkpoint="tiny-amused", steps=2, width=64,
                                       height=64, seed=1, sampler="Default", init_image=source,
                                       denoising_strength=0.5))
    assert varied.images[0].size == (64, 64)
    assert parse_infotext(varied.infotexts[0])["Denoising strength"] == "0.5"
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)
    painted = run(easel, InpaintRequest(prompt="a red circle", checkpoint="tiny-amused", steps=2, width=64, height=64,
                                        seed=1, sampler="Default", init_image=source, mask=mask, mask_blur=0))
    out = pixels(painted.images[0])
    assert np.array_equal(out[:, 32:], pixels(source)[:, 32:])  # nothing outside the mask changes
    assert not np.array_equal(out[:, :32], pixels(source)[:, :32])


def test_text_families_through_the_api(family_easel, tiny_pixart_dir, tiny_amused_dir):
    easel = family_easel(tiny_pixart=tiny_pixart_dir, tiny_amused=tiny_amused_dir)
    with api_client(easel) as client:
        names = {m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()}
        assert {"tiny-pixart", "tiny-amused"} <= names
        body = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 3,
                "override_settings": {"sd_model_checkpoint": "tiny-amused"}}
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        assert '"sampler_name": "Default"' in response.json()["info"]
        body["override_settings"] = {"sd_model_checkpoint": "tiny-pixart"}
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        assert "Resolution bin: 256x256" in response.json()["info"]
        response = client.post("/sdapi/v1/txt2img", json={**body, "sampler_name": "DPM++ 2M"})
        assert response.status_code == 422 and "sampler_name" in response.text and "Default" in response.text
