"""The Extras tab over a real Easel: upscaling through the worker with a built-in or a (tiny, random) ESRGAN
model, by a factor or to a size, the result saved under outputs/extras-images; mistakes name the control."""
from __future__ import annotations

import gradio as gr
import pytest

from tests.api.conftest import gradient
from tests.tiny_upscalers import make_tiny_esrgan
from webui.infotext import parse_infotext, read_png_parameters
from webui.ui.tabs.extras import BY_SCALE, TO_SIZE, upscale


@pytest.fixture
def extras_ui(make_easel):
    from webui.ui.app import build_ui

    easel = make_easel()
    make_tiny_esrgan(easel.settings.models_dir / "ESRGAN" / "2x-tiny.safetensors", scale=2)
    blocks, ui = build_ui(easel)
    yield blocks, ui
    blocks.close()


def handler(blocks, name: str):
    found = [f for f in blocks.fns.values() if f.name == name and any(
        getattr(c, "elem_id", None) == "extras_image" for c in f.inputs)] if name == "on_upscale" else \
        [f for f in blocks.fns.values() if f.name == name and any(
            getattr(c, "elem_id", None) == "extras_upscaler" for c in f.outputs)]
    assert len(found) == 1, name
    return found[0].fn


def test_the_tab_lists_upscalers_and_upscales_with_a_model(extras_ui):
    blocks, ui = extras_ui
    easel = ui.easel
    first, second = handler(blocks, "on_rescan")(None, None)
    assert [c[0] for c in first.choices] == ["Lanczos", "Nearest", "2x-tiny"] and first.value == "Lanczos"
    assert [c[0] for c in second.choices] == ["None", "Lanczos", "Nearest", "2x-tiny"] and second.value == "None"

    image, info, saved = handler(blocks, "on_upscale")(gradient(32, 24), "2x-tiny", BY_SCALE, 2, None, None, True,
                                                       "None", 0)
    assert image.size == (64, 48)
    assert parse_infotext(info)["Postprocess upscaler"] == "2x-tiny"
    files = list(easel.settings.outputs_dir.glob("extras-images/*/*.png"))
    assert len(files) == 1 and str(files[0]) in saved
    with files[0].open("rb") as handle:
        from PIL import Image

        stored = Image.open(handle)
        stored.load()
    assert stored.size == (64, 48) and parse_infotext(read_png_parameters(stored))["Postprocess upscaler"] == "2x-tiny"


def test_scale_to_a_size_with_a_second_upscaler_and_saving_off(extras_ui):
    _, ui = extras_ui
    ui.easel.settings.user.save_images = False
    done = upscale(ui, gradient(32, 24), "Lanczos", TO_SIZE, 2, 50, 40, True, "Nearest", 0.5, timeout=60)
    assert done.image.size == (50, 40) and done.path is None
    params = parse_infotext(done.infotext)
    assert params["Postprocess upscale to"] == "50x40" and params["Postprocess upscaler 2"] == "Nearest"
    assert not list(ui.easel.settings.outputs_dir.glob("extras-images/*/*.png"))


@pytest.mark.parametrize("values,field", [
    ((None, "Lanczos", BY_SCALE, 2, None, None, True, "None", 0), "image"),
    ((gradient(8, 8), "None", BY_SCALE, 2, None, None, True, "None", 0), "upscaler_1"),
    ((gradient(8, 8), "Lanczos", TO_SIZE, 2, 0, 10, True, "None", 0), "upscaling_resize_w"),
    ((gradient(8, 8), "Lanczos", BY_SCALE, 20, None, None, True, "None", 0), "upscaling_resize"),
    ((gradient(8, 8), "SwinIR_4x", BY_SCALE, 2, None, None, True, "None", 0), "upscaler"),
])
def test_mistakes_name_the_control(extras_ui, values, field):
    blocks, _ = extras_ui
    with pytest.raises(gr.Error, match=field):
        handler(blocks, "on_upscale")(*values)


def test_face_restoration_runs_from_the_tab_and_a_missing_restorer_names_its_slider(extras_ui):
    """With no restorer installed the GFPGAN slider's field is named; with a tiny GFPGAN and a face finder (the
    tiny CLIPSeg at threshold 0, which takes the whole image as one face) the faces are restored at scale 1."""
    import dataclasses
    import shutil

    from tests.segment.conftest import CLIPSEG_LABEL
    from tests.tiny_face_restorers import make_tiny_gfpgan
    from tests.tiny_models import make_tiny_clipseg

    blocks, ui = extras_ui
    easel = ui.easel
    with pytest.raises(gr.Error, match="gfpgan_visibility"):
        handler(blocks, "on_upscale")(gradient(32, 32), "Lanczos", BY_SCALE, 1, None, None, True, "None", 0, 1, 0, 0.5)
    make_tiny_gfpgan(easel.settings.models_dir / "GFPGAN" / "GFPGANv1.4.safetensors")
    clipseg = make_tiny_clipseg(easel.settings.data_dir / "tmp-clipseg" / "tiny-clipseg")
    shutil.copytree(clipseg, easel.settings.models_dir / "clipseg" / "tiny-clipseg")
    easel.manager.refresh()
    easel.settings.user = dataclasses.replace(easel.settings.user, face_restoration_finder=CLIPSEG_LABEL,
                                              face_restoration_confidence=0.0)
    source = gradient(32, 32)
    image, info, _ = handler(blocks, "on_upscale")(source, "Lanczos", BY_SCALE, 1, None, None, True, "None", 0,
                                                   1, 0, 0.5)
    params = parse_infotext(info)
    assert image.size == (32, 32) and image.tobytes() != source.convert("RGB").tobytes()
    assert params["GFPGAN visibility"] == "1" and params["GFPGAN faces"] == "1"
