"""A second world of coloured shapes, drawn and worded independently of the training data, for evaluation only.

The built-in model was trained on scenes from `webui.builtin.data`: objects exactly on a 3x3 grid, three radii,
upright, drawn with PIL polygons on a 4x supersampled canvas, captioned from fixed templates. Scores on those
scenes say how well it learned that lattice, not whether it works on a picture or a sentence made elsewhere. This
module shares nothing with that code but the names of the colours and shapes (and their sRGB values, which are
what the words mean):

- **Drawing**: every shape is a signed-distance function in numpy (circle, ring, and polygons by edge distance
  with an even-odd inside test). Two anti-aliasing styles: `"sdf"` turns the distance into coverage analytically
  (a one-pixel linear ramp), `"stochastic"` averages 16 jittered sub-pixel samples per pixel (a fixed
  pseudo-random pattern, not a box filter). Objects sit anywhere, at any radius in [5, 12.5] px, rotated by up
  to 35 degrees when `rotate`; colours are jittered by up to 6 per channel; the background may carry a faint
  low-frequency texture (up to +-7 per channel).
- **Words**: templates, synonyms, position words and relation words that the training captions never use
  ("X background with ...", comma lists, "one ...", "a pair of ...", "four", "near the right edge", "in the upper
  left", "top-left corner", "beside", "next to", ...). `HELD_OUT_*` lists them; `tests/builtin/test_heldout_world.py`
  checks that none of these phrases is one the training captions produce.

A position word names a region (thirds of the canvas), so an object said to be "in the upper left" is drawn
anywhere well inside the upper-left third; the evaluation reads positions back with the detector's own cells.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from webui.builtin.data import COLORS, PALETTE, SHAPES  # the vocabulary this world must name, nothing else

SIZE = 64
RADIUS_RANGE = (5.0, 12.5)  # output pixels, continuous
MAX_ROTATION = 35.0  # degrees
COLOR_JITTER = 6  # per channel
TEXTURE = 7.0  # per channel, peak
STYLES = ("sdf", "stochastic")

REGIONS = {  # region -> (column, row) in thirds of the canvas
    "top left": (0, 0), "top": (1, 0), "top right": (2, 0), "left": (0, 1), "center": (1, 1), "right": (2, 1),
    "bottom left": (0, 2), "bottom": (1, 2), "bottom right": (2, 2)}


@dataclass(frozen=True)
class Thing:
    """One object: colour and shape names, centre and circumradius in output pixels, rotation in degrees."""

    color: str
    shape: str
    x: float
    y: float
    r: float
    turn: float = 0.0


@dataclass(frozen=True)
class World:
    background: str
    things: tuple[Thing, ...]


# ------------------------------------------------------------------------------------------------ geometry


def _outline(shape: str, r: float) -> np.ndarray:
    """Polygon vertices [K,2] around the origin (y down) for the polygon shapes."""
    if shape == "square":
        s = 0.78 * r
        return np.array([[-s, -s], [s, -s], [s, s], [-s, s]])
    if shape == "triangle":  # equilateral, centroid at the origin, apex up
        ang = np.deg2rad([270.0, 30.0, 150.0])
        return np.stack([r * np.cos(ang), r * np.sin(ang)], 1)
    if shape == "star":
        k = np.arange(10)
        rad = np.where(k % 2 == 0, r, 0.43 * r)
        ang = np.deg2rad(270.0 + 36.0 * k)
        return np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
    if shape == "cross":
        a, w = 0.96 * r, 0.33 * r
        quarter = [(w, -a), (w, -w), (a, -w)]
        pts = []
        for q in range(4):  # the same corner turned by 90 degrees four times
            c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][q]
            pts += [(x * c - y * s, x * s + y * c) for x, y in quarter]
        return np.array(pts)
    raise ValueError(f"no outline for {shape!r}")


def _polygon_sdf(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from points to a closed polygon [K,2]: edge distance, even-odd sign."""
    d = np.full(px.shape, np.inf)
    inside = np.zeros(px.shape, bool)
    for (ax, ay), (bx, by) in zip(poly, np.roll(poly, -1, axis=0)):
        ex, ey = bx - ax, by - ay
        t = np.clip(((px - ax) * ex + (py - ay) * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        d = np.minimum(d, np.hypot(px - ax - t * ex, py - ay - t * ey))
        crosses = ((ay > py) != (by > py)) & (px < ax + (py - ay) * ex / (ey if ey else 1e-12))
        inside ^= crosses
    return np.where(inside, -d, d)


def signed_distance(thing: Thing, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Signed distance in output pixels from points (px, py) to `thing`'s outline; negative inside."""
    c, s = math.cos(math.radians(-thing.turn)), math.sin(math.radians(-thing.turn))
    dx, dy = px - thing.x, py - thing.y
    lx, ly = dx * c - dy * s, dx * s + dy * c  # into the shape's own frame
    if thing.shape == "circle":
        return np.hypot(lx, ly) - thing.r
    if thing.shape == "ring":
        rho = np.hypot(lx, ly)
        return np.maximum(rho - thing.r, 0.5 * thing.r - rho)
    return _polygon_sdf(lx, ly, _outline(thing.shape, thing.r))


def coverage(thing: Thing, style: str = "sdf") -> np.ndarray:
    """Float [SIZE,SIZE] in [0,1]: how much of each pixel `thing` covers, anti-aliased in `style`."""
    if style == "sdf":
        yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
        return np.clip(0.5 - signed_distance(thing, xx, yy), 0.0, 1.0)
    if style == "stochastic":
        offsets = np.random.default_rng(20261208).random((16, 2))  # one fixed sub-pixel pattern
        yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
        acc = np.zeros((SIZE, SIZE))
        for ox, oy in offsets:
            acc += signed_distance(thing, xx + ox, yy + oy) < 0
        return acc / len(offsets)
    raise ValueError(f"style must be one of {STYLES}, got {style!r}")


def draw(world: World, style: str = "sdf", seed: int = 0, texture: bool = True,
         highlight: dict[int, tuple[int, int, int]] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """(uint8 image [64,64,3], one coverage mask [64,64] per thing). `seed` fixes the colour jitter and texture;
    `highlight` paints things (index -> RGB) instead of their colour."""
    rng = np.random.default_rng(seed)
    bg = np.array(PALETTE[world.background], np.float64) + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3)
    canvas = np.broadcast_to(bg, (SIZE, SIZE, 3)).copy()
    if texture:  # a few low-frequency waves, different per channel
        yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
        for _ in range(3):
            fx, fy, ph = rng.uniform(0.5, 2.5), rng.uniform(0.5, 2.5), rng.uniform(0, 2 * np.pi)
            canvas += (TEXTURE / 3) * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)[..., None] * rng.uniform(
                0.5, 1.0, 3)
    masks = []
    for i, thing in enumerate(world.things):
        alpha = coverage(thing, style)[..., None]
        colour = np.array((highlight or {}).get(i, PALETTE[thing.color]), np.float64)
        if i not in (highlight or {}):
            colour = colour + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3)
        canvas = canvas * (1 - alpha) + colour * alpha
        masks.append(alpha[..., 0])
    return np.clip(canvas.round(), 0, 255).astype(np.uint8), masks


# ------------------------------------------------------------------------------------------------ scenes


def region_of(x: float, y: float) -> str:
    """The region (thirds of the canvas) a point lies in."""
    cell = (min(int(x * 3 // SIZE), 2), min(int(y * 3 // SIZE), 2))
    return next(k for k, v in REGIONS.items() if v == cell)


def _apart(t: Thing, others: list[Thing]) -> bool:
    inside = t.r + 1 <= t.x <= SIZE - t.r - 1 and t.r + 1 <= t.y <= SIZE - t.r - 1
    return inside and all(math.hypot(t.x - o.x, t.y - o.y) >= t.r + o.r + 3 for o in others)


def place(rng: random.Random, color: str, shape: str, others: list[Thing], region: str | None = None,
          rotate: bool = True, radius: tuple[float, float] = RADIUS_RANGE) -> Thing | None:
    """A thing anywhere (or well inside `region`: 3 px from its borders), clear of `others`; None if 200 draws
    fail."""
    for _ in range(200):
        r = rng.uniform(*radius)
        if region is None:
            x, y = rng.uniform(r + 1, SIZE - r - 1), rng.uniform(r + 1, SIZE - r - 1)
        else:
            col, row = REGIONS[region]
            third = SIZE / 3
            x = rng.uniform(col * third + 3, (col + 1) * third - 3)
            y = rng.uniform(row * third + 3, (row + 1) * third - 3)
        turn = rng.uniform(-MAX_ROTATION, MAX_ROTATION) if rotate and shape not in ("circle", "ring") else 0.0
        t = Thing(color, shape, x, y, r, turn)
        if _apart(t, others):
            return t
    return None


def random_world(rng: random.Random, n: int, rotate: bool = True, distinct: bool = True) -> World:
    """A background and `n` things (distinct colour+shape pairs when `distinct`), none of the background's colour.
    Redrawn until all `n` fit."""
    while True:
        background = rng.choice(COLORS)
        things: list[Thing] = []
        kinds: set[tuple[str, str]] = set()
        for _ in range(n):
            for _ in range(20):
                color, shape = rng.choice([c for c in COLORS if c != background]), rng.choice(SHAPES)
                if not distinct or (color, shape) not in kinds:
                    break
            t = place(rng, color, shape, things, rotate=rotate)
            if t is None:
                break
            things.append(t)
            kinds.add((color, shape))
        if len(things) == n:
            return World(background, tuple(things))


# ------------------------------------------------------------------------------------------------ words

# Only phrases that the training captions never use in these roles (checked by tests/builtin/test_heldout_world.py).
# Colour and shape words are the model's own: a held-out synonym for them would only measure an unknown word.
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses",
          "ring": "rings"}
HELD_OUT_POSITIONS = {
    "top left": ["in the upper left", "top-left corner", "near the top left corner", "up in the left corner"],
    "top right": ["in the upper right", "top-right corner", "near the top right corner"],
    "bottom left": ["in the lower left", "bottom-left corner", "near the bottom left corner"],
    "bottom right": ["in the lower right", "bottom-right corner", "near the bottom right corner"],
    "top": ["near the top edge", "along the top", "toward the top"],
    "bottom": ["near the bottom edge", "along the bottom", "toward the bottom"],
    "left": ["near the left edge", "at the far left", "toward the left"],
    "right": ["near the right edge", "at the far right", "toward the right"],
    "center": ["in the very middle", "dead center", "at the center of the image"],
}
HELD_OUT_BACKGROUND = ["{c} background with {x}", "{x}, {c} background", "{x} against {c}", "{x} on a plain {c} field",
                       "{x} on a {c} backdrop", "{x}; the background is {c}"]
HELD_OUT_SINGLE = ["{a} {c} {s}", "one {c} {s}", "{c} {s}", "just {a} {c} {s}", "a single {c} {s}",
                   "{a} {c}-colored {s}"]
HELD_OUT_COUNT = {2: ["two {c} {p}", "a pair of {c} {p}", "2 {c} {p}"], 3: ["three {c} {p}", "3 {c} {p}"],
                  4: ["four {c} {p}", "4 {c} {p}"]}
HELD_OUT_RELATIONS = {"left of": ["on the left of", "to the left side of", "left of and beside"],
                      "right of": ["on the right of", "to the right side of"],
                      "above": ["higher than", "on top of", "up above"], "below": ["underneath", "lower than"],
                      "next to": ["next to", "beside", "alongside"]}
HELD_OUT_PAIR = ["{x} {rel} {y}", "{x}, {rel} {y}", "{x} placed {rel} {y}"]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def object_words(rng: random.Random, color: str, shape: str) -> str:
    """A held-out single-object phrase: "one red circle", "a single blue star", "green square", ..."""
    text = rng.choice(HELD_OUT_SINGLE).replace("{c}", color).replace("{s}", shape)
    return text.replace("{a}", _article(color))


def with_background(rng: random.Random, text: str, background: str, p: float = 0.6) -> str:
    if rng.random() >= p:
        return text
    return rng.choice(HELD_OUT_BACKGROUND).replace("{c}", background).replace("{x}", text)


def relation_holds(rel: str, a: tuple[float, float], b: tuple[float, float], margin: float = 4.0) -> bool:
    """Whether centre a stands in `rel` to centre b (pixels, y down); "next to": side by side, not stacked."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    return {"left of": dx < -margin, "right of": dx > margin, "above": dy < -margin, "below": dy > margin,
            "next to": abs(dx) > margin and abs(dx) >= abs(dy)}[rel]
