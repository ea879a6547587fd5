"""Textual-inversion embeddings: list the files in the embeddings folders, tell what each holds, and add the ones a
prompt names to a loaded pipeline's text encoder(s).

An embedding is a few learned token vectors. Its name is the file's stem; a prompt uses it by writing the name as
a word (`bad-hands`, `(bad-hands:1.2)`), as in AUTOMATIC1111. Only `.safetensors` files are read, and listing
reads only their header. The layouts recognised are AUTOMATIC1111's (`emb_params` [vectors, width], or
`string_to_param.*` as its `.pt` files look once converted), any file holding a single tensor (diffusers'
`learned_embeds`), and SDXL's `clip_l` [vectors, 768] + `clip_g` [vectors, 1280]. Pickle files (`.pt`, `.bin`,
...) are listed as skipped with the command that converts them; they are never opened.

Adding an embedding to a pipeline goes through diffusers' `load_textual_inversion` with an explicit tokenizer and
text encoder, once per checkpoint and file version: each vector gets its own placeholder token
(`<ti-0123456789abcdef-0>`, ... from the file's SHA-256), and a prompt's name is replaced by those tokens before
it is tokenized (`expand`), so emphasis and long prompts work as for any word. Words that are not embedding names
are tokenized exactly as before, and the text encoder's existing rows are untouched, so their images stay the
same bit for bit. The tokenizers of a checkpoint get their own copy before the first embedding is added (loaders
may share one tokenizer object between checkpoints).
"""
from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webui.model_manager.identify import ARCH_LABELS, PICKLE_SUFFIXES, Arch, HeaderError, read_safetensors_header

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

EMBEDDING_SUFFIXES = (".safetensors",)
LISTED_SUFFIXES = EMBEDDING_SUFFIXES + PICKLE_SUFFIXES
EMBEDDING_ARCHS = (Arch.SD1, Arch.SD2, Arch.SDXL)  # CLIP text encoders; flow models take the name as plain text
MAX_VECTORS = 75  # one prompt chunk of a CLIP text encoder
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
SDXL_KEYS = ("clip_l", "clip_g")


class EmbeddingError(ValueError):
    """An embedding a prompt names cannot be used with the loaded model (wrong width, unreadable file)."""


def pickle_reason(path: Path) -> str:
    """Why a pickle embedding is skipped, and how to convert it (the converter reads tensors only)."""
    return ("pickle file: not loaded, because unpickling can run code hidden in the file; convert it to "
            f".safetensors with `python -m webui.model_manager.convert \"{path}\"`, which reads only its tensors")


@dataclass(frozen=True)
class EmbeddingEntry:
    """One file in an embeddings folder. `keys` names one tensor per text encoder (SDXL: clip_l, clip_g);
    `reason` says why it cannot be used ("" when it can)."""

    name: str
    path: Path
    keys: tuple[str, ...] = ()
    vectors: int = 0
    widths: tuple[int, ...] = ()  # vector width per text encoder
    reason: str = ""

    @property
    def usable(self) -> bool:
        return not self.reason

    @property
    def shape(self) -> int | None:
        """AUTOMATIC1111's "shape": the vector width (SDXL: clip_l + clip_g)."""
        return sum(self.widths) if self.widths else None

    def describe_widths(self) -> str:
        if len(self.widths) == 2:
            return f"an SDXL embedding (clip_l {self.widths[0]} + clip_g {self.widths[1]} wide)"
        return f"{self.widths[0]} wide" if self.widths else "unreadable"


@dataclass(frozen=True)
class AppliedEmbedding:
    """An embedding added to the loaded model: `tokens` (one per vector) stand for its name in a prompt."""

    name: str
    short_hash: str
    tokens: tuple[str, ...]


class EmbeddingState:
    """The embeddings added to one checkpoint's text encoder(s): placeholder tokens by file SHA-256."""

    def __init__(self) -> None:
        self.tokens: dict[str, tuple[str, ...]] = {}


