"""The built-in model's tokenizer and text encoder.

`WordTokenizer` splits any string into lowercase words and punctuation marks and maps them to ids over a fixed
vocabulary (unknown words become `<unk>`, so every input works, empty and non-ASCII included); sequences start with
`<bos>` and are cut at `max_length`. `EaselTextEncoder` is a small transformer trained jointly with the image
model; its vocabulary lives in its config, so it is saved and loaded with the weights.

Learned words: `tokenize`, `forward` and `encode` take an optional `words` dict, word -> vectors [n,dim] (a LoRA's
bundled trigger embedding). Each such word of a prompt becomes its n vectors instead of its vocabulary entry
(`<unk>` for a new word); they get ids after the vocabulary's, in the dict's order, so the same dict must be
passed to `tokenize` and `forward`. Without it (or with an empty one) nothing changes, bit for bit.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
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

    def ids(self, text: str, extra: dict[str, list[int]] | None = None) -> list[int]:
        """Token ids of `text`; a word in `extra` becomes the ids listed for it."""
        out = [BOS]
        for w in self.split(text):
            if extra and w in extra:
                out.extend(extra[w])
            else:
                out.append(self.index.get(w, UNK))
        return out[: self.max_length]

    def encode(self, texts: list[str], pad_to: int | None = None, extra: dict[str, list[int]] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = [self.ids(t, extra) for t in texts]
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

    def word_ids(self, words: dict[str, torch.Tensor] | None) -> dict[str, list[int]]:
        """The ids the learned `words` (word -> [n,dim]) take: after the vocabulary, in the dict's order."""
        out, next_id = {}, len(self.tokenizer.vocab)
        for word, vectors in (words or {}).items():
            out[word] = list(range(next_id, next_id + vectors.shape[0]))
            next_id += vectors.shape[0]
        return out

    def tokenize(self, texts: list[str], words: dict[str, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokenizer.encode(texts, extra=self.word_ids(words))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, words: dict[str, torch.Tensor] | None = None
                ) -> torch.Tensor:
        L = ids.shape[1]
        if words:  # learned word vectors [n,dim] each, ids from len(vocab) on (see word_ids)
            table = torch.cat([self.embed.weight, *(v.to(self.embed.weight) for v in words.values())])  # [V',dim]
            h = F.embedding(ids, table) + self.pos[:, :L]  # [B,L,dim]
        else:
            h = self.embed(ids) + self.pos[:, :L]  # [B,L,dim]
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=~mask)  # [B,L,dim]; padding never attended to
        return self.norm(h)  # [B,L,dim]

    def encode(self, texts: list[str], device: torch.device | str | None = None,
               words: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize and encode: (features [B,L,dim], mask [B,L] bool)."""
        ids, mask = self.tokenize(texts, words)
        device = device or self.device
        ids, mask = ids.to(device), mask.to(device)
        return self(ids, mask, words), mask
