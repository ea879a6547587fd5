"""Procedural training data for Easel's built-in model: scenes of coloured shapes, their captions and edit tasks.

A `Scene` is one background colour and one to three non-overlapping objects, each a colour, a shape, a size and
one of nine grid positions. `render` draws a scene with anti-aliasing (supersampled, then box-filtered, so flat
regions hold the exact palette values) and returns the image and one coverage mask per object. `sample_example`
turns a seed into one training example of a task: text-to-image (a caption), an instruction edit (recolour,
remove, add, highlight = segmentation as editing, including queries for absent objects) or inpainting. Every
function here is deterministic given its `random.Random`; `example_rng(seed, index, split)` keeps the training
and held-out splits in disjoint seed ranges.

Just over 500 lines: the world (palette, shapes, rendering, words) and its tasks share one set of constants and
are kept in one place so the renderer and the captions cannot drift apart.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64  # output resolution in pixels
SUPERSAMPLE = 4  # render at SIZE*SUPERSAMPLE, then box-filter down

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 70), "blue": (40, 90, 220), "yellow": (240, 200, 40),
    "orange": (240, 130, 30), "purple": (140, 60, 180), "pink": (240, 120, 190), "white": (245, 245, 245),
    "black": (25, 25, 25), "gray": (130, 130, 130),
}
COLORS = list(PALETTE)
HIGHLIGHTS: dict[str, tuple[int, int, int]] = {"magenta": (255, 0, 255), "cyan": (0, 255, 255)}
DEFAULT_HIGHLIGHT = "magenta"
SHAPES = ["circle", "square", "triangle", "star", "cross", "ring"]
SIZES = {"small": 5.5, "medium": 8.5, "large": 12.0}  # circumradius in output pixels
POSITIONS: dict[str, tuple[int, int]] = {  # name -> (column, row) on a 3x3 grid
    "top left": (0, 0), "top": (1, 0), "top right": (2, 0),
    "left": (0, 1), "center": (1, 1), "right": (2, 1),
    "bottom left": (0, 2), "bottom": (1, 2), "bottom right": (2, 2),
}
GRID = (16.0, 32.0, 48.0)  # pixel centre of each grid column/row at SIZE=64
# Objects sit exactly on the grid, at their size's radius, upright: a discrete world. With a few pixels of jitter,
# radius and rotation variation the model drew soft blobs (every patch's content then varies continuously); on the
# exact grid it draws crisp shapes after a fraction of the training (models/builtin/README.md). The random draws
# for these variations are still made (times 0), so every other random choice of a seed's scenes is unchanged.
JITTER = 0.0  # px around the grid centre
RADIUS_JITTER = 0.0  # relative
ROTATION = 0.0  # degrees, for square, triangle, star and cross

TASKS = ("txt2img", "recolor", "remove", "add", "highlight", "absent", "inpaint")
TASK_WEIGHTS = (0.5, 0.1, 0.08, 0.08, 0.1, 0.04, 0.1)  # txt2img half; the edit tasks share the other half
EDIT_TASKS = TASKS[1:]
SPLIT_OFFSET = {"train": 0, "eval": 1 << 40}


@dataclass(frozen=True)
class Obj:
    """One object of a scene; `cx`, `cy` and `radius` are in output pixels."""

    color: str
    shape: str
    size: str
    position: str
    cx: float
    cy: float
    radius: float
    angle: float = 0.0  # rotation in degrees (ROTATION: none in the built-in world)


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[Obj, ...]


@dataclass
class Example:
    """One training/evaluation example. Images are uint8 HxWx3; `mask` is float HxW in {0,1} (inpaint only)."""

    task: str
    prompt: str
    target: np.ndarray
    source: np.ndarray | None = None
    mask: np.ndarray | None = None
    info: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- scenes and drawing


def random_object(rng: random.Random, background: str, position: str | None = None, color: str | None = None,
                  shape: str | None = None, size: str | None = None) -> Obj:
    """An object with the given attributes (random where None), never of the background's colour."""
    color = color or rng.choice([c for c in COLORS if c != background])
    shape = shape or rng.choice(SHAPES)
    size = size or rng.choice(list(SIZES))
    position = position or rng.choice(list(POSITIONS))
    cx, cy, radius, angle = placement(rng, position, size, rotates=shape in ("square", "triangle", "star", "cross"))
    return Obj(color, shape, size, position, cx, cy, radius, angle)


