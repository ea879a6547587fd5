"""Tokenizer and text encoder: any string works."""
from __future__ import annotations

import torch

from webui.builtin import data as D
from webui.builtin.text import BOS, PAD, UNK, EaselTextEncoder, WordTokenizer


def test_tokenizer_handles_arbitrary_strings() -> None:
    tok = WordTokenizer(D.vocabulary(), max_length=8)
    ids, mask = tok.encode(["", "A RED circle!", "ünïcödé 猫 🙂", "x " * 100])
    assert ids.shape == (4, 8) and mask.dtype == torch.bool
    assert ids[0, 0] == BOS and ids[0, 1] == PAD and mask[0].sum() == 1
    assert tok.ids("A RED circle!")[:3] == [BOS, tok.index["a"], tok.index["red"]]
    assert UNK in tok.ids("ünïcödé 猫 🙂")
    assert mask[3].all()  # truncated at max_length


def test_text_encoder_shapes_and_vocab_in_config() -> None:
    enc = EaselTextEncoder(vocab=["red", "circle"], max_length=16, dim=32, depth=1, num_heads=2).eval()
    feats, mask = enc.encode(["a red circle", ""])
    assert feats.shape == (2, mask.shape[1], 32)
    assert enc.config.vocab == ["red", "circle"]
    assert torch.isfinite(feats).all()


def test_word_identity_dominates_the_initial_features() -> None:
    torch.manual_seed(0)
    enc = EaselTextEncoder(vocab=D.vocabulary(), max_length=40, dim=64, depth=2, num_heads=2).eval()
    with torch.no_grad():
        feats, _ = enc.encode(["red", "green", "blue", "circle", "star"])
    assert feats[:, 1].std(dim=0).mean() > 0.3  # different words -> clearly different features
