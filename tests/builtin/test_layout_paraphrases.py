"""The layout planner on many generated paraphrases: it never gives an object two positions, never drops or adds
an object, keeps named positions, counts and relations, and names the words it did not understand.

The paraphrase generator below is written for this test alone, from its own word lists (it shares only the names
of the colours and shapes with the built-in world), so the planner's grammar is checked against phrasings it was
not written from. Each case records what it asked for; the plan is read back through the training vocabulary's
own words (`data.POSITION_PHRASES`, ...), i.e. as the model reads it."""
from __future__ import annotations

import random
import re

import pytest

from webui.builtin import data as D
from webui.builtin.layout import plan

# -- the test's own phrasings --------------------------------------------------------------------------------
REGION_WORDS = {  # cell -> ways a person might say it
    "top left": ["in the upper left", "top-left corner", "at the top left", "in the upper-left corner",
                 "near the top left corner"],
    "top right": ["in the upper right", "top-right corner", "upper right corner"],
    "bottom left": ["in the lower left", "at the bottom-left", "near the lower left corner"],
    "bottom right": ["in the lower right", "bottom right corner", "at the bottom right"],
    "top": ["at the top", "near the top edge", "along the top"],
    "bottom": ["at the bottom", "near the bottom edge", "toward the bottom"],
    "left": ["on the left", "near the left edge", "at the far left"],
    "right": ["on the right", "near the right edge", "at the far right"],
    "center": ["in the middle", "in the centre", "at the center"],
}
COUNT_WORDS = {1: ["a", "one", "a single", "just one"], 2: ["two", "2", "a pair of"], 3: ["three", "3"],
               4: ["four", "4"]}
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses",
          "ring": "rings"}
RELATION_WORDS = {"left of": ["to the left of", "on the left of", "left of"],
                  "right of": ["to the right of", "on the right of"], "above": ["above", "on top of"],
                  "below": ["below", "underneath", "beneath"], "next to": ["next to", "beside"]}
BACKGROUNDS = ["{x} on a {c} background", "{c} background with {x}", "{x}, {c} background", "{x} against {c}",
               "{x}"]
NOISE = ["", "", "", " , very pretty", " , zqxv style", " please"]


def _obj(rng: random.Random, color: str, shape: str, count: int) -> str:
    word = rng.choice(COUNT_WORDS[count])
    noun = shape if count == 1 else PLURAL[shape]
    colour = color if rng.random() < 0.8 else f"{color}-colored"
    return f"{word} {colour} {noun}"


def paraphrase(rng: random.Random) -> tuple[str, dict]:
    """A prompt and what it asks for: objects (colour, shape, count, cell or None), a relation, a background."""
    bg = rng.choice(D.COLORS)
    kinds = rng.sample([(c, s) for c in D.COLORS if c != bg for s in D.SHAPES], 3)
    kind = rng.choice(["single", "list", "relation", "count"])
    want: dict = {"background": bg, "relation": None}
    if kind == "single":
        cell = rng.choice([None, *REGION_WORDS])
        text = _obj(rng, *kinds[0], 1)
        if cell:
            place = rng.choice(REGION_WORDS[cell])
            text = f"{text} {place}" if rng.random() < 0.7 else f"{place}, {text}"
        want["objects"] = [(*kinds[0], 1, cell)]
    elif kind == "list":
        k = rng.choice([2, 3])
        cells = rng.sample(list(REGION_WORDS), k)
        parts, objects = [], []
        for (c, s), cell in zip(kinds[:k], cells):
            named = rng.random() < 0.5
            parts.append(_obj(rng, c, s, 1) + (" " + rng.choice(REGION_WORDS[cell]) if named else ""))
            objects.append((c, s, 1, cell if named else None))
        text = ", ".join(parts) if rng.random() < 0.5 else ", ".join(parts[:-1]) + " and " + parts[-1]
        want["objects"] = objects
    elif kind == "relation":
        rel = rng.choice(list(RELATION_WORDS))
        text = f"{_obj(rng, *kinds[0], 1)} {rng.choice(RELATION_WORDS[rel])} {_obj(rng, *kinds[1], 1)}"
        want["objects"] = [(*kinds[0], 1, None), (*kinds[1], 1, None)]
        want["relation"] = rel
    else:
        n = rng.choice([2, 3, 4])
        text = _obj(rng, *kinds[0], n)
        want["objects"] = [(*kinds[0], n, None)]
    template = rng.choice(BACKGROUNDS)
    text = template.format(x=text, c=bg) + rng.choice(NOISE)
    want["background_named"] = "{c}" in template
    return text, want