def placement(rng: random.Random, position: str, size: str, rotates: bool) -> tuple[float, float, float, float]:
    """(cx, cy, radius, angle) of an object at a grid `position` and `size`, varied by JITTER, RADIUS_JITTER and
    ROTATION (the angle only when it `rotates`). Always the same random draws for the same `rotates`."""
    col, row = POSITIONS[position]
    cx = GRID[col] + JITTER * rng.uniform(-1.0, 1.0)
    cy = GRID[row] + JITTER * rng.uniform(-1.0, 1.0)
    radius = SIZES[size] * (1.0 + RADIUS_JITTER * rng.uniform(-1.0, 1.0))
    angle = ROTATION * rng.uniform(-1.0, 1.0) if rotates else 0.0
    return cx, cy, radius, angle


def fits(obj: Obj, others: tuple[Obj, ...] | list[Obj]) -> bool:
    """True when `obj` lies inside the canvas and overlaps none of `others` (with a 2 px gap)."""
    if obj.cx - obj.radius < 1 or obj.cy - obj.radius < 1 or obj.cx + obj.radius > SIZE - 1 or \
            obj.cy + obj.radius > SIZE - 1:
        return False
    return all(o.position != obj.position and math.hypot(o.cx - obj.cx, o.cy - obj.cy) >= o.radius + obj.radius + 2
               for o in others)


def random_scene(rng: random.Random, n_objects: int | None = None) -> Scene:
    """A background and 1-3 non-overlapping objects (fewer if placement keeps failing)."""
    background = rng.choice(COLORS)
    n = n_objects or rng.choices([1, 2, 3], weights=[0.45, 0.35, 0.2])[0]
    objects: list[Obj] = []
    for _ in range(n):
        for _attempt in range(30):
            obj = random_object(rng, background)
            if fits(obj, objects):
                objects.append(obj)
                break
    if rng.random() < 0.15 and len(objects) >= 1 and len(objects) < 3:  # repeated objects teach counting
        template = objects[0]
        for _attempt in range(30):
            obj = random_object(rng, background, color=template.color, shape=template.shape)
            if fits(obj, objects):
                objects.append(obj)
                break
    return Scene(background, tuple(objects))


def _polygon(obj: Obj, scale: float) -> list[tuple[float, float]]:
    cx, cy, r = obj.cx * scale, obj.cy * scale, obj.radius * scale
    a0 = math.radians(obj.angle)

    def rot(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        c, s = math.cos(a0), math.sin(a0)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]

    if obj.shape == "square":
        h = r * 0.8
        return rot([(-h, -h), (h, -h), (h, h), (-h, h)])
    if obj.shape == "triangle":
        return rot([(r * math.cos(math.radians(-90 + 120 * k)), r * math.sin(math.radians(-90 + 120 * k)) + r * 0.12)
                    for k in range(3)])
    if obj.shape == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * 0.45
            a = math.radians(-90 + 36 * k)
            pts.append((rr * math.cos(a), rr * math.sin(a) + r * 0.05))
        return rot(pts)
    if obj.shape == "cross":
        a, b = r * 0.95, r * 0.34
        return rot([(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b),
                    (-b, -b)])
    raise ValueError(f"not a polygon shape: {obj.shape}")


def _draw(draw: ImageDraw.ImageDraw, obj: Obj, fill: tuple[int, ...] | int, hole: tuple[int, ...] | int,
          scale: float) -> None:
    cx, cy, r = obj.cx * scale, obj.cy * scale, obj.radius * scale
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif obj.shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        ri = r * 0.52
        draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=hole)
    else:
        draw.polygon(_polygon(obj, scale), fill=fill)


def render(scene: Scene, colors: dict[int, tuple[int, int, int]] | None = None, omit: frozenset[int] = frozenset(),
           size: int = SIZE) -> tuple[np.ndarray, list[np.ndarray]]:
    """Draw `scene`: (uint8 image [size,size,3], one float32 coverage mask [size,size] in [0,1] per object).

    `colors` overrides an object's fill (index -> RGB), e.g. to paint the highlight; `omit` leaves objects out
    (their masks are still returned).
    """
    colors = colors or {}
    big = size * SUPERSAMPLE
    scale = big / SIZE
    bg = PALETTE[scene.background]
    canvas = Image.new("RGB", (big, big), bg)
    draw = ImageDraw.Draw(canvas)
    masks = []
    for i, obj in enumerate(scene.objects):
        if i not in omit:
            _draw(draw, obj, colors.get(i, PALETTE[obj.color]), bg, scale)
        m = Image.new("L", (big, big), 0)
        _draw(ImageDraw.Draw(m), obj, 255, 0, scale)
        masks.append(np.asarray(m.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0)
    image = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.uint8).copy()
    return image, masks


