"""Prompt syntax: AUTOMATIC1111 emphasis and `<lora:name:weight>` tags, and weighted CLIP encoding.

Emphasis: `(word)` multiplies attention by 1.1, `[word]` divides by 1.1, `(word:1.5)` sets 1.5, nesting
multiplies, `\\(` is a literal parenthesis. For SD 1.x/2.x/SDXL the prompt is encoded in 75-token chunks (so
long prompts work), each token's embedding is scaled by its weight, and the result is rescaled to the
unweighted mean, as AUTOMATIC1111 does. Clip skip takes an earlier hidden layer of the text encoder.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

_TOKEN = re.compile(r"\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)|\)|\]|[^\\()\[\]:]+|:")
_LORA = re.compile(r"<(lora|lyco):([^:>]+)(?::([+-]?(?:\d+\.?\d*|\.\d+)))?(?::[^>]*)?>", re.IGNORECASE)
ROUND_UP = 1.1
SQUARE_DOWN = 1 / 1.1


@dataclass(frozen=True)
class LoraTag:
    name: str
    weight: float


def extract_loras(prompt: str) -> tuple[str, list[LoraTag]]:
    """Remove `<lora:name:w>` tags from a prompt; return the cleaned prompt and the tags in order."""
    tags = [LoraTag(m.group(2).strip(), float(m.group(3)) if m.group(3) else 1.0) for m in _LORA.finditer(prompt)]
    return _LORA.sub("", prompt), tags


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
    """The prompt as plain text, for models that take strings (flow models with T5/LLM encoders)."""
    return "".join(chunk for chunk, _ in parse_emphasis(text))


def _weighted_tokens(tokenizer, prompt: str) -> tuple[list[int], list[float]]:
    ids: list[int] = []
    weights: list[float] = []
    for chunk, weight in parse_emphasis(prompt):
        chunk_ids = tokenizer(chunk, add_special_tokens=False, truncation=False)["input_ids"]
        ids.extend(chunk_ids)
        weights.extend([weight] * len(chunk_ids))
    return ids, weights


def _chunks(tokenizer, ids: list[int], weights: list[float], n_chunks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split into windows of (max_length - 2) tokens, each wrapped in BOS/EOS and padded."""
    length = tokenizer.model_max_length
    inner = length - 2
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    all_ids, all_w = [], []
    for i in range(n_chunks):
        part = ids[i * inner:(i + 1) * inner]
        part_w = weights[i * inner:(i + 1) * inner]
        row = [bos, *part, eos]
        row_w = [1.0, *part_w, 1.0]
        row += [pad] * (length - len(row))
        row_w += [1.0] * (length - len(row_w))
        all_ids.append(row)
        all_w.append(row_w)
    return torch.tensor(all_ids), torch.tensor(all_w)


def _n_chunks(tokenizer, *id_lists: list[int]) -> int:
    inner = tokenizer.model_max_length - 2
    return max(1, *[(len(ids) + inner - 1) // inner for ids in id_lists])


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
    # states: [chunks, 77, dim]
    w = weights.to(states.device, states.dtype).unsqueeze(-1)  # [chunks, 77, 1]
    original_mean = states.mean()
    states = states * w
    states = states * (original_mean / states.mean()) if states.mean() != 0 else states
    pooled = out[0] if not penultimate_default else None
    if hasattr(out, "text_embeds"):
        pooled = out.text_embeds[:1]
    return states.reshape(1, -1, states.shape[-1]), pooled


def encode_sd(pipe, prompt: str, negative: str, clip_skip: int) -> dict[str, torch.Tensor]:
    """prompt_embeds / negative_prompt_embeds for SD 1.x/2.x pipelines, with emphasis and long prompts."""
    tok, enc = pipe.tokenizer, pipe.text_encoder
    device = enc.device
    p_ids, p_w = _weighted_tokens(tok, prompt)
    n_ids, n_w = _weighted_tokens(tok, negative)
    n = _n_chunks(tok, p_ids, n_ids)
    pos, _ = _encode(enc, *_chunks(tok, p_ids, p_w, n), clip_skip, False, device)
    neg, _ = _encode(enc, *_chunks(tok, n_ids, n_w, n), clip_skip, False, device)
    return {"prompt_embeds": pos, "negative_prompt_embeds": neg}


def encode_sdxl(pipe, prompt: str, negative: str, clip_skip: int) -> dict[str, torch.Tensor]:
    """Embeddings for SDXL's two text encoders: concatenated states plus encoder 2's pooled output."""
    encoders = [(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)]
    encoders = [(t, e) for t, e in encoders if t is not None and e is not None]
    tokens = [(_weighted_tokens(t, prompt), _weighted_tokens(t, negative)) for t, _ in encoders]
    n = max(_n_chunks(t, p[0], q[0]) for (t, _), (p, q) in zip(encoders, tokens))
    pos_states, neg_states = [], []
    pos_pooled = neg_pooled = None
    for (tok, enc), (p, q) in zip(encoders, tokens):
        ps, pp = _encode(enc, *_chunks(tok, *p, n), clip_skip, True, enc.device)
        ns, npool = _encode(enc, *_chunks(tok, *q, n), clip_skip, True, enc.device)
        pos_states.append(ps)
        neg_states.append(ns)
        if pp is not None:
            pos_pooled, neg_pooled = pp, npool
    out = {"prompt_embeds": torch.cat(pos_states, dim=-1), "negative_prompt_embeds": torch.cat(neg_states, dim=-1)}
    if pos_pooled is not None:
        out["pooled_prompt_embeds"] = pos_pooled.reshape(1, -1)
        out["negative_pooled_prompt_embeds"] = neg_pooled.reshape(1, -1)
    return out
