"""The segmentation evaluation: held-out cases of each kind with true masks, the scoring, and the CLI end to end
on a tiny random built-in model (and a tiny CLIPSeg as the baseline)."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from webui.builtin import data as D
from webui.builtin_lab import evaluate_segmentation as E


def test_cases_cover_every_kind_with_true_masks():
    cases = E.make_cases(12, seed=1)
    assert [c.kind for c in cases] == list(E.KINDS) * 3
    for case in cases:
        assert case.image.shape == (64, 64, 3) and case.mask.shape == (64, 64) and case.query.startswith("the ")
        assert case.mask.any() == (case.kind != "absent")
    for case in cases[0::4]:  # named by colour and shape
        assert any(w in case.query.split() for c in D.COLORS for w in D.COLOR_WORDS[c])
    assert any(p in cases[1].query for phrases in D.POSITION_PHRASES.values() for p in phrases)
    assert any(p in cases[2].query for phrases in D.RELATION_PHRASES.values() for p in phrases)
    again = E.make_cases(12, seed=1)
    assert all(a.query == b.query and np.array_equal(a.mask, b.mask) for a, b in zip(cases, again))


def test_score_of_a_perfect_and_an_empty_segmenter():
    cases = E.make_cases(8, seed=0)
    truth = {(c.query, c.image.tobytes()): c.mask for c in cases}

    def oracle(image: Image.Image, query: str):
        mask = truth[(query, np.asarray(image).tobytes())]
        return mask, bool(mask.any())

    perfect = E.score(oracle, cases)
    assert perfect["miou"] == 1.0 and perfect["ciou"] == 1.0 and perfect["absent_not_found"] == 1.0
    assert perfect["miou_by_kind"] == {"attribute": 1.0, "position": 1.0, "relation": 1.0}
    assert perfect["counts"] == {"attribute": 2, "position": 2, "relation": 2, "absent": 2}
    nothing = E.score(lambda image, query: (np.zeros((64, 64), bool), False), cases)
    assert nothing["miou"] == 0.0 and nothing["present_found"] == 0.0 and nothing["absent_not_found"] == 1.0
    assert nothing["seconds_median"] >= 0.0


def test_cli_reports_every_field_on_a_tiny_model(tmp_path, tiny_clipseg_dir, capsys):
    from tests.builtin.conftest import make_tiny_pipeline

    model = tmp_path / "tiny-easel"
    make_tiny_pipeline().save_pretrained(str(model))
    (model / "training.json").write_text(json.dumps({"step": 12, "loss": 0.5}))
    out = tmp_path / "eval.json"
    assert E.main(["--model", str(model), "--n", "4", "--steps", "1", "--json", str(out),
                   "--clipseg", str(tiny_clipseg_dir)]) == 0
    results = json.loads(out.read_text())
    assert results["model_step"] == 12 and results["torch_threads"] == 1
    for run in (results["generative"], results["clipseg"]):
        assert set(run) >= {"miou", "miou_by_kind", "counts", "ciou", "present_found", "absent_not_found",
                            "seconds_median"}
        assert set(run["miou_by_kind"]) == {"attribute", "position", "relation"}
        assert run["counts"] == {"attribute": 1, "position": 1, "relation": 1, "absent": 1}
        assert 0.0 <= run["absent_not_found"] <= 1.0 and run["seconds_median"] > 0
    printed = capsys.readouterr().out
    assert "mIoU, colour + shape" in printed and "with relation" in printed and "absent objects" in printed
    assert "median seconds per segmentation" in printed and "| CLIPSeg |" in printed
    assert "training step 12" in printed
