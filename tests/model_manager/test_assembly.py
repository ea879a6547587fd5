"""SD3, Z-Image, Qwen-Image and SDXL assembled from separate files, as Forge and ComfyUI users keep them.

Each test writes a tiny random-weight model the way community files are published: the transformer/UNet in its
original key layout (MMDiT `joint_blocks` for SD3, fused-qkv Tongyi names for Z-Image, ComfyUI's
`model.diffusion_model.` prefix for Qwen-Image, LDM `input_blocks` for SDXL) as GGUF or fp8 in
models/diffusion_models or models/unet, the text encoders in models/text_encoders (T5 and Qwen3 also as
llama.cpp-layout GGUF, Qwen2.5-VL as "scaled" fp8, CLIP as fp8), the VAE in models/VAE, and beside the
denoiser a `<name>.config/` folder of configs only (the tiny sizes are not the published ones the shipped
configs describe; `test_shipped_configs_describe_the_published_models` checks those). No diffusers folder is on
disk: the pipeline is assembled from those files, and its image is compared with the tiny diffusers folder's.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.tiny_formats import (comfy_state, save_fp8, save_gguf, save_gguf_text_encoder, save_scaled_fp8,
                                sd3_original_state, sdxl_unet_original_state)
from tests.tiny_models import save_sdxl_single_file, save_zimage_single_file
from webui.model_manager.formats import storage_of
from webui.model_manager.identify import Arch


def generate(pipe, seed: int = 0) -> np.ndarray:
    extra = {} if "XL" in type(pipe).__name__ else {"max_sequence_length": 32}
    result = pipe(prompt="a red cube", num_inference_steps=2, height=32, width=32, output_type="np",
                  generator=torch.Generator().manual_seed(seed), **extra)
    return result.images[0]


def _reference(folder: Path):
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(str(folder), local_files_only=True)


def _config_only(folder: Path, target: Path, drop: tuple[str, ...] = ()) -> None:
    """`folder`'s configs (no weights) as `target`, without the subfolders in `drop`."""
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("*.safetensors", *drop))


def _component(folder: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(next((folder / name).glob("*.safetensors"))))


def _linear_types(model: torch.nn.Module) -> set[str]:
    return {type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.Linear)}


def _encoder_dirs(world) -> tuple[Path, Path, Path]:
    folders = (world.root / "diffusion_models", world.root / "unet", world.root / "text_encoders")
    for folder in folders:
        folder.mkdir(exist_ok=True)
    return folders


def _manager(world, folders: tuple[Path, Path, Path]):
    diffusion, unet, encoders = folders
    return world.manager(checkpoint_dirs=[diffusion, unet], text_encoder_dirs=[encoders])


# ------------------------------------------------------------------------------------------------ SD3
def test_sd3_original_gguf_with_gguf_t5_assembles_and_matches_the_folder(world, tiny) -> None:
    """SD3 in MMDiT keys as GGUF Q8_0, CLIP-L/G safetensors, T5 as a city96-style GGUF, its tokenizer in a folder
    of models/text_encoders, and two 16-channel VAEs of which the SD3-named one must be picked."""
    folders = _encoder_dirs(world)
    diffusion, _, encoders = folders
    sd3 = tiny["sd3"]
    path = save_gguf(sd3_original_state(_component(sd3, "transformer")), diffusion / "sd3.5_tiny-Q8_0.gguf")
    _config_only(sd3, path.with_name(path.stem + ".config"), drop=("tokenizer_3",))
    shutil.copytree(sd3 / "tokenizer_3", encoders / "t5-tokenizer")
    save_file(_component(sd3, "text_encoder"), str(encoders / "clip_l.safetensors"))
    save_file(_component(sd3, "text_encoder_2"), str(encoders / "clip_g.safetensors"))
    t5 = _reference(sd3).text_encoder_3
    gguf_t5 = save_gguf_text_encoder(t5, encoders / "t5-v1_1-xxl-encoder-Q8_0.gguf", "t5encoder")
    save_file(_component(sd3, "vae"), str(world.vae / "sd3_vae.safetensors"))
    save_file({k: torch.zeros_like(v) for k, v in _component(sd3, "vae").items()}, str(world.vae / "ae.safetensors"))
    manager = _manager(world, folders)
    entry = manager.find_checkpoint("sd3.5_tiny-Q8_0")
    assert (entry.arch, entry.storage, entry.denoiser_only) == (Arch.SD3, "GGUF Q8_0", True)
    assert manager.missing_components(entry) == []
    pipe = manager.get("sd3.5_tiny-Q8_0", "txt2img").pipe
    assert "GGUFLinear" in _linear_types(pipe.transformer)
    import gguf

    assert "enc.blk.0.attn_q.weight" in {t.name for t in gguf.GGUFReader(str(gguf_t5)).tensors}
    q = pipe.text_encoder_3.encoder.block[0].layer[0].SelfAttention.q.weight
    assert torch.allclose(q, t5.encoder.block[0].layer[0].SelfAttention.q.weight, atol=0.02)  # dequantized Q8_0
    vae = _component(sd3, "vae")
    assert all(torch.equal(pipe.vae.state_dict()[k], v) for k, v in vae.items())  # sd3_vae, not ae
    difference = np.abs(generate(pipe) - generate(_reference(sd3))).max()
    assert difference < 0.05, difference


