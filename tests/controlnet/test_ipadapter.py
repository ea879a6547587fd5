"""IP-Adapter units: a tiny random IP-Adapter for the tiny SD 1.x UNet and a tiny CLIP image encoder, installed in
`models/ipadapter/` and `models/clip_vision/`, run through the ControlNet extension's units in txt2img, img2img
and inpaint, and through the API as sd-webui-controlnet clients send them."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from tests.conftest import api_client
from tests.controlnet.conftest import TINY, generate, pixels, shapes
from tests.controlnet.test_api import b64, decoded
from webui.infotext import parse_infotext
from webui.requests import Img2ImgRequest, InpaintRequest, Txt2ImgRequest


def reference(colour: tuple[int, int, int] = (220, 40, 40)) -> Image.Image:
    image = shapes()
    image.paste(colour, (0, 0, 24, 24))
    return image


@pytest.fixture(scope="session")
def tiny_ip_files(tiny_sd1_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.tiny_adapters import make_tiny_clip_vision, make_tiny_ip_adapter

    root = tmp_path_factory.mktemp("ip")
    adapter = make_tiny_ip_adapter(root / "tiny-ip.safetensors", tiny_sd1_dir / "unet", embed_dim=32, seed=5)
    encoder = make_tiny_clip_vision(root / "tiny-vit-h", seed=6)
    return adapter, encoder


@pytest.fixture
def ip_easel(make_easel: Callable, tmp_path: Path, tiny_ip_files: tuple[Path, Path]):
    import shutil

    adapter, encoder = tiny_ip_files
    models = tmp_path / "data" / "models"
    (models / "ipadapter").mkdir(parents=True)
    shutil.copy(adapter, models / "ipadapter" / adapter.name)
    shutil.copytree(encoder, models / "clip_vision" / encoder.name)
    easel = make_easel()
    assert {item.name: item for item in easel.extensions}["controlnet"].loaded
    return easel


def unit(**changes):
    return {"image": reference(), "module": "ip-adapter_clip_sd15", "model": "tiny-ip", **changes}


def test_ip_adapter_changes_txt2img_and_weight_zero_restores_it_exactly(ip_easel):
    request = Txt2ImgRequest(prompt="a house", seed=4, checkpoint="tiny-sd1", **TINY)
    plain = pixels(generate(ip_easel, request).images[0])
    prompted = generate(ip_easel, request, [unit()])
    assert np.abs(pixels(prompted.images[0]) - plain).mean() > 1.0
    other = pixels(generate(ip_easel, request, [unit(image=reference((30, 200, 60)))]).images[0])
    assert np.abs(other - pixels(prompted.images[0])).mean() > 0.5  # the reference image matters
    assert np.array_equal(pixels(generate(ip_easel, request, [unit(weight=0)]).images[0]), plain)
    assert np.array_equal(pixels(generate(ip_easel, request).images[0]), plain)  # the UNet got its processors back
    late = pixels(generate(ip_easel, request, [unit(guidance_start=0.5)]).images[0])
    assert not np.array_equal(late, plain) and not np.array_equal(late, pixels(prompted.images[0]))
    info = parse_infotext(prompted.infotexts[0])
    assert info["ControlNet 0"].startswith("Module: ip-adapter_clip_sd15, Model: tiny-ip [")
    held = {entry.kind: entry.name for entry in ip_easel.manager.memory.entries()}  # under the memory policy
    assert held.get("ipadapter") == "tiny-ip" and held.get("clip_vision") == "tiny-vit-h"
    two = pixels(generate(ip_easel, request, [unit(), unit(image=reference((30, 200, 60)), weight=0.5)]).images[0])
    assert not np.array_equal(two, pixels(prompted.images[0]))


def test_ip_adapter_in_img2img_and_inpaint(ip_easel):
    source = shapes()
    img2img = Img2ImgRequest(prompt="a house", seed=4, checkpoint="tiny-sd1", init_image=source,
                             denoising_strength=0.8, **TINY)
    plain = pixels(generate(ip_easel, img2img).images[0])
    assert np.abs(pixels(generate(ip_easel, img2img, [unit()]).images[0]) - plain).mean() > 1.0
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpaint = InpaintRequest(prompt="a house", seed=4, checkpoint="tiny-sd1", init_image=source, mask=mask,
                             mask_blur=0, denoising_strength=1.0, **TINY)
    plain = pixels(generate(ip_easel, inpaint).images[0])
    prompted = pixels(generate(ip_easel, inpaint, [unit()]).images[0])
    inside = np.asarray(mask) > 0
    assert np.abs(prompted[inside] - plain[inside]).mean() > 0.5
    assert np.array_equal(prompted[~inside], pixels(source)[~inside])  # outside the mask: the input, exactly
    zero = pixels(generate(ip_easel, inpaint, [unit(weight=0)]).images[0])
    assert np.array_equal(zero, plain)


def test_ip_adapter_units_through_the_api(ip_easel, tmp_path):
    with api_client(ip_easel) as client:
        models = client.get("/controlnet/model_list").json()["model_list"]
        assert any(m.startswith("tiny-ip [") for m in models)
        assert "ip-adapter_clip_sd15" in client.get("/controlnet/module_list").json()["module_list"]
        body = {"prompt": "a house", "seed": 4, **TINY}
        plain = client.post("/sdapi/v1/txt2img", json=body)
        assert plain.status_code == 200, plain.text
        ip_unit = {"enabled": True, "image": b64(reference()), "module": "ip-adapter_clip_sd15",
                   "model": models[[m.startswith("tiny-ip") for m in models].index(True)], "weight": 1.0,
                   "guidance_start": 0.0, "guidance_end": 1.0, "low_vram": False}
        prompted = client.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {"controlnet": {"args": [ip_unit]}}})
        assert prompted.status_code == 200, prompted.text
        assert np.abs(pixels(decoded(prompted.json()["images"][0])) - pixels(decoded(plain.json()["images"][0]))
                      ).mean() > 1.0

        def error(changes: dict) -> dict:
            answer = client.post("/sdapi/v1/txt2img",
                                 json={**body, "alwayson_scripts": {"controlnet": {"args": [{**ip_unit, **changes}]}}})
            assert answer.status_code == 422, answer.text
            return answer.json()

        several = client.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {"controlnet": {"args": [
            {**ip_unit, "image": [b64(reference()), {"image": b64(reference((30, 200, 60)))}]}]}}})
        assert several.status_code == 200, several.text
        assert not np.array_equal(pixels(decoded(several.json()["images"][0])),
                                  pixels(decoded(prompted.json()["images"][0])))  # the second image counts too
        assert "args[0].image[1]" in str(error({"image": [b64(reference()), "not base64!"]}))
        assert "several images are for IP-Adapter units" in str(
            error({"image": [b64(reference())] * 2, "module": "canny", "model": "tiny-ip"}))
        missing = error({"model": "no-such-adapter"})
        assert "args[0].model" in str(missing) and "unknown IP-Adapter model 'no-such-adapter'" in str(missing)
        assert "args[0].weight" in str(error({"weight": "lots"}))
        no_image = error({"image": None})
        assert "alwayson_scripts.controlnet.args[0].image" in str(no_image)
        # a hypernetwork changes the same cross-attention layers: refused by name rather than dropped
        from tests.api.test_hypernetworks import write_hypernetwork

        write_hypernetwork(ip_easel.settings.models_dir / "hypernetworks" / "style.safetensors")
        both = client.post("/sdapi/v1/txt2img", json={
            **body, "prompt": "a house <hypernet:style:1>", "alwayson_scripts": {"controlnet": {"args": [ip_unit]}}})
        assert both.status_code == 422 and "hypernetwork" in both.text and "alwayson_scripts.controlnet" in both.text
        # an encoder that does not fit the adapter: the error names the unit's model and the width it needs
        import shutil

        shutil.rmtree(tmp_path / "data" / "models" / "clip_vision")
        unfit = error({})
        assert "alwayson_scripts.controlnet.args[0].model" in str(unfit) and "32-wide image embeddings" in str(unfit)


def test_ip_adapter_on_sdxl_and_a_mismatched_adapter(make_easel, tmp_path, tmp_path_factory, tiny_ip_files):
    import shutil

    from tests.tiny_adapters import make_tiny_clip_vision, make_tiny_ip_adapter
    from tests.tiny_models import make_tiny_sdxl

    sdxl = make_tiny_sdxl(tmp_path_factory.mktemp("xl") / "tiny-sdxl")
    models = tmp_path / "data" / "models"
    shutil.copytree(sdxl, models / "diffusers" / "tiny-sdxl")
    make_tiny_ip_adapter(models / "ipadapter" / "xl-ip.safetensors", sdxl / "unet", embed_dim=48, seed=8)
    make_tiny_clip_vision(models / "clip_vision" / "tiny-bigg", seed=9, projection=48)
    shutil.copy(tiny_ip_files[0], models / "ipadapter" / "tiny-ip.safetensors")  # made for the SD 1.x UNet
    easel = make_easel(install_sd1=False)
    request = Txt2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-sdxl", **TINY)
    plain = pixels(generate(easel, request).images[0])
    prompted = pixels(generate(easel, request, [unit(module="ip-adapter_clip_sdxl", model="xl-ip")]).images[0])
    assert np.abs(prompted - plain).mean() > 0.5
    zero = generate(easel, request, [unit(module="ip-adapter_clip_sdxl", model="xl-ip", weight=0)]).images[0]
    assert np.array_equal(pixels(zero), plain)
    wrong = request.replace(extension_args=easel.registry.parse_request_args(
        {"controlnet": {"args": [unit(module="ip-adapter_clip_sd15", model="tiny-ip")]}}))
    job = easel.engine.generate(wrong, timeout=300)
    assert job.error is not None and "alwayson_scripts.controlnet.args[0].model" in job.error
    assert "tiny-ip is an IP-Adapter for a UNet with 32-wide cross-attention" in job.error
