"""Fixtures for segmentation tests: an Easel with the shipped built-in model (copied, since training re-exports
it), a tiny random CLIPSeg in models/clipseg and the tiny SD 1.x model (which cannot edit)."""
from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, api_client

BUILTIN = REPO / "models" / "builtin" / "easel-shapes"
CLIPSEG_LABEL = "tiny-clipseg (CLIPSeg)"


def b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def open_b64(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def scene_image(seed: int = 3) -> tuple[Image.Image, Any]:
    """A held-out shapes scene (64x64) and its Scene, from the built-in model's data generator."""
    from webui.builtin import data as D

    scene = D.random_scene(D.example_rng(seed, 0, "eval"), n_objects=2)
    image, _ = D.render(scene)
    return Image.fromarray(image), scene


def binary_values(image: Image.Image) -> set[int]:
    return set(np.unique(np.asarray(image)).tolist())


@pytest.fixture(scope="session")
def builtin_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a copy of the shipped built-in model as 'easel-shapes'."""
    if not (BUILTIN / "model_index.json").is_file():
        pytest.skip("the built-in model's weights are not in models/builtin/easel-shapes")
    root = tmp_path_factory.mktemp("builtin")
    shutil.copytree(BUILTIN, root / "easel-shapes", ignore=shutil.ignore_patterns(".*"))
    return root


@pytest.fixture(scope="session")
def tiny_clipseg_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_clipseg

    return make_tiny_clipseg(tmp_path_factory.mktemp("clipseg") / "tiny-clipseg")


@pytest.fixture
def seg_easel(make_easel, tmp_path: Path, builtin_root: Path, tiny_clipseg_dir: Path):
    """An Easel with easel-shapes (edit-capable), tiny-clipseg and tiny-sd1."""
    shutil.copytree(tiny_clipseg_dir, tmp_path / "data" / "models" / "clipseg" / "tiny-clipseg")
    return make_easel(builtin_dir=builtin_root)


@pytest.fixture
def seg_client(seg_easel):
    with api_client(seg_easel) as test_client:
        yield test_client


def make_tiny_sam3(folder: Path, seed: int = 0) -> Path:
    """Tiny random SAM 3 (transformers): a 2-layer ViT on 112×112 in 14-px patches, one-layer DETR encoder and
    decoder (8 queries), a one-layer CLIP text tower on the tiny CLIP tokenizer, and its processor."""
    import torch
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    from tests.tiny_models import tiny_clip_tokenizer

    folder = Path(folder)
    tokenizer = tiny_clip_tokenizer(folder.with_name(folder.name + "-tokenizer"))
    width = 32
    small = {"hidden_size": width, "num_attention_heads": 2, "intermediate_size": 2 * width}
    config = Sam3Config(
        vision_config={"backbone_config": {**small, "model_type": "sam3_vit_model", "num_hidden_layers": 2,
                                           "image_size": 112, "patch_size": 14, "pretrain_image_size": 112,
                                           "window_size": 4, "global_attn_indexes": [1]},
                       "fpn_hidden_size": width, "backbone_feature_sizes": [[32, 32], [16, 16], [8, 8]]},
        text_config={**small, "vocab_size": len(tokenizer), "projection_dim": width, "num_hidden_layers": 1,
                     "max_position_embeddings": 32, "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
        geometry_encoder_config={**small, "num_layers": 1},
        detr_encoder_config={**small, "num_layers": 1},
        detr_decoder_config={**small, "num_layers": 1, "num_queries": 8},
        mask_decoder_config={"hidden_size": width, "num_attention_heads": 2},
    )
    torch.manual_seed(seed)
    model = Sam3Model(config).eval()
    processor = Sam3Processor(image_processor=Sam3ImageProcessor(size={"height": 112, "width": 112}),
                              tokenizer=tokenizer)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    shutil.rmtree(folder.with_name(folder.name + "-tokenizer"), ignore_errors=True)
    return folder