def test_sd3_fp8_original_layout_loads_in_fp8(world, tiny) -> None:
    folders = _encoder_dirs(world)
    diffusion, _, encoders = folders
    sd3 = tiny["sd3"]
    path = save_fp8(sd3_original_state(_component(sd3, "transformer")), diffusion / "sd3_medium_fp8.safetensors")
    _config_only(sd3, path.with_name(path.stem + ".config"))
    save_fp8(_component(sd3, "text_encoder"), encoders / "clip_l_fp8.safetensors")
    save_file(_component(sd3, "text_encoder_2"), str(encoders / "clip_g.safetensors"))
    save_file(_component(sd3, "text_encoder_3"), str(encoders / "t5xxl_fp16.safetensors"))
    save_file(_component(sd3, "vae"), str(world.vae / "sd3_vae.safetensors"))
    pipe = _manager(world, folders).get("sd3_medium_fp8", "txt2img").pipe
    assert storage_of(pipe.transformer) == "fp8 e4m3fn"
    assert np.abs(generate(pipe) - generate(_reference(sd3))).max() < 0.1


# ------------------------------------------------------------------------------------------------ Z-Image
def test_zimage_original_fp8_with_gguf_qwen3_assembles(world, tiny) -> None:
    """Z-Image in the Tongyi/ComfyUI layout as fp8, the Qwen3 encoder as a llama.cpp GGUF, the Qwen tokenizer
    in its own folder of models/text_encoders, the Flux.1 VAE as ae.safetensors."""
    folders = _encoder_dirs(world)
    diffusion, _, encoders = folders
    zimage = tiny["zimage"]
    original = save_zimage_single_file(zimage, world.root / "z.safetensors")
    path = save_fp8(load_file(str(original)), diffusion / "z_image_turbo_fp8_e4m3fn.safetensors")
    _config_only(zimage, path.with_name(path.stem + ".config"), drop=("tokenizer",))
    shutil.copytree(zimage / "tokenizer", encoders / "qwen3-tokenizer")
    reference = _reference(zimage)
    save_gguf_text_encoder(reference.text_encoder, encoders / "Qwen3-4B-Q8_0.gguf", "qwen3")
    save_file(_component(zimage, "vae"), str(world.vae / "ae.safetensors"))
    manager = _manager(world, folders)
    entry = manager.find_checkpoint("z_image_turbo_fp8_e4m3fn")
    assert (entry.arch, entry.storage) == (Arch.ZIMAGE, "fp8 e4m3fn")
    assert manager.missing_components(entry) == []
    pipe = manager.get(entry.name, "txt2img").pipe
    assert storage_of(pipe.transformer) == "fp8 e4m3fn"
    assert np.abs(generate(pipe) - generate(reference)).max() < 0.1