# ------------------------------------------------------------------------------------------------------ language

COLOR_WORDS = {c: [c] for c in COLORS}
COLOR_WORDS["gray"] = ["gray", "grey"]
COLOR_WORDS["purple"] = ["purple", "violet"]
SHAPE_WORDS = {"circle": ["circle", "disk", "disc"], "square": ["square", "box"], "triangle": ["triangle"],
               "star": ["star"], "cross": ["cross", "plus sign", "plus"], "ring": ["ring", "donut", "hoop"]}
PLURALS = {"circle": "circles", "disk": "disks", "disc": "discs", "square": "squares", "box": "boxes",
           "triangle": "triangles", "star": "stars", "cross": "crosses", "plus sign": "plus signs", "plus": "pluses",
           "ring": "rings", "donut": "donuts", "hoop": "hoops"}
SIZE_WORDS = {"small": ["small", "little", "tiny"], "medium": ["medium", "medium-sized", "mid-sized"],
              "large": ["large", "big", "huge"]}
POSITION_PHRASES = {
    "top left": ["in the top left", "at the top left", "in the upper left corner", "in the top-left corner"],
    "top right": ["in the top right", "at the top right", "in the upper right corner", "in the top-right corner"],
    "bottom left": ["in the bottom left", "at the bottom left", "in the lower left corner",
                    "in the bottom-left corner"],
    "bottom right": ["in the bottom right", "at the bottom right", "in the lower right corner",
                     "in the bottom-right corner"],
    "top": ["at the top", "at the top center", "in the upper middle"],
    "bottom": ["at the bottom", "at the bottom center", "in the lower middle"],
    "left": ["on the left", "at the left", "on the left side"],
    "right": ["on the right", "at the right", "on the right side"],
    "center": ["in the center", "in the middle", "at the centre", "in the centre"],
}
BACKGROUND_PHRASES = ["on a {c} background", "against a {c} background", "on {c}", "with a {c} background",
                      "over a {c} background"]
RELATION_PHRASES = {"left of": ["to the left of", "left of"], "right of": ["to the right of", "right of"],
                    "above": ["above", "over"], "below": ["below", "under", "beneath"]}
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
SCENE_PREFIXES = ["", "", "", "a picture of ", "an image of ", "a drawing of ", "draw ", "show ", "there is "]
EDIT_VERBS = {
    "recolor": ["make {ref} {c}", "change {ref} to {c}", "turn {ref} {c}", "recolor {ref} {c}", "paint {ref} {c}",
                "change the color of {ref} to {c}", "color {ref} {c}"],
    "remove": ["remove {ref}", "delete {ref}", "erase {ref}", "take away {ref}", "get rid of {ref}",
               "remove {ref} from the picture"],
    "add": ["add {obj}", "put {obj}", "draw {obj}", "add {obj} to the picture", "place {obj}", "insert {obj}"],
    "highlight": ["highlight {ref}", "segment {ref}", "select {ref}", "mark {ref}", "find {ref}",
                  "highlight {ref} in {h}", "segment {ref} in {h}", "mark {ref} in {h}", "paint {ref} {h}"],
}
INPAINT_EXTRA = ["fill in", "background", "nothing", "empty", "just the background", "only background"]


