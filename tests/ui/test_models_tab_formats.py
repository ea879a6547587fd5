"""The Models tab says what a transformer-only file still lacks, and stops saying it once the parts are there."""
from __future__ import annotations

import shutil

import torch
from safetensors.torch import save_file

from tests.tiny_formats import save_gguf
from webui.ui.app import build_ui
from webui.ui.tabs.models import checkpoint_rows

FLUX_KEYS = {"img_in.weight": (32, 16), "double_blocks.0.img_attn.qkv.weight": (96, 32),
             "single_blocks.0.linear1.weight": (224, 32)}


def test_incomplete_flux_file_names_the_missing_parts(make_easel) -> None:
    easel = make_easel(install_sd1=False)
    models = easel.settings.data_dir / "models"
    save_gguf({k: torch.randn(*s) for k, s in FLUX_KEYS.items()}, models / "diffusion_models" / "flux-Q8_0.gguf")
    easel.manager.refresh()
    blocks, ui = build_ui(easel)
    try:
        status = {row[0]: row for row in checkpoint_rows(ui)}["flux-Q8_0"][3]
        assert "GGUF Q8_0" in status
        assert "Incomplete: Flux.1 needs a CLIP-L text encoder in models/text_encoders/" in status
        assert "T5-XXL text encoder" in status and "models/VAE/" in status
        encoders = models / "text_encoders"
        save_file({"text_model.embeddings.token_embedding.weight": torch.zeros(8, 768),
                   "text_model.encoder.layers.0.self_attn.q_proj.weight": torch.zeros(768, 768)},
                  str(encoders / "clip_l.safetensors"))
        save_file({"shared.weight": torch.zeros(8, 64), "encoder.block.0.layer.0.SelfAttention.q.weight":
                   torch.zeros(64, 64)}, str(encoders / "t5xxl_fp16.safetensors"))
        (encoders / "t5-tokenizer").mkdir()
        (encoders / "t5-tokenizer" / "spiece.model").write_bytes(b"placeholder")
        save_file({"decoder.conv_in.weight": torch.zeros(8, 16, 3, 3)}, str(models / "VAE" / "ae.safetensors"))
        easel.manager.refresh()
        status = {row[0]: row for row in checkpoint_rows(ui)}["flux-Q8_0"][3]
        assert "Incomplete" not in status
        shutil.rmtree(encoders / "t5-tokenizer")
        easel.manager.refresh()
        assert "T5 tokenizer" in {row[0]: row for row in checkpoint_rows(ui)}["flux-Q8_0"][3]
    finally:
        blocks.close()
