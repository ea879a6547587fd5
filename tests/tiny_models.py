"""Tiny random-weight diffusers pipelines for tests, built in-process with no download.

Each `make_tiny_<family>(folder, seed=0)` builds a real diffusers pipeline of that family with a few thousand
parameters (about 0.2-2 MB on disk), saves it with `save_pretrained` into `folder` and returns `folder`. The same
seed gives the same weights; different seeds give different weights. Tokenizers are made locally: CLIP ones
from a short prefix of CLIP's real BPE list (webui.model_manager.clip_tokenizer), T5 and Qwen ones from small
hand-made vocabularies. They produce sensible token ids, and the pipelines run end to end on them.

`save_sd1_single_file` / `save_sdxl_single_file` write a saved tiny folder as one `.safetensors` file in the
original (LDM / AUTOMATIC1111) key layout, so tests can exercise `from_single_file`; `save_vae_single_file`
writes a VAE in the original layout. `make_header_only_safetensors` writes a valid file with the given key names
and shapes (zeros) for identification tests.

The function names here are imported by test files across the project: keep them stable.
"""
from __future__ import annotations

import json
import string
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file

from webui.model_manager.clip_tokenizer import EOS_TOKEN, byte_symbols, write_clip_tokenizer_files

__all__ = [
    "make_tiny_sd1", "make_tiny_sd2", "make_tiny_sdxl", "make_tiny_sd3", "make_tiny_flux", "make_tiny_zimage",
    "make_tiny_qwenimage", "make_tiny_sdxl_refiner", "save_sdxl_refiner_single_file", "save_sd1_single_file", "save_sd2_single_file", "save_sdxl_single_file", "save_vae_single_file", "save_zimage_single_file",
    "make_header_only_safetensors", "tiny_clip_tokenizer", "tiny_t5_tokenizer", "tiny_qwen_tokenizer",
    "TINY_BUILDERS", "make_tiny_instruct_pix2pix", "make_tiny_flux_kontext", "make_tiny_qwenimage_edit",
    "make_tiny_clipseg", "EDIT_BUILDERS",
]

TINY_CLIP_MERGES = 300  # 814-token CLIP vocabulary: common English fragments still merge
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# --------------------------------------------------------------------------------------------- tokenizers
def tiny_clip_tokenizer(folder: Path, pad_token: str = EOS_TOKEN):
    """A small CLIPTokenizer (CLIP's byte symbols + its first merges) saved in `folder`."""
    from transformers import CLIPTokenizer

    write_clip_tokenizer_files(Path(folder), TINY_CLIP_MERGES, pad_token)
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


def tiny_t5_tokenizer():
    """A T5Tokenizer over a small unigram vocabulary: letters, digits, punctuation, word starts."""
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    chars = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
    pieces += [("\u2581" + c, -3.0) for c in string.ascii_lowercase]
    pieces += [(c, -4.0) for c in chars]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def tiny_qwen_tokenizer(chat_template: bool = True):
    """A byte-level Qwen2Tokenizer with no merges: one token per byte plus Qwen's chat special tokens."""
    from transformers import Qwen2Tokenizer

    vocab = {symbol: i for i, symbol in enumerate(byte_symbols())}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=4096,
                               additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    if chat_template:
        tokenizer.chat_template = _CHAT_TEMPLATE
    return tokenizer


# --------------------------------------------------------------------------------------------- components
@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Deterministic weights inside the block, without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _clip_text_config(tokenizer, hidden: int, projection: int | None = None, act: str = "quick_gelu"):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, hidden_act=act, projection_dim=projection or hidden,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _sd_vae(seed: int, latent_channels: int = 4, **kwargs):
    from diffusers import AutoencoderKL

    with _seeded(seed):
        return AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16),
            layers_per_block=1, latent_channels=latent_channels, norm_num_groups=8, sample_size=32, **kwargs)


