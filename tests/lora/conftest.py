"""Fixtures for the LoRA tests: tiny models of each family (built once per session) and LoRA files made for them.

`tiny_family(name)` is a saved tiny diffusers folder; `sd1_lora(folder, name, seed, layout)` writes a random
LoRA for the tiny SD 1.x model (UNet attention + text encoder) in the chosen layout.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

from tests.lora.lora_files import kohya_layout, peft_layout, random_lora, save
from tests.tiny_models import TINY_BUILDERS

UNET_ATTENTION = r"attn[12]\.to_(q|k|v|out\.0)$"
TEXT_ATTENTION = r"self_attn\.(q|k|v|out)_proj$"


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    made: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("lora-tiny-models")

    def get(family: str) -> Path:
        if family not in made:
            made[family] = TINY_BUILDERS[family](root / family, seed=0)
        return made[family]

    return get


@pytest.fixture(scope="session")
def sd1_modules(tiny_sd1_dir: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    return (UNet2DConditionModel.from_pretrained(tiny_sd1_dir / "unet"),
            CLIPTextModel.from_pretrained(tiny_sd1_dir / "text_encoder"))


@pytest.fixture
def sd1_lora(sd1_modules) -> Callable[..., Path]:
    unet, text_encoder = sd1_modules

    def write(folder: Path, name: str, seed: int = 0, layout: str = "kohya", text: bool = True,
              metadata: dict[str, str] | None = None) -> Path:
        unet_pairs = random_lora(unet, UNET_ATTENTION, rank=4, seed=seed)
        text_pairs = random_lora(text_encoder, TEXT_ATTENTION, rank=4, seed=seed + 100) if text else {}
        if not hasattr(text_encoder, "text_model"):  # files name CLIP's layers as transformers 4 did
            text_pairs = {f"text_model.{path}": pair for path, pair in text_pairs.items()}
        if layout == "kohya":
            tensors = {**kohya_layout(unet_pairs, "lora_unet", alpha=2.0), **kohya_layout(text_pairs, "lora_te")}
        else:
            tensors = {**peft_layout(unet_pairs, "unet"), **peft_layout(text_pairs, "text_encoder")}
        return save(folder / f"{name}.safetensors", tensors, metadata)

    return write