# ------------------------------------------------------------------------------------------------ Qwen-Image
def test_qwen_image_comfy_gguf_with_scaled_fp8_qwen25vl_assembles(world, tiny) -> None:
    """Qwen-Image under ComfyUI's model.diffusion_model. prefix as GGUF, Qwen2.5-VL as scaled fp8 in ComfyUI's
    layout (model.layers..., visual..., with scale_weight tensors), the 3-D VAE as qwen_image_vae.safetensors."""
    folders = _encoder_dirs(world)
    diffusion, _, encoders = folders
    qwen = tiny["qwenimage"]
    path = save_gguf(comfy_state(_component(qwen, "transformer")), diffusion / "qwen-image-Q8_0.gguf")
    _config_only(qwen, path.with_name(path.stem + ".config"))
    save_scaled_fp8(_component(qwen, "text_encoder"), encoders / "qwen_2.5_vl_7b_fp8_scaled.safetensors")
    save_file(_component(qwen, "vae"), str(world.vae / "qwen_image_vae.safetensors"))
    manager = _manager(world, folders)
    entry = manager.find_checkpoint("qwen-image-Q8_0")
    assert (entry.arch, entry.storage) == (Arch.QWEN, "GGUF Q8_0")
    assert manager.missing_components(entry) == []
    pipe = manager.get(entry.name, "txt2img").pipe
    assert "GGUFLinear" in _linear_types(pipe.transformer)
    assert np.abs(generate(pipe) - generate(_reference(qwen))).max() < 0.1


# ------------------------------------------------------------------------------------------------ SDXL
def test_sdxl_gguf_unet_assembles_from_clip_files_and_vae(world, tiny) -> None:
    folders = _encoder_dirs(world)
    _, unet_dir, encoders = folders
    sdxl = tiny["sdxl"]
    full = save_sdxl_single_file(sdxl, world.root / "full.safetensors")
    path = save_gguf(sdxl_unet_original_state(full), unet_dir / "sdxl-unet-Q8_0.gguf", "Q8_0")
    _config_only(sdxl, path.with_name(path.stem + ".config"))
    save_fp8(_component(sdxl, "text_encoder"), encoders / "clip_l.safetensors")
    save_file(_component(sdxl, "text_encoder_2"), str(encoders / "clip_g.safetensors"))
    save_file(_component(sdxl, "vae"), str(world.vae / "sdxl_vae.safetensors"))
    manager = _manager(world, folders)
    entry = manager.find_checkpoint("sdxl-unet-Q8_0")
    assert manager.missing_components(entry) == []
    pipe = manager.get(entry.name, "txt2img").pipe
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and "GGUFLinear" in _linear_types(pipe.unet)
    assert np.abs(generate(pipe) - generate(_reference(sdxl))).max() < 0.1


# ------------------------------------------------------------------------------------------------ needs
@pytest.mark.parametrize("family, keys, expected", [
    ("sd3", {"joint_blocks.0.x_block.attn.qkv.weight": (96, 32), "context_embedder.weight": (32, 64)},
     ["SD3 needs a CLIP-L text encoder", "SD3 needs a CLIP-G (OpenCLIP bigG) text encoder",
      "SD3 needs a T5-XXL text encoder", "SD3 needs the SD3 VAE", "SD3 needs the T5 tokenizer"]),
    ("zimage", {"layers.0.attention.qkv.weight": (96, 32), "cap_embedder.1.weight": (32, 16),
                "noise_refiner.0.attention.qkv.weight": (96, 32), "layers.0.adaLN_modulation.0.weight": (128, 32)},
     ["Z-Image needs a Qwen3 text encoder", "Z-Image needs a 16-channel VAE (the Flux.1 ae.safetensors",
      "Z-Image needs the Qwen tokenizer"]),
    ("qwen", {"transformer_blocks.0.img_mod.1.weight": (192, 32), "txt_in.weight": (32, 16),
              "img_in.weight": (32, 64)},
     ["Qwen-Image needs a Qwen2.5-VL text encoder", "Qwen-Image needs the Qwen-Image VAE",
      "Qwen-Image needs the Qwen tokenizer"]),
])
def test_models_tab_says_what_each_family_still_needs(world, family, keys, expected) -> None:
    folders = _encoder_dirs(world)
    save_gguf({k: torch.randn(*s) for k, s in keys.items()}, folders[0] / f"{family}-Q8_0.gguf")
    manager = _manager(world, folders)
    entry = manager.find_checkpoint(f"{family}-Q8_0")
    assert entry.denoiser_only, entry.reason
    needs = manager.missing_components(entry)
    assert len(needs) == len(expected), needs
    for need, start in zip(needs, expected):
        assert need.startswith(start), (need, start)