def tokenize_words(text: str) -> list[str]:
    """The word-level split shared with the tokenizer: lowercase, words and single punctuation marks."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


def vocabulary() -> list[str]:
    """Every word the caption and instruction generators can produce, sorted (the tokenizer's vocabulary)."""
    phrases: list[str] = []
    for table in (COLOR_WORDS, SHAPE_WORDS, SIZE_WORDS, POSITION_PHRASES, RELATION_PHRASES, EDIT_VERBS):
        for words in table.values():
            phrases.extend(words)
    phrases += list(PLURALS.values()) + list(NUMBER_WORDS.values()) + list(HIGHLIGHTS) + SCENE_PREFIXES
    phrases += BACKGROUND_PHRASES + INPAINT_EXTRA
    phrases += ["a", "an", "the", "and", "with", "of", "on", "in", "at", ",", ".", "-", "there", "is", "are", "one",
                "object", "shape", "scene", "picture", "image", "color", "colored", "no", "background"]
    words = {w for p in phrases for w in tokenize_words(p.replace("{ref}", "").replace("{c}", "").replace(
        "{obj}", "").replace("{h}", ""))}
    return sorted(words)


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def describe_object(rng: random.Random, obj: Obj, *, size_p: float = 0.35, position_p: float = 0.4,
                    force_position: bool = False, article: bool = True) -> str:
    """'a large blue star in the top left' with each optional part dropped at random."""
    words = []
    if rng.random() < size_p:
        words.append(rng.choice(SIZE_WORDS[obj.size]))
    words.append(rng.choice(COLOR_WORDS[obj.color]))
    words.append(rng.choice(SHAPE_WORDS[obj.shape]))
    text = " ".join(words)
    text = _article(text) if article else text
    if force_position or rng.random() < position_p:
        text += " " + rng.choice(POSITION_PHRASES[obj.position])
    return text


def relation(a: Obj, b: Obj) -> list[str]:
    """The relations that hold from a to b by grid cell ('left of', 'above', ...)."""
    (ac, ar), (bc, br) = POSITIONS[a.position], POSITIONS[b.position]
    out = []
    if ac < bc:
        out.append("left of")
    if ac > bc:
        out.append("right of")
    if ar < br:
        out.append("above")
    if ar > br:
        out.append("below")
    return out


def caption(rng: random.Random, scene: Scene) -> tuple[str, dict]:
    """A caption that names every object (so the object count is determined); returns (text, info)."""
    objs = list(scene.objects)
    info: dict = {"kind": "scene"}
    groups: dict[tuple[str, str], list[Obj]] = {}
    for o in objs:
        groups.setdefault((o.color, o.shape), []).append(o)
    if len(objs) == 2 and len(groups) == 2 and rng.random() < 0.55:
        a, b = objs if rng.random() < 0.5 else objs[::-1]
        rels = relation(a, b)
        rel = rng.choice(rels)
        body = (f"{describe_object(rng, a, position_p=0.0)} {rng.choice(RELATION_PHRASES[rel])} "
                f"{describe_object(rng, b, position_p=0.0)}")
        info = {"kind": "relation", "relation": rel}
    else:
        parts = []
        for (color, shape), members in groups.items():
            if len(members) == 1:
                parts.append(describe_object(rng, members[0], position_p=0.45 if len(objs) > 1 else 0.55))
            else:
                shape_word = rng.choice(SHAPE_WORDS[shape])
                parts.append(f"{NUMBER_WORDS[len(members)]} {rng.choice(COLOR_WORDS[color])} {PLURALS[shape_word]}")
        rng.shuffle(parts)
        body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    prefix = rng.choice(SCENE_PREFIXES)
    text = prefix + body
    info["background_named"] = rng.random() < 0.6
    if info["background_named"]:
        bg = rng.choice(BACKGROUND_PHRASES).format(c=rng.choice(COLOR_WORDS[scene.background]))
        text = f"{text} {bg}" if rng.random() < 0.8 else f"{bg[0].upper()}{bg[1:]}, {text}".lower()
    return text, info


def referents(rng: random.Random, scene: Scene, index: int) -> list[tuple[str, str]]:
    """Phrases that pick out object `index` uniquely: (phrase, kind) with kind in attribute/position/relation."""
    objs = scene.objects
    o = objs[index]
    out: list[tuple[str, str]] = []
    shape = rng.choice(SHAPE_WORDS[o.shape])
    color = rng.choice(COLOR_WORDS[o.color])
    same_shape = [x for x in objs if x.shape == o.shape]
    same_cs = [x for x in objs if x.shape == o.shape and x.color == o.color]
    if len(same_shape) == 1:
        out.append((f"the {shape}", "attribute"))
    if len(same_cs) == 1:
        out.append((f"the {color} {shape}", "attribute"))
    out.append((f"the {shape} {rng.choice(POSITION_PHRASES[o.position])}", "position"))
    if len(same_shape) > 1 or rng.random() < 0.3:
        out.append((f"the {color} {shape} {rng.choice(POSITION_PHRASES[o.position])}", "position"))
    for j, other in enumerate(objs):
        if j == index:
            continue
        rels = relation(o, other)
        others_like_other = [x for x in objs if x.shape == other.shape and x.color == other.color]
        if not rels or len(others_like_other) != 1:
            continue
        rel = rng.choice(rels)
        # the phrase is unique only if no other object of this shape has the same relation to `other`
        rivals = [x for k, x in enumerate(objs)
                  if k not in (index, j) and x.shape == o.shape and rel in relation(x, other)]
        if rivals:
            continue
        other_word = f"the {rng.choice(COLOR_WORDS[other.color])} {rng.choice(SHAPE_WORDS[other.shape])}" \
            if rng.random() < 0.5 else f"the {rng.choice(SHAPE_WORDS[other.shape])}"
        if other_word.count(" ") == 1 and len([x for x in objs if x.shape == other.shape]) > 1:
            continue
        out.append((f"the {shape} {rng.choice(RELATION_PHRASES[rel])} {other_word}", "relation"))
    return out


def absent_referent(rng: random.Random, scene: Scene) -> str:
    """A phrase naming an object that is not in the scene (colour+shape, or shape+position)."""
    present = {(o.color, o.shape) for o in scene.objects}
    for _ in range(50):
        if rng.random() < 0.7:
            color, shape = rng.choice([c for c in COLORS if c != scene.background]), rng.choice(SHAPES)
            if (color, shape) not in present:
                return f"the {rng.choice(COLOR_WORDS[color])} {rng.choice(SHAPE_WORDS[shape])}"
        else:
            shape, pos = rng.choice(SHAPES), rng.choice(list(POSITIONS))
            if not any(o.shape == shape and o.position == pos for o in scene.objects):
                return f"the {rng.choice(SHAPE_WORDS[shape])} {rng.choice(POSITION_PHRASES[pos])}"
    return "the ring"


# ------------------------------------------------------------------------------------------------------ examples


def example_rng(seed: int, index: int, split: str = "train") -> random.Random:
    """The generator for example `index` of a split; train and eval never share a seed."""
    if split not in SPLIT_OFFSET:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_OFFSET)}")
    return random.Random((seed * 1_000_003 + SPLIT_OFFSET[split] + index) & ((1 << 62) - 1))