def _t5_encoder(tokenizer, d_model: int, seed: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=d_model * 2, num_layers=2,
                      num_heads=4, relative_attention_num_buckets=8, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
    with _seeded(seed):
        return T5EncoderModel(config).eval()


def _save(pipe, folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def _sd_scheduler(prediction_type: str = "epsilon"):
    from diffusers import PNDMScheduler

    return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                         set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)


# --------------------------------------------------------------------------------------------- families
def _make_sd(folder: Path, seed: int, v2: bool) -> Path:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    tokenizer = tiny_clip_tokenizer(folder / "_tokenizer_src")
    with _seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, norm_num_groups=8,
            attention_head_dim=(2, 4) if v2 else 8, use_linear_projection=v2)
    with _seeded(seed + 1):
        text_encoder = CLIPTextModel(_clip_text_config(tokenizer, 32, act="gelu" if v2 else "quick_gelu")).eval()
    pipe = StableDiffusionPipeline(
        vae=_sd_vae(seed + 2), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=_sd_scheduler("v_prediction" if v2 else "epsilon"), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    _save(pipe, folder)
    _remove_tree(folder / "_tokenizer_src")
    return folder


def make_tiny_sd1(folder: Path, seed: int = 0) -> Path:
    """Tiny SD 1.x: CLIP-L-like text encoder (quick_gelu), epsilon prediction."""
    return _make_sd(folder, seed, v2=False)


def make_tiny_sd2(folder: Path, seed: int = 0) -> Path:
    """Tiny SD 2.x: OpenCLIP-like text encoder (gelu), linear projections, v-prediction."""
    return _make_sd(folder, seed, v2=True)


def make_tiny_sdxl(folder: Path, seed: int = 0) -> Path:
    """Tiny SDXL: two text encoders of different widths (32 and 64, like CLIP-L vs bigG) and text_time embeds."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(folder)
    tokenizer = tiny_clip_tokenizer(folder / "_tokenizer_src")
    tokenizer_2 = tiny_clip_tokenizer(folder / "_tokenizer_2_src", pad_token="!")
    unet = _sdxl_unet(seed, time_ids=6, layers=(1, 2), cross_attention_dim=32 + 64)
    with _seeded(seed + 1):
        text_encoder = CLIPTextModel(_clip_text_config(tokenizer, 32)).eval()
    with _seeded(seed + 2):
        text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(tokenizer_2, 64, 32, "gelu")).eval()
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(
        vae=_sd_vae(seed + 3, scaling_factor=0.13025), text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler)
    _save(pipe, folder)
    _remove_tree(folder / "_tokenizer_src")
    _remove_tree(folder / "_tokenizer_2_src")
    return folder


def _sdxl_unet(seed: int, time_ids: int, layers: tuple[int, int], cross_attention_dim: int) -> Any:
    """A tiny SDXL-shaped UNet: `time_ids` added time ids (6 for the base, 5 with the refiner's aesthetic score),
    pooled text 32 wide."""
    from diffusers import UNet2DConditionModel

    with _seeded(seed):
        return UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
            transformer_layers_per_block=layers, projection_class_embeddings_input_dim=time_ids * 8 + 32,
            cross_attention_dim=cross_attention_dim, norm_num_groups=8)


def make_tiny_sdxl_refiner(folder: Path, seed: int = 0) -> Path:
    """Tiny SDXL refiner: the img2img pipeline with only the second (OpenCLIP-like, 64 wide) text encoder, and a
    UNet whose time ids carry the aesthetic score (5 ids instead of 6), as stabilityai's refiner is built."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline
    from transformers import CLIPTextModelWithProjection

    folder = Path(folder)
    tokenizer_2 = tiny_clip_tokenizer(folder / "_tokenizer_2_src", pad_token="!")
    unet = _sdxl_unet(seed, time_ids=5, layers=(1, 1), cross_attention_dim=64)
    with _seeded(seed + 2):
        text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(tokenizer_2, 64, 32, "gelu")).eval()
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=_sd_vae(seed + 3, scaling_factor=0.13025), text_encoder=None, text_encoder_2=text_encoder_2,
        tokenizer=None, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False)
    _save(pipe, folder)
    _remove_tree(folder / "_tokenizer_2_src")
    return folder


def make_tiny_sd3(folder: Path, seed: int = 0) -> Path:
    """Tiny SD3: joint-attention transformer, two CLIP encoders with projection, a T5 encoder."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    folder = Path(folder)
    tokenizer = tiny_clip_tokenizer(folder / "_tokenizer_src")
    tokenizer_2 = tiny_clip_tokenizer(folder / "_tokenizer_2_src", pad_token="!")
    tokenizer_3 = tiny_t5_tokenizer()
    with _seeded(seed):
        transformer = SD3Transformer2DModel(
            sample_size=16, patch_size=1, in_channels=16, num_layers=2, attention_head_dim=8, num_attention_heads=4,
            joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64, out_channels=16,
            pos_embed_max_size=32)
    with _seeded(seed + 1):
        text_encoder = CLIPTextModelWithProjection(_clip_text_config(tokenizer, 32, 32)).eval()
    with _seeded(seed + 2):
        text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(tokenizer_2, 32, 32, "gelu")).eval()
    text_encoder_3 = _t5_encoder(tokenizer_3, 64, seed + 3)
    vae = _sd_vae(seed + 4, latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                  use_post_quant_conv=False)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3)
    _save(pipe, folder)
    _remove_tree(folder / "_tokenizer_src")
    _remove_tree(folder / "_tokenizer_2_src")
    return folder


def make_tiny_flux(folder: Path, seed: int = 0) -> Path:
    """Tiny Flux.1 (dev layout, with guidance embedding): CLIP pooled text + T5 sequence, 2x2-packed latents."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    tokenizer = tiny_clip_tokenizer(folder / "_tokenizer_src")
    tokenizer_2 = tiny_t5_tokenizer()
    with _seeded(seed):
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
            axes_dims_rope=(4, 4, 8))
    with _seeded(seed + 1):
        text_encoder = CLIPTextModel(_clip_text_config(tokenizer, 32)).eval()
    text_encoder_2 = _t5_encoder(tokenizer_2, 32, seed + 2)
    vae = _sd_vae(seed + 3, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                  use_post_quant_conv=False)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)
    _save(pipe, folder)
    _remove_tree(folder / "_tokenizer_src")
    return folder


