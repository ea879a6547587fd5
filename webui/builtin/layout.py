"""Layout planning for the built-in model: give every object the prompt places nowhere a grid position.

Asked for "a red circle" with no position, the built-in model does not settle on one of the nine grid cells
where its training scenes put objects: it draws the circle faintly in several cells at once and each copy then
sharpens (measured on step 17945: 24 of 30 position-free single-object prompts gave two or more objects; with a
position named, 64 of 66 gave exactly the object asked for). "A green square to the left of a purple triangle"
fails the same way, with whole rows of squares and triangles. Planning the layout first and letting the model
draw it, as layout-grounded pipelines do (LLM-grounded Diffusion, arXiv 2305.13655), removes that choice from the
model: `plan` samples positions the way the training scenes place objects (a uniformly random cell, objects that
fit without overlapping) and writes them into the prompt in the training captions' own words:

    "a red circle on a blue background"  ->  "a red circle in the top right on a blue background"
    "a green square to the left of a purple triangle"
        ->  "a large green square in the bottom left and a small purple triangle on the right"

(any cells with the square's column left of the triangle's; with two or more objects each also gets the size
its cell was chosen for). An object is a colour word followed by a shape word or by a word the built-in world
does not know (a LoRA's trigger word: "a red heart" is placed like "a red circle"). Objects with a position keep
it, plural groups ("two pink rings") are left to the model, and a prompt with no such object (or whose named
positions cannot all hold) comes back unchanged. The plan also lists each object with its own words and its
place, from which the pipeline can redraw objects one at a time (`redraw_mask`). It is a pure function of the
prompt and the `random.Random` given, so a seed reproduces it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np

from webui.builtin import data as D

MAX_TRIES = 2000  # layouts drawn before giving up (the prompt is then returned as it is); ~10 µs each


def _alternation(words: list[str]) -> str:
    """A regex alternation of `words`, longest first so "plus sign" wins over "plus"."""
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


_WORD_TO = {
    "size": {w: k for k, ws in D.SIZE_WORDS.items() for w in ws},
    "color": {w: k for k, ws in D.COLOR_WORDS.items() for w in ws},
    "shape": {w: k for k, ws in D.SHAPE_WORDS.items() for w in ws},
    "position": {w: k for k, ws in D.POSITION_PHRASES.items() for w in ws},
    "relation": {w: k for k, ws in D.RELATION_PHRASES.items() for w in ws},
}


_OBJECT = re.compile(
    rf"(?<![\w-])(?P<body>(?:(?P<article>an?|one|the)\s+)?(?:(?P<size>{_alternation(list(_WORD_TO['size']))})\s+)?"
    rf"(?P<color>{_alternation(list(_WORD_TO['color']))})\s+(?P<shape>{_alternation(list(_WORD_TO['shape']))}|[a-z]+))"
    rf"(?![\w-])(?:\s+(?P<position>{_alternation(list(_WORD_TO['position']))})(?![\w-]))?", re.IGNORECASE)
_VOCABULARY = frozenset(D.vocabulary())
_GAP_RELATION = re.compile(rf"\s+(?P<relation>{_alternation(list(_WORD_TO['relation']))})\s+", re.IGNORECASE)


@dataclass
class Mention:
    """One singular object named in the prompt: where its words are, what it is, where (if anywhere) it is."""

    start: int  # span of the object's words (article, size, colour, shape) in the prompt
    end: int
    color: str
    shape: str
    size: str | None
    position: str | None  # named in the prompt, or None
    phrase_end: int  # end of the mention, a named position included
    words: tuple[str | None, str | None, str, str]  # article, size, colour, shape as typed


@dataclass
class Relation:
    """"A <relation> B" between consecutive mentions a and b = a + 1; the relation's words fill the gap
    between A's phrase and B's words."""

    relation: str
    a: int
    b: int


def parse(prompt: str) -> tuple[list[Mention], list[Relation]]:
    """The singular objects a prompt names (in order) and the relations ("left of", "above", ...) that join
    neighbouring ones."""
    mentions: list[Mention] = []
    for m in _OBJECT.finditer(prompt):
        size, position, shape = m.group("size"), m.group("position"), m.group("shape").lower()
        if shape not in _WORD_TO["shape"] and shape in _VOCABULARY:
            continue  # "a blue background", "a red and ...": a word of the built-in world that is no shape
        mentions.append(Mention(m.start("body"), m.end("body"), _WORD_TO["color"][m.group("color").lower()],
                                _WORD_TO["shape"].get(shape, shape),
                                _WORD_TO["size"][size.lower()] if size else None,
                                _WORD_TO["position"][position.lower()] if position else None, m.end(),
                                (m.group("article"), size, m.group("color"), m.group("shape"))))
    relations = []
    for i in range(len(mentions) - 1):
        gap = _GAP_RELATION.fullmatch(prompt, mentions[i].phrase_end, mentions[i + 1].start)
        if gap:
            relations.append(Relation(_WORD_TO["relation"][gap.group("relation").lower()], i, i + 1))
    return mentions, relations


def sample_layout(mentions: list[Mention], relations: list[Relation], rng: random.Random) -> list[D.Obj] | None:
    """One object per mention at a grid cell, named positions kept, every relation holding and no two objects
    overlapping (sizes the prompt leaves open are drawn too, as the training scenes draw them); None when
    MAX_TRIES layouts all fail."""
    for _ in range(MAX_TRIES):
        placed: list[D.Obj] = []
        for m in mentions:
            obj = D.random_object(rng, "", position=m.position, color=m.color, shape=m.shape, size=m.size)
            if not D.fits(obj, placed):
                break
            placed.append(obj)
        else:
            if all(r.relation in D.relation(placed[r.a], placed[r.b]) for r in relations):
                return placed
    return None


@dataclass
class PlannedObject:
    """One object of a planned layout: its own words ("a large red circle", for redrawing it alone) and where it
    goes (a `data.Obj`: colour, shape, size, cell, centre and radius in 64x64 pixels)."""

    text: str
    obj: D.Obj


@dataclass
class Plan:
    prompt: str  # the prompt with the layout written in (the prompt as given when nothing was planned)
    objects: list[PlannedObject]  # empty when nothing was planned


def plan(prompt: str, rng: random.Random) -> Plan:
    """Plan the layout of `prompt`: a grid position written after every singular object that has none, "A
    <relation> B" rewritten as "A <position> and B <position>" with positions for which the relation holds, and,
    when there are two or more objects, a size word for each that has none (so that each is drawn the size its
    cell was chosen for). Nothing planned when the prompt names no object, every object has a position and there
    is no relation, or no layout fits."""
    mentions, relations = parse(prompt)
    if not mentions or (all(m.position for m in mentions) and not relations):
        return Plan(prompt, [])
    layout = sample_layout(mentions, relations, rng)
    if layout is None:
        return Plan(prompt, [])
    name_sizes = len(mentions) > 1
    second = {r.b for r in relations}  # "the B" of a relation becomes "a B" in the list
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), non-overlapping
    objects = []
    for i, (m, obj) in enumerate(zip(mentions, layout)):
        article, size, color, shape = m.words
        if size is None and name_sizes:
            size = rng.choice(D.SIZE_WORDS[obj.size])
        core = " ".join(w for w in (size, color, shape) if w)
        if article is None:
            body = core
        elif article.lower() in ("a", "an") or (article.lower() == "the" and i in second):
            body = D._article(core)
        else:
            body = f"{article} {core}"
        if m.position is None:
            body += " " + rng.choice(D.POSITION_PHRASES[obj.position])
        edits.append((m.start, m.end, body))
        objects.append(PlannedObject(D._article(core), obj))
    for r in relations:  # the relation's words between A (and its named position) and B become "and"
        edits.append((mentions[r.a].phrase_end, mentions[r.b].start, " and "))
    out = prompt
    for start, end, text in sorted(edits, reverse=True):
        out = out[:start] + text + out[end:]
    return Plan(out, objects)


def redraw_mask(objects: list[D.Obj], k: int, margin: float = 4.0) -> np.ndarray:
    """Float {0,1} mask [64,64] for redrawing object k of a layout: a square `margin` px beyond its radius (the
    inpainting training's boxes add 2-6 px), less every pixel within 1 px of another object's radius."""
    obj = objects[k]
    yy, xx = np.mgrid[0:D.SIZE, 0:D.SIZE] + 0.5  # pixel centres
    r = obj.radius + margin
    mask = (np.abs(xx - obj.cx) <= r) & (np.abs(yy - obj.cy) <= r)
    for j, other in enumerate(objects):
        if j != k:
            mask &= np.hypot(xx - other.cx, yy - other.cy) > other.radius + 1.0
    return mask.astype(np.float32)
