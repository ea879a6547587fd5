"""Prompt syntax: AUTOMATIC1111 emphasis and `<lora:name:weight>` tags, and weighted CLIP encoding.

Emphasis: `(word)` multiplies attention by 1.1, `[word]` divides by 1.1, `(word:1.5)` sets 1.5, nesting
multiplies, `\\(` is a literal parenthesis. For SD 1.x/2.x/SDXL the prompt is encoded in 75-token chunks (so
long prompts work), each token's embedding is scaled by its weight, and each chunk is rescaled to its own
unweighted mean, as AUTOMATIC1111 does. `BREAK` (in capitals, as a word) ends a chunk early; a chunk that fills
up is cut after its last comma when that comma is among its final 20 tokens, so a phrase is not split across two
chunks. Clip skip takes an earlier hidden layer of the text encoder.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

_TOKEN = re.compile(r"\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)|\)|\]|[^\\()\[\]:]+|:")
_LORA = re.compile(r"<(lora|lyco):([^:>]+)(?::([+-]?(?:\d+\.?\d*|\.\d+)))?(?::[^>]*)?>", re.IGNORECASE)
_HYPERNET = re.compile(r"<hypernet:[^>]*>", re.IGNORECASE)  # applied by webui.engine.hypernetworks, not words
ROUND_UP = 1.1
SQUARE_DOWN = 1 / 1.1
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
COMMA_BACKTRACK = 20  # a full chunk whose last comma is this close to its end is cut after the comma


@dataclass(frozen=True)
class LoraTag:
    name: str
    weight: float


def extract_loras(prompt: str) -> tuple[str, list[LoraTag]]:
    """Remove `<lora:name:w>` tags (and `<hypernet:name:w>` tags, which `webui.engine.hypernetworks` applies)
    from a prompt; return the cleaned prompt and the LoRA tags in order."""
    tags = [LoraTag(m.group(2).strip(), float(m.group(3)) if m.group(3) else 1.0) for m in _LORA.finditer(prompt)]
    return _HYPERNET.sub("", _LORA.sub("", prompt)), tags


def parse_emphasis(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) runs following AUTOMATIC1111's attention syntax."""
    result: list[list] = []
    round_stack: list[int] = []
    square_stack: list[int] = []

    def scale(start: int, factor: float) -> None:
        for item in result[start:]:
            item[1] *= factor

    for match in _TOKEN.finditer(text):
        token = match.group(0)
        weight = match.group(1)
        if token.startswith("\\") and len(token) == 2:
            result.append([token[1], 1.0])
        elif token == "(":
            round_stack.append(len(result))
        elif token == "[":
            square_stack.append(len(result))
        elif weight is not None and round_stack:
            scale(round_stack.pop(), float(weight))
        elif token == ")" and round_stack:
            scale(round_stack.pop(), ROUND_UP)
        elif token == "]" and square_stack:
            scale(square_stack.pop(), SQUARE_DOWN)
        else:
            result.append([token, 1.0])
    for start in round_stack:
        scale(start, ROUND_UP)
    for start in square_stack:
        scale(start, SQUARE_DOWN)
    merged: list[tuple[str, float]] = []
    for chunk, w in result:
        if merged and merged[-1][1] == w:
            merged[-1] = (merged[-1][0] + chunk, w)
        else:
            merged.append((chunk, w))
    return [(t, w) for t, w in merged if t] or [("", 1.0)]


def strip_emphasis(text: str) -> str:
    """The prompt as plain text, for models that take strings (flow models with T5/LLM encoders): no emphasis
    brackets or weights, and each `BREAK` a single space."""
    return _BREAK.sub(" ", "".join(chunk for chunk, _ in parse_emphasis(text)))


def _weighted_runs(prompt: str) -> list[tuple[str, float] | None]:
    """Emphasis runs of `prompt`, with None where a `BREAK` stands."""
    runs: list[tuple[str, float] | None] = []
    for text, weight in parse_emphasis(prompt):
        for i, part in enumerate(_BREAK.split(text)):
            if i:
                runs.append(None)
            if part:
                runs.append((part, weight))
    return runs


def _comma_id(tokenizer) -> int | None:
    ids = tokenizer(",", add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def chunk_tokens(tokenizer, prompt: str) -> list[tuple[list[int], list[float]]]:
    """The prompt's token ids and weights in chunks of at most (max_length - 2) tokens. `BREAK` starts a new
    chunk; a chunk that fills up while its last comma is among its final `COMMA_BACKTRACK` tokens ends after
    that comma, and the words after it open the next chunk."""
    inner = tokenizer.model_max_length - 2
    comma = _comma_id(tokenizer)
    chunks: list[tuple[list[int], list[float]]] = []
    ids: list[int] = []
    weights: list[float] = []
    last_comma = -1
    for run in _weighted_runs(prompt):
        if run is None:
            chunks.append((ids, weights))
            ids, weights, last_comma = [], [], -1
            continue
        text, weight = run
        for token in tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]:
            if token == comma:
                last_comma = len(ids)
            elif len(ids) == inner and last_comma != -1 and len(ids) - last_comma <= COMMA_BACKTRACK:
                cut = last_comma + 1
                chunks.append((ids[:cut], weights[:cut]))
                ids, weights, last_comma = ids[cut:], weights[cut:], -1
            if len(ids) == inner:
                chunks.append((ids, weights))
                ids, weights, last_comma = [], [], -1
            ids.append(token)
            weights.append(weight)
    if ids or not chunks:
        chunks.append((ids, weights))
    return chunks


def _weighted_tokens(tokenizer, prompt: str) -> tuple[list[int], list[float]]:
    """All the prompt's token ids and their weights, in order (its chunks joined)."""
    chunks = chunk_tokens(tokenizer, prompt)
    return [i for ids, _ in chunks for i in ids], [w for _, ws in chunks for w in ws]