def inpaint_mask(rng: random.Random, obj: Obj | None) -> np.ndarray:
    """A rectangular float {0,1} mask [SIZE,SIZE] around `obj` (with margin), or a random box if None."""
    if obj is not None:
        m = obj.radius + rng.uniform(2.0, 6.0)
        x0, y0, x1, y1 = obj.cx - m - rng.uniform(0, 3), obj.cy - m - rng.uniform(0, 3), \
            obj.cx + m + rng.uniform(0, 3), obj.cy + m + rng.uniform(0, 3)
    else:
        w, h = rng.uniform(12, 40), rng.uniform(12, 40)
        x0, y0 = rng.uniform(0, SIZE - w), rng.uniform(0, SIZE - h)
        x1, y1 = x0 + w, y0 + h
    mask = np.zeros((SIZE, SIZE), np.float32)
    mask[max(0, int(y0)):min(SIZE, int(math.ceil(y1))), max(0, int(x0)):min(SIZE, int(math.ceil(x1)))] = 1.0
    return mask


def sample_example(rng: random.Random, task: str | None = None) -> Example:
    """One example of `task` (random by TASK_WEIGHTS if None). Falls back to txt2img when a task cannot apply."""
    task = task or rng.choices(TASKS, weights=TASK_WEIGHTS)[0]
    scene = random_scene(rng)
    image, masks = render(scene)
    info: dict = {"task": task, "scene": scene}
    if task == "recolor":
        i = rng.randrange(len(scene.objects))
        o = scene.objects[i]
        ref, kind = rng.choice(referents(rng, scene, i))
        new = rng.choice([c for c in COLORS if c not in (scene.background, o.color)])
        target, _ = render(scene, colors={i: PALETTE[new]})
        new_scene = replace(scene, objects=tuple(replace(x, color=new) if k == i else x
                                                 for k, x in enumerate(scene.objects)))
        prompt = rng.choice(EDIT_VERBS["recolor"]).format(ref=ref, c=rng.choice(COLOR_WORDS[new]))
        return Example(task, prompt, target, source=image, info={**info, "index": i, "kind": kind,
                                                                 "target_scene": new_scene})
    if task == "remove":
        i = rng.randrange(len(scene.objects))
        ref, kind = rng.choice(referents(rng, scene, i))
        target, _ = render(scene, omit=frozenset({i}))
        prompt = rng.choice(EDIT_VERBS["remove"]).format(ref=ref)
        new_scene = replace(scene, objects=tuple(x for k, x in enumerate(scene.objects) if k != i))
        return Example(task, prompt, target, source=image, info={**info, "index": i, "kind": kind,
                                                                 "target_scene": new_scene})
    if task == "add":
        i = rng.randrange(len(scene.objects))
        source, _ = render(scene, omit=frozenset({i}))
        obj_text = describe_object(rng, scene.objects[i], force_position=True)
        prompt = rng.choice(EDIT_VERBS["add"]).format(obj=obj_text)
        src_scene = replace(scene, objects=tuple(x for k, x in enumerate(scene.objects) if k != i))
        return Example(task, prompt, image, source=source, info={**info, "index": i, "source_scene": src_scene,
                                                                 "target_scene": scene})
    if task in ("highlight", "absent"):
        h = DEFAULT_HIGHLIGHT if rng.random() < 0.6 else rng.choice(list(HIGHLIGHTS))
        templates = EDIT_VERBS["highlight"]
        template = rng.choice([t for t in templates if "{h}" in t] if h != DEFAULT_HIGHLIGHT else templates)
        if task == "absent":
            prompt = template.format(ref=absent_referent(rng, scene), h=h)
            return Example(task, prompt, image, source=image, info={**info, "highlight": h, "index": None,
                                                                    "kind": "absent"})
        i = rng.randrange(len(scene.objects))
        ref, kind = rng.choice(referents(rng, scene, i))
        target, _ = render(scene, colors={i: HIGHLIGHTS[h]})
        prompt = template.format(ref=ref, h=h)
        return Example(task, prompt, target, source=image, info={**info, "highlight": h, "index": i, "kind": kind,
                                                                 "mask": masks[i] >= 0.5})
    if task == "inpaint":
        return _inpaint_example(rng, scene, image, masks, info)
    if task != "txt2img":
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    text, cinfo = caption(rng, scene)
    return Example("txt2img", text, image, info={**info, **cinfo, "masks": masks})


