"""What the words of a prompt change in the built-in model's x0 prediction, one denoising step at a time.

For held-out single-object scenes (medium and large objects), the model predicts x0 from x_t with the true caption,
"a <size> <colour> <shape> on a <colour> background", and with its shape word (or its colour word) swapped for
another. The probe prints, per noise level, how far the two predictions lie apart (mean and per-image maximum of
the absolute difference, on the -1..1 scale) and in how many predictions the detector finds the object the caption
asked for. A model that draws what it is told finds the swapped-in shape about as often as the true one.

    python -m webui.builtin_lab.probe --model models/builtin/easel-shapes [--n 32] [--t 0.4 0.6 0.8]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from webui.builtin import data as D
from webui.builtin_lab import evaluate as E

SHAPE_SWAP = {"circle": "square", "square": "star", "triangle": "circle", "star": "circle", "cross": "ring",
              "ring": "cross"}


def color_swap(color: str, background: str) -> str:
    """Another object colour: the next palette colour that is neither this one nor the background."""
    i = D.COLORS.index(color)
    return next(c for k in range(1, len(D.COLORS)) if (c := D.COLORS[(i + k) % len(D.COLORS)]) != background)


def scenes(n: int, seed: int = 7) -> list[D.Scene]:
    """n held-out scenes of exactly one medium or large object."""
    out, i = [], 0
    while len(out) < n:
        scene = D.random_scene(D.example_rng(seed, i, "eval"), n_objects=1)
        i += 1
        if len(scene.objects) == 1 and scene.objects[0].size != "small":
            out.append(scene)
    return out


@torch.no_grad()
def probe(transformer, text_encoder, n: int = 32, ts: tuple[float, ...] = (0.4, 0.6, 0.8), word: str = "shape"
          ) -> list[dict]:
    """One row per t: {"t", "mean_diff", "max_diff", "found_true", "found_swapped"} (found = of n predictions)."""
    chosen = scenes(n)
    x0 = torch.from_numpy(np.stack([D.render(s)[0] for s in chosen])).float().permute(0, 3, 1, 2) / 127.5 - 1.0
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))  # [n,3,H,W]
    wanted = {False: [], True: []}  # swapped -> [(colour, shape)] the caption asks for
    prompts = {False: [], True: []}
    for s in chosen:
        o = s.objects[0]
        for swapped in (False, True):
            color = color_swap(o.color, s.background) if swapped and word == "color" else o.color
            shape = SHAPE_SWAP[o.shape] if swapped and word == "shape" else o.shape
            wanted[swapped].append((color, shape))
            prompts[swapped].append(f"a {o.size} {color} {shape} on a {s.background} background")
    texts = {}
    for swapped in (False, True):
        ids, mask = text_encoder.tokenize(prompts[swapped])
        texts[swapped] = (text_encoder(ids, mask), mask)
    rows = []
    for t in ts:
        x_t = (1.0 - t) * x0 + t * eps  # [n,3,H,W]
        preds, found = {}, {}
        for swapped, (text, mask) in texts.items():
            x0_hat = transformer(x_t, torch.full((n,), t), text, mask).float().clamp(-1, 1)  # [n,3,H,W]
            preds[swapped] = x0_hat
            images = ((x0_hat + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
            found[swapped] = sum(any((d.color, d.shape) == want for d in E.detect(img)[1])
                                 for img, want in zip(images, wanted[swapped]))
        diff = (preds[True] - preds[False]).abs()  # [n,3,H,W]
        rows.append({"t": t, "mean_diff": float(diff.mean()), "max_diff": float(diff.amax(dim=(1, 2, 3)).mean()),
                     "found_true": found[False], "found_swapped": found[True]})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m webui.builtin_lab.probe", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--t", type=float, nargs="+", default=[0.4, 0.6, 0.8])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from webui.builtin.pipeline import EaselPipeline

    pipe = EaselPipeline.from_pretrained(str(args.model))
    transformer, text_encoder = pipe.transformer.float().eval(), pipe.text_encoder.float().eval()
    for word in ("shape", "color"):
        for r in probe(transformer, text_encoder, args.n, tuple(args.t), word):
            print(f"{word} word swapped, t={r['t']}: prediction moves {r['mean_diff']:.4f} on average "  # noqa: T201
                  f"(max per image {r['max_diff']:.3f}); asked-for object found {r['found_true']}/{args.n} with "
                  f"the true caption, {r['found_swapped']}/{args.n} with the swapped one")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
