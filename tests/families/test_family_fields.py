"""Fields the families' runners do not read are refused on the field, never ignored (CLIP skip everywhere, the
denoising strength for Stable unCLIP's variations, which is then not written to the infotext either), while a
default request still runs; and Skip ends only the current batch of a family's job, the next batch still runs."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.api.conftest import b64_png
from tests.conftest import api_client
from webui.engine.worker import JobState
from webui.infotext import parse_infotext
from webui.requests import Img2ImgRequest, RequestError, Txt2ImgRequest


def failed(easel, request):
    try:
        job = easel.engine.generate(request, timeout=300)
    except RequestError as exc:
        return exc
    assert job.state == JobState.FAILED, job.state
    return job.exception


def test_clip_skip_is_refused_for_the_families_and_the_setting_does_not_break_a_default_request(family_easel,
                                                                                                tiny_dit_dir):
    easel = family_easel(tiny_dit=tiny_dit_dir)
    request = Txt2ImgRequest(prompt="giant panda", checkpoint="tiny-dit", steps=2, seed=1, sampler="Default")
    error = failed(easel, request.replace(clip_skip=2))
    assert error.field == "clip_skip" and "set it to 1" in error.message
    with api_client(easel) as client:
        body = {"prompt": "giant panda", "steps": 2, "seed": 1,
                "override_settings": {"sd_model_checkpoint": "tiny-dit"}}
        response = client.post("/sdapi/v1/txt2img", json={**body, "clip_skip": 2})
        assert response.status_code == 422 and "clip_skip" in response.text
        response = client.post("/sdapi/v1/txt2img", json={**body, "clip_skip": 1})
        assert response.status_code == 200, response.text
        # the CLIP skip setting (2) is for the models that have one: a DiT request that leaves it out still runs
        assert client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}).status_code == 200
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        assert "Clip skip" not in response.json()["info"]


def test_stable_unclip_refuses_a_denoising_strength_and_does_not_record_one(family_easel, tiny_stable_unclip_dir):
    easel = family_easel(tiny_stable_unclip=tiny_stable_unclip_dir)
    image = Image.new("RGB", (64, 64), "navy")
    request = Img2ImgRequest(prompt="", checkpoint="tiny-stable-unclip", steps=2, width=64, height=64, seed=2,
                             sampler="Default", init_image=image)
    error = failed(easel, request.replace(denoising_strength=0.3))
    assert error.field == "denoising_strength" and "noise level" in error.message
    job = easel.engine.generate(request, timeout=300)
    assert job.state == JobState.DONE, job.error
    params = parse_infotext(job.result.infotexts[0])
    assert "Denoising strength" not in params and params["Image variations"] == "noise level 0"
    with api_client(easel) as client:
        body = {"init_images": [b64_png(image)], "prompt": "", "steps": 2, "width": 64, "height": 64,
                "override_settings": {"sd_model_checkpoint": "tiny-stable-unclip"}}
        response = client.post("/sdapi/v1/img2img", json={**body, "denoising_strength": 0.4})
        assert response.status_code == 422 and "denoising_strength" in response.text
        response = client.post("/sdapi/v1/img2img", json=body)
        assert response.status_code == 200, response.text
        assert "Denoising strength" not in response.json()["info"]


SKIPPED = {  # family fixture, folder name, request
    "pixart": ("tiny_pixart_dir", Txt2ImgRequest(prompt="a red circle", checkpoint="tiny-pixart", steps=2, width=64,
                                                 height=64, seed=4, sampler="Default")),
    "amused": ("tiny_amused_dir", Txt2ImgRequest(prompt="a red circle", checkpoint="tiny-amused", steps=2, width=64,
                                                 height=64, seed=4, sampler="Default")),
    "stable_unclip": ("tiny_stable_unclip_dir", Img2ImgRequest(prompt="", checkpoint="tiny-stable-unclip", steps=2,
                                                               width=64, height=64, seed=4, sampler="Default",
                                                               init_image=Image.new("RGB", (64, 64), "navy"))),
    "if": ("tiny_if_dir", Txt2ImgRequest(prompt="a red circle", checkpoint="tiny-if/stage_I", steps=2, width=128,
                                         height=128, seed=4, sampler="Default")),
}


@pytest.mark.parametrize("family", list(SKIPPED))
def test_skip_ends_the_first_batch_and_the_job_goes_on(family_easel, request, family):
    fixture, base = SKIPPED[family]
    folder = request.getfixturevalue(fixture)
    easel = family_easel(**{fixture.removesuffix("_dir"): folder})
    calls: list[int] = []

    def skip_the_first_batch(call, run):
        calls.append(1)
        if len(calls) == 1:
            easel.engine.worker.skip()  # seen by the step callback at the first step of the first batch
        return run(call)

    easel.registry.pipeline_wrappers.append(skip_the_first_batch)
    job = easel.engine.generate(base.replace(batch_count=2), timeout=300)
    easel.registry.pipeline_wrappers.clear()
    assert job.state == JobState.DONE, (job.state, job.error)
    assert len(calls) == 2  # the second batch ran
    assert [parse_infotext(t)["Seed"] for t in job.result.infotexts] == ["5"]  # the skipped image has none
    second = easel.engine.generate(base.replace(seed=5), timeout=300)
    assert second.state == JobState.DONE, second.error
    assert np.array_equal(np.asarray(job.result.images[0]), np.asarray(second.result.images[0]))


def write_sana_lora(folder, path) -> None:
    """A rank-4 LoRA on the tiny Sana transformer's attention, non-zero, saved as diffusers saves Sana LoRAs."""
    import torch
    from diffusers import SanaPipeline, SanaTransformer2DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer = SanaTransformer2DModel.from_pretrained(folder / "transformer")
    torch.manual_seed(3)
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                       init_lora_weights=False))
    layers = {k: v * 5 for k, v in get_peft_model_state_dict(transformer).items()}
    SanaPipeline.save_lora_weights(path.parent, transformer_lora_layers=layers, weight_name=path.name)


