"""The example concept: the dataset recipe writes captioned images, and the heart detector is right on renders."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from webui.builtin import data as D
from webui.training import example_dataset as E
from webui.training.dataset import load_dataset


def test_recipe_writes_a_loadable_dataset(tmp_path: Path) -> None:
    folder = E.make_dataset(tmp_path / "ds", n_concept=4, n_regular=2)
    ds = load_dataset(folder, ((64, 64),), trigger="heart")
    assert len(ds) == 6
    hearts = [i for i in ds.items if i.path.name.startswith("heart_")]
    assert len(hearts) == 4 and all(" heart" in i.caption and "[trigger]" not in i.caption for i in hearts)
    raw = (folder / "heart_00.txt").read_text()
    assert "[trigger]" in raw
    image = np.asarray(Image.open(folder / "heart_00.png"))
    assert image.shape == (64, 64, 3)
    # plain palette background, as in the built-in world
    assert tuple(image[0, 0]) in set(D.PALETTE.values())


def test_every_ten_hearts_cover_the_palette() -> None:
    """The recipe's thirty concept images: every block of ten shows every palette colour once as a heart and once
    as a background, never both at once, and the positions go round the grid."""
    import random

    plan = E.concept_plan(random.Random(0), 30)
    assert len(plan) == 30 and all(c != b for c, b, _ in plan)
    for block in (plan[:10], plan[10:20], plan[20:]):
        colors, backgrounds, _ = zip(*block)
        assert sorted(colors) == sorted(D.COLORS) and sorted(backgrounds) == sorted(D.COLORS)
    positions = Counter(p for _, _, p in plan)
    assert set(positions) == set(D.POSITIONS) and set(positions.values()) <= {3, 4}


def test_detector_on_rendered_truth() -> None:
    scores = E.validate_detector(n=40, seed=3)
    assert scores["heart_recall"] >= 0.95 and scores["other_false_positive"] <= 0.05
    blank = np.full((64, 64, 3), D.PALETTE["blue"], np.uint8)
    assert not E.detect_heart(blank)


def test_detector_reads_a_shape_by_coverage_not_by_its_faint_halo() -> None:
    """Generated shapes often sit in a faint square of colour between object and background (the model's patches):
    far enough from the background to join the component, but not the object. A heart (and a circle) with such a halo keeps its shape;
    the bounding box of everything away from the background would have read the heart as a square."""
    for shape in ("heart", "circle"):
        if shape == "heart":
            image, mask = E.render_heart("yellow", "blue", 32.0, 32.0, 10.0)
        else:
            obj = D.Obj("blue", "circle", "large", "center", 32.0, 32.0, 10.0)
            image, masks = D.render(D.Scene("yellow", (obj,)))
            mask = masks[0]
        ys, xs = np.nonzero(mask > 0.02)
        box = np.zeros(mask.shape, bool)
        box[ys.min() - 1: ys.max() + 2, xs.min() - 1: xs.max() + 2] = True  # as the model's 8x8 patches leave it
        halo = box & (mask < 0.5)
        tinted = image.astype(np.float32)
        bg, fg = np.array(D.PALETTE["yellow"], np.float32), np.array(D.PALETTE["blue"], np.float32)
        tinted[halo] = 0.7 * bg + 0.3 * fg  # 30% of the way to the object's colour: ~75 RGB from the background
        tinted = tinted.round().astype(np.uint8)
        assert np.linalg.norm(tinted[halo].astype(float) - bg, axis=1).min() > E.FOREGROUND_DISTANCE
        assert E.shapes_in(tinted) == [shape]
    assert E.detect_heart(E.render_heart("yellow", "blue", 32.0, 32.0, 10.0)[0])
