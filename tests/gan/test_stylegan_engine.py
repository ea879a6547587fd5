"""StyleGAN generators in models/GAN on a real Easel: listed in the checkpoint dropdown and by /sdapi/v1/sd-models
(a pickle that would run code listed as unusable, never unpickled); generated through the engine and the API with the
same image for the same seed; truncation ψ and the class recorded in the infotext, steps/CFG/sampler left out of it;
fields a GAN does not use refused on the field (and the GAN fields refused for other models); hot-swapped with
another generator; and the seed walk through the engine and `POST /easel/v1/seed-walk`."""
from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from tests import tiny_gan
from tests.conftest import api_client
from tests.families.conftest import failed, run
from webui.infotext import parse_infotext
from webui.requests import Txt2ImgRequest


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def decoded(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def gan_request(**changes) -> Txt2ImgRequest:
    return Txt2ImgRequest(prompt="", checkpoint="sg2-64", seed=5, width=64, height=64, sampler="Default",
                          truncation_psi=0.7).replace(**changes)


def test_listed_generated_through_engine_and_api_and_refusing_what_a_gan_does_not_use(gan_easel, tmp_path):
    marker = tmp_path / "ran"
    evil = tiny_gan.save_malicious_pickle(tmp_path / "evil.pkl", marker, tiny_gan.tiny_state("stylegan2"))
    easel = gan_easel("sg2-64", "sg2-64-pkl", install_sd1=True, extra={"evil.pkl": evil})
    assert {"sg2-64", "sg2-64-pkl"} <= set(easel.checkpoint_choices()) and "evil" not in easel.checkpoint_choices()
    listed = {e.name: e for e in easel.manager.checkpoints()}
    assert not listed["evil"].supported and "refused" in listed["evil"].reason and not marker.exists()
    assert easel.model_defaults("sg2-64").width == 64  # its own size

    result = run(easel, gan_request())
    image = result.images[0]
    assert image.size == (64, 64)
    params = parse_infotext(result.infotexts[0])
    assert params["Seed"] == "5" and params["Truncation psi"] == "0.7" and params["Model"] == "sg2-64"
    assert params["Generator"] == "StyleGAN2" and not {"Steps", "Sampler", "CFG scale"} & set(params)
    from_pickle = run(easel, gan_request(checkpoint="sg2-64-pkl")).images[0]  # hot swap, the same tensors
    assert np.array_equal(pixels(image), pixels(from_pickle))
    assert easel.manager.current().name == "sg2-64-pkl"

    for field, changes in (("steps", {"steps": 30}), ("cfg_scale", {"cfg_scale": 3.0}),
                           ("negative_prompt", {"negative_prompt": "blurry"}), ("class_label", {"class_label": 1}),
                           ("prompt", {"prompt": "a face"}), ("enable_hr", {"enable_hr": True}),
                           ("sampler_name", {"sampler": "Euler a"})):
        error = failed(easel, gan_request(**changes))
        assert error.field == field, (field, error)
    sd = Txt2ImgRequest(prompt="a cat", checkpoint="tiny-sd1", steps=2, width=64, height=64)
    assert failed(easel, sd.replace(truncation_psi=0.5)).field == "truncation_psi"

    with api_client(easel) as client:
        names = [m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()]
        assert "sg2-64" in names and "evil" not in names
        body = {"prompt": "", "seed": 5, "truncation_psi": 0.7, "width": 64, "height": 64,
                "override_settings": {"sd_model_checkpoint": "sg2-64"}}
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        assert np.array_equal(pixels(decoded(response.json()["images"][0])), pixels(image))
        assert "Truncation psi" in response.json()["info"]
        for key, value in (("steps", 30), ("cfg_scale", 3), ("negative_prompt", "x"), ("sampler_name", "Euler")):
            response = client.post("/sdapi/v1/txt2img", json={**body, key: value})
            assert response.status_code == 422 and key in response.text, (key, response.text)
        response = client.post("/sdapi/v1/txt2img", json={**body, "steps": 20})  # the default passes
        assert response.status_code == 200, response.text


def test_conditional_classes_psi_zero_and_swapping_generations(gan_easel):
    easel = gan_easel("sg2-cond", "sg3-r-cond")
    request = Txt2ImgRequest(prompt="3", checkpoint="sg2-cond", seed=9, width=64, height=64, sampler="Default")
    by_prompt = run(easel, request)
    assert parse_infotext(by_prompt.infotexts[0])["Class"] == "3"
    by_field = run(easel, request.replace(prompt="", class_label=3)).images[0]
    assert np.array_equal(pixels(by_prompt.images[0]), pixels(by_field))
    other = run(easel, request.replace(prompt="class 1")).images[0]
    assert np.abs(pixels(other) - pixels(by_field)).max() > 0
    assert failed(easel, request.replace(prompt="")).field == "prompt"  # a conditional generator needs a class
    assert failed(easel, request.replace(prompt="", class_label=7)).field == "class_label"  # it has 5
    average = run(easel, request.replace(truncation_psi=0.0, batch_size=2)).images
    assert np.array_equal(pixels(average[0]), pixels(average[1]))  # ψ = 0: the class's average image
    sg3 = run(easel, request.replace(checkpoint="sg3-r-cond", prompt="2", width=64, height=64))
    assert sg3.images[0].size == (64, 64)  # drawn at 32 and resized to the asked size
    params = parse_infotext(sg3.infotexts[0])
    assert params["Generator"] == "StyleGAN3" and params["Rendered size"] == "32x32"


def test_seed_walk_through_the_engine_and_the_api(gan_easel):
    easel = gan_easel("sg2-cond")
    job = easel.seed_walk("sg2-cond", [4, 6], 3, truncation_psi=0.9, class_label=2)
    job.wait(300)
    assert job.result is not None, job.error
    frames = job.result.info["frames"]
    assert len(frames) == 4
    ends = run(easel, Txt2ImgRequest(prompt="", class_label=2, checkpoint="sg2-cond", seed=4, batch_count=3,
                                     width=64, height=64, sampler="Default", truncation_psi=0.9)).images
    ends = [image.resize((32, 32)) for image in ends]  # drawn at 32 px, resized to the asked 64 and back
    walked = [frames[0].resize((64, 64), Image.LANCZOS).resize((32, 32)), frames[-1].resize((64, 64), Image.LANCZOS)
              .resize((32, 32))]
    assert np.array_equal(pixels(walked[0]), pixels(ends[0])) and np.array_equal(pixels(walked[1]), pixels(ends[2]))
    assert job.result.paths and job.result.paths[0].suffix == ".gif"  # saved with the images

    with api_client(easel) as client:
        body = {"model": "sg2-cond", "seeds": [4, 5, 6], "frames": 2, "class_label": 2, "space": "w"}
        response = client.post("/easel/v1/seed-walk", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        gif = decoded(answer["gif"])
        assert gif.format == "GIF" and gif.n_frames == answer["frames"] == 5
        assert answer["info"]["paths"] == []  # the API saves only when asked
        for key, value, status in (("seeds", [4], 422), ("frames", 0, 422), ("space", "x", 422),
                                   ("steps", 3, 422), ("class_label", 9, 422)):
            response = client.post("/easel/v1/seed-walk", json={**body, key: value})
            assert response.status_code == status and key in response.text, (key, response.text)
