"""Layout planning for the built-in model: positions written into prompts, relations kept, seeds reproduce it,
and the pipeline applies it in txt2img only."""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import torch

from tests.builtin.conftest import make_tiny_pipeline
from webui.builtin import data as D
from webui.builtin.layout import parse, plan, read


def _cells(prompt: str) -> list[str | None]:
    return [m.position for m in parse(prompt)[0]]


def test_parse_finds_objects_counts_sizes_positions_and_relations() -> None:
    mentions, relations = parse("A picture of a Big grey plus sign in the top-left corner above the small violet "
                                "hoop, two pink rings and a box on a blue background")
    assert [(m.color, m.shape, m.size, m.position, m.count) for m in mentions] == [
        ("gray", "cross", "large", "top left", 1), ("purple", "ring", "small", None, 1),
        ("pink", "ring", None, None, 2), (None, "square", None, None, 1)]
    assert [(r.relation, r.a, r.b) for r in relations] == [("above", 0, 1)]
    # a background's colour, other words and glued words are no objects
    assert parse("a blue background, a dog, redcircle") == ([], [])
    # a colour and a word the built-in world does not know (a LoRA's trigger word) is one
    mentions, _ = parse("a red heart on a blue background")
    assert [(m.color, m.shape, m.position) for m in mentions] == [("red", "heart", None)]
    # other words for positions, counts, relations and the background
    reading = read("green backdrop with a pair of red circles, a blue star near the right edge beside a white box")
    assert reading.background == "green"
    assert [(m.color, m.shape, m.position, m.count) for m in reading.mentions] == [
        ("red", "circle", None, 2), ("blue", "star", "right", 1), ("white", "square", None, 1)]
    assert [(r.relation, r.a, r.b) for r in reading.relations] == [("next to", 1, 2)]
    assert read("upper-left corner: 4 yellow rings, beautiful").unknown == ["beautiful"]


def test_an_unplaced_object_gets_a_uniformly_drawn_cell_and_the_rest_of_the_prompt_stays() -> None:
    prompt = "a red circle on a blue background"
    planned = [plan(prompt, random.Random(s)).prompt for s in range(270)]
    for text in planned:
        assert text.startswith("a red circle ") and text.endswith(" on a blue background")
        mentions, _ = parse(text)
        assert len(mentions) == 1 and mentions[0].position is not None
    counts = Counter(_cells(t)[0] for t in planned)
    assert set(counts) == set(D.POSITIONS) and min(counts.values()) >= 15  # 30 expected per cell
    assert plan(prompt, random.Random(7)).prompt == plan(prompt, random.Random(7)).prompt


def test_named_positions_are_kept_counts_become_objects_and_other_prompts_are_left_alone() -> None:
    rng = random.Random(0)
    for prompt in ["a red circle in the top left", "a dog on the beach", "", "a red background"]:
        assert plan(prompt, rng).prompt == prompt
    # an unplaced object beside a placed one never takes its cell
    for s in range(50):
        cells = _cells(plan("a red circle in the center and a blue star", random.Random(s)).prompt)
        assert cells[0] == "center" and cells[1] not in (None, "center")
    # a count becomes that many objects, each with its own cell
    for prompt, k in (("two pink rings", 2), ("three green stars", 3), ("a pair of blue boxes", 2)):
        planned = plan(prompt, random.Random(1))
        mentions = parse(planned.prompt)[0]
        assert len(planned.objects) == k == len(mentions) and all(m.count == 1 and m.position for m in mentions)
        assert len({o.obj.position for o in planned.objects}) == k