def make_tiny_flux_tool(folder: Path, kind: str, seed: int = 0) -> Path:
    """Tiny Flux.1 Fill (`kind="fill"`) or Depth/Canny (`kind="control"`): the tiny Flux with a transformer whose
    input takes the packed latents plus the masked image and mask (fill: 16 + 16 + 4 * 2 * 2 = 48 channels) or plus
    the packed control latents (control: 16 + 16 = 32), saved as FluxFillPipeline / FluxControlPipeline."""
    from diffusers import FluxControlPipeline, FluxFillPipeline, FluxPipeline, FluxTransformer2DModel

    folder = Path(folder)
    base = FluxPipeline.from_pretrained(str(make_tiny_flux(folder.with_name(folder.name + "-base"), seed)))
    in_channels = {"fill": 48, "control": 32}[kind]
    with _seeded(seed + 10):
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=in_channels, out_channels=16, num_layers=1, num_single_layers=1,
            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
            guidance_embeds=True, axes_dims_rope=(4, 4, 8))
    cls = FluxFillPipeline if kind == "fill" else FluxControlPipeline
    components = {name: getattr(base, name) for name in ("scheduler", "vae", "text_encoder", "tokenizer",
                                                         "text_encoder_2", "tokenizer_2")}
    _save(cls(transformer=transformer, **components), folder)
    _remove_tree(folder.with_name(folder.name + "-base"))
    return folder


