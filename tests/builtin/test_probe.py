"""The prompt-sensitivity probe: a model that ignores the text, and one that returns the true scene."""
from __future__ import annotations

import numpy as np
import torch

from webui.builtin import data as D
from webui.builtin_lab import probe as P


def test_probe_counts_what_the_prediction_shows() -> None:
    n = 6
    truth = torch.from_numpy(np.stack([D.render(s)[0] for s in P.scenes(n)])).float().permute(0, 3, 1, 2) / 127.5 - 1

    def oracle(x_t, t, text, mask):  # draws the true scene whatever the caption says
        return truth

    class Words:  # a text encoder whose features are the words' ids
        def tokenize(self, prompts):
            vocab = {w: i + 1 for i, w in enumerate(D.vocabulary())}
            ids = torch.tensor([[vocab.get(w, 0) for w in D.tokenize_words(p)][:12] for p in prompts])
            return ids, torch.ones_like(ids, dtype=torch.bool)

        def __call__(self, ids, mask):
            return ids.float()[..., None]

    for word in ("shape", "color"):
        rows = P.probe(oracle, Words(), n, (0.5,), word)
        assert rows[0]["found_true"] == n and rows[0]["found_swapped"] == 0 and rows[0]["mean_diff"] == 0.0


def test_probe_runs_on_a_tiny_model() -> None:
    from tests.builtin.conftest import make_tiny_pipeline

    pipe = make_tiny_pipeline()
    rows = P.probe(pipe.transformer.float(), pipe.text_encoder.float(), 2, (0.3, 0.9))
    assert [r["t"] for r in rows] == [0.3, 0.9] and all(0 <= r["found_true"] <= 2 for r in rows)
    assert all(r["mean_diff"] >= 0 and r["max_diff"] >= r["mean_diff"] for r in rows)
    assert P.color_swap("red", "green") == "blue" and P.color_swap("red", "blue") != "blue"
