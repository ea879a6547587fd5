"""Tiny random-weight face restorers, saved as files the way users install them, for tests of face restoration.

`make_tiny_gfpgan` builds spandrel's own GFPGANv1Clean class at 32 or 64 px with narrow channels; `make_tiny_codeformer`
builds Easel's `ScalableCodeFormer` (spandrel_extra_arches' CodeFormer blocks and parameter names) at 32 px. Both
are recognised by spandrel's key conditions and loaded by `webui.model_manager.face_models` like published files.
"""
from __future__ import annotations

from pathlib import Path


def _save(model, path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:  # a pickle as GFPGAN's and CodeFormer's releases ship them: tensors under "params_ema"
        torch.save({"params_ema": model.state_dict()}, str(path))
    return path


def make_tiny_gfpgan(path: Path, out_size: int = 32, channel_multiplier: int = 2, seed: int = 0) -> Path:
    """A GFPGANv1Clean of `out_size` px with 1/16 of the channels and a 2-layer style MLP (about 0.1 M parameters)."""
    import torch
    from spandrel.architectures.GFPGAN import GFPGAN

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GFPGAN(out_size=out_size, num_style_feat=32, channel_multiplier=channel_multiplier,
                       decoder_load_path=None, fix_decoder=False, num_mlp=2, input_is_latent=True,
                       different_w=True, narrow=1 / 16, sft_half=True)
    return _save(model, path)


def make_tiny_codeformer(path: Path, seed: int = 0) -> Path:
    """A CodeFormer for 32-px faces: 32 filters, three levels (an 8x8 code grid), 64 codes of width 32, one
    transformer layer of width 64, fused at 16 and 32 px."""
    import torch

    from webui.model_manager.face_models import ScalableCodeFormer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ScalableCodeFormer(img_size=32, nf=32, ch_mult=[1, 1, 2], res_blocks=1, attn_resolutions=[8],
                                   emb_dim=32, codebook_size=64, dim_embd=64, n_head=8, n_layers=1,
                                   connect_list=["16", "32"])
        for p in model.parameters():  # larger than the default init, so w visibly changes the output
            if p.dim() > 1:
                torch.nn.init.normal_(p, std=0.05)
    return _save(model, path)
