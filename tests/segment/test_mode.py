"""The segment mode through the engine: every edit family on tiny random weights, the built-in model's prompt
form and colours, CLIPSeg masks with several queries, and the outputs each query carries."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.segment.conftest import CLIPSEG_LABEL, binary_values, scene_image
from webui.engine.worker import JobState
from webui.requests import DEFAULT_SEGMENT_TEMPLATE, SegmentRequest


def run(easel, **fields):
    job = easel.engine.generate(SegmentRequest(save_images=False, **fields))
    assert job.state == JobState.DONE, job.error
    return job.result


def check_outputs(item: dict, size: tuple[int, int]) -> None:
    assert item["mask"].mode == "L" and item["mask"].size == size and binary_values(item["mask"]) <= {0, 255}
    assert item["cutout"].mode == "RGBA" and item["cutout"].size == size
    assert np.array_equal(np.asarray(item["cutout"])[..., 3], np.asarray(item["mask"]))
    assert isinstance(item["found"], bool) and item["message"]
    if not item["found"]:
        assert binary_values(item["mask"]) == {0}


def make_tiny_qwenimage_edit_plus(folder):
    """Tiny Qwen-Image-Edit Plus: the tiny Qwen-Image-Edit parts in a QwenImageEditPlusPipeline."""
    import shutil

    from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline

    from tests.tiny_models import make_tiny_qwenimage_edit

    base = make_tiny_qwenimage_edit(folder.with_name(folder.name + "-base"))
    edit = QwenImageEditPipeline.from_pretrained(str(base), local_files_only=True)
    QwenImageEditPlusPipeline(**edit.components).save_pretrained(str(folder))
    shutil.rmtree(base)
    return folder


@pytest.mark.parametrize("family", ["instruct-pix2pix", "flux-kontext", "qwenimage-edit", "qwenimage-edit-plus"])
def test_each_edit_family_runs_on_tiny_weights(make_easel, tmp_path, family):
    from tests.tiny_models import EDIT_BUILDERS

    builders = {**EDIT_BUILDERS, "qwenimage-edit-plus": make_tiny_qwenimage_edit_plus}
    builders[family](tmp_path / "data" / "models" / "diffusers" / family)
    easel = make_easel(install_sd1=False)
    assert family in easel.segment_model_choices()
    assert easel.segment_template(family) == DEFAULT_SEGMENT_TEMPLATE
    source = Image.new("RGB", (48, 40), (200, 40, 40))
    result = run(easel, image=source, query="the red circle", checkpoint=family, steps=1, seed=3)
    item = result.info["items"][0]
    check_outputs(item, source.size)
    assert result.images[0].size == source.size
    assert item["prompt"] == DEFAULT_SEGMENT_TEMPLATE.format(query="the red circle", colour="magenta")
    assert item["method"] == "generative" and item["model"] == family


def test_builtin_model_prompt_template_and_outputs(seg_easel):
    image, scene = scene_image()
    result = run(seg_easel, image=image, query="Red circle.\nthe star on the left", steps=2, seed=1,
                 highlight="cyan")
    items = result.info["items"]
    assert [i["prompt"] for i in items] == ["highlight the red circle in cyan", "highlight the star on the left in cyan"]
    for item in items:
        check_outputs(item, image.size)
    assert items[0]["overlay"].size == image.size and "overlay" not in items[1]
    assert "Template: highlight {query} in {colour}" in result.infotexts[0]
    assert "Query: the star on the left" in result.infotexts[1]
    assert [text.splitlines()[0] for text in result.infotexts] == ["Red circle.", "the star on the left"]
    # An edited template is used as written.
    custom = run(seg_easel, image=image, query="the red circle", steps=1, template="mark {query} in {colour}")
    assert custom.info["items"][0]["prompt"] == "mark the red circle in magenta"


def test_builtin_model_refuses_a_colour_it_was_not_trained_on(seg_easel):
    job = seg_easel.engine.generate(SegmentRequest(image=scene_image()[0], query="the star", highlight="lime",
                                                   steps=1, save_images=False))
    assert job.state == JobState.FAILED and job.error.startswith("highlight:")


def test_a_checkpoint_that_cannot_edit_is_refused(seg_easel):
    job = seg_easel.engine.generate(SegmentRequest(image=scene_image()[0], query="the star", checkpoint="tiny-sd1",
                                                   steps=1, save_images=False))
    assert job.state == JobState.FAILED and job.error.startswith("model:")


def test_clipseg_masks_per_query_keep_largest_and_saved_mask(seg_easel):
    image = Image.new("RGB", (40, 56), (90, 90, 90))
    job = seg_easel.engine.generate(SegmentRequest(image=image, query="the circle\nthe square",
                                                   checkpoint=CLIPSEG_LABEL, mask_threshold=0.0, keep_largest=True))
    assert job.state == JobState.DONE, job.error
    items = job.result.info["items"]
    assert [i["query"] for i in items] == ["the circle", "the square"]
    for item in items:
        check_outputs(item, image.size)
        assert item["found"] and item["method"] == "CLIPSeg"
    # The edit of a CLIPSeg result is the source painted in the highlight colour where the mask is.
    painted = np.asarray(job.result.images[0])
    assert (painted[np.asarray(items[0]["mask"]) > 0] == (255, 0, 255)).all()
    saved = job.result.paths[0]
    assert saved.with_name(saved.stem + "-mask.png").is_file()


def test_sam3_runs_from_the_segmentation_folder(make_easel, tmp_path):
    from tests.segment.conftest import make_tiny_sam3

    make_tiny_sam3(tmp_path / "data" / "models" / "segmentation" / "tiny-sam3")
    easel = make_easel()
    assert "tiny-sam3 (SAM 3)" in easel.segment_model_choices() and easel.segment_template("tiny-sam3 (SAM 3)") == ""
    source = Image.new("RGB", (48, 40), (200, 40, 40))
    result = run(easel, image=source, query="the red circle\nthe dog", checkpoint="tiny-sam3 (SAM 3)",
                 mask_threshold=0.2)
    items = result.info["items"]
    assert [i["method"] for i in items] == ["SAM 3", "SAM 3"] and items[0]["model"] == "tiny-sam3"
    for item in items:
        check_outputs(item, source.size)
