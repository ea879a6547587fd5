"""Tiny random-weight pipelines of the other diffusers families (DiT, PixArt-α/Σ, Sana, aMUSEd, unCLIP, DeepFloyd
IF), built in process from their classes' constructors and saved with `save_pretrained` as a user has them.

Each `make_tiny_<family>(folder, seed=0)` returns `folder`. The components are a few thousand parameters each, so
a 2-step generation takes well under a second on a CPU. Tokenizers are the small local ones of tests/tiny_models.py
(CLIP from a prefix of CLIP's BPE list, T5 from a hand-made vocabulary, Gemma from a byte-level vocabulary).
"""
from __future__ import annotations

import json
import string
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


def _kl_vae(seed: int, blocks: int):
    """An AutoencoderKL with `blocks` levels (scale factor 2**(blocks-1)) of 8 channels."""
    from diffusers import AutoencoderKL

    with _seeded(seed):
        return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * blocks,
                             up_block_types=("UpDecoderBlock2D",) * blocks, block_out_channels=(8,) * blocks,
                             layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=32).eval()


def make_tiny_pixart(folder: Path, seed: int = 0, sigma: bool = False) -> Path:
    """A PixArt-α (or Σ) folder: a PixArt transformer with sample size 32 (so it has the 256-pixel resolution
    bins), a tiny T5 encoder, an 8x VAE, DDIM."""
    from diffusers import DDIMScheduler, PixArtAlphaPipeline, PixArtSigmaPipeline, PixArtTransformer2DModel

    tokenizer = tiny_t5_tokenizer()
    with _seeded(seed):
        transformer = PixArtTransformer2DModel(
            sample_size=32, num_layers=1, patch_size=2, attention_head_dim=8, num_attention_heads=2,
            caption_channels=32, in_channels=4, cross_attention_dim=16, out_channels=8, attention_bias=True,
            activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
            norm_elementwise_affine=False, norm_eps=1e-6).eval()
    cls = PixArtSigmaPipeline if sigma else PixArtAlphaPipeline
    pipe = cls(tokenizer=tokenizer, text_encoder=_t5_encoder(tokenizer, 32, seed + 1), vae=_kl_vae(seed + 2, 4),
               transformer=transformer, scheduler=DDIMScheduler())
    return _save(pipe, folder)


def tiny_gemma_tokenizer():
    """A GemmaTokenizer over a small vocabulary: Gemma's special tokens, letters and word starts."""
    from transformers import GemmaTokenizer

    symbols = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>", "\u2581"]
    chars = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation + " \n"
    symbols += ["\u2581" + c for c in string.ascii_lowercase] + list(chars)
    vocab = {s: i for i, s in enumerate(dict.fromkeys(symbols))}
    return GemmaTokenizer(vocab=vocab, merges=[])


def make_tiny_sana(folder: Path, seed: int = 0) -> Path:
    """A Sana folder: a Sana linear-attention transformer, a tiny Gemma 2 encoder, a 2x deep-compression
    autoencoder (AutoencoderDC), flow-matching Euler."""
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    tokenizer = tiny_gemma_tokenizer()
    with _seeded(seed):
        transformer = SanaTransformer2DModel(
            patch_size=1, in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2, attention_head_dim=4,
            num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8,
            sample_size=8).eval()  # a size without a bin table: draws the asked size
    with _seeded(seed + 1):
        vae = AutoencoderDC(
            in_channels=3, latent_channels=4, attention_head_dim=2,
            encoder_block_types=("ResBlock", "EfficientViTBlock"),
            decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8),
            decoder_block_out_channels=(8, 8), encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
            encoder_layers_per_block=(1, 1), decoder_layers_per_block=[1, 1], downsample_block_type="conv",
            upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu",
            scaling_factor=0.41407).eval()
    config = Gemma2Config(head_dim=16, hidden_size=8, intermediate_size=16, max_position_embeddings=8192,
                          num_attention_heads=2, num_hidden_layers=1, num_key_value_heads=2,
                          vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, bos_token_id=2)
    with _seeded(seed + 2):
        text_encoder = Gemma2Model(config).eval()
    pipe = SanaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    return _save(pipe, folder)