def make_tiny_zimage(folder: Path, seed: int = 0) -> Path:
    """Tiny Z-Image: single-stream transformer with refiners, a Qwen3 text encoder and chat-template prompts."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = tiny_qwen_tokenizer()
    with _seeded(seed):
        transformer = ZImageTransformer2DModel(
            all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32, n_layers=2, n_refiner_layers=1,
            n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=16, rope_theta=256.0,
            t_scale=1000.0, axes_dims=[8, 4, 4], axes_lens=[256, 32, 32])
        with torch.no_grad():  # created with torch.empty: give them defined values
            transformer.x_pad_token.normal_()
            transformer.cap_pad_token.normal_()
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    with _seeded(seed + 1):
        text_encoder = Qwen3Model(config).eval()
    vae = _sd_vae(seed + 2, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                  use_post_quant_conv=False)
    pipe = ZImagePipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
                          text_encoder=text_encoder, tokenizer=tokenizer)
    return _save(pipe, folder)


def make_tiny_qwenimage(folder: Path, seed: int = 0) -> Path:
    """Tiny Qwen-Image: MMDiT with a Qwen2.5-VL text encoder and the causal 3-D (Wan-style) VAE."""
    from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline,
                           QwenImageTransformer2DModel)
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = tiny_qwen_tokenizer(chat_template=False)
    with _seeded(seed):
        transformer = QwenImageTransformer2DModel(
            patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4))
    with _seeded(seed + 1):
        vae = AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1,
                                     temperal_downsample=[False, True], latents_mean=[0.0] * 4,
                                     latents_std=[1.0] * 4)
    vocab = len(tokenizer)
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "vocab_size": vocab, "max_position_embeddings": 4096,
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                     "rope_theta": 1000000.0, "bos_token_id": None,
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                       "out_hidden_size": 16, "patch_size": 2, "spatial_merge_size": 1},
        hidden_size=16, vocab_size=vocab, vision_start_token_id=vocab - 3, vision_end_token_id=vocab - 2,
        vision_token_id=vocab - 1, image_token_id=vocab - 1, video_token_id=vocab - 1, bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with _seeded(seed + 2):
        text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5,
                                                max_shift=0.9, base_image_seq_len=256, max_image_seq_len=8192)
    pipe = QwenImagePipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                             tokenizer=tokenizer)
    return _save(pipe, folder)


TINY_BUILDERS = {
    "sd1": make_tiny_sd1, "sd2": make_tiny_sd2, "sdxl": make_tiny_sdxl, "sd3": make_tiny_sd3,
    "flux": make_tiny_flux, "zimage": make_tiny_zimage, "qwenimage": make_tiny_qwenimage,
}


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()


# --------------------------------------------------------------------------------------------- original layout
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def unet_to_original(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Diffusers UNet2DConditionModel keys -> LDM `input_blocks / middle_block / output_blocks` keys (no prefix)."""
    per_down = config["layers_per_block"] + 1  # resnets (+attention) then a downsampler slot per level
    up_has_attention = ["CrossAttn" in t for t in config["up_block_types"]]
    out: dict[str, torch.Tensor] = {}

    def resnet(rest: str) -> str:
        head, _, tail = rest.partition(".")
        return f"{_UNET_RESNET[head]}.{tail}"

    for key, value in state.items():
        parts = key.split(".")
        fixed = ".".join(parts[:2])
        if fixed in _UNET_FIXED:
            out[f"{_UNET_FIXED[fixed]}.{'.'.join(parts[2:])}"] = value
        elif parts[0] in _UNET_FIXED:
            out[f"{_UNET_FIXED[parts[0]]}.{'.'.join(parts[1:])}"] = value
        elif parts[0] == "down_blocks":
            level, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                out[f"input_blocks.{1 + level * per_down + index}.0.{resnet(rest)}"] = value
            elif kind == "attentions":
                out[f"input_blocks.{1 + level * per_down + index}.1.{rest}"] = value
            else:  # downsamplers.0.conv.*
                slot = 1 + level * per_down + config["layers_per_block"]
                out[f"input_blocks.{slot}.0.op.{'.'.join(parts[5:])}"] = value
        elif parts[0] == "mid_block":
            kind, index, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            if kind == "resnets":
                out[f"middle_block.{2 * index}.{resnet(rest)}"] = value
            else:
                out[f"middle_block.1.{rest}"] = value
        elif parts[0] == "up_blocks":
            level, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            per = config["layers_per_block"] + 1  # up levels have one resnet more than down levels
            if kind == "resnets":
                out[f"output_blocks.{level * per + index}.0.{resnet(rest)}"] = value
            elif kind == "attentions":
                out[f"output_blocks.{level * per + index}.1.{rest}"] = value
            else:  # upsamplers.0.conv.*: after the attention when the level has one
                slot = level * per + per - 1
                out[f"output_blocks.{slot}.{2 if up_has_attention[level] else 1}.conv.{'.'.join(parts[5:])}"] = value
        else:
            raise KeyError(f"unexpected UNet key {key}")
    return out


