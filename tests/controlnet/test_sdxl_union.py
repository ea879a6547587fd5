"""SDXL union ControlNets: a tiny random ControlNetUnionModel folder for the tiny SDXL, its control type chosen by
the unit's `union_control_type` (a name, an alias or its number), alone, two at once and in img2img; a missing or
unknown type, a type for a plain ControlNet and a plain ControlNet beside a union one refused naming the field."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.controlnet.conftest import TINY, shapes
from tests.controlnet.test_generation import generate, pixels, unit
from webui.infotext import parse_infotext
from webui.requests import Img2ImgRequest, RequestError, Txt2ImgRequest


@pytest.fixture
def union_easel(make_easel, tmp_path, tmp_path_factory):
    from tests.tiny_models import make_tiny_sd_controlnet, make_tiny_sdxl, make_tiny_sdxl_union_controlnet

    sdxl = make_tiny_sdxl(tmp_path_factory.mktemp("xl") / "tiny-sdxl")
    models = tmp_path / "data" / "models"
    shutil.copytree(sdxl, models / "diffusers" / "tiny-sdxl")
    make_tiny_sdxl_union_controlnet(models / "ControlNet" / "xl-union", sdxl, seed=2, num_control_type=6)
    make_tiny_sd_controlnet(models / "ControlNet" / "xl-canny", sdxl, seed=3)
    return make_easel(install_sd1=False)


def failed(easel, request, units) -> RequestError:
    job = easel.engine.generate(request.replace(extension_args=easel.registry.parse_request_args(
        {"controlnet": units})), timeout=120)
    assert isinstance(job.exception, RequestError), job.error
    return job.exception


def test_sdxl_union_controlnet_selects_its_control_type(union_easel):
    request = Txt2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-sdxl", **TINY)
    plain = pixels(generate(union_easel, request).images[0])
    result = generate(union_easel, request, [unit(model="xl-union", union_control_type="canny")])
    assert parse_infotext(result.infotexts[0])["ControlNet 0"].endswith("Union Control Type: canny")
    hard_edge = pixels(result.images[0])
    assert np.abs(hard_edge - plain).mean() > 0.5
    as_number = pixels(generate(union_easel, request, [unit(model="xl-union", union_control_type=3)]).images[0])
    depth = pixels(generate(union_easel, request, [unit(model="xl-union", union_control_type="Depth")]).images[0])
    assert np.array_equal(hard_edge, as_number) and not np.array_equal(hard_edge, depth)
    zero = pixels(generate(union_easel, request, [unit(model="xl-union", union_control_type="canny", weight=0)])
                  .images[0])
    assert np.array_equal(zero, plain)
    two = pixels(generate(union_easel, request, [unit(model="xl-union", union_control_type="canny"),
                                                 unit(model="xl-union", union_control_type="depth", module="invert",
                                                      weight=0.5)]).images[0])
    assert not np.array_equal(two, hard_edge)
    edit = Img2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-sdxl", init_image=shapes(),
                          denoising_strength=0.6, **TINY)
    edited = generate(union_easel, edit, [unit(model="xl-union", image=None, union_control_type="openpose")])
    assert edited.images[0].size == (64, 64)


def test_sdxl_union_refusals_name_the_field(union_easel):
    request = Txt2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-sdxl", **TINY)
    field = "alwayson_scripts.controlnet.args[0].union_control_type"
    for bad, text in ((unit(model="xl-union"), "is a union ControlNet; choose its control type (0 = openpose, "
                                               "1 = depth, 2 = soft edge, 3 = hard edge, 4 = normal map, "
                                               "5 = segmentation)"),
                      (unit(model="xl-union", union_control_type="sketch"), "unknown control type 'sketch'"),
                      (unit(model="xl-union", union_control_type="tile"), "unknown control type 'tile'"),
                      (unit(model="xl-union", union_control_type=7), "unknown control type '7'"),
                      (unit(model="xl-canny", union_control_type="depth"), "xl-canny is not a union ControlNet")):
        error = failed(union_easel, request, [bad])
        assert error.field == field and text in error.message, error
    mixed = failed(union_easel, request, [unit(model="xl-union", union_control_type="canny"), unit(model="xl-canny")])
    assert mixed.field == "alwayson_scripts.controlnet.args[1].model"
    assert "xl-canny is not a union ControlNet" in mixed.message
    # the same union model as one file, as some downloads come: refused naming what to do
    folder = union_easel.settings.models_dir / "ControlNet"
    shutil.copy(folder / "xl-union" / "diffusion_pytorch_model.safetensors", folder / "union-file.safetensors")
    single = failed(union_easel, request, [unit(model="union-file", union_control_type="canny")])
    assert single.field == "alwayson_scripts.controlnet.args[0].model"
    assert "union-file is an SDXL union ControlNet in one file; Easel loads those from a diffusers folder" \
        in single.message
