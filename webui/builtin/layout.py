"""Layout planning for the built-in model: read what a prompt asks for, place it, and say it in the model's words.

Asked for "a red circle" with no position, the built-in model does not settle on one of the nine grid cells
where its training scenes put objects: it draws the circle faintly in several cells at once and each copy then
sharpens (measured on step 17945: 24 of 30 position-free single-object prompts gave two or more objects; with a
position named, 64 of 66 gave exactly the object asked for). Relations ("a green square to the left of a purple
triangle") and counts ("two blue squares") fail the same way. Planning the layout first and letting the model
draw it, as layout-grounded pipelines do (LLM-grounded Diffusion, arXiv 2305.13655), removes that choice from the
model. `plan` reads the prompt with a small grammar that is wider than the training captions:

- **objects**: an optional count (a, an, one, a single, just a, two, three, four, 2-4, a pair of, a couple of),
  an optional size word, a colour word (optionally "-colored"), then a shape word, singular or plural, or a word
  the built-in world does not know (a LoRA's trigger word: "a red heart"); a shape word alone ("a star") is an
  object too, its colour left to the model;
- **positions**: a region in any of the usual words, with or without a preposition: "in the upper left",
  "top-left corner", "near the right edge", "at the far left", "toward the bottom", "dead center", ...; a
  position belongs to the object it follows (or, before the first object, to the first object), and an object
  keeps the first position it is given;
- **relations** between neighbouring objects: left of / right of / above / below (in several wordings:
  "on the left of", "on top of", "higher than", "underneath", ...) and next to ("beside", "alongside");
- **the background**: "on a blue background", "blue background with ...", "against blue", "on a blue backdrop",
  "the background is blue".

It then draws a layout the way the training scenes place objects (a uniformly random cell for each object, named
cells kept, every relation holding, nothing overlapping; a count becomes that many objects), and writes the
prompt anew in the training captions' own words, each object exactly once with exactly one position:

    "a red circle on a blue background"  ->  "a red circle in the top right on a blue background"
    "green background with two blue squares"
        ->  "a small blue square in the top left and a large blue square at the bottom on a green background"

With two or more objects each also gets the size its cell was chosen for. When the relations cannot all hold
they are dropped (the named positions kept), and when the named positions cannot hold either they are dropped
too; the plan never loses an object. A prompt with no object comes back unchanged. Words the grammar did not use
and the model does not know are listed in `Plan.unknown` (the UI shows them). The plan also lists each object
with its own words and its place, from which the pipeline can redraw objects one at a time (`redraw_mask`). It is
a pure function of the prompt and the `random.Random` given, so a seed reproduces it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import numpy as np

from webui.builtin import data as D

MAX_TRIES = 2000  # layouts drawn before relaxing the constraints; ~10 µs each
MAX_OBJECTS = 6  # more objects than this are not planned (the prompt is returned as it is)


def _alternation(words) -> str:
    """A regex alternation of `words`, longest first so "plus sign" wins over "plus"."""
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


_COLOR = {w: k for k, ws in D.COLOR_WORDS.items() for w in ws}
_SHAPE = {w: k for k, ws in D.SHAPE_WORDS.items() for w in ws}
_SHAPE.update({D.PLURALS[w]: _SHAPE[w] for w in list(_SHAPE)})
_SINGULAR = {p: w for w, p in D.PLURALS.items()}
_SIZE = {w.replace("-", " "): k for k, ws in D.SIZE_WORDS.items() for w in ws}
_SIZE_TYPED = {w.replace("-", " "): w for ws in D.SIZE_WORDS.values() for w in ws}  # "medium sized" -> "medium-sized"
_COUNTS = {"a": 1, "an": 1, "one": 1, "the": 1, "a single": 1, "single": 1, "just a": 1, "just one": 1,
           "only one": 1, "just an": 1, "two": 2, "three": 3, "four": 4, "a pair of": 2, "pair of": 2,
           "a couple of": 2, "both": 2}
_DIGITS = {"1": "one", "2": "two", "3": "three", "4": "four"}
_VOCABULARY = frozenset(D.vocabulary())
_SURFACE = r"(?:background|backdrop|field|canvas|backround|bg)"
_C = _alternation(_COLOR)

_BACKGROUND = re.compile(
    rf"(?:(?:on|against|over|with|in front of)\s+)?(?:(?:a|an|the)\s+)?(?:(?:plain|solid|flat|light|simple)\s+)?"
    rf"(?P<c1>{_C})(?:\s+colou?red)?\s+{_SURFACE}(?:\s+with)?"
    rf"|(?:the\s+)?{_SURFACE}\s+(?:is|of|in)\s+(?P<c2>{_C})"
    rf"|(?:on|against|over)\s+(?:plain\s+)?(?P<c3>{_C})(?!\s+(?:colou?red\s+)?(?:{_alternation(_SHAPE)})\b)(?![\w])")
_RELATION = re.compile(
    r"(?:(?:placed|positioned|sitting|sits|located|is|which is|that is|standing|lying)\s+)?(?:"
    r"(?P<left>(?:(?:to|on)\s+)?(?:the\s+)?left(?:\s+(?:hand\s+)?side)?\s+of)"
    r"|(?P<right>(?:(?:to|on)\s+)?(?:the\s+)?right(?:\s+(?:hand\s+)?side)?\s+of)"
    r"|(?P<above>above|over|on\s+top\s+of|atop|higher\s+than|up\s+above)"
    r"|(?P<below>below|under|underneath|beneath|lower\s+than|down\s+below)"
    r"|(?P<next>next\s+to|beside|besides|alongside|by\s+the\s+side\s+of))(?![\w])")
_POSITION = re.compile(
    r"(?:(?:in|at|on|near|toward|towards|along|to|by|up\s+in|down\s+in|over\s+in|across)\s+)?"
    r"(?:the\s+)?(?:(?:very|far|extreme|dead)\s+)?(?:"
    r"(?P<v>top|upper|bottom|lower)\s+(?P<h>left|right)"
    r"|(?P<h1>left|right)(?:\s+(?P<v1>top|upper|bottom|lower))?"
    r"|(?P<v2>top|upper|bottom|lower)(?:\s+(?:middle|center|centre))?"
    r"|(?P<m>center|centre|middle))"
    r"(?:\s+(?:corner|edge|side|border|half|part|area|region|end))?"
    r"(?:\s+of\s+the\s+(?:image|picture|canvas|frame|scene|background))?(?![\w])")
_OBJECT = re.compile(
    rf"(?:(?P<count>{_alternation(_COUNTS)})\s+)?(?:(?P<size>{_alternation(_SIZE)})\s+)?"
    rf"(?:(?P<color>{_C})(?:\s+colou?red)?\s+)?(?P<shape>{_alternation(_SHAPE)}|[a-z]+)(?![\w])")


@dataclass
class Mention:
    """One object (or a counted group of alike objects) named in the prompt."""

    start: int  # span of the object's words in the normalised prompt (`normalise`)
    end: int
    color: str | None  # None: no colour named
    shape: str  # a shape of the built-in world, or the word as typed (a LoRA's trigger word)
    size: str | None
    position: str | None  # a grid cell named in the prompt, or None
    count: int = 1
    words: tuple[str | None, str | None, str] = (None, None, "")  # size, colour, shape words as typed (singular)
    position_words: str | None = None  # the position's phrase as typed (normalised)


@dataclass
class Relation:
    """"A <relation> B" between consecutive mentions a and b = a + 1 ("left of", ..., "next to")."""

    relation: str
    a: int
    b: int


@dataclass
class Reading:
    """What `read` found: the objects in order, the relations between neighbours, the background colour, and the
    words it used for none of them that the model does not know either."""

    mentions: list[Mention]
    relations: list[Relation]
    background: str | None = None
    background_words: str | None = None  # the background's phrase as typed, when it is one of the training's
    unknown: list[str] = field(default_factory=list)


def normalise(prompt: str) -> str:
    """Lowercase; hyphens and underscores become spaces; digits 1-4 become words; runs of spaces one."""
    text = re.sub(r"[-_/]", " ", prompt.lower())
    text = re.sub(r"\b[1-4]\b", lambda m: _DIGITS[m.group(0)], text)
    return re.sub(r"\s+", " ", text).strip()


def _cell(m: re.Match) -> str:
    v = m.group("v") or m.group("v1") or m.group("v2")
    h = m.group("h") or m.group("h1") or ""
    row = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom", None: ""}[v]
    return f"{row} {h}".strip() or "center"


def read(prompt: str) -> Reading:
    """Parse a prompt (see the module docstring); spans refer to `normalise(prompt)`."""
    text = normalise(prompt)
    used = np.zeros(len(text) + 1, bool)

    def free(m: re.Match) -> bool:
        return not used[m.start():m.end()].any()

    background = background_words = None
    for m in _BACKGROUND.finditer(text):
        if free(m) and background is None:
            word = m.group("c1") or m.group("c2") or m.group("c3")
            background = _COLOR[word]
            phrase = m.group(0).removesuffix(" with")
            if any(phrase == p.format(c=word) for p in D.BACKGROUND_PHRASES):
                background_words = phrase
            used[m.start():m.end()] = True
    relations_at = []
    for m in _RELATION.finditer(text):
        if free(m):
            rel = next(k for k in ("left", "right", "above", "below", "next") if m.group(k))
            relations_at.append((m.start(), {"left": "left of", "right": "right of", "next": "next to"}.get(rel, rel)))
            used[m.start():m.end()] = True
    positions_at = []
    for m in _POSITION.finditer(text):
        if m.end() > m.start() and free(m):
            positions_at.append((m.start(), _cell(m), m.group(0)))
            used[m.start():m.end()] = True
    mentions: list[Mention] = []
    for m in _OBJECT.finditer(text):
        shape_word, color_word = m.group("shape"), m.group("color")
        if not free(m):
            continue
        known = shape_word in _SHAPE
        if not known and (color_word is None or shape_word in _VOCABULARY):
            continue  # a word of the world that is no shape ("a red and ..."), or a bare unknown word
        count = _COUNTS[m.group("count")] if m.group("count") else 1
        singular = _SINGULAR.get(shape_word, shape_word)
        if not known and count > 1 and singular.endswith("s"):
            singular = singular[:-1]
        size = m.group("size")
        mentions.append(Mention(m.start(), m.end(), _COLOR[color_word] if color_word else None,
                                _SHAPE.get(shape_word, singular), _SIZE[size] if size else None, None, count,
                                (size, color_word, singular)))
        used[m.start():m.end()] = True
    # a position belongs to the object before it (before the first object: to the first); the first one given wins
    for at, cell, phrase in positions_at:
        before = [i for i, x in enumerate(mentions) if x.start < at]
        i = before[-1] if before else 0
        if mentions and mentions[i].position is None and mentions[i].count == 1:
            mentions[i].position, mentions[i].position_words = cell, phrase
    relations = []
    for at, rel in relations_at:
        i = len([x for x in mentions if x.start < at]) - 1
        if 0 <= i < len(mentions) - 1 and mentions[i].count == 1 and mentions[i + 1].count == 1 and \
                all(r.a != i for r in relations):
            relations.append(Relation(rel, i, i + 1))
    unknown = [w.group(0) for w in re.finditer(r"[a-z]+", text)
               if not used[w.start():w.end()].any() and w.group(0) not in _VOCABULARY]
    return Reading(mentions, relations, background, background_words, list(dict.fromkeys(unknown)))


def parse(prompt: str) -> tuple[list[Mention], list[Relation]]:
    """The objects a prompt names (in order) and the relations that join neighbouring ones."""
    reading = read(prompt)
    return reading.mentions, reading.relations


def unknown_words(prompt: str, known: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Words of `prompt` that the model's vocabulary does not hold (they reach it as `<unk>`), except `known`
    ones (a LoRA's learned words), in order, each once."""
    words = re.findall(r"[^\W\d_]+", prompt.lower())
    return list(dict.fromkeys(w for w in words if w not in _VOCABULARY and w not in known))


