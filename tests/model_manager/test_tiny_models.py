"""The shared tiny-model factory and the offline CLIP tokenizer it and the loader rely on."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_models import TINY_BUILDERS, make_tiny_sd1, tiny_qwen_tokenizer, tiny_t5_tokenizer
from webui.model_manager.clip_tokenizer import FULL_MERGES, byte_symbols, clip_vocab, clip_merges, load_clip_tokenizer


def test_clip_tokenizer_matches_openai_ids(tmp_path: Path) -> None:
    tokenizer = load_clip_tokenizer(tmp_path)
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    # Well-known ids of OpenAI's CLIP vocabulary: start, "a</w>", "photo</w>", "of</w>", end.
    assert tokenizer("a photo of")["input_ids"] == [49406, 320, 1125, 539, 49407]
    assert tokenizer.pad_token_id == 49407
    assert load_clip_tokenizer(tmp_path, pad_token="!").pad_token_id == 0  # SDXL's second tokenizer
    assert (tmp_path / "clip-tokenizer" / "vocab.json").is_file()  # built once, reused from the cache


def test_clip_vocabulary_layout() -> None:
    symbols = byte_symbols()
    assert len(symbols) == len(set(symbols)) == 256 and symbols[0] == "!"
    merges = clip_merges(FULL_MERGES)
    vocab = clip_vocab(merges)
    assert len(vocab) == 49408 and vocab["<|startoftext|>"] == 49406 and vocab["a</w>"] == 320
    with pytest.raises(ValueError):
        clip_merges(FULL_MERGES + 1)


def test_tiny_tokenizers_are_local() -> None:
    t5 = tiny_t5_tokenizer()
    ids = t5("a red cube")["input_ids"]
    assert ids[-1] == t5.eos_token_id and t5.unk_token_id not in ids
    qwen = tiny_qwen_tokenizer()
    text = qwen.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>user") and qwen.decode(qwen(text)["input_ids"]) == text


@pytest.mark.parametrize("family", sorted(TINY_BUILDERS))
def test_tiny_models_are_small(tiny, family: str) -> None:
    folder = tiny[family]
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert (folder / "model_index.json").is_file() and size < 2.6e6, size


def test_seeds_decide_the_weights(tmp_path: Path) -> None:
    def unet(folder: Path) -> dict[str, torch.Tensor]:
        return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))

    a, b, c = (unet(make_tiny_sd1(tmp_path / name, seed=seed)) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
