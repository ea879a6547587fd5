"""IP-Adapter plus, plus-face and full-face on SD 1.x and SDXL: tiny random adapters in the original key layout
(a perceiver resampler, or the full-face MLP, over the encoder's hidden states) beside the tiny checkpoints, each
changing the image, giving back the plain image at weight 0 and honouring its guidance window; Face ID adapters
refused with a message naming what they need."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.controlnet.conftest import TINY, generate, pixels
from tests.controlnet.test_ipadapter import reference
from webui.infotext import parse_infotext
from webui.requests import RequestError, Txt2ImgRequest

KINDS = ("plus", "plus-face", "full-face")


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    from tests.tiny_models import make_tiny_sdxl

    return make_tiny_sdxl(tmp_path_factory.mktemp("xl") / "tiny-sdxl")


@pytest.fixture
def variant_easel(make_easel, tmp_path, tiny_sd1_dir, sdxl_dir):
    """An Easel with tiny-sd1 and tiny-sdxl, `ip-adapter-{kind}_sd15` / `_sdxl` for each kind and a Face ID file
    for each, and one tiny CLIP image encoder (ViT-H named) whose hidden states the adapters take."""
    from tests.tiny_adapters import make_tiny_clip_vision, make_tiny_ip_variant

    models = tmp_path / "data" / "models"
    shutil.copytree(sdxl_dir, models / "diffusers" / "tiny-sdxl")
    for seed, kind in enumerate((*KINDS, "faceid")):
        make_tiny_ip_variant(models / "ipadapter" / f"ip-adapter-{kind}_sd15.safetensors", tiny_sd1_dir / "unet",
                             kind, hidden_width=32, seed=seed)
        make_tiny_ip_variant(models / "ipadapter" / f"ip-adapter-{kind}_sdxl.safetensors", sdxl_dir / "unet",
                             kind, hidden_width=32, seed=seed + 10)
    make_tiny_clip_vision(models / "clip_vision" / "clip-vit-h", seed=6, width=32, projection=16)
    return make_easel()


def unit(model: str, **changes):
    return {"image": reference(), "module": "ip-adapter_clip_sd15", "model": model, **changes}


def failed(easel, request, units) -> RequestError:
    job = easel.engine.generate(request.replace(extension_args=easel.registry.parse_request_args(
        {"controlnet": units})), timeout=120)
    assert isinstance(job.exception, RequestError), job.error
    return job.exception


@pytest.mark.parametrize("checkpoint,suffix,module", [("tiny-sd1", "sd15", "ip-adapter_clip_sd15"),
                                                      ("tiny-sdxl", "sdxl", "ip-adapter_clip_sdxl_plus_vith")])
def test_plus_and_face_variants(variant_easel, checkpoint, suffix, module):
    request = Txt2ImgRequest(prompt="a house", seed=4, checkpoint=checkpoint, **TINY)
    plain = pixels(generate(variant_easel, request).images[0])
    results = {}
    for kind in KINDS:
        model = f"ip-adapter-{kind}_{suffix}"
        prompted = generate(variant_easel, request, [unit(model, module=module)])
        results[kind] = pixels(prompted.images[0])
        assert np.abs(results[kind] - plain).mean() > 0.5, kind
        assert parse_infotext(prompted.infotexts[0])["ControlNet 0"].startswith(f"Module: {module}, Model: {model} [")
        zero = pixels(generate(variant_easel, request, [unit(model, module=module, weight=0)]).images[0])
        assert np.array_equal(zero, plain), kind
        late = pixels(generate(variant_easel, request, [unit(model, module=module, guidance_start=0.5)]).images[0])
        assert not np.array_equal(late, plain) and not np.array_equal(late, results[kind]), kind
        early = pixels(generate(variant_easel, request, [unit(model, module=module, guidance_end=0.5)]).images[0])
        assert not np.array_equal(early, late) and not np.array_equal(early, results[kind]), kind
    assert not np.array_equal(results["plus"], results["full-face"])
    assert np.array_equal(pixels(generate(variant_easel, request).images[0]), plain)  # the UNet is restored


@pytest.mark.parametrize("checkpoint,suffix", [("tiny-sd1", "sd15"), ("tiny-sdxl", "sdxl")])
def test_face_id_adapters_are_refused_naming_what_they_need(variant_easel, checkpoint, suffix):
    request = Txt2ImgRequest(prompt="a house", seed=4, checkpoint=checkpoint, **TINY)
    error = failed(variant_easel, request, [unit(f"ip-adapter-faceid_{suffix}")])
    assert error.field == "alwayson_scripts.controlnet.args[0].model"
    assert f"ip-adapter-faceid_{suffix}.safetensors is a Face ID IP-Adapter" in error.message
    assert "insightface" in error.message and "plus-face" in error.message
    module = failed(variant_easel, request, [unit(f"ip-adapter-plus-face_{suffix}",
                                                  module="InsightFace+CLIP-H (IPAdapter)")])
    assert module.field == "alwayson_scripts.controlnet.args[0].module"
    assert module.message.startswith("ip-adapter_face_id_plus: Face ID IP-Adapters take a face embedding")