def holds(relation: str, a: D.Obj, b: D.Obj) -> bool:
    """Whether a stands in `relation` to b by grid cell; "next to": neighbouring cells of one row."""
    if relation == "next to":
        (ac, ar), (bc, br) = D.POSITIONS[a.position], D.POSITIONS[b.position]
        return ar == br and abs(ac - bc) == 1
    return relation in D.relation(a, b)


def sample_layout(objects: list[Mention], relations: list[Relation], rng: random.Random,
                  background: str | None = None) -> list[D.Obj] | None:
    """One object per (single) mention at a grid cell, named positions kept, every relation holding and no two
    objects overlapping; None when MAX_TRIES layouts all fail."""
    for _ in range(MAX_TRIES):
        placed: list[D.Obj] = []
        for m in objects:
            obj = D.random_object(rng, background or "", position=m.position, color=m.color, shape=m.shape,
                                  size=m.size)
            if not D.fits(obj, placed):
                break
            placed.append(obj)
        else:
            if all(holds(r.relation, placed[r.a], placed[r.b]) for r in relations):
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
    prompt: str  # the prompt in the model's words with the layout written in (as given when nothing was planned)
    objects: list[PlannedObject]  # empty when nothing was planned
    unknown: list[str] = field(default_factory=list)  # words neither the planner nor the model understood