def make_tiny_amused(folder: Path, seed: int = 0) -> Path:
    """An aMUSEd folder: a U-ViT over a 4x VQ-GAN's token grid (codebook of 8), a tiny CLIP text encoder with
    projection, the aMUSEd masking scheduler."""
    from diffusers import AmusedPipeline, AmusedScheduler, UVit2DModel, VQModel
    from transformers import CLIPTextModelWithProjection

    from tests.tiny_models import _clip_text_config, _remove_tree, tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer(Path(folder).parent / "_amused_tokenizer_src")
    with _seeded(seed):
        transformer = UVit2DModel(
            hidden_size=8, use_bias=False, hidden_dropout=0.0, cond_embed_dim=8, micro_cond_encode_dim=2,
            micro_cond_embed_dim=10, encoder_hidden_size=8, vocab_size=32, codebook_size=8, in_channels=8,
            block_out_channels=8, num_res_blocks=1, downsample=True, upsample=True, block_num_heads=1,
            num_hidden_layers=1, num_attention_heads=1, attention_dropout=0.0, intermediate_size=8,
            layer_norm_eps=1e-06, ln_elementwise_affine=True).eval()
        vqvae = VQModel(act_fn="silu", block_out_channels=[8, 8, 8], down_block_types=["DownEncoderBlock2D"] * 3,
                        in_channels=3, latent_channels=8, layers_per_block=1, norm_num_groups=8, num_vq_embeddings=8,
                        out_channels=3, sample_size=8, up_block_types=["UpDecoderBlock2D"] * 3,
                        mid_block_add_attention=False, lookup_from_codebook=True).eval()
        text_encoder = CLIPTextModelWithProjection(_clip_text_config(tokenizer, 8, 8)).eval()
    pipe = AmusedPipeline(vqvae=vqvae, tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer,
                          scheduler=AmusedScheduler(mask_token_id=31))
    _save(pipe, folder)
    _remove_tree(Path(folder).parent / "_amused_tokenizer_src")
    return folder


def make_tiny_stable_unclip(folder: Path, seed: int = 0) -> Path:
    """A Stable unCLIP (image variations) folder: a CLIP vision encoder with projection, its image normalizer and
    noising scheduler, a UNet conditioned on the noised image embedding, a CLIP text encoder, a 2x VAE."""
    from diffusers import (DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline, UNet2DConditionModel)
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import (CLIPImageProcessor, CLIPTextModel, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    from tests.tiny_models import _clip_text_config, _remove_tree, tiny_clip_tokenizer

    folder = Path(folder)
    tokenizer = tiny_clip_tokenizer(folder.parent / "_unclip_tokenizer_src")
    with _seeded(seed):
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, projection_dim=32, num_hidden_layers=1, num_attention_heads=4, image_size=32,
            intermediate_size=37, patch_size=4)).eval()
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, norm_num_groups=8, attention_head_dim=(2, 4), use_linear_projection=True,
            class_embed_type="projection", projection_class_embeddings_input_dim=64, upcast_attention=True).eval()
        text_encoder = CLIPTextModel(_clip_text_config(tokenizer, 32, act="gelu")).eval()
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(crop_size=32, size=32), image_encoder=image_encoder,
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=32),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"), tokenizer=tokenizer,
        text_encoder=text_encoder, unet=unet, vae=_sd_vae(seed + 1),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1))
    _save(pipe, folder)
    _remove_tree(folder.parent / "_unclip_tokenizer_src")
    return folder


def make_tiny_unclip(folder: Path, seed: int = 0) -> Path:
    """An unCLIP (Karlo) folder: a CLIP text encoder with projection, a prior from text to image embedding, a
    decoder drawing 32 px from it, and two super-resolution UNets to 64 px."""
    from diffusers import PriorTransformer, UnCLIPPipeline, UnCLIPScheduler, UNet2DConditionModel, UNet2DModel
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
    from transformers import CLIPTextModelWithProjection

    from tests.tiny_models import _clip_text_config, _remove_tree, tiny_clip_tokenizer

    folder = Path(folder)
    tokenizer = tiny_clip_tokenizer(folder.parent / "_karlo_tokenizer_src")
    with _seeded(seed):
        text_encoder = CLIPTextModelWithProjection(_clip_text_config(tokenizer, 32, 32)).eval()
        prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=32, num_layers=1).eval()
        text_proj = UnCLIPTextProjModel(clip_embeddings_dim=32, time_embed_dim=64, cross_attention_dim=32).eval()
        decoder = UNet2DConditionModel(
            sample_size=32, in_channels=3, out_channels=6, down_block_types=("ResnetDownsampleBlock2D",
                                                                             "SimpleCrossAttnDownBlock2D"),
            up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(16, 32), layers_per_block=1,
            cross_attention_dim=32, attention_head_dim=4, resnet_time_scale_shift="scale_shift",
            class_embed_type="identity", norm_num_groups=8).eval()
        super_res = dict(sample_size=64, layers_per_block=1, down_block_types=("ResnetDownsampleBlock2D",) * 2,
                         up_block_types=("ResnetUpsampleBlock2D",) * 2, block_out_channels=(16, 32), in_channels=6,
                         out_channels=3, norm_num_groups=8)
        super_res_first, super_res_last = UNet2DModel(**super_res).eval(), UNet2DModel(**super_res).eval()
    pipe = UnCLIPPipeline(
        prior=prior, decoder=decoder, text_encoder=text_encoder, tokenizer=tokenizer, text_proj=text_proj,
        super_res_first=super_res_first, super_res_last=super_res_last,
        prior_scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                        num_train_timesteps=1000, clip_sample_range=5.0),
        decoder_scheduler=UnCLIPScheduler(variance_type="learned_range", prediction_type="epsilon",
                                          num_train_timesteps=1000),
        super_res_scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="epsilon",
                                            num_train_timesteps=1000))
    _save(pipe, folder)
    _remove_tree(folder.parent / "_karlo_tokenizer_src")
    return folder


