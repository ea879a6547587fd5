"""Procedural scenes: determinism, exact palette, masks, captions and edit tasks."""
from __future__ import annotations

import numpy as np
import pytest

from webui.builtin import data as D


def test_examples_are_deterministic_and_splits_differ() -> None:
    for i in range(20):
        a = D.sample_example(D.example_rng(3, i))
        b = D.sample_example(D.example_rng(3, i))
        assert a.prompt == b.prompt and a.task == b.task
        assert np.array_equal(a.target, b.target)
    train = [D.sample_example(D.example_rng(0, i, "train")).prompt for i in range(30)]
    held_out = [D.sample_example(D.example_rng(0, i, "eval")).prompt for i in range(30)]
    assert train != held_out
    with pytest.raises(ValueError, match="unknown split"):
        D.example_rng(0, 0, "test")


def test_palette_is_exact_and_objects_never_match_background() -> None:
    for i in range(60):
        scene = D.random_scene(D.example_rng(1, i))
        image, masks = D.render(scene)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert 1 <= len(scene.objects) <= 3
        assert all(o.color != scene.background for o in scene.objects)
        background = sum(masks) == 0
        assert (image[background] == D.PALETTE[scene.background]).all()
        for obj, mask in zip(scene.objects, masks):
            inside = mask >= 0.999
            if inside.any():
                assert (image[inside] == D.PALETTE[obj.color]).all()
            assert (mask >= 0.5).sum() > 10


def test_objects_sit_exactly_on_the_grid_upright_at_their_size() -> None:
    seen_positions, seen_sizes = set(), set()
    for i in range(200):
        for o in D.random_scene(D.example_rng(4, i)).objects:
            col, row = D.POSITIONS[o.position]
            assert (o.cx, o.cy, o.radius, o.angle) == (D.GRID[col], D.GRID[row], D.SIZES[o.size], 0.0)
            seen_positions.add(o.position)
            seen_sizes.add(o.size)
    assert seen_positions == set(D.POSITIONS) and seen_sizes == set(D.SIZES)
    # two objects with the same shape, size and position render the same pixels whatever the scene around them
    a = D.Obj("red", "star", "small", "top left", D.GRID[0], D.GRID[0], D.SIZES["small"])
    img1, m1 = D.render(D.Scene("blue", (a,)))
    img2, m2 = D.render(D.Scene("blue", (a, D.Obj("green", "ring", "large", "bottom right", D.GRID[2], D.GRID[2],
                                                   D.SIZES["large"]))))
    assert np.array_equal(m1[0], m2[0]) and np.array_equal(img1[:32, :32], img2[:32, :32])


def test_masks_do_not_overlap_and_match_the_object() -> None:
    for i in range(40):
        scene = D.random_scene(D.example_rng(2, i))
        _, masks = D.render(scene)
        total = sum((m > 0).astype(int) for m in masks)
        assert total.max() <= 1  # non-overlapping, with a gap
        positions = [o.position for o in scene.objects]
        assert len(set(positions)) == len(positions)


def test_vocabulary_covers_every_generated_prompt() -> None:
    vocab = set(D.vocabulary())
    for i in range(400):
        ex = D.sample_example(D.example_rng(5, i))
        assert set(D.tokenize_words(ex.prompt)) <= vocab, ex.prompt


def test_highlight_absent_and_inpaint_targets() -> None:
    for i in range(10):
        ex = D.sample_example(D.example_rng(6, i), "highlight")
        changed = np.any(ex.target != ex.source, axis=-1)
        assert changed.any()
        assert not (changed & ~(D.render(ex.info["scene"])[1][ex.info["index"]] > 0)).any()
        ex = D.sample_example(D.example_rng(6, i), "absent")
        assert np.array_equal(ex.target, ex.source)
        ex = D.sample_example(D.example_rng(6, i), "inpaint")
        assert ex.mask is not None and ex.mask.sum() > 0
        assert (ex.source[ex.mask > 0] == 0).all()
        t = D.to_tensors(ex)
        assert t["source"].shape == (4, 64, 64) and t["target"].shape == (3, 64, 64)
        assert set(np.unique(t["source"][3])) <= {-1.0, 1.0}
        assert np.all(t["source"][:3][:, ex.mask > 0] == 0)


def test_edit_tasks_change_the_scene_as_described() -> None:
    for i in range(10):
        ex = D.sample_example(D.example_rng(7, i), "recolor")
        assert not np.array_equal(ex.target, ex.source)
        ex = D.sample_example(D.example_rng(7, i), "remove")
        assert len(ex.info["target_scene"].objects) == len(ex.info["scene"].objects) - 1
        ex = D.sample_example(D.example_rng(7, i), "add")
        assert len(ex.info["source_scene"].objects) == len(ex.info["scene"].objects) - 1


def test_captions_cover_relations_counts_and_backgrounds() -> None:
    prompts = [D.sample_example(D.example_rng(8, i), "txt2img").prompt for i in range(400)]
    text = " | ".join(prompts)
    assert any(w in text for w in (" left of ", " above ", " below ", " right of "))
    assert " two " in text or prompts[0].startswith("two")
    assert "background" in text
