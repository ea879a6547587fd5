"""Face restorers without an Easel: GFPGAN and CodeFormer files (tiny, random weights, saved as users install them)
are recognised and built to their own sizes; the published 512-px layouts are exactly spandrel's; restoring
changes pixels only inside the given face regions; visibility 0 returns the input bit for bit; broken, foreign and
misplaced files are refused with their name."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.tiny_face_restorers import make_tiny_codeformer, make_tiny_gfpgan
from tests.tiny_upscalers import make_tiny_esrgan
from webui.engine.face_restore import FaceRestorerError, FaceRestorers, restore_regions
from webui.model_manager.face_models import FaceModelError, build_codeformer, build_gfpgan, identify, load_face_model


def test_published_layouts_are_built_exactly_as_spandrel_builds_them() -> None:
    with torch.device("meta"):  # shapes only: the full-size networks are built without memory or initialisation
        _check_published_layouts()


def _check_published_layouts() -> None:
    from spandrel.architectures.GFPGAN import GFPGAN
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    spandrels = CodeFormer()  # spandrel_extra_arches' CodeFormer: 512 px, the published sizes
    reference = spandrels.state_dict()
    ours, side = build_codeformer(reference)
    assert side == 512 and identify(reference) == "CodeFormer"
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.items()}
    ours.load_state_dict(reference, strict=True)
    assert ours.encoder_taps == {int(k): v for k, v in spandrels.fuse_encoder_block.items()}
    assert ours.generator_taps == {int(k): v for k, v in spandrels.fuse_generator_block.items()}
    gfpgan = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                    fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1,
                    sft_half=True).state_dict()  # GFPGAN v1.3/v1.4's configuration, as spandrel loads them
    built, side = build_gfpgan(gfpgan)
    assert side == 512 and identify(gfpgan) == "GFPGAN"
    built.load_state_dict(gfpgan, strict=True)


@pytest.mark.parametrize("make, name, kind, side", [
    (make_tiny_gfpgan, "GFPGANv1.4.safetensors", "GFPGAN", 32),
    (lambda p: make_tiny_gfpgan(p, out_size=64, channel_multiplier=1), "GFPGANv1.3.pth", "GFPGAN", 64),
    (make_tiny_codeformer, "codeformer.safetensors", "CodeFormer", 32),
    (make_tiny_codeformer, "codeformer-v0.1.0.pth", "CodeFormer", 32),
])
def test_tiny_files_load_and_restore_deterministically(tmp_path, make, name, kind, side) -> None:
    model = load_face_model(make(tmp_path / name))  # .pth: a {"params_ema": ...} pickle, read weights-only
    assert (model.kind, model.size) == (kind, side)
    faces = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = model.restore(faces, 0.5)
    assert out.shape == faces.shape and out.min() >= -1 and out.max() <= 1
    assert torch.equal(out, model.restore(faces, 0.5)), "the same face restores the same way"
    if kind == "CodeFormer":
        assert not torch.equal(out, model.restore(faces, 1.0)), "CodeFormer's weight w changes the result"


def _scene() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))


def _disc(shape: tuple[int, int], cy: int, cx: int, r: int) -> np.ndarray:
    y, x = np.ogrid[:shape[0], :shape[1]]
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


@pytest.mark.parametrize("make", [make_tiny_gfpgan, make_tiny_codeformer])
def test_restore_changes_pixels_only_inside_the_regions_and_visibility_0_changes_none(tmp_path, make) -> None:
    from webui.engine.detail import grow
    from webui.engine.face_restore import GROW

    model = load_face_model(make(tmp_path / "model.safetensors"))
    image = _scene()
    regions = [_disc((96, 128), 30, 30, 12), _disc((96, 128), 60, 95, 18)]
    restored = np.asarray(restore_regions(image, regions, model, 1.0)).astype(int)
    source = np.asarray(image).astype(int)
    changed = (restored != source).any(axis=-1)
    allowed = grow(regions[0], GROW) | grow(regions[1], GROW)
    assert changed[regions[0]].mean() > 0.5 and changed[regions[1]].mean() > 0.5, "both faces were restored"
    assert not changed[~allowed].any(), "pixels outside the grown face regions changed"

    half = np.asarray(restore_regions(image, regions, model, 0.5)).astype(int)
    inside = regions[0] & ~grow(~regions[0], 8)  # deep inside: the feather is 1 there
    assert np.abs(half - (source + restored) / 2)[inside].max() <= 1, "visibility blends linearly"
    assert np.asarray(restore_regions(image, regions, model, 0.0)).tobytes() == image.tobytes()


def test_files_are_picked_by_name_and_broken_or_foreign_files_are_refused(tmp_path) -> None:
    models = tmp_path / "models"
    restorers = FaceRestorers(models)
    with pytest.raises(FaceRestorerError, match=r"GFPGAN is not installed: .*models/GFPGAN/"):
        restorers.file_for("GFPGAN")
    make_tiny_gfpgan(models / "GFPGAN" / "GFPGANv1.4.safetensors")
    (models / "GFPGAN" / "detection_Resnet50_Final.pth").write_bytes(b"not read")  # a helper file beside it
    assert restorers.file_for("GFPGAN").name == "GFPGANv1.4.safetensors"
    loaded = restorers.load("GFPGAN")
    assert restorers.load("GFPGAN") is loaded, "loaded once, then from the memory cache"
    from webui.model_manager.memory import model_bytes

    assert model_bytes(loaded) == sum(t.numel() * t.element_size()
                                      for t in (*loaded.model.parameters(), *loaded.model.buffers()))
    assert loaded.to("cpu") is loaded and loaded.device.type == "cpu"  # how the cache moves it between tiers

    (models / "Codeformer").mkdir()
    (models / "Codeformer" / "codeformer.safetensors").write_bytes(b"\x00garbage, not safetensors")
    with pytest.raises(FaceRestorerError, match="codeformer.safetensors"):
        restorers.load("CodeFormer")
    make_tiny_esrgan(models / "Codeformer" / "codeformer.safetensors")  # an upscaler, not a face restorer
    with pytest.raises(FaceRestorerError, match="not a GFPGAN .* or CodeFormer model"):
        restorers.load("CodeFormer")
    make_tiny_gfpgan(models / "Codeformer" / "codeformer.safetensors")  # a GFPGAN in CodeFormer's folder
    with pytest.raises(FaceRestorerError, match=r"is a GFPGAN model; move it to models/GFPGAN/"):
        restorers.load("CodeFormer")
    evil = models / "Codeformer" / "codeformer.pth"
    (models / "Codeformer" / "codeformer.safetensors").unlink()

    class Boom:
        def __reduce__(self):
            return (print, ("unpickled with code",))

    torch.save({"params_ema": Boom()}, evil)
    with pytest.raises(FaceRestorerError, match="codeformer.pth"):
        restorers.load("CodeFormer")
    with pytest.raises(FaceModelError):
        load_face_model(evil)


def test_the_xyz_face_restore_axis_sets_the_restorer_per_cell(make_easel) -> None:
    from webui.requests import RequestError, Txt2ImgRequest

    easel = make_easel()
    base = Txt2ImgRequest(prompt="a face", width=64, height=64, steps=2, seed=7, checkpoint="tiny-sd1")
    job = easel.registry.scripts["x/y/z plot"].run(base, ["Face restore", "GFPGAN, codeformer, false"])
    assert [(r.restore_faces, r.face_restoration_model) for r in job.requests] == \
        [(True, "GFPGAN"), (True, "CodeFormer"), (False, "")]
    with pytest.raises(ValueError, match="Face restore: 'RestoreFormer' is not CodeFormer, GFPGAN"):
        easel.registry.scripts["x/y/z plot"].run(base, ["Face restore", "RestoreFormer"])
    with pytest.raises(RequestError) as caught:  # checked before queueing, naming the cell and the folder
        easel.engine.submit(job)
    assert caught.value.field == "script_args" and "GFPGAN is not installed" in caught.value.message
    assert "models/GFPGAN/" in caught.value.message