def _if_unet(seed: int, super_resolution: bool):
    from diffusers import UNet2DConditionModel

    extra = dict(class_embed_type="timestep", mid_block_scale_factor=1.414, time_embedding_act_fn="gelu",
                 time_embedding_dim=32) if super_resolution else {}
    with _seeded(seed):
        return UNet2DConditionModel(
            sample_size=32, layers_per_block=1, block_out_channels=(16, 32),
            down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn",
            up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
            in_channels=6 if super_resolution else 3, out_channels=6, cross_attention_dim=32, encoder_hid_dim=32,
            attention_head_dim=8, addition_embed_type="text", addition_embed_type_num_heads=2,
            cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift", act_fn="gelu",
            norm_num_groups=8, **extra).eval()


def _if_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", thresholding=True,
                         dynamic_thresholding_ratio=0.95, sample_max_value=1.0, prediction_type="epsilon",
                         variance_type="learned_range")


def make_tiny_deepfloyd_if(folder: Path, seed: int = 0) -> Path:
    """DeepFloyd IF's three stages as three diffusers folders inside `folder` (stage_I: IFPipeline with a tiny
    T5; stage_II: IFSuperResolutionPipeline, 4x; stage_III: StableDiffusionUpscalePipeline, 4x) — the layout of
    a user who downloaded IF-I, IF-II and the x4 upscaler into one folder."""
    from diffusers import (DDIMScheduler, DDPMScheduler, IFPipeline, IFSuperResolutionPipeline,
                           StableDiffusionUpscalePipeline, UNet2DConditionModel)
    from transformers import CLIPTextModel

    from tests.tiny_models import _clip_text_config, _remove_tree, tiny_clip_tokenizer

    folder = Path(folder)
    tokenizer = tiny_t5_tokenizer()
    text_encoder = _t5_encoder(tokenizer, 32, seed)
    common = dict(safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False)
    _save(IFPipeline(tokenizer=tokenizer, text_encoder=text_encoder, unet=_if_unet(seed + 1, False),
                     scheduler=_if_scheduler(), **common), folder / "stage_I")
    noising = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    _save(IFSuperResolutionPipeline(tokenizer=tokenizer, text_encoder=text_encoder, unet=_if_unet(seed + 2, True),
                                    scheduler=_if_scheduler(), image_noising_scheduler=noising, **common),
          folder / "stage_II")
    clip_tokenizer = tiny_clip_tokenizer(folder / "_upscaler_tokenizer_src")
    with _seeded(seed + 3):
        unet = UNet2DConditionModel(
            sample_size=32, in_channels=7, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, norm_num_groups=8, attention_head_dim=(2, 4), use_linear_projection=True,
            num_class_embeds=1000).eval()
        clip = CLIPTextModel(_clip_text_config(clip_tokenizer, 32, act="gelu")).eval()
    upscaler = StableDiffusionUpscalePipeline(
        vae=_kl_vae(seed + 4, 3), text_encoder=clip, tokenizer=clip_tokenizer, unet=unet,
        low_res_scheduler=DDPMScheduler(), scheduler=DDIMScheduler(prediction_type="v_prediction"),
        safety_checker=None, feature_extractor=None, watermarker=None, max_noise_level=350)
    _save(upscaler, folder / "stage_III")
    _remove_tree(folder / "_upscaler_tokenizer_src")
    return folder
