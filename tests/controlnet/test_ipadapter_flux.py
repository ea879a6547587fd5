"""Flux.1 IP-Adapters: a tiny random adapter in the XLabs file layout (`ip_adapter_proj_model.*`,
`double_blocks.N.processor.*`) for the tiny Flux transformer and a tiny CLIP image encoder, run through the
ControlNet extension's units in txt2img (with and without true CFG), img2img and beside a ControlNet unit."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from tests.controlnet.conftest import TINY, generate, pixels, shapes
from webui.infotext import parse_infotext
from webui.requests import Img2ImgRequest, InpaintRequest, RequestError, Txt2ImgRequest


def reference(colour: tuple[int, int, int] = (220, 40, 40)) -> Image.Image:
    image = shapes()
    image.paste(colour, (0, 0, 24, 24))
    return image


def unit(**changes):
    return {"image": reference(), "module": "ip-adapter_clip_l", "model": "flux-ip", **changes}


@pytest.fixture(scope="module")
def flux_files(tmp_path_factory):
    from tests.tiny_adapters import make_tiny_clip_vision, make_tiny_flux_ip_adapter
    from tests.tiny_models import make_tiny_flux

    root = tmp_path_factory.mktemp("flux-ip")
    flux = make_tiny_flux(root / "tiny-flux")
    adapter = make_tiny_flux_ip_adapter(root / "flux-ip.safetensors", flux / "transformer", embed_dim=24, seed=5)
    encoder = make_tiny_clip_vision(root / "clip-vit-large", seed=6, projection=24)
    return flux, adapter, encoder


@pytest.fixture
def flux_easel(make_easel, tmp_path, flux_files):
    flux, adapter, encoder = flux_files
    models = tmp_path / "data" / "models"
    shutil.copytree(flux, models / "diffusers" / "tiny-flux")
    (models / "ipadapter").mkdir(parents=True)
    shutil.copy(adapter, models / "ipadapter" / adapter.name)
    shutil.copytree(encoder, models / "clip_vision" / encoder.name)
    return make_easel(install_sd1=False)


def failed(easel, request, units) -> RequestError:
    job = easel.engine.generate(request.replace(extension_args=easel.registry.parse_request_args(
        {"controlnet": units})), timeout=120)
    assert isinstance(job.exception, RequestError), job.error
    return job.exception


def test_flux_ip_adapter_changes_the_image_and_weight_zero_restores_it(flux_easel):
    request = Txt2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-flux", **TINY)
    plain = pixels(generate(flux_easel, request).images[0])
    prompted = generate(flux_easel, request, [unit()])
    assert np.abs(pixels(prompted.images[0]) - plain).mean() > 0.5
    other = pixels(generate(flux_easel, request, [unit(image=reference((30, 200, 60)))]).images[0])
    assert not np.array_equal(other, pixels(prompted.images[0]))  # the reference image matters
    assert np.array_equal(pixels(generate(flux_easel, request, [unit(weight=0)]).images[0]), plain)
    assert np.array_equal(pixels(generate(flux_easel, request).images[0]), plain)  # the transformer is restored
    late = pixels(generate(flux_easel, request, [unit(guidance_start=0.5)]).images[0])
    assert not np.array_equal(late, plain) and not np.array_equal(late, pixels(prompted.images[0]))
    outside = pixels(generate(flux_easel, request, [unit(guidance_start=0.6, guidance_end=0.9)]).images[0])
    assert np.array_equal(outside, plain)  # a window that holds no step of 2 acts on none
    info = parse_infotext(prompted.infotexts[0])
    assert info["ControlNet 0"].startswith("Module: ip-adapter_clip_l, Model: flux-ip [")
    held = {entry.kind: entry.name for entry in flux_easel.manager.memory.entries()}
    assert held.get("ipadapter") == "flux-ip" and held.get("clip_vision") == "clip-vit-large"
    # true CFG (cfg_scale > 1): the negative side gets zero image embeddings
    guided = request.replace(cfg_scale=3.0)
    guided_plain = pixels(generate(flux_easel, guided).images[0])
    assert np.abs(pixels(generate(flux_easel, guided, [unit()]).images[0]) - guided_plain).mean() > 0.5
    two = pixels(generate(flux_easel, request, [unit(), unit(image=reference((30, 200, 60)), weight=0.5)]).images[0])
    assert not np.array_equal(two, pixels(prompted.images[0]))


def test_flux_ip_adapter_in_img2img_and_inpaint(flux_easel):
    edit = Img2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-flux", init_image=shapes(),
                          denoising_strength=0.8, **TINY)
    plain = pixels(generate(flux_easel, edit).images[0])
    assert np.abs(pixels(generate(flux_easel, edit, [unit()]).images[0]) - plain).mean() > 0.5
    assert np.array_equal(pixels(generate(flux_easel, edit, [unit(weight=0)]).images[0]), plain)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpaint = InpaintRequest(prompt="a house", seed=3, checkpoint="tiny-flux", init_image=shapes(), mask=mask,
                             mask_blur=0, denoising_strength=1.0, **TINY)
    plain = pixels(generate(flux_easel, inpaint).images[0])
    prompted = pixels(generate(flux_easel, inpaint, [unit()]).images[0])
    inside = np.asarray(mask) > 0
    assert np.abs(prompted[inside] - plain[inside]).mean() > 0.5


def test_flux_ip_adapter_refusals(flux_easel, tmp_path, tiny_sd1_dir):
    from tests.tiny_adapters import make_tiny_ip_adapter

    models = tmp_path / "data" / "models"
    make_tiny_ip_adapter(models / "ipadapter" / "sd-ip.safetensors", tiny_sd1_dir / "unet", embed_dim=24, seed=2)
    request = Txt2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-flux", **TINY)
    wrong = failed(flux_easel, request, [unit(model="sd-ip")])
    assert wrong.field == "alwayson_scripts.controlnet.args[0].model"
    assert "sd-ip is an IP-Adapter for a UNet (SD 1.x, SD 2.x or SDXL), but the checkpoint tiny-flux is Flux.1" \
        in wrong.message
    face = failed(flux_easel, request, [unit(module="ip-adapter_face_id")])
    assert face.field == "alwayson_scripts.controlnet.args[0].module" and "insightface" in face.message


def test_flux_ip_adapter_beside_a_controlnet_unit(flux_easel, tmp_path, flux_files):
    from tests.tiny_models import make_tiny_flux_controlnet

    make_tiny_flux_controlnet(tmp_path / "data" / "models" / "ControlNet" / "flux-canny", flux_files[0], seed=2)
    canny = {"image": shapes(), "module": "canny", "model": "flux-canny"}
    request = Txt2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-flux", **TINY)
    controlled = pixels(generate(flux_easel, request, [canny]).images[0])
    both = pixels(generate(flux_easel, request, [canny, unit()]).images[0])
    assert np.abs(both - controlled).mean() > 0.5  # the IP-Adapter acts inside the ControlNet pipeline
    edit = Img2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-flux", init_image=shapes(),
                          denoising_strength=0.8, **TINY)
    refused = failed(flux_easel, edit, [canny, unit()])  # diffusers' Flux ControlNet img2img takes no IP-Adapter
    assert refused.field == "alwayson_scripts.controlnet"
    assert "do not run with diffusers' FluxControlNetImg2ImgPipeline" in refused.message


def test_flux_ip_adapter_with_a_batch(flux_easel):
    request = Txt2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-flux", batch_size=2, **TINY)
    plain = generate(flux_easel, request).images
    prompted = generate(flux_easel, request, [unit()]).images
    assert len(prompted) == 2
    for before, after in zip(plain, prompted):  # the image tokens reach every image of the batch
        assert np.abs(pixels(after) - pixels(before)).mean() > 0.5