# -- reading a plan back as the model reads it -----------------------------------------------------------------
_PHRASE_TO_CELL = {p: cell for cell, ps in D.POSITION_PHRASES.items() for p in ps}
_POSITION_RE = re.compile("|".join(re.escape(p) for p in sorted(_PHRASE_TO_CELL, key=len, reverse=True)))


def positions_per_object(prompt: str) -> list[list[str]]:
    """The training-caption position phrases in each ' and '/', '-separated part of a planned prompt."""
    body = re.sub(r" (on|against|with|over) a \w+ background$|\bon \w+$", "", prompt)
    parts = re.split(r", | and ", body)
    return [[_PHRASE_TO_CELL[m.group(0)] for m in _POSITION_RE.finditer(p)] for p in parts]


@pytest.mark.parametrize("seed", range(8))
def test_plans_of_generated_paraphrases_keep_every_object_once_with_one_position(seed: int) -> None:
    rng = random.Random(1000 + seed)
    for _ in range(60):
        text, want = paraphrase(rng)
        p = plan(text, random.Random(rng.randrange(1 << 30)))
        expected = sorted((c, s) for c, s, n, _ in want["objects"] for _ in range(n))
        # never drops an object, never invents one; each object appears once in the prompt with exactly one position
        assert sorted((o.obj.color, o.obj.shape) for o in p.objects) == expected, (text, p.prompt)
        per_object = positions_per_object(p.prompt)
        assert len(per_object) == len(expected) and all(len(cells) == 1 for cells in per_object), (text, p.prompt)
        assert [cells[0] for cells in per_object] == [o.obj.position for o in p.objects], (text, p.prompt)
        assert len({o.obj.position for o in p.objects}) == len(p.objects)  # no two objects share a cell
        # every position the prompt named is where that object goes
        named = [(c, s, cell) for c, s, _, cell in want["objects"] if cell]
        for c, s, cell in named:
            assert any((o.obj.color, o.obj.shape, o.obj.position) == (c, s, cell) for o in p.objects), (text, p.prompt)
        if want["relation"]:
            a, b = p.objects
            (ac, ar), (bc, br) = D.POSITIONS[a.obj.position], D.POSITIONS[b.obj.position]
            ok = {"left of": ac < bc, "right of": ac > bc, "above": ar < br, "below": ar > br,
                  "next to": ar == br and abs(ac - bc) == 1}[want["relation"]]
            assert ok, (text, p.prompt)
        if want["background_named"]:
            assert p.prompt.endswith(f"{want['background']} background") or p.prompt.endswith(
                f" on {want['background']}"), (text, p.prompt)
        # the model reads every word of the plan (nothing reaches it as <unk>)
        assert all(w in D.vocabulary() for w in D.tokenize_words(p.prompt)), p.prompt
        # words outside the world are named, never silently used
        for junk in ("zqxv", "pretty", "please"):
            assert (junk in text) == (junk in p.unknown), (text, p.unknown)


def test_a_seed_repeats_the_plan_and_an_objectless_prompt_is_left_as_it_is() -> None:
    rng = random.Random(7)
    for _ in range(40):
        text, _ = paraphrase(rng)
        s = rng.randrange(1 << 30)
        assert plan(text, random.Random(s)) == plan(text, random.Random(s))
    for text in ["a dog on the beach", "zqxv", "", "a blue background"]:
        assert plan(text, random.Random(0)).prompt == text and plan(text, random.Random(0)).objects == []
    assert plan("a dog on the beach", random.Random(0)).unknown == ["dog", "beach"]
