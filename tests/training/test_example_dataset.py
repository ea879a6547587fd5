"""The example concept: the dataset recipe writes captioned images, and the heart detector is right on renders."""
from __future__ import annotations

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


def test_ten_hearts_cover_the_palette() -> None:
    """Ten concept images: every palette colour once as a heart and once as a background, never both at once."""
    import random

    plan = E.concept_plan(random.Random(0), 10)
    colors, backgrounds, positions = zip(*plan)
    assert sorted(colors) == sorted(D.COLORS) and sorted(backgrounds) == sorted(D.COLORS)
    assert all(c != b for c, b, _ in plan)
    assert len(set(positions)) == len(D.POSITIONS)


def test_detector_on_rendered_truth() -> None:
    scores = E.validate_detector(n=40, seed=3)
    assert scores["heart_recall"] >= 0.95 and scores["other_false_positive"] <= 0.05
    blank = np.full((64, 64, 3), D.PALETTE["blue"], np.uint8)
    assert not E.detect_heart(blank)
