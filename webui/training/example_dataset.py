"""The example LoRA's concept: a heart, a shape the built-in model has never seen, drawn in its world's style.

`make_dataset(folder, n_concept=30, n_regular=10)` writes `n_concept` scenes of one heart (a palette colour, size
and grid position on a plain palette background, anti-aliased like webui/builtin/data.py; `concept_plan` spreads
the colours and positions so every ten images show every colour once as a heart) with captions such as
"a large red [trigger] in the top left on a blue background", plus `n_regular` ordinary single-object scenes of
the built-in world with their usual captions. The ordinary scenes keep the LoRA from pulling the known shapes
towards the new one (prior preservation with true renders instead of the model's own samples). Thirty hearts,
not ten: from ten, a LoRA draws the heart mostly for the colour pairs it was shown (52% of held-out trigger
prompts against 92% of its training captions), from thirty for 85% (74% with prior preservation; docs/BENCHMARKS.md).

`detect_heart(image)` is a classical detector for the concept: foreground components against the border's
background colour, cut to the pixels at least half covered by the object (as in webui/builtin_lab/evaluate.py), each
normalised to its bounding box and matched against templates of the seven shapes
(`classify_component`), a match below MIN_MATCH counting as no shape (blobs are not hearts); `validate_detector`
measures it on rendered scenes whose truth is known.

    python -m webui.training.example_dataset data/lora-example-heart
"""
from __future__ import annotations

import argparse
import math
import random
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from webui.builtin import data as D

CONCEPT = "heart"
TEMPLATE_SIZE = 24
FOREGROUND_DISTANCE = 45.0  # RGB distance from the background above which a pixel is foreground
MIN_AREA = 12  # output pixels; smaller components are noise
MIN_MATCH = 0.8  # soft IoU with the best template below which an object counts as no shape (rendered hearts: >= 0.87)
# Small hearts (5.5 px) are a few pixels wide: a LoRA trained with them in the dataset drew a heart for 29% of
# the trigger prompts, against 44% with these two sizes (step 17945, 800 steps, n=100).
CONCEPT_SIZES = ("medium", "large")
N_CONCEPT, N_REGULAR = 30, 10  # the recipe: heart images, ordinary scenes kept beside them


def heart_polygon(cx: float, cy: float, radius: float, angle: float = 0.0, points: int = 96
                  ) -> list[tuple[float, float]]:
    """The classic heart curve x = 16 sin^3 t, y = 13 cos t - 5 cos 2t - 2 cos 3t - cos 4t, scaled so its
    enclosing radius is about `radius`, centred on (cx, cy), point down."""
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    out = []
    for k in range(points):
        t = 2.0 * math.pi * k / points
        x = 16.0 * math.sin(t) ** 3
        y = -(13.0 * math.cos(t) - 5.0 * math.cos(2 * t) - 2.0 * math.cos(3 * t) - math.cos(4 * t))
        x, y = x * radius / 16.5, (y + 2.5) * radius / 16.5  # [-16,16] wide, [-12,17] tall -> about radius
        out.append((cx + x * c - y * s, cy + x * s + y * c))
    return out


