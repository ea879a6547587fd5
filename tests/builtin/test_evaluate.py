"""The classical detector that scores the built-in model, validated on rendered ground truth."""
from __future__ import annotations

import numpy as np

from webui.builtin import data as D
from webui.builtin_lab import evaluate as E


def test_detector_is_at_least_98_percent_accurate_on_rendered_scenes() -> None:
    assert E.validate_detector(n=250, seed=99) >= 0.98


def test_highlight_mask_recovers_the_object() -> None:
    ious = []
    for i in range(20):
        ex = D.sample_example(D.example_rng(11, i, "eval"), "highlight")
        pred = E.highlight_mask(ex.target, ex.source, ex.info["highlight"])
        ious.append(E.iou(pred, ex.info["mask"]))
        absent = D.sample_example(D.example_rng(11, i, "eval"), "absent")
        assert not E.highlight_mask(absent.target, absent.source, absent.info["highlight"]).any()
    assert np.mean(ious) > 0.85


def test_evaluate_runs_on_a_tiny_model() -> None:
    from tests.builtin.conftest import make_tiny_pipeline

    results = E.evaluate(make_tiny_pipeline(), n=2, steps=1, batch=2)
    for key in ("single_object", "relation", "inpaint_inside", "img2img_keeps_scene", "absent_empty"):
        assert key in results
    assert results["inpaint_outside_unchanged"] == 1.0
    table = E.markdown(results)
    assert "| metric |" in table and table.count("Recolour edits correct") == 1
    assert results["guidance_interval"] == [0.0, 1.0] and "noise levels" not in table
    windowed = E.evaluate(make_tiny_pipeline(), n=2, steps=1, batch=2, guidance_interval=(0.1, 0.85))
    assert "guidance 4.0 for noise levels 0.1-0.85" in E.markdown(windowed)