def vae_to_original(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Diffusers AutoencoderKL keys -> LDM `encoder.down.N.block.M` layout (attention as 1x1 convolutions)."""
    levels = len(config["block_out_channels"])
    attention_names = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        parts = new.split(".")
        if len(parts) > 2 and parts[1] == "down_blocks":
            if parts[3] == "resnets":
                new = f"encoder.down.{parts[2]}.block.{'.'.join(parts[4:])}"
            else:
                new = f"encoder.down.{parts[2]}.downsample.{'.'.join(parts[5:])}"
        elif len(parts) > 2 and parts[1] == "up_blocks":
            level = levels - 1 - int(parts[2])
            if parts[3] == "resnets":
                new = f"decoder.up.{level}.block.{'.'.join(parts[4:])}"
            else:
                new = f"decoder.up.{level}.upsample.{'.'.join(parts[5:])}"
        elif len(parts) > 2 and parts[1] == "mid_block":
            if parts[2] == "resnets":
                new = f"{parts[0]}.mid.block_{int(parts[3]) + 1}.{'.'.join(parts[4:])}"
            else:
                rest = ".".join(parts[4:])
                for diffusers_name, ldm_name in attention_names.items():
                    if rest.startswith(diffusers_name + "."):
                        rest = ldm_name + rest[len(diffusers_name):]
                new = f"{parts[0]}.mid.attn_1.{rest}"
                if value.ndim == 2:  # LDM keeps these as 1x1 convolutions
                    value = value[:, :, None, None]
        out[new] = value
    return out


def clip_to_original(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Hugging Face CLIP text keys under `prefix + "text_model."` (the layout SD 1.x files keep)."""
    out = {}
    for key, value in state.items():
        if key.startswith("text_projection"):
            continue
        inner = key if key.startswith("text_model.") else f"text_model.{key}"
        out[prefix + inner] = value
    return out


def open_clip_to_original(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Hugging Face CLIPTextModelWithProjection keys -> OpenCLIP layout (fused qkv, resblocks, text_projection)."""
    out: dict[str, torch.Tensor] = {}
    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    out[prefix + "token_embedding.weight"] = state["embeddings.token_embedding.weight"]
    out[prefix + "positional_embedding"] = state["embeddings.position_embedding.weight"]
    out[prefix + "ln_final.weight"] = state["final_layer_norm.weight"]
    out[prefix + "ln_final.bias"] = state["final_layer_norm.bias"]
    if "text_projection.weight" in state:
        out[prefix + "text_projection"] = state["text_projection.weight"].T.contiguous()  # [hidden, proj]
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layers.")})
    for n in layers:
        src, dst = f"encoder.layers.{n}.", f"{prefix}transformer.resblocks.{n}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat(
                [state[src + f"self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")], dim=0)
            out[dst + f"attn.out_proj.{kind}"] = state[src + f"self_attn.out_proj.{kind}"]
            out[dst + f"ln_1.{kind}"] = state[src + f"layer_norm1.{kind}"]
            out[dst + f"ln_2.{kind}"] = state[src + f"layer_norm2.{kind}"]
            out[dst + f"mlp.c_fc.{kind}"] = state[src + f"mlp.fc1.{kind}"]
            out[dst + f"mlp.c_proj.{kind}"] = state[src + f"mlp.fc2.{kind}"]
    return out


def _component(folder: Path, name: str) -> tuple[dict[str, torch.Tensor], dict]:
    sub = Path(folder) / name
    weights = sorted(sub.glob("*.safetensors"))
    if len(weights) != 1:
        raise FileNotFoundError(f"{sub}: expected one .safetensors file, found {len(weights)}")
    state = load_file(str(weights[0]))
    config = json.loads((sub / "config.json").read_text())
    return state, config


def _prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v.contiguous() for k, v in state.items()}


def save_vae_single_file(folder: Path, path: Path, prefix: str = "") -> Path:
    """Write the VAE of a pipeline folder (or a VAE folder itself) as an original-layout .safetensors file."""
    folder = Path(folder)
    sub = folder if (folder / "config.json").is_file() and not (folder / "model_index.json").is_file() else None
    state, config = _component(sub.parent, sub.name) if sub else _component(folder, "vae")
    save_file(_prefixed(vae_to_original(state, config), prefix), str(path))
    return Path(path)


def _save_checkpoint_file(folder: Path, path: Path, encoders: list[tuple[str, Any, str]]) -> Path:
    """A tiny pipeline folder as one original-layout .safetensors: the UNet under model.diffusion_model., the VAE
    under first_stage_model., and each (text encoder component, converter, key prefix) of `encoders`."""
    unet, unet_config = _component(folder, "unet")
    vae, vae_config = _component(folder, "vae")
    tensors = _prefixed(unet_to_original(unet, unet_config), "model.diffusion_model.")
    tensors.update(_prefixed(vae_to_original(vae, vae_config), "first_stage_model."))
    for component, convert, prefix in encoders:
        text, _ = _component(folder, component)
        tensors.update(convert(text, prefix))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return Path(path)


def save_sd1_single_file(folder: Path, path: Path) -> Path:
    """A tiny SD 1.x folder as one AUTOMATIC1111-style .safetensors (CLIP text encoder under cond_stage_model.)."""
    return _save_checkpoint_file(folder, path, [("text_encoder", clip_to_original, "cond_stage_model.transformer.")])


def save_sd2_single_file(folder: Path, path: Path) -> Path:
    """A tiny SD 2.x folder as one original-layout .safetensors (OpenCLIP text encoder under cond_stage_model.model.)."""
    return _save_checkpoint_file(folder, path, [("text_encoder", open_clip_to_original, "cond_stage_model.model.")])


def save_sdxl_single_file(folder: Path, path: Path) -> Path:
    """A tiny SDXL folder as one original-layout .safetensors (conditioner.embedders.0 = CLIP, .1 = OpenCLIP)."""
    return _save_checkpoint_file(folder, path, [
        ("text_encoder", clip_to_original, "conditioner.embedders.0.transformer."),
        ("text_encoder_2", open_clip_to_original, "conditioner.embedders.1.model.")])


def save_sdxl_refiner_single_file(folder: Path, path: Path) -> Path:
    """A tiny SDXL refiner folder as one original-layout .safetensors (conditioner.embedders.0 = OpenCLIP only)."""
    return _save_checkpoint_file(folder, path,
                                 [("text_encoder_2", open_clip_to_original, "conditioner.embedders.0.model.")])


def save_zimage_single_file(folder: Path, path: Path, prefix: str = "model.diffusion_model.") -> Path:
    """The transformer of a tiny Z-Image folder in the original (Tongyi / ComfyUI) key layout: fused qkv,
    `x_embedder.` / `final_layer.`, `attention.out` and `q_norm` / `k_norm`."""
    state, _ = _component(folder, "transformer")
    renames = {"all_final_layer.2-1.": "final_layer.", "all_x_embedder.2-1.": "x_embedder.",
               ".attention.to_out.0.": ".attention.out.", ".attention.norm_k.": ".attention.k_norm.",
               ".attention.norm_q.": ".attention.q_norm."}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".attention.to_k." in key or ".attention.to_v." in key:
            continue
        if ".attention.to_q." in key:
            fused = torch.cat([state[key], state[key.replace("to_q", "to_k")], state[key.replace("to_q", "to_v")]])
            out[prefix + key.replace(".attention.to_q.", ".attention.qkv.")] = fused
            continue
        for old, new in renames.items():
            key = key.replace(old, new)
        out[prefix + key] = value.contiguous()
    save_file(out, str(path))
    return Path(path)


def make_header_only_safetensors(path: Path, keys_shapes: dict[str, tuple[int, ...]],
                                 dtype: torch.dtype = torch.float16) -> Path:
    """A valid .safetensors file holding zero tensors with exactly these names and shapes.

    Identification reads only the header, so tests can use realistic key names with small shapes, and
    realistic shapes only where a shape decides (keep those few; the zeros are really written).
    """
    tensors = {name: torch.zeros(tuple(shape), dtype=dtype) for name, shape in keys_shapes.items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return Path(path)


# --------------------------------------------------------------------------------------------- editing and segmentation
def make_tiny_instruct_pix2pix(folder: Path, seed: int = 0) -> Path:
    """Tiny InstructPix2Pix (SD 1.x layout): the UNet takes 8 channels (noisy latents + the source's latents)."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    tokenizer = tiny_clip_tokenizer(folder / "_tokenizer_src")
    with _seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, norm_num_groups=8,
            attention_head_dim=8)
    with _seeded(seed + 1):
        text_encoder = CLIPTextModel(_clip_text_config(tokenizer, 32)).eval()
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=_sd_vae(seed + 2), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    _save(pipe, folder)
    _remove_tree(folder / "_tokenizer_src")
    return folder


def make_tiny_flux_kontext(folder: Path, seed: int = 0) -> Path:
    """Tiny FLUX.1 Kontext: the tiny Flux.1 components in a FluxKontextPipeline (source tokens join the sequence)."""
    from diffusers import FluxKontextPipeline, FluxPipeline

    folder = Path(folder)
    base = make_tiny_flux(folder.with_name(folder.name + "-base"), seed)
    pipe = FluxKontextPipeline.from_pipe(FluxPipeline.from_pretrained(str(base), local_files_only=True))
    _save(pipe, folder)
    _remove_tree(base)
    return folder


def make_tiny_qwenimage_edit(folder: Path, seed: int = 0) -> Path:
    """Tiny Qwen-Image-Edit: the tiny Qwen-Image parts plus a Qwen2-VL processor that sees the source image.

    The processor caps the vision input at 64x64 pixels (the pipeline hands it a ~1024x1024 copy of the source),
    and the VAE downsamples 8x, so a CPU run stays small.
    """
    from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageEditPipeline,
                           QwenImageTransformer2DModel)
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessor,
                              Qwen2VLProcessor, Qwen2VLVideoProcessor)

    tokenizer = tiny_qwen_tokenizer(chat_template=False)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|vision_start|>",
                                                                "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]})
    image_processor = Qwen2VLImageProcessor(patch_size=2, temporal_patch_size=2, merge_size=1, min_pixels=16 * 16,
                                            max_pixels=32 * 32)
    video_processor = Qwen2VLVideoProcessor(patch_size=2, temporal_patch_size=2, merge_size=1,
                                            min_pixels=16 * 16, max_pixels=32 * 32)  # transformers 5 requires one
    processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=video_processor, chat_template=_CHAT_TEMPLATE)
    with _seeded(seed):
        transformer = QwenImageTransformer2DModel(
            patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4))
    with _seeded(seed + 1):
        vae = AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                     temperal_downsample=[False, True, True], latents_mean=[0.0] * 4,
                                     latents_std=[1.0] * 4)
    vocab = len(tokenizer)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                                                           "<|video_pad|>")}
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "vocab_size": vocab, "max_position_embeddings": 4096,
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                     "rope_theta": 1000000.0, "bos_token_id": None,
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                       "out_hidden_size": 16, "patch_size": 2, "spatial_merge_size": 1, "temporal_patch_size": 2},
        hidden_size=16, vocab_size=vocab, vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    with _seeded(seed + 2):
        text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5,
                                                max_shift=0.9, base_image_seq_len=256, max_image_seq_len=8192)
    pipe = QwenImageEditPipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                                 tokenizer=tokenizer, processor=processor)
    return _save(pipe, folder)