def test_qwen25vl_gguf_text_encoder_is_refused_with_a_message(world, tiny) -> None:
    from webui.model_manager.errors import ModelLoadError

    folders = _encoder_dirs(world)
    diffusion, _, encoders = folders
    qwen = tiny["qwenimage"]
    path = save_gguf(comfy_state(_component(qwen, "transformer")), diffusion / "qwen-image-Q8_0.gguf")
    _config_only(qwen, path.with_name(path.stem + ".config"))
    save_gguf({"blk.0.attn_q.weight": torch.randn(16, 256), "token_embd.weight": torch.randn(8, 256)},
              encoders / "Qwen2.5-VL-7B-Instruct-Q8_0.gguf", arch="qwen2vl")
    save_file(_component(qwen, "vae"), str(world.vae / "qwen_image_vae.safetensors"))
    with pytest.raises(ModelLoadError) as caught:
        _manager(world, folders).get("qwen-image-Q8_0", "txt2img")
    assert "Qwen2.5-VL" in str(caught.value) and "safetensors" in str(caught.value)


def test_qwen_vae_in_the_original_wan_layout_is_named_as_such(world, tiny) -> None:
    from tests.tiny_models import make_header_only_safetensors
    from webui.model_manager.errors import ModelLoadError

    folders = _encoder_dirs(world)
    diffusion, _, encoders = folders
    qwen = tiny["qwenimage"]
    path = save_gguf(comfy_state(_component(qwen, "transformer")), diffusion / "qwen-image-Q8_0.gguf")
    _config_only(qwen, path.with_name(path.stem + ".config"))
    save_file(_component(qwen, "text_encoder"), str(encoders / "qwen_2.5_vl_7b.safetensors"))
    make_header_only_safetensors(world.vae / "qwen_image_vae.safetensors",
                                 {"decoder.conv1.weight": (8, 4, 3, 3, 3), "encoder.conv1.weight": (8, 3, 3, 3, 3)})
    manager = _manager(world, folders)
    assert manager.missing_components(manager.find_checkpoint("qwen-image-Q8_0")) == []  # it is found ...
    with pytest.raises(ModelLoadError) as caught:  # ... and refused with the reason, not a traceback
        manager.get("qwen-image-Q8_0", "txt2img")
    assert "original layout" in str(caught.value) and "Qwen/Qwen-Image" in str(caught.value)


def test_shipped_configs_describe_the_published_models() -> None:
    """configs/sd3, zimage and qwenimage build (on the meta device) models of the published sizes."""
    import diffusers
    import transformers
    from accelerate import init_empty_weights

    from webui.model_manager.loading import CONFIGS_DIR

    def count(model) -> float:
        return sum(p.numel() for p in model.parameters()) / 1e9

    def built(family: str, slot: str, class_name: str):
        folder = CONFIGS_DIR / family / slot
        with init_empty_weights():
            if hasattr(diffusers, class_name):
                cls = getattr(diffusers, class_name)
                return cls.from_config(cls.load_config(str(folder)))
            cls = getattr(transformers, class_name)
            return cls(cls.config_class.from_pretrained(str(folder)))

    assert 8.0 < count(built("sd3", "transformer", "SD3Transformer2DModel")) < 8.2  # SD3.5 large: 8.1 B
    assert 6.1 < count(built("zimage", "transformer", "ZImageTransformer2DModel")) < 6.3  # Z-Image: 6.15 B
    assert 20.3 < count(built("qwenimage", "transformer", "QwenImageTransformer2DModel")) < 20.6  # 20.4 B
    assert 3.9 < count(built("zimage", "text_encoder", "Qwen3Model")) < 4.1  # Qwen3-4B without its head
    assert 8.2 < count(built("qwenimage", "text_encoder", "Qwen2_5_VLForConditionalGeneration")) < 8.4  # 8.29 B
    assert 0.12 < count(built("qwenimage", "vae", "AutoencoderKLQwenImage")) < 0.13  # the Wan 2.1 VAE: 127 M
    assert 0.69 < count(built("sd3", "text_encoder_2", "CLIPTextModelWithProjection")) < 0.70  # OpenCLIP bigG text