def _inpaint_example(rng: random.Random, scene: Scene, image: np.ndarray, masks: list[np.ndarray], info: dict
                     ) -> Example:
    """Blank a box around one object (prompt = that object or the whole caption) or an empty box (prompt = filler).

    The box never cuts into another object, else their remains would make the task ambiguous; scenes are redrawn
    until one fits.
    """
    for _attempt in range(50):
        if rng.random() < 0.8:
            i = rng.randrange(len(scene.objects))
            mask = inpaint_mask(rng, scene.objects[i])
            if any((masks[k] > 0.02)[mask > 0].any() for k in range(len(scene.objects)) if k != i):
                scene = random_scene(rng)
                image, masks = render(scene)
                continue
            prompt = describe_object(rng, scene.objects[i], position_p=0.2) if rng.random() < 0.7 \
                else caption(rng, scene)[0]
            index: int | None = i
        else:
            mask = inpaint_mask(rng, None)
            if any((m > 0.02)[mask > 0].any() for m in masks):
                continue
            prompt = rng.choice(INPAINT_EXTRA + [""])
            index = None
        source = image.copy()
        source[mask > 0] = 0
        return Example("inpaint", prompt, image, source=source, mask=mask,
                       info={**info, "scene": scene, "index": index})
    raise RuntimeError("could not place an inpainting mask in 50 scenes")


def to_tensors(ex: Example) -> dict[str, np.ndarray]:
    """Float32 arrays in [-1,1], channels first: target [3,H,W]; source [4,H,W] (RGB + mask channel) or absent.

    The source's fourth channel is +1 inside an inpainting mask and -1 elsewhere (all -1 for instruction edits);
    masked pixels are 0.
    """
    out = {"target": ex.target.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0}
    if ex.source is not None:
        src = ex.source.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        m = ex.mask if ex.mask is not None else np.zeros(ex.target.shape[:2], np.float32)
        src = src * (1.0 - m)[None]
        out["source"] = np.concatenate([src, (m * 2.0 - 1.0)[None]], axis=0).astype(np.float32)
    return out