def test_sana_applies_loras_and_pixart_refuses_them(family_easel, tiny_sana_dir, tiny_pixart_dir, tmp_path):
    easel = family_easel(tiny_sana=tiny_sana_dir, tiny_pixart=tiny_pixart_dir)
    lora_dir = tmp_path / "data" / "models" / "Lora"
    lora_dir.mkdir(parents=True, exist_ok=True)
    write_sana_lora(tiny_sana_dir, lora_dir / "tiny-sana-style.safetensors")
    base = Txt2ImgRequest(prompt="a red circle", checkpoint="tiny-sana", steps=2, width=64, height=64, seed=3,
                          sampler="Default")

    def image(request):
        job = easel.engine.generate(request, timeout=300)
        assert job.state == JobState.DONE, job.error
        return np.asarray(job.result.images[0]), parse_infotext(job.result.infotexts[0])

    plain, plain_params = image(base)
    styled, params = image(base.replace(prompt="a red circle <lora:tiny-sana-style:1>"))
    assert not np.array_equal(styled, plain) and "tiny-sana-style" in params["Lora hashes"]
    zero, _ = image(base.replace(prompt="a red circle <lora:tiny-sana-style:0>"))
    assert np.array_equal(zero, plain)  # weight 0: the base model's image, bit for bit
    again, again_params = image(base)
    assert np.array_equal(again, plain) and "Lora hashes" not in again_params  # dropped when no longer asked for
    error = failed(easel, base.replace(checkpoint="tiny-pixart", prompt="a red circle <lora:tiny-sana-style:1>"))
    assert error.field == "prompt" and "no LoRA loader" in error.message


def test_a_vae_is_refused_for_models_without_one_and_the_vae_setting_skips_them(family_easel, tiny_amused_dir,
                                                                               tiny_sd1_dir):
    from tests.tiny_models import save_vae_single_file

    easel = family_easel(tiny_amused=tiny_amused_dir)
    save_vae_single_file(tiny_sd1_dir, easel.settings.models_dir / "VAE" / "tiny-vae.safetensors")
    request = Txt2ImgRequest(prompt="a red circle", checkpoint="tiny-amused", steps=2, width=64, height=64, seed=1,
                             sampler="Default")
    with api_client(easel) as client:
        client.post("/sdapi/v1/refresh-checkpoints")
        error = failed(easel, request.replace(vae="tiny-vae"))  # aMUSEd's VQ-GAN: nothing for it to replace
        assert error.field == "vae" and "Automatic" in error.message
        assert "vae" in easel.hidden_fields("tiny-amused")  # the UI does not send its VAE pick
        body = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64,
                "override_settings": {"sd_model_checkpoint": "tiny-amused"}}
        assert client.post("/sdapi/v1/options", json={"sd_vae": "tiny-vae"}).status_code == 200
        response = client.post("/sdapi/v1/txt2img", json=body)  # the VAE setting is for models that take one
        assert response.status_code == 200, response.text
        body["override_settings"]["sd_vae"] = "tiny-vae"
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 422 and "vae" in response.text