def _rows(tokenizer, chunks: list[tuple[list[int], list[float]]], n_chunks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunks as rows of max_length ids, each wrapped in BOS/EOS and padded; empty rows up to `n_chunks`."""
    length = tokenizer.model_max_length
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    all_ids, all_w = [], []
    for i in range(n_chunks):
        part, part_w = chunks[i] if i < len(chunks) else ([], [])
        row = [bos, *part, eos]
        row_w = [1.0, *part_w, 1.0]
        row += [pad] * (length - len(row))
        row_w += [1.0] * (length - len(row_w))
        all_ids.append(row)
        all_w.append(row_w)
    return torch.tensor(all_ids), torch.tensor(all_w)  # [n_chunks, max_length] each


@torch.no_grad()
def _encode(text_encoder, ids: torch.Tensor, weights: torch.Tensor, clip_skip: int, penultimate_default: bool,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode [chunks, 77] ids → ([1, chunks*77, dim] weighted states, pooled of first chunk or None)."""
    out = text_encoder(ids.to(device), output_hidden_states=True)
    if penultimate_default:  # SDXL: the penultimate layer is the default ("clip skip 2" there is one layer more)
        states = out.hidden_states[-(clip_skip + 1)]
    elif clip_skip > 1:
        states = out.hidden_states[-clip_skip]
        model = getattr(text_encoder, "text_model", text_encoder)  # transformers 5 flattened CLIPTextModel
        states = model.final_layer_norm(states)
    else:
        states = out[0]
    # states: [chunks, 77, dim]; each chunk is weighted, then rescaled to its own unweighted mean
    if bool((weights != 1.0).any()):
        w = weights.to(states.device, states.dtype).unsqueeze(-1)  # [chunks, 77, 1]
        original_mean = states.mean(dim=(1, 2), keepdim=True)  # [chunks, 1, 1]
        states = states * w
        new_mean = states.mean(dim=(1, 2), keepdim=True)
        states = states * torch.where(new_mean != 0, original_mean / new_mean, torch.ones_like(new_mean))
    pooled = out[0] if not penultimate_default else None
    if hasattr(out, "text_embeds"):
        pooled = out.text_embeds[:1]
    return states.reshape(1, -1, states.shape[-1]), pooled


def clip_encoders(pipe) -> list[tuple]:
    """The pipeline's (tokenizer, CLIP text encoder) pairs: one for SD 1.x/2.x, up to two for SDXL."""
    pairs = [(pipe.tokenizer, pipe.text_encoder), (getattr(pipe, "tokenizer_2", None),
                                                    getattr(pipe, "text_encoder_2", None))]
    return [(t, e) for t, e in pairs if t is not None and e is not None]


@dataclass(frozen=True)
class Encoded:
    """One prompt through a pipeline's CLIP encoders: states [1, chunks*77, dim] (SDXL: both encoders' states
    side by side) and, for SDXL, the pooled output [1, dim] of the second encoder's first chunk."""

    states: torch.Tensor
    pooled: torch.Tensor | None
    chunks: int


def encode_text(pipe, text: str, clip_skip: int, xl: bool) -> Encoded:
    """Encode one prompt (emphasis, BREAK, chunking) with the pipeline's CLIP text encoder(s), one forward pass
    per encoder."""
    encoders = clip_encoders(pipe)
    token_chunks = [chunk_tokens(tok, text) for tok, _ in encoders]
    n = max(len(c) for c in token_chunks)
    states, pooled = [], None
    for (tok, enc), chunks in zip(encoders, token_chunks):
        s, p = _encode(enc, *_rows(tok, chunks, n), clip_skip, xl, enc.device)
        states.append(s)
        if p is not None:
            pooled = p.reshape(1, -1)
    return Encoded(torch.cat(states, dim=-1), pooled if xl else None, n)


def padded(encoded: Encoded, empty: Encoded, n_chunks: int) -> torch.Tensor:
    """`encoded`'s states lengthened to `n_chunks` chunks with the empty prompt's (as a shorter prompt is padded
    to a longer one's length): [1, n_chunks*77, dim]."""
    extra = n_chunks - encoded.chunks
    if extra <= 0:
        return encoded.states
    return torch.cat([encoded.states, empty.states.repeat(1, extra, 1)], dim=1)


def encode_pair(pipe, prompt: str, negative: str, clip_skip: int, xl: bool) -> dict[str, torch.Tensor]:
    """prompt_embeds / negative_prompt_embeds (and SDXL's pooled pair) of equal length."""
    pos, neg = encode_text(pipe, prompt, clip_skip, xl), encode_text(pipe, negative, clip_skip, xl)
    n = max(pos.chunks, neg.chunks)
    empty = encode_text(pipe, "", clip_skip, xl) if pos.chunks != neg.chunks else pos
    out = {"prompt_embeds": padded(pos, empty, n), "negative_prompt_embeds": padded(neg, empty, n)}
    if xl and pos.pooled is not None:
        out["pooled_prompt_embeds"], out["negative_pooled_prompt_embeds"] = pos.pooled, neg.pooled
    return out


def encode_sd(pipe, prompt: str, negative: str, clip_skip: int) -> dict[str, torch.Tensor]:
    """prompt_embeds / negative_prompt_embeds for SD 1.x/2.x pipelines, with emphasis and long prompts."""
    return encode_pair(pipe, prompt, negative, clip_skip, False)


def encode_sdxl(pipe, prompt: str, negative: str, clip_skip: int) -> dict[str, torch.Tensor]:
    """Embeddings for SDXL's two text encoders: concatenated states plus encoder 2's pooled output."""
    return encode_pair(pipe, prompt, negative, clip_skip, True)
