"""Tiny random-weight pipelines of the other diffusers families (DiT, PixArt-α/Σ, Sana, aMUSEd, unCLIP, DeepFloyd
IF), built in process from their classes' constructors and saved with `save_pretrained` as a user has them.

Each `make_tiny_<family>(folder, seed=0)` returns `folder`. The components are a few thousand parameters each, so
a 2-step generation takes well under a second on a CPU. Tokenizers are the small local ones of tests/tiny_models.py
(CLIP from a prefix of CLIP's BPE list, T5 from a hand-made vocabulary, Gemma from a byte-level vocabulary).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.tiny_models import _save, _sd_vae, _seeded, _t5_encoder, tiny_t5_tokenizer

# A few ImageNet class names (ids as in ImageNet-1k) for DiT's id2label.
DIT_LABELS = {0: "tench, Tinca tinca", 1: "goldfish, Carassius auratus", 207: "golden retriever",
              208: "Labrador retriever", 279: "arctic fox, white fox, Alopex lagopus", 281: "tabby, tabby cat",
              282: "tiger cat", 388: "giant panda, panda, panda bear", 812: "space shuttle"}


def make_tiny_dit(folder: Path, seed: int = 0) -> Path:
    """A DiT folder: a class-conditional DiTTransformer2DModel (1000 classes, 32x32 latents), a tiny VAE, DDIM,
    and `id2label` in model_index.json (as facebook/DiT-XL-2-256 has it)."""
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    with _seeded(seed):
        transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                            out_channels=8, num_layers=1, sample_size=32, patch_size=4,
                                            num_embeds_ada_norm=1000, norm_type="ada_norm_zero").eval()
    pipe = DiTPipeline(transformer=transformer, vae=_sd_vae(seed + 1), scheduler=DDIMScheduler())
    _save(pipe, folder)
    _add_to_index(folder, id2label={str(k): v for k, v in DIT_LABELS.items()})  # as the published DiT folders
    return folder


def _add_to_index(folder: Path, **entries: object) -> None:
    index_path = Path(folder) / "model_index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    index.update(entries)
    index_path.write_text(json.dumps(index, indent=2), encoding="utf-8")