def make_tiny_clipseg(folder: Path, seed: int = 0) -> Path:
    """Tiny CLIPSeg (transformers): 64x64 input in 8x8 patches, a 2-layer text and vision tower, its processor."""
    from transformers import (CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, CLIPTokenizer,
                              ViTImageProcessor)

    folder = Path(folder)
    tokenizer: CLIPTokenizer = tiny_clip_tokenizer(folder / "_tokenizer_src")
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 77, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
              "image_size": 64, "patch_size": 8}
    config = CLIPSegConfig(text_config=text, vision_config=vision, projection_dim=16, extract_layers=[1, 2],
                           reduce_dim=16, decoder_num_attention_heads=2, decoder_intermediate_size=32,
                           conditional_layer=0)
    with _seeded(seed):
        model = CLIPSegForImageSegmentation(config).eval()
    image_processor = ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.485, 0.456, 0.406],
                                        image_std=[0.229, 0.224, 0.225])
    processor = CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    processor.save_pretrained(str(folder))
    _remove_tree(folder / "_tokenizer_src")
    return folder


EDIT_BUILDERS = {
    "instruct-pix2pix": make_tiny_instruct_pix2pix, "flux-kontext": make_tiny_flux_kontext,
    "qwenimage-edit": make_tiny_qwenimage_edit,
}