# ============================================================================================ listing
def describe_embedding(name: str, path: Path) -> EmbeddingEntry:
    """Read an embedding file's header (never its tensors, never a pickle)."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return EmbeddingEntry(name, path, reason=pickle_reason(path))
    try:
        header = read_safetensors_header(path)
    except HeaderError as exc:
        return EmbeddingEntry(name, path, reason=f"not a valid safetensors file: {exc}")
    except OSError as exc:
        return EmbeddingEntry(name, path, reason=f"cannot read file: {exc.strerror or exc}")
    try:
        keys, vectors, widths = embedding_layout(header)
    except ValueError as exc:
        return EmbeddingEntry(name, path, reason=str(exc))
    return EmbeddingEntry(name, path, keys, vectors, widths)


def embedding_layout(header: dict[str, dict[str, Any]]) -> tuple[tuple[str, ...], int, tuple[int, ...]]:
    """(keys, vectors, widths) of a safetensors header; ValueError names what is wrong with it."""
    floats = {k: tuple(int(d) for d in v["shape"]) for k, v in header.items() if v.get("dtype") in FLOAT_DTYPES}
    params = [k for k in floats if k.startswith("string_to_param.")]
    if all(k in floats for k in SDXL_KEYS):
        keys: tuple[str, ...] = SDXL_KEYS
    elif "emb_params" in floats:
        keys = ("emb_params",)
    elif len(params) == 1:
        keys = (params[0],)
    elif len(floats) == 1:
        keys = (next(iter(floats)),)
    else:
        found = ", ".join(sorted(header)[:8]) or "none"
        raise ValueError("not a textual-inversion embedding: expected emb_params, string_to_param.*, clip_l + clip_g "
                         f"or a single tensor; found {len(header)} tensor(s) ({found})")
    sizes = [_vectors_and_width(key, floats[key]) for key in keys]
    vectors = sizes[0][0]
    if any(n != vectors for n, _ in sizes):
        raise ValueError(f"clip_l has {sizes[0][0]} vectors but clip_g has {sizes[1][0]}")
    if not 1 <= vectors <= MAX_VECTORS:
        raise ValueError(f"{vectors} vectors; an embedding has 1 to {MAX_VECTORS} (one prompt chunk)")
    return keys, vectors, tuple(w for _, w in sizes)


def _vectors_and_width(key: str, shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 1:
        return 1, shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    raise ValueError(f"tensor {key!r} has shape {list(shape)}; an embedding is [vectors, width]")


def scan_embeddings(roots: Sequence[Path]) -> list[EmbeddingEntry]:
    """Every embedding file under `roots` (sub-folders too, hidden entries skipped), one per name: a usable file
    wins over a skipped one of the same name (a .safetensors beside the .pt it was converted from), else the
    first found."""
    found: dict[str, EmbeddingEntry] = {}
    for root in roots:
        for path in _embedding_files(Path(root)):
            entry = describe_embedding(path.stem, path)
            kept = found.get(entry.name)
            if kept is not None and (kept.usable or not entry.usable):
                if kept.usable and entry.usable:
                    log.warning("two embeddings named %r: using %s, ignoring %s", entry.name, kept.path, path)
                continue
            found[entry.name] = entry
    return sorted(found.values(), key=lambda e: (e.name.lower(), e.name))


def _embedding_files(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [Path(dirpath) / f for f in sorted(filenames)
                  if not f.startswith(".") and f.lower().endswith(LISTED_SUFFIXES)]
    return files


# ============================================================================================ prompts
def word_pattern(names: Iterable[str]) -> re.Pattern[str] | None:
    """A pattern matching any of `names` as a whole word, in any case, longest name first; None for no names."""
    ordered = sorted({n for n in names if n}, key=lambda n: (-len(n), n))
    if not ordered:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(n) for n in ordered) + r")(?!\w)", re.IGNORECASE)


def names_in(text: str, pattern: re.Pattern[str] | None) -> list[str]:
    """The matches of `pattern` in `text`, lower-cased, in order of first appearance."""
    if pattern is None or not text:
        return []
    return list(dict.fromkeys(m.group(0).lower() for m in pattern.finditer(text)))


def expand(text: str, embeddings: Sequence[AppliedEmbedding]) -> str:
    """Each applied embedding's name, where it stands as a word, replaced by its placeholder tokens."""
    if not embeddings:
        return text
    replacements = {e.name.lower(): " ".join(e.tokens) for e in embeddings}
    pattern = word_pattern(e.name for e in embeddings)
    assert pattern is not None
    return pattern.sub(lambda m: replacements[m.group(0).lower()], text)


# ============================================================================================ pipelines
def encoder_slots(pipe: Any, arch: Arch) -> list[tuple[str, str, int]]:
    """(tokenizer attribute, text encoder attribute, which of an embedding's tensors) for each text encoder that
    takes embeddings: SD 1.x/2.x one, SDXL clip_l then clip_g (a refiner only the latter); other families none."""
    if arch in (Arch.SD1, Arch.SD2):
        pairs = [("tokenizer", "text_encoder", 0)]
    elif arch == Arch.SDXL:
        pairs = [("tokenizer", "text_encoder", 0), ("tokenizer_2", "text_encoder_2", 1)]
    else:
        return []
    return [(t, e, part) for t, e, part in pairs
            if getattr(pipe, t, None) is not None and getattr(pipe, e, None) is not None]


