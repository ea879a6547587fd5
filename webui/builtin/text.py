"""The built-in model's tokenizer and text encoder.

`WordTokenizer` splits any string into lowercase words and punctuation marks and maps them to ids over a fixed
vocabulary (unknown words become `<unk>`, so every input works, empty and non-ASCII included); sequences start with
`<bos>` and are cut at `max_length`. `EaselTextEncoder` is a small transformer trained jointly with the image
model; its vocabulary lives in its config, so it is saved and loaded with the weights.
"""

from __future__ import annotations

import re

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>"]
PAD, UNK, BOS = 0, 1, 2


class WordTokenizer:
    """Word-level tokenizer: `encode(texts)` -> (ids [B,L] long, mask [B,L] bool, True = real token)."""

    def __init__(self, words: list[str], max_length: int = 32) -> None:
        self.vocab = SPECIAL_TOKENS + [w for w in words if w not in SPECIAL_TOKENS]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_length = max_length

    def split(self, text: str) -> list[str]:
        return re.findall(r"\w+|[^\w\s]", text.lower())

    def ids(self, text: str) -> list[int]:
        return ([BOS] + [self.index.get(w, UNK) for w in self.split(text)])[: self.max_length]

    def encode(self, texts: list[str], pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = [self.ids(t) for t in texts]
        length = pad_to or max(len(s) for s in seqs)
        ids = torch.full((len(seqs), length), PAD, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return ids, ids != PAD


class EaselTextEncoder(ModelMixin, ConfigMixin):
    """Embeddings + learned positions + a few pre-norm transformer layers. forward(ids, mask) -> [B,L,dim]."""

    @register_to_config
    def __init__(self, vocab: list[str] | None = None, max_length: int = 32, dim: int = 256, depth: int = 2,
                 num_heads: int = 4) -> None:
        super().__init__()
        vocab = list(vocab or [])
        self.tokenizer = WordTokenizer(vocab, max_length)
        self.embed = nn.Embedding(len(self.tokenizer.vocab), dim)
        self.pos = nn.Parameter(torch.zeros(1, max_length, dim))
        # unit-scale word embeddings: with tiny ones, the layers' learned biases swamp the token identity early in
        # training and the encoder collapses to a prompt-independent output
        nn.init.normal_(self.embed.weight, std=1.0)
        nn.init.normal_(self.pos, std=0.3)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, num_heads, dim * 4, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokenizer.encode(texts)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        L = ids.shape[1]
        h = self.embed(ids) + self.pos[:, :L]  # [B,L,dim]
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=~mask)  # [B,L,dim]; padding never attended to
        return self.norm(h)  # [B,L,dim]

    def encode(self, texts: list[str], device: torch.device | str | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize and encode: (features [B,L,dim], mask [B,L] bool)."""
        ids, mask = self.tokenize(texts)
        device = device or self.device
        ids, mask = ids.to(device), mask.to(device)
        return self(ids, mask), mask