def test_a_relation_becomes_two_positions_for_which_it_holds_and_sizes_that_fit() -> None:
    for rel, words in D.RELATION_PHRASES.items():
        for word in words:
            for s in range(20):
                planned = plan(f"a tiny red triangle {word} the yellow circle with a black background",
                               random.Random(s))
                text = planned.prompt
                mentions, relations = parse(text)
                assert relations == [] and text.endswith(" with a black background"), text
                assert text.startswith("a tiny red triangle ") and " and a " in text, text
                # each object named with the size its cell was chosen for, and drawn alone with those words
                assert [(m.color, m.shape, m.size, m.position) for m in mentions] == [
                    (o.obj.color, o.obj.shape, o.obj.size, o.obj.position) for o in planned.objects]
                assert mentions[0].size == "small" and all(m.size for m in mentions)
                assert [parse(o.text)[0][0].shape for o in planned.objects] == ["triangle", "circle"]
                a, b = (o.obj for o in planned.objects)
                assert rel in D.relation(a, b) and D.fits(b, [a]), text
    # chains hold too; a relation that cannot hold with the named position is dropped, the position kept
    text = plan("a red circle left of a blue star left of a green ring", random.Random(3)).prompt
    cols = [D.POSITIONS[c][0] for c in _cells(text)]
    assert cols == [0, 1, 2] and text.count(" and ") == 1 and text.count(", ") == 1
    impossible = plan("a red circle above a blue star in the top left", random.Random(0))
    assert [(o.obj.color, o.obj.shape) for o in impossible.objects] == [("red", "circle"), ("blue", "star")]
    assert _cells(impossible.prompt)[1] == "top left" and _cells(impossible.prompt)[0] not in (None, "top left")
    # one object: no size is named, and the object is still listed for the pipeline
    single = plan("a red circle", random.Random(0))
    assert parse(single.prompt)[0][0].size is None and [o.text for o in single.objects] == ["a red circle"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_pipeline_plans_txt2img_from_each_images_generator(tmp_path) -> None:
    import json

    from webui.builtin.pipeline import EaselPipeline

    pipe = make_tiny_pipeline()
    kw = dict(num_inference_steps=2, height=32, width=32, output_type="np")
    out = pipe("a red circle", generator=_gen(1), **kw)
    plain = out.images
    assert out.planned_prompts == ["a red circle"]  # off unless the model's config or the call turns it on
    out = pipe("a red circle", generator=_gen(1), plan_layout=True, **kw)
    planned, first = out.images, out.planned_prompts
    assert _cells(first[0])[0] is not None
    again = pipe("a red circle", generator=_gen(1), plan_layout=True, **kw)
    np.testing.assert_array_equal(planned, again.images)
    assert again.planned_prompts == first and np.abs(planned - plain).max() > 1e-4
    assert not hasattr(pipe, "planned_prompts")  # what a call drew comes back with its output, not on the pipeline
    # the plan is drawn after the noise: a prompt it leaves alone gives exactly the unplanned image
    np.testing.assert_array_equal(pipe("a dog", generator=_gen(1), plan_layout=True, **kw).images,
                                  pipe("a dog", generator=_gen(1), **kw).images)
    # one plan per image, each from its own generator (a batch equals the images made one by one)
    batch = pipe(["a blue star"] * 6, generator=[_gen(s) for s in range(6)], plan_layout=True, **kw).planned_prompts
    singles = [pipe("a blue star", generator=_gen(s), plan_layout=True, **kw).planned_prompts[0] for s in range(6)]
    assert batch == singles and len(set(batch)) > 1
    # img2img, inpainting and edits keep their prompt
    src = np.zeros((32, 32, 3), np.uint8)
    out = pipe("a red circle", image=src, strength=0.5, generator=_gen(1), plan_layout=True, **kw)
    assert out.planned_prompts == ["a red circle"]
    out = pipe("add a red circle", source_image=src, generator=_gen(1), plan_layout=True, **kw)
    assert out.planned_prompts == ["add a red circle"]
    # the model's default is saved in model_index.json
    on = EaselPipeline(pipe.transformer, pipe.text_encoder, pipe.scheduler, plan_layout=True)
    on.save_pretrained(tmp_path / "easel")
    assert json.loads((tmp_path / "easel" / "model_index.json").read_text())["plan_layout"] is True
    loaded = EaselPipeline.from_pretrained(str(tmp_path / "easel"))
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(loaded("a red circle", generator=_gen(1), **kw).images, planned)
    np.testing.assert_array_equal(loaded("a red circle", generator=_gen(1), plan_layout=False, **kw).images, plain)


def test_redraw_repaints_only_each_planned_objects_box_and_only_for_two_or_more() -> None:
    """The redraw passes inpaint each planned object's box: outside the union of the boxes every pixel equals the
    whole-scene pass exactly; inside, the image changes. A single object, or redraw off, gives the plain pass."""
    from webui.builtin.layout import redraw_mask

    pipe = make_tiny_pipeline()
    kw = dict(num_inference_steps=2, output_type="np", plan_layout=True)
    prompt = "a red circle to the left of a blue star"
    out = pipe([prompt] * 2, generator=[_gen(4), _gen(5)], redraw_objects=False, **kw)
    scene, planned = out.images, out.planned_prompts
    out = pipe([prompt] * 2, generator=[_gen(4), _gen(5)], redraw_objects=True, **kw)
    redrawn = out.images
    assert out.planned_prompts == planned  # the redraw passes do not replace what the scene was drawn from
    for i, s in enumerate((4, 5)):
        seed = int(torch.randint(0, 2**62, (1,), generator=_after_noise(s)))  # the draw the pipeline plans from
        objects = [o.obj for o in plan(prompt, random.Random(seed)).objects]
        assert plan(prompt, random.Random(seed)).prompt == planned[i]
        boxes = np.maximum(redraw_mask(objects, 0), redraw_mask(objects, 1)) > 0
        assert 0.05 < boxes.mean() < 0.8
        np.testing.assert_array_equal(redrawn[i][~boxes], scene[i][~boxes])
        assert np.abs(redrawn[i][boxes] - scene[i][boxes]).max() > 1e-3
    one = dict(generator=_gen(4), **kw)
    np.testing.assert_array_equal(pipe("a red circle", redraw_objects=True, **one).images,
                                  pipe("a red circle", redraw_objects=False, **dict(one, generator=_gen(4))).images)


def _after_noise(seed: int) -> torch.Generator:
    """A generator in the state the pipeline leaves it in after drawing a 64x64 image's noise."""
    g = _gen(seed)
    torch.randn((1, 3, 64, 64), generator=g)
    return g


def test_settle_background_with_the_object_colour_clears_stray_dots_and_keeps_neighbours() -> None:
    from webui.builtin.pipeline import settle_background

    bg, obj, other, dot = (torch.tensor(D.PALETTE[c], dtype=torch.float32) / 255.0
                           for c in ("white", "blue", "red", "pink"))
    before = bg[:, None, None].expand(3, 32, 32).clone()
    before[:, 4:20, 0:3] = other[:, None, None]  # another object reaching into the box
    redrawn = before.clone()
    redrawn[:, 12:16, 12:16] = obj[:, None, None]  # the redrawn object
    edge = 0.5 * obj + 0.5 * bg
    redrawn[:, 11, 12:16] = edge[:, None]  # its anti-aliased edge: on the line from background to object
    redrawn[:, 6, 8] = dot  # a stray dot of another colour, 110 RGB from the background
    redrawn[:, 24, 24] = 0.7 * bg + 0.3 * other  # a faint stray dot
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 0:28, 0:28] = 1.0
    out = settle_background(redrawn[None], before[None], mask, colors=obj[None])[0]
    assert torch.equal(out[:, 11:16, 12:16], redrawn[:, 11:16, 12:16])  # object and edge stay
    assert torch.equal(out[:, 6, 8], bg) and torch.equal(out[:, 24, 24], bg)  # stray dots cleared
    assert torch.equal(out[:, 4:20, 0:3], before[:, 4:20, 0:3])  # the neighbour stays
    plain = settle_background(redrawn[None], before[None], mask)[0]
    assert not torch.equal(plain[:, 6, 8], bg)  # without the colour, the pink dot (far from white) stays