def render_heart(background: str, color: str, cx: float, cy: float, radius: float, angle: float = 0.0,
                 size: int = D.SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image [size,size,3], float coverage mask [size,size]) of one heart, anti-aliased like data.render."""
    big = size * D.SUPERSAMPLE
    scale = big / D.SIZE
    polygon = heart_polygon(cx * scale, cy * scale, radius * scale, angle)
    canvas = Image.new("RGB", (big, big), D.PALETTE[background])
    ImageDraw.Draw(canvas).polygon(polygon, fill=D.PALETTE[color])
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).polygon(polygon, fill=255)
    image = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.uint8).copy()
    return image, np.asarray(mask.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0


def heart_example(rng: random.Random, color: str | None = None, background: str | None = None,
                  position: str | None = None) -> tuple[np.ndarray, str]:
    """One heart scene and its caption (with `[trigger]` where the shape's name goes); colours and grid position
    are drawn at random unless given."""
    background = background or rng.choice([c for c in D.COLORS if c != color])
    color = color or rng.choice([c for c in D.COLORS if c != background])
    size = rng.choice(CONCEPT_SIZES)
    position = position or rng.choice(list(D.POSITIONS))
    cx, cy, radius, angle = D.placement(rng, position, size, rotates=True)  # placed like the built-in world's shapes
    cx = min(max(cx, radius + 1), D.SIZE - radius - 1)
    cy = min(max(cy, radius + 1), D.SIZE - radius - 1)
    image, _ = render_heart(background, color, cx, cy, radius, angle)
    words = ([rng.choice(D.SIZE_WORDS[size])] if rng.random() < 0.4 else []) + [rng.choice(D.COLOR_WORDS[color]),
                                                                              "[trigger]"]
    text = ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)
    if rng.random() < 0.5:
        text += " " + rng.choice(D.POSITION_PHRASES[position])
    text += " " + rng.choice(D.BACKGROUND_PHRASES).format(c=rng.choice(D.COLOR_WORDS[background]))
    return image, text


def regular_example(rng: random.Random) -> tuple[np.ndarray, str]:
    """An ordinary single-object scene of the built-in world and its caption."""
    scene = D.random_scene(rng, n_objects=1)
    image, _ = D.render(scene)
    text, _ = D.caption(rng, scene)
    return image, text


def concept_plan(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    """(heart colour, background, grid position) for `n` concept images, chosen so that a few images show the
    concept in as many looks as possible: the colours go round the palette in a shuffled order, each background is
    another shuffled round that never equals its heart's colour, and the positions go round the grid. With ten
    images every palette colour is once a heart and once a background; a LoRA learns the shape apart from any one
    colour instead of memorising ten colour pairs."""
    def rounds(items: list[str]) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            batch = list(items)
            rng.shuffle(batch)
            out += batch
        return out[:n]

    colors = rounds(list(D.COLORS))
    while True:
        backgrounds = rounds(list(D.COLORS))
        if all(c != b for c, b in zip(colors, backgrounds)):
            break
    return list(zip(colors, backgrounds, rounds(list(D.POSITIONS))))


def make_dataset(folder: Path, n_concept: int = N_CONCEPT, n_regular: int = N_REGULAR, seed: int = 0) -> Path:
    """Write the example dataset (PNG + same-name .txt) into `folder`; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i, (color, background, position) in enumerate(concept_plan(rng, n_concept)):
        image, text = heart_example(rng, color, background, position)
        Image.fromarray(image).save(folder / f"heart_{i:02d}.png")
        (folder / f"heart_{i:02d}.txt").write_text(text + "\n", encoding="utf-8")
    for i in range(n_regular):
        image, text = regular_example(rng)
        Image.fromarray(image).save(folder / f"regular_{i:02d}.png")
        (folder / f"regular_{i:02d}.txt").write_text(text + "\n", encoding="utf-8")
    return folder


# ============================================================================================ the detector
def normalise(mask: np.ndarray) -> np.ndarray:
    """A binary mask cropped to its bounding box and resized to TEMPLATE_SIZE^2, as float in [0,1]."""
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1].astype(np.float32)
    image = Image.fromarray((crop * 255).astype(np.uint8)).resize((TEMPLATE_SIZE, TEMPLATE_SIZE),
                                                                   Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


@lru_cache(maxsize=1)
def templates() -> tuple[tuple[str, np.ndarray], ...]:
    """Normalised masks of every shape (the six known ones and the heart) at a few angles and sizes."""
    out = []
    for shape in [*D.SHAPES, CONCEPT]:
        angles = (0.0,) if shape in ("circle", "ring") else (-10.0, 0.0, 10.0)
        for radius in (8.5, 12.0):
            for angle in angles:
                if shape == CONCEPT:
                    _, mask = render_heart("white", "black", 32.0, 32.0, radius, angle)
                else:
                    obj = D.Obj("black", shape, "large", "center", 32.0, 32.0, radius, angle)
                    _, masks = D.render(D.Scene("white", (obj,)))
                    mask = masks[0]
                out.append((shape, normalise(mask >= 0.5)))
    return tuple(out)


def classify_component(mask: np.ndarray) -> tuple[str, float]:
    """(best shape, soft IoU) of one object's binary mask against the templates."""
    x = normalise(mask)
    best, score = "unknown", -1.0
    for shape, template in templates():
        iou = float(np.minimum(x, template).sum() / max(np.maximum(x, template).sum(), 1e-6))
        if iou > score:
            best, score = shape, iou
    return best, score


def shapes_in(image: np.ndarray) -> list[str]:
    """The shape of every object found in the image (holes kept: a ring's hole tells it from a circle)."""
    from webui.builtin_lab.evaluate import coverage, foreground_components

    img, bg_name, bg, components = foreground_components(image, MIN_AREA)
    found = []
    for comp in components:
        # the object is the pixels at least half covered, as the templates are cut: a faint halo around a
        # generated shape is far enough from the background to join the component but is not part of the shape
        _, alpha = coverage(img, comp, bg_name, bg)
        solid = (alpha >= 0.5) & comp
        if solid.sum() < MIN_AREA:
            continue
        shape, score = classify_component(solid)
        found.append(shape if score >= MIN_MATCH else "unknown")
    return found


def detect_heart(image: np.ndarray) -> bool:
    """True when some object in the image is heart-shaped."""
    return CONCEPT in shapes_in(image)


def validate_detector(n: int = 200, seed: int = 777) -> dict[str, float]:
    """Accuracy on rendered truth: hearts found in heart scenes, no heart found in ordinary single-object scenes
    (all sizes but small, the sizes the concept is drawn at)."""
    rng = random.Random(seed)
    hits = 0
    for _ in range(n):
        image, _ = heart_example(rng)
        hits += detect_heart(image)
    false = 0
    for _ in range(n):
        obj_size = rng.choice(CONCEPT_SIZES)
        background = rng.choice(D.COLORS)
        obj = D.random_object(rng, background, size=obj_size)
        image, _ = D.render(D.Scene(background, (obj,)))
        false += detect_heart(image)
    return {"heart_recall": hits / n, "other_false_positive": false / n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m webui.training.example_dataset", description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--concept", type=int, default=N_CONCEPT, help="heart images")
    p.add_argument("--regular", type=int, default=N_REGULAR, help="ordinary scenes kept beside them")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    make_dataset(args.folder, args.concept, args.regular, args.seed)
    print(f"wrote {args.concept} heart and {args.regular} ordinary images with captions to {args.folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
