"""The held-out evaluation world: drawn by its own code (not the training renderer), shapes of the right area in
both anti-aliasing styles, continuous and rotated placements, phrasings the training captions never use, a
detector that reads its drawings, and an evaluation that runs end to end."""
from __future__ import annotations

import ast
import math
import random
from pathlib import Path

import numpy as np

from webui.builtin import data as D
from webui.builtin_lab import evaluate_heldout as H
from webui.builtin_lab import heldout_world as W


def test_the_held_out_renderer_imports_only_the_worlds_vocabulary_from_the_training_code() -> None:
    tree = ast.parse(Path(W.__file__).read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    from_builtin = [n for n in imports if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("webui")]
    assert [(n.module, sorted(a.name for a in n.names)) for n in from_builtin] == [
        ("webui.builtin.data", ["COLORS", "PALETTE", "SHAPES"])]
    assert not any(isinstance(n, ast.Import) and any(a.name.startswith("webui") for a in n.names) for n in imports)


def test_shapes_cover_their_area_in_both_styles_anywhere_and_rotated() -> None:
    r = 10.3
    areas = {"circle": math.pi * r * r, "ring": math.pi * r * r * 0.75, "square": (1.56 * r) ** 2,
             "triangle": 3 * math.sqrt(3) / 4 * r * r}
    for shape, area in areas.items():
        for turn in (0.0, 23.0):
            thing = W.Thing("red", shape, 30.7, 33.2, r, turn)
            sdf, sto = W.coverage(thing, "sdf"), W.coverage(thing, "stochastic")
            assert abs(sdf.sum() - area) / area < 0.03 and abs(sto.sum() - area) / area < 0.05, shape
            assert 0 < ((sdf > 0) & (sdf < 1)).sum()  # anti-aliased edge
            assert ((sdf >= 0.5) & (sto >= 0.5)).sum() / ((sdf >= 0.5) | (sto >= 0.5)).sum() > 0.9
    # continuous: a sub-pixel move moves the coverage's centroid by the same amount
    a = W.coverage(W.Thing("red", "star", 30.0, 30.0, 9.0), "sdf")
    b = W.coverage(W.Thing("red", "star", 30.4, 30.0, 9.0), "sdf")
    xs = np.arange(64) + 0.5
    assert abs((b.sum(0) @ xs) / b.sum() - (a.sum(0) @ xs) / a.sum() - 0.4) < 0.02


def test_scenes_are_off_grid_and_textured_and_the_detector_reads_them() -> None:
    rng = random.Random(3)
    worlds = [W.random_world(rng, 3) for _ in range(30)]
    centres = [(t.x, t.y) for w in worlds for t in w.things]
    assert sum(x in D.GRID and y in D.GRID for x, y in centres) == 0
    assert len({round(t.r, 1) for w in worlds for t in w.things}) > 40
    image, masks = W.draw(worlds[0], style="stochastic", seed=1)
    background = image[np.sum(masks, axis=0) == 0].astype(float)
    assert 2.0 < background.std(axis=0).max() < 8.0  # light texture
    assert H.validate_detector(60, seed=5) >= 0.95


def test_held_out_phrasings_are_not_training_captions() -> None:
    """No held-out phrase is a training phrase or occurs in a training caption; some are parts of a longer training
    phrase ("in the upper left" of "in the upper left corner"), so training phrases are blanked out first."""
    captions = " | ".join(D.sample_example(D.example_rng(0, i, "train"), "txt2img").prompt for i in range(3000))
    training = sorted(sum(D.POSITION_PHRASES.values(), []) + sum(D.RELATION_PHRASES.values(), []), key=len,
                      reverse=True)
    for phrase in training:
        captions = captions.replace(phrase, "#")
    held_out = [p for ps in W.HELD_OUT_POSITIONS.values() for p in ps] + \
               [p for ps in W.HELD_OUT_RELATIONS.values() for p in ps] + ["a pair of", "background with", "backdrop",
                                                                          "; the background is", "a single", "four"]
    assert [p for p in held_out if p in captions or p in training] == []


def test_the_held_out_evaluation_runs_on_a_tiny_model() -> None:
    from tests.builtin.conftest import make_tiny_pipeline

    results = H.evaluate(make_tiny_pipeline(), n=2, steps=1, batch=2)
    for part in ("alone", "pipeline"):
        assert set(results[part]) >= {"single", "single_position", "pairs", "counts"}
    assert results["inpaint_outside"] == 1.0 and 0.0 <= results["seg_miou"] <= 1.0
    table = H.markdown(results)
    assert table.count("| txt2img") == 4 and "model alone | shipped pipeline" in table
