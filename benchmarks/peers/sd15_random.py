"""A Stable Diffusion 1.5-architecture diffusers folder with random weights, built offline.

The layout, shapes and configs are SD 1.5's: an 860M-parameter UNet (320/640/1280/1280 channels, 768-wide
cross-attention), the 84M-parameter VAE (128/256/512/512, 8x downsampling, scaling factor 0.18215), the 123M
CLIP ViT-L/14 text encoder (12 layers, 768 wide) and OpenAI CLIP's full 49,408-token tokenizer (built from the
BPE list that ships in the `open_clip` package, see webui.model_manager.clip_tokenizer). Only the weights are
random, so a denoising step costs exactly what it costs with the real checkpoint. The scheduler saved is SD 1.5's
PNDM configuration; benchmarks replace it with Euler per request.

The weights are stored in float16 by default to halve the disk footprint (about 2 GB instead of 4 GB); every
benchmark loads them as float32 (`torch_dtype=torch.float32`, InvokeAI's `precision: float32`), so the compute
is full precision either way. `--dtype float32` stores full-precision files instead.

    python benchmarks/peers/sd15_random.py /work/peers/sd15-random
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MARKER = "easel_sd15_random.json"  # written last: a folder without it is incomplete


def is_built(folder: Path) -> bool:
    return (Path(folder) / MARKER).is_file() and (Path(folder) / "model_index.json").is_file()


def make_sd15_random(folder: Path, seed: int = 0, dtype: str = "float16") -> Path:
    """Build and save the folder (skipped when a complete one is already there); return it."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from webui.model_manager.clip_tokenizer import FULL_MERGES, write_clip_tokenizer_files

    folder = Path(folder)
    if is_built(folder):
        return folder
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    folder.mkdir(parents=True, exist_ok=True)
    tok_dir = write_clip_tokenizer_files(folder / "_tokenizer_src", FULL_MERGES)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    if len(tokenizer) != 49408:
        raise RuntimeError(f"expected CLIP's 49,408-token vocabulary, got {len(tokenizer)}")

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5,
        flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, act_fn="silu")
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, act_fn="silu", scaling_factor=0.18215)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, layer_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True,
                              steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if dtype == "float16":
        pipe.to(torch.float16)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    # The saved tokenizer folder gets the slow-tokenizer files too (vocab.json, merges.txt), as SD 1.5's has.
    for source in (folder / "_tokenizer_src").iterdir():
        target = folder / "tokenizer" / source.name
        if target.exists():
            source.unlink()
        else:
            source.replace(target)
    (folder / "_tokenizer_src").rmdir()
    params = {name: sum(p.numel() for p in module.parameters())
              for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text))}
    (folder / MARKER).write_text(json.dumps({"architecture": "sd-1.5", "seed": seed, "dtype": dtype,
                                             "parameters": params}, indent=2))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    make_sd15_random(args.folder, args.seed, args.dtype)
    print(f"{args.folder}: {(args.folder / MARKER).read_text()} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