def plan(prompt: str, rng: random.Random) -> Plan:
    """Plan the layout of `prompt` (see the module docstring)."""
    reading = read(prompt)
    mentions = reading.mentions
    if not mentions or sum(m.count for m in mentions) > MAX_OBJECTS:
        return Plan(prompt, [], unknown_words(prompt))
    singles: list[Mention] = []  # a counted group becomes that many objects
    first: list[int] = []  # index in `singles` of each mention's first object
    for m in mentions:
        first.append(len(singles))
        singles.extend(Mention(m.start, m.end, m.color, m.shape, m.size, m.position if m.count == 1 else None, 1,
                               m.words, m.position_words) for _ in range(m.count))
    relations = [Relation(r.relation, first[r.a], first[r.b]) for r in reading.relations]
    layout = sample_layout(singles, relations, rng, reading.background)
    if layout is None:  # the relations cannot all hold: keep the named positions
        layout = sample_layout(singles, [], rng, reading.background)
    if layout is None:  # nor the named positions: keep the objects
        layout = sample_layout([Mention(0, 0, m.color, m.shape, m.size, None) for m in singles], [], rng,
                               reading.background)
    if layout is None:
        return Plan(prompt, [], reading.unknown)
    name_sizes = len(singles) > 1
    parts, objects = [], []
    for m, obj in zip(singles, layout):
        size_word, color_word, shape_word = m.words
        size = _SIZE_TYPED[size_word] if size_word in _SIZE and _SIZE[size_word] == obj.size else (
            rng.choice(D.SIZE_WORDS[obj.size]) if name_sizes else None)
        color = color_word if m.color and color_word in _COLOR else rng.choice(D.COLOR_WORDS[obj.color])
        core = " ".join(w for w in (size, color, shape_word) if w)
        kept = m.position is not None and m.position_words in D.POSITION_PHRASES[obj.position]
        where = m.position_words if kept else rng.choice(D.POSITION_PHRASES[obj.position])
        parts.append(f"{D._article(core)} {where}")
        objects.append(PlannedObject(D._article(core), obj))
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if reading.background:
        body += " " + (reading.background_words or f"on a {reading.background} background")
    return Plan(body, objects, reading.unknown)


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