def encoder_widths(pipe: Any, arch: Arch) -> dict[int, int]:
    """Token-embedding width of each text encoder, by the embedding tensor it takes (0: clip_l / SD, 1: clip_g)."""
    return {part: int(getattr(pipe, enc).get_input_embeddings().embedding_dim)
            for _, enc, part in encoder_slots(pipe, arch)}


def check_fits(entry: EmbeddingEntry, widths: dict[int, int], arch: Arch, model: str) -> None:
    """EmbeddingError naming the embedding and both widths when its vectors do not fit the model's encoders."""
    needed_parts = 2 if arch == Arch.SDXL else 1
    fits = len(entry.widths) == needed_parts and all(entry.widths[part] == w for part, w in widths.items())
    if fits:
        return
    label = ARCH_LABELS.get(arch, arch.value)
    if arch == Arch.SDXL:
        wanted = (f"an SDXL embedding (clip_l {widths.get(0, '?')} + clip_g {widths.get(1, '?')} wide), "
                  "its text encoders' widths")
    else:
        wanted = f"{widths.get(0, '?')}-wide vectors, its text encoder's width"
    raise EmbeddingError(f"embedding {entry.name!r} is {entry.describe_widths()}, but {model} ({label}) needs "
                         f"{wanted}; use an embedding made for this model family")


def placeholder_tokens(sha256: str, vectors: int) -> tuple[str, ...]:
    """One token per vector, unique per file version, and shaped so no prompt word is ever split by it."""
    return tuple(f"<ti-{sha256[:16]}-{i}>" for i in range(vectors))


def own_tokenizers(pipes: Sequence[Any], arch: Arch) -> None:
    """Give these pipelines (the modes of one checkpoint) a private copy of each CLIP tokenizer, so tokens added
    for an embedding never reach another checkpoint that was handed the same tokenizer object."""
    if not pipes:
        return
    for tok_attr, _, _ in encoder_slots(pipes[0], arch):
        private = copy.deepcopy(getattr(pipes[0], tok_attr))
        for pipe in pipes:
            setattr(pipe, tok_attr, private)


def read_vectors(entry: EmbeddingEntry) -> list[torch.Tensor]:
    """The embedding's tensors, one [vectors, width] per text encoder, as stored (CPU)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(entry.path), device="cpu")
    except (OSError, SafetensorError) as exc:
        raise EmbeddingError(f"cannot read embedding {entry.name!r} ({entry.path}): {exc}") from None
    vectors = []
    for key in entry.keys:
        tensor = tensors.get(key)
        if tensor is None or tensor.reshape(-1, tensor.shape[-1]).shape[0] != entry.vectors:
            raise EmbeddingError(f"embedding {entry.name!r} ({entry.path}) changed since it was listed; refresh")
        vectors.append(tensor.reshape(-1, tensor.shape[-1]))  # [vectors, width]
    return vectors


def add_embedding(pipes: Sequence[Any], arch: Arch, vectors: list[torch.Tensor], tokens: tuple[str, ...]) -> None:
    """Add one embedding's vectors under `tokens` to each text encoder of a checkpoint (`pipes`: its modes, which
    share tokenizers and encoders), through diffusers' `load_textual_inversion` with the tokenizer and encoder
    given explicitly. The caller has lifted any offload hooks."""
    import torch

    loader = next((p for p in pipes if hasattr(p, "load_textual_inversion")), None)
    if loader is None:
        raise EmbeddingError(f"{type(pipes[0]).__name__} cannot load textual-inversion embeddings")
    for tok_attr, enc_attr, part in encoder_slots(loader, arch):
        tokenizer, text_encoder = getattr(loader, tok_attr), getattr(loader, enc_attr)
        if tokens[0] in tokenizer.get_vocab():
            continue  # added by an earlier attempt that failed on another encoder
        # The new rows are written at once: skip transformers' mean/covariance initialisation of them, which takes
        # seconds on a CPU for a 49k-token table (diffusers' own resize to the same size is then a no-op).
        text_encoder.resize_token_embeddings(len(tokenizer) + len(tokens), mean_resizing=False)
        with torch.random.fork_rng(devices=[]):
            loader.load_textual_inversion(list(vectors[part]), token=list(tokens), tokenizer=tokenizer,
                                          text_encoder=text_encoder)
