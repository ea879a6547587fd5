"""CLIP tokenizers built offline from the BPE merge list that ships inside the `open_clip` package.

Single-file Stable Diffusion checkpoints carry no tokenizer, and Easel never downloads one. OpenAI's CLIP
tokenizer is fully defined by its merge list: the vocabulary is the 256 byte symbols, the same symbols with the
end-of-word marker `</w>`, one token per merge (the two halves joined), then `<|startoftext|>` and
`<|endoftext|>` — 49,408 entries for the full list. `open_clip` ships that list as
`bpe_simple_vocab_16e6.txt.gz`; this module turns it into `vocab.json` + `merges.txt` once, in a cache folder,
and builds `transformers.CLIPTokenizer` objects from those files. A smaller `num_merges` gives a small but
well-formed tokenizer, which the test models use.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

log = logging.getLogger(__name__)

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
FULL_MERGES = 49152 - 256 - 2  # 48,894 merges: OpenAI CLIP's vocabulary of 49,408 tokens
MODEL_MAX_LENGTH = 77
_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


def byte_symbols() -> list[str]:
    """The 256 symbols byte-level BPE uses for bytes, in CLIP's vocabulary order.

    Printable Latin-1 bytes stand for themselves and come first, in byte order; the others (control bytes,
    space, a few gaps) follow, mapped to code points 256, 257, ... in byte order, so every byte has a visible,
    non-whitespace symbol.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in set(printable)]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(rest))]


def _bpe_source() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the `open_clip` package (open-clip-torch) is not installed; it ships CLIP's BPE list")
    path = Path(next(iter(spec.submodule_search_locations))) / _BPE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"CLIP BPE list not found at {path}")
    return path


@lru_cache(maxsize=1)
def _all_merges() -> tuple[tuple[str, str], ...]:
    with gzip.open(_bpe_source(), "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    # Line 0 is a version header; the merges follow in priority order, one "left right" pair per line.
    pairs = [tuple(line.split()) for line in lines[1:FULL_MERGES + 1]]
    if len(pairs) != FULL_MERGES or any(len(p) != 2 for p in pairs):
        raise ValueError(f"{_BPE_FILE}: expected {FULL_MERGES} merge pairs")
    return tuple((a, b) for a, b in pairs)


def clip_merges(num_merges: int = FULL_MERGES) -> list[tuple[str, str]]:
    """The first `num_merges` CLIP merge pairs, highest priority first."""
    if not 0 <= num_merges <= FULL_MERGES:
        raise ValueError(f"num_merges must be in [0, {FULL_MERGES}], got {num_merges}")
    return list(_all_merges()[:num_merges])


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id, laid out the way OpenAI's CLIP defines it for the given merges."""
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in merges] + [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def write_clip_tokenizer_files(folder: Path, num_merges: int = FULL_MERGES, pad_token: str = EOS_TOKEN,
                               model_max_length: int = MODEL_MAX_LENGTH) -> Path:
    """Write a loadable CLIP tokenizer folder (vocab.json, merges.txt, tokenizer_config.json); return it.

    Files are written to a temporary name and renamed, so a reader never sees a half-written folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    merges = clip_merges(num_merges)
    vocab = clip_vocab(merges)
    if pad_token not in vocab:
        raise ValueError(f"pad token {pad_token!r} is not in the CLIP vocabulary")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": pad_token,
        "model_max_length": model_max_length, "do_lower_case": True,
    }
    contents = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "tokenizer_config.json": json.dumps(config, indent=2),
        "special_tokens_map.json": json.dumps(
            {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": pad_token}, indent=2),
    }
    for name, text in contents.items():
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, folder / name)
    return folder


def clip_tokenizer_folder(cache_dir: Path, pad_token: str = EOS_TOKEN) -> Path:
    """The full CLIP tokenizer folder under `cache_dir`, built on first use."""
    name = "clip-tokenizer" if pad_token == EOS_TOKEN else f"clip-tokenizer-pad{ord(pad_token[0]):x}"
    folder = Path(cache_dir) / name
    if not (folder / "vocab.json").is_file() or not (folder / "merges.txt").is_file() or not (
            folder / "tokenizer_config.json").is_file():
        log.info("building CLIP tokenizer files in %s", folder)
        write_clip_tokenizer_files(folder, FULL_MERGES, pad_token)
    return folder


def load_clip_tokenizer(cache_dir: Path, pad_token: str = EOS_TOKEN) -> CLIPTokenizer:
    """A CLIPTokenizer equal to OpenAI's (SD 1.x, SDXL's first encoder); SDXL's second one pads with "!"."""
    folder = clip_tokenizer_folder(cache_dir, pad_token)
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