def test_settle_background_clears_speckle_in_the_box_and_keeps_the_object() -> None:
    from webui.builtin.pipeline import settle_background

    bg, obj, old = (torch.tensor(D.PALETTE[c], dtype=torch.float32) / 255.0 for c in ("yellow", "orange", "blue"))
    before = bg[:, None, None].expand(3, 32, 32).clone()
    before[:, 10:14, 10:14] = old[:, None, None]  # a wrong object the redraw replaces
    redrawn = before.clone()
    redrawn[:, 8:20, 8:20] = bg[:, None, None] + 0.12 * torch.randn(3, 12, 12).clamp(-1, 1) / 4  # speckle
    redrawn[:, 12:16, 12:16] = obj[:, None, None]  # the redrawn object: 71 RGB from the background
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 6:22, 6:22] = 1.0
    out = settle_background(redrawn[None], before[None], mask)[0]
    assert torch.equal(out[:, 12:16, 12:16], redrawn[:, 12:16, 12:16])  # the object stays
    speckle = torch.zeros(32, 32, dtype=torch.bool)
    speckle[8:20, 8:20] = True
    speckle[12:16, 12:16] = False
    assert torch.allclose(out[:, speckle], bg[:, None].expand(3, int(speckle.sum())))  # background, not speckle
    outside = mask[0, 0] == 0
    assert torch.equal(out[:, outside], redrawn[:, outside])
