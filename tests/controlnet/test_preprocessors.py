"""ControlNet preprocessors: canny's edges, the weight-free modules, names and aliases, and the clear error for
annotator weights that are not installed while offline."""
from __future__ import annotations

import numpy as np
import pytest

from tests.controlnet.conftest import shapes


@pytest.fixture
def preprocessors(tmp_path):
    from tests.controlnet.test_units import extension_module

    module = extension_module("preprocessors")
    return module.Preprocessors([tmp_path / "annotators"], offline=lambda: True), module


def test_canny_finds_the_edges_of_the_shapes(preprocessors):
    runner, _ = preprocessors
    edges = runner.run("canny", shapes(64, 64), resolution=64, threshold_a=50, threshold_b=150)
    array = np.asarray(edges)
    assert edges.size == (64, 64) and array.shape == (64, 64, 3)
    assert set(np.unique(array)) <= {0, 255}  # a binary map, the same in all three channels
    assert np.array_equal(array[..., 0], array[..., 2])
    # The rectangle spans x 16..32, y 16..48: its left side is an edge, its inside and the background are not.
    assert array[20:44, 14:19, 0].max() == 255
    assert array[24:40, 22:28, 0].max() == 0 and array[56:, :10, 0].max() == 0
    wide = runner.run("canny", shapes(64, 48), resolution=96)
    assert wide.size == (171, 128)  # worked at 128x128 (controlnet-aux rounds to 64), then back to 4:3


def test_weight_free_modules_run(preprocessors):
    runner, module = preprocessors
    image = shapes(64, 64)
    assert np.array_equal(np.asarray(runner.run("none", image)), np.asarray(image))
    assert np.array_equal(np.asarray(runner.run("invert", image)), 255 - np.asarray(image))
    first = runner.run("shuffle", image, resolution=64)
    assert first.size == (64, 64)
    assert np.array_equal(np.asarray(runner.run("shuffle", image, resolution=64)), np.asarray(first))  # seeded
    assert runner.run("tile_resample", image, threshold_a=2.0).size == (32, 32)
    lines = np.asarray(runner.run("lineart_standard", image, resolution=64))
    assert lines.shape[:2] == (64, 64) and lines.max() > 0


def test_names_aliases_and_the_module_list(preprocessors):
    runner, module = preprocessors
    for name in ("canny", "lineart", "softedge", "depth", "openpose", "mlsd", "shuffle", "tile", "none"):
        assert runner.find(name) in module.MODULES, name
    assert runner.find("Depth") == "depth_midas" and runner.find("softedge") == "softedge_hed"
    with pytest.raises(LookupError, match="unknown preprocessor 'sketchy'; choose one of none, "):
        runner.find("sketchy")
    sliders = module.MODULES["canny"].sliders()
    assert [s["name"] for s in sliders] == ["Preprocessor Resolution", "Canny Low Threshold", "Canny High Threshold"]
    assert module.MODULES["canny"].model_free and not module.MODULES["openpose"].model_free


@pytest.mark.parametrize("name, missing", [
    ("depth", "dpt_hybrid-midas-501f0c75.pt"),
    ("openpose", "body_pose_model.pth and hand_pose_model.pth and facenet.pth"),
    ("mlsd", "mlsd_large_512_fp32.pth"),
    ("softedge_hed", "ControlNetHED.pth"),
    ("lineart", "sk_model.pth and sk_model2.pth"),
])
def test_missing_annotator_weights_offline_name_the_file(preprocessors, tmp_path, name, missing):
    runner, module = preprocessors
    with pytest.raises(module.AnnotatorMissingError) as caught:
        runner.run(name, shapes())
    message = str(caught.value)
    assert missing in message and str(tmp_path / "annotators") in message
    assert "lllyasviel/Annotators" in message and "offline" in message


def test_a_partly_installed_module_names_only_what_is_missing(preprocessors, tmp_path):
    runner, module = preprocessors
    folder = tmp_path / "annotators"
    folder.mkdir()
    (folder / "sk_model.pth").write_bytes(b"")
    with pytest.raises(module.AnnotatorMissingError, match=r"needs sk_model2\.pth in "):
        runner.run("lineart_realistic", shapes())