# --------------------------------------------------------------------------------------------- ControlNets
def make_tiny_sd_controlnet(folder: Path, sd_folder: Path, seed: int = 0) -> Path:
    """A tiny random ControlNetModel (diffusers folder) whose encoder matches the UNet saved in `sd_folder`
    (tiny SD 1.x, 2.x or SDXL), made the way diffusers' tests make theirs: `ControlNetModel.from_unet`, then
    random weights everywhere (the zero convolutions too, so the control image visibly changes the output)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(Path(sd_folder) / "unet"))
    with _seeded(seed):
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16),
                                               load_weights_from_unet=False)
        with torch.no_grad():
            for param in controlnet.parameters():
                param.normal_(0.0, 0.2)
    folder = Path(folder)
    controlnet.save_pretrained(str(folder), safe_serialization=True)
    return folder


def make_tiny_flux_controlnet(folder: Path, flux_folder: Path, seed: int = 0, num_mode: int | None = None) -> Path:
    """A tiny random FluxControlNetModel (diffusers folder) matching the transformer saved in `flux_folder`;
    `num_mode` makes it a union ControlNet with that many control types."""
    from diffusers import FluxControlNetModel, FluxTransformer2DModel

    transformer = FluxTransformer2DModel.from_pretrained(str(Path(flux_folder) / "transformer"))
    with _seeded(seed):
        controlnet = FluxControlNetModel.from_transformer(transformer, num_layers=1, num_single_layers=1,
                                                          attention_head_dim=16, num_attention_heads=2,
                                                          load_weights_from_transformer=False)
        if num_mode:
            controlnet = FluxControlNetModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                             attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                             pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 4, 8),
                                             num_mode=num_mode)
        with torch.no_grad():
            for param in controlnet.parameters():
                param.normal_(0.0, 0.2)
    folder = Path(folder)
    controlnet.save_pretrained(str(folder), safe_serialization=True)
    return folder


def make_tiny_zimage_controlnet(folder: Path, seed: int = 0) -> Path:
    """A tiny random ZImageControlNetModel (diffusers folder) for the transformer of `make_tiny_zimage` (dim 32,
    2 heads, patch 2); the pipeline lends it the transformer's embedders and refiners when it runs. Its control input
    has 9 channels (control latents 4 + mask 1 + masked-image latents 4), the layout of the "Union 2.0" models that
    both the txt2img and the inpaint ControlNet pipelines accept."""
    from diffusers import ZImageControlNetModel

    with _seeded(seed):
        controlnet = ZImageControlNetModel(
            control_layers_places=[0, 1], control_refiner_layers_places=[0], control_in_dim=9,
            add_control_noise_refiner="control_noise_refiner", all_patch_size=(2,), all_f_patch_size=(1,), dim=32,
            n_refiner_layers=1, n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True)
        with torch.no_grad():
            for param in controlnet.parameters():
                param.normal_(0.0, 0.2)
    folder = Path(folder)
    controlnet.save_pretrained(str(folder), safe_serialization=True)
    return folder


def controlnet_to_original(state: dict[str, torch.Tensor], config: dict,
                           prefix: str = "control_model.") -> dict[str, torch.Tensor]:
    """Diffusers ControlNetModel keys -> the original (AUTOMATIC1111 / lllyasviel) layout: the UNet encoder as
    `input_blocks / middle_block / time_embed`, the hint encoder as `input_hint_block`, the zero convolutions as
    `zero_convs` and `middle_block_out`, all under `prefix`."""
    out: dict[str, torch.Tensor] = {}
    encoder: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "controlnet_cond_embedding":
            if parts[1] == "conv_in":
                out[f"input_hint_block.0.{parts[2]}"] = value
            elif parts[1] == "conv_out":
                out[f"input_hint_block.14.{parts[2]}"] = value
            else:  # blocks.<j>.<param>: the convolutions between the SiLUs
                out[f"input_hint_block.{2 * (int(parts[2]) + 1)}.{parts[3]}"] = value
        elif parts[0] == "controlnet_down_blocks":
            out[f"zero_convs.{parts[1]}.0.{parts[2]}"] = value
        elif parts[0] == "controlnet_mid_block":
            out[f"middle_block_out.0.{parts[1]}"] = value
        else:
            encoder[key] = value
    out.update(unet_to_original(encoder, {**config, "up_block_types": []}))
    return {prefix + key: value for key, value in out.items()}


def make_tiny_sd3_controlnet(folder: Path, sd3_folder: Path, seed: int = 0) -> Path:
    """A tiny random SD3ControlNetModel (diffusers folder) matching the transformer saved in `sd3_folder`."""
    from diffusers import SD3ControlNetModel, SD3Transformer2DModel

    transformer = SD3Transformer2DModel.from_pretrained(str(Path(sd3_folder) / "transformer"))
    with _seeded(seed):
        controlnet = SD3ControlNetModel.from_transformer(transformer, num_layers=1,
                                                         num_extra_conditioning_channels=0,
                                                         load_weights_from_transformer=False)
        with torch.no_grad():
            for param in controlnet.parameters():
                param.normal_(0.0, 0.2)
    folder = Path(folder)
    controlnet.save_pretrained(str(folder), safe_serialization=True)
    return folder


def make_tiny_qwenimage_controlnet(folder: Path, qwen_folder: Path, seed: int = 0) -> Path:
    """A tiny random QwenImageControlNetModel (diffusers folder) matching the transformer in `qwen_folder`."""
    from diffusers import QwenImageControlNetModel, QwenImageTransformer2DModel

    transformer = QwenImageTransformer2DModel.from_pretrained(str(Path(qwen_folder) / "transformer"))
    config = transformer.config
    with _seeded(seed):
        controlnet = QwenImageControlNetModel.from_transformer(
            transformer, num_layers=1, attention_head_dim=config.attention_head_dim,
            num_attention_heads=config.num_attention_heads, load_weights_from_transformer=False)
        with torch.no_grad():
            for param in controlnet.parameters():
                param.normal_(0.0, 0.2)
    folder = Path(folder)
    controlnet.save_pretrained(str(folder), safe_serialization=True)
    return folder


def make_tiny_sdxl_union_controlnet(folder: Path, sdxl_folder: Path, seed: int = 0, num_control_type: int = 6
                                    ) -> Path:
    """A tiny random ControlNetUnionModel (diffusers folder, as xinsir's SDXL union models ship) matching the UNet
    saved in `sdxl_folder`, with `num_control_type` control types; random weights everywhere, the zero layers too."""
    from diffusers import ControlNetUnionModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(Path(sdxl_folder) / "unet"))
    first = int(unet.config.block_out_channels[0])
    with _seeded(seed):
        shaped = ControlNetUnionModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16),
                                                load_weights_from_unet=False)
        config = {key: value for key, value in shaped.config.items() if key != "_use_default_values"}
        config.update(num_control_type=num_control_type, num_trans_channel=first, num_proj_channel=first,
                      num_trans_head=2)
        controlnet = ControlNetUnionModel.from_config(config)
        with torch.no_grad():
            for param in controlnet.parameters():
                param.normal_(0.0, 0.2)
    folder = Path(folder)
    controlnet.save_pretrained(str(folder), safe_serialization=True)
    return folder
