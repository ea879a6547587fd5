"""GGUF and fp8 transformer/UNet files, `--precision fp8|nf4|int8`, and separate text encoder files.

The files are written here, from tiny random-weight models, in the key layouts community files use (original
Flux / LDM UNet names for Flux, SDXL and Z-Image, diffusers names for Qwen-Image and SD3), then found, loaded and
run by a real ModelManager.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.tiny_formats import flux_folder_original_state, flux_original_state, save_fp8, save_gguf, sdxl_unet_original_state
from tests.tiny_models import make_header_only_safetensors, save_sdxl_single_file, save_zimage_single_file
from webui.model_manager.formats import resident_bytes, storage_of
from webui.model_manager.identify import Arch, identify_file


def generate(loaded, seed: int = 0) -> np.ndarray:
    """Two steps at 32x32, as floats in [0, 1]."""
    extra = {"max_sequence_length": 32} if loaded.arch in (Arch.SD3, Arch.FLUX, Arch.QWEN, Arch.ZIMAGE) else {}
    result = loaded.pipe(prompt="a red cube", num_inference_steps=2, height=32, width=32, output_type="np",
                         generator=torch.Generator().manual_seed(seed), **extra)
    return result.images[0]


def _linear_types(model: torch.nn.Module) -> set[str]:
    return {type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.Linear)}


# ------------------------------------------------------------------------------------------------ GGUF writing
@pytest.mark.parametrize("qtype, tolerance", [("Q8_0", 0.02), ("Q4_0", 0.15), ("Q4_K", 0.12)])
def test_gguf_blocks_read_back_by_gguf_and_diffusers(tmp_path: Path, qtype: str, tolerance: float) -> None:
    import gguf
    from diffusers.models.model_loading_utils import load_gguf_checkpoint
    from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

    weight = torch.randn(16, 512, generator=torch.Generator().manual_seed(1))
    path = save_gguf({"w.weight": weight, "w.bias": torch.ones(16)}, tmp_path / "w.gguf", qtype)
    reader = gguf.GGUFReader(str(path))
    tensor = next(t for t in reader.tensors if t.name == "w.weight")
    assert tensor.tensor_type.name == qtype
    by_gguf = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).copy())
    by_diffusers = dequantize_gguf_tensor(load_gguf_checkpoint(str(path))["w.weight"]).float()
    assert by_gguf.shape == by_diffusers.shape == weight.shape
    assert torch.allclose(by_gguf, by_diffusers, atol=5e-3, rtol=2e-3)  # diffusers multiplies in fp16
    assert (by_gguf - weight).abs().mean() < tolerance  # blocks that reproduce the weights, not just any bytes


# ------------------------------------------------------------------------------------------------ Flux key layout
def test_flux_key_converter_matches_diffusers_at_full_width() -> None:
    """At Flux.1's real width (3072), Easel's converter gives what diffusers' own converter gives; (rows, 1)
    tensors holding their row number check every split and swap without allocating the full weights."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from webui.model_manager.flux_keys import flux_to_diffusers

    inner, mlp = 3072, 12288
    rows = {"img_in.weight": inner, "img_in.bias": inner, "txt_in.weight": inner, "txt_in.bias": inner,
            "final_layer.linear.weight": 64, "final_layer.linear.bias": 64,
            "final_layer.adaLN_modulation.1.weight": 2 * inner, "final_layer.adaLN_modulation.1.bias": 2 * inner}
    for name in ("time_in", "vector_in", "guidance_in"):
        rows.update({f"{name}.in_layer.weight": inner, f"{name}.in_layer.bias": inner,
                     f"{name}.out_layer.weight": inner, f"{name}.out_layer.bias": inner})
    for part in ("img", "txt"):
        for suffix in ("weight", "bias"):
            rows.update({f"double_blocks.0.{part}_mod.lin.{suffix}": 6 * inner,
                         f"double_blocks.0.{part}_attn.qkv.{suffix}": 3 * inner,
                         f"double_blocks.0.{part}_attn.proj.{suffix}": inner,
                         f"double_blocks.0.{part}_mlp.0.{suffix}": mlp, f"double_blocks.0.{part}_mlp.2.{suffix}": inner})
        rows.update({f"double_blocks.0.{part}_attn.norm.query_norm.scale": 128,
                     f"double_blocks.0.{part}_attn.norm.key_norm.scale": 128})
    for suffix in ("weight", "bias"):
        rows.update({f"single_blocks.0.linear1.{suffix}": 3 * inner + mlp, f"single_blocks.0.linear2.{suffix}": inner,
                     f"single_blocks.0.modulation.lin.{suffix}": 3 * inner})
    rows.update({"single_blocks.0.norm.query_norm.scale": 128, "single_blocks.0.norm.key_norm.scale": 128})
    state = {name: torch.arange(count, dtype=torch.float32)[:, None] + 0.5 * i for i, (name, count) in
             enumerate(rows.items())}
    expected = convert_flux_transformer_checkpoint_to_diffusers(dict(state))
    converted = flux_to_diffusers(state)
    assert set(converted) == set(expected)
    assert all(torch.equal(converted[k], expected[k]) for k in expected)


def test_flux_original_layout_round_trips(tiny) -> None:
    from webui.model_manager.flux_keys import flux_to_diffusers

    state = load_file(str(tiny["flux"] / "transformer" / "diffusion_pytorch_model.safetensors"))
    back = flux_to_diffusers(flux_original_state(state))
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)


# ------------------------------------------------------------------------------------------------ GGUF loading
def test_flux_gguf_in_diffusion_models_stays_quantized_and_generates(world, tiny) -> None:
    world.install_folder(tiny["flux"], "flux-base")
    original = flux_folder_original_state(tiny["flux"])
    folder = world.root / "diffusion_models"
    q8 = save_gguf(original, folder / "flux1-dev-Q8_0.gguf", "Q8_0", arch="flux")
    q4 = save_gguf(original, folder / "flux1-dev-Q4_K.gguf", "Q4_0", arch="flux")
    manager = world.manager(checkpoint_dirs=[world.checkpoints, folder])
    entry = manager.find_checkpoint("flux1-dev-Q8_0")
    assert (entry.arch, entry.variant, entry.storage, entry.supported) == (Arch.FLUX, "dev", "GGUF Q8_0", True)
    assert "GGUF Q8_0" in entry.reason
    reference = generate(manager.get("flux-base", "txt2img"))
    full_bytes = resident_bytes(manager.get("flux-base", "txt2img").pipe.transformer)
    results = {}
    for name in ("flux1-dev-Q8_0", "flux1-dev-Q4_K"):
        loaded = manager.get(name, "txt2img")
        transformer = loaded.pipe.transformer
        assert "GGUFLinear" in _linear_types(transformer) and storage_of(transformer) == "GGUF"
        assert transformer.transformer_blocks[0].attn.to_q.weight.quant_type.name in ("Q8_0", "Q4_0")
        results[name] = (resident_bytes(transformer), np.abs(generate(loaded) - reference).max())
    assert results["flux1-dev-Q4_K"][0] < results["flux1-dev-Q8_0"][0] < full_bytes
    assert results["flux1-dev-Q8_0"][1] < 0.02  # Q8_0 stays close to the float model ...
    assert 0 < results["flux1-dev-Q8_0"][1] < results["flux1-dev-Q4_K"][1]  # ... and 4 bits are coarser
    assert q8.exists() and q4.exists()


def test_sdxl_gguf_unet_alone_takes_the_rest_from_a_family_folder(world, tiny) -> None:
    world.install_folder(tiny["sdxl"], "sdxl-base")
    full = save_sdxl_single_file(tiny["sdxl"], world.root / "full.safetensors")
    unet_dir = world.root / "unet"
    save_gguf(sdxl_unet_original_state(full), unet_dir / "sdxl-unet-Q8_0.gguf", "Q8_0", arch="sdxl")
    manager = world.manager(checkpoint_dirs=[world.checkpoints, unet_dir])
    entry = manager.find_checkpoint("sdxl-unet-Q8_0")
    assert (entry.arch, entry.supported, entry.denoiser_only, entry.storage) == (Arch.SDXL, True, True, "GGUF Q8_0")
    loaded = manager.get("sdxl-unet-Q8_0", "txt2img")
    assert "GGUFLinear" in _linear_types(loaded.pipe.unet)
    reference = generate(manager.get("sdxl-base", "txt2img"))
    assert np.abs(generate(manager.get("sdxl-unet-Q8_0", "txt2img")) - reference).max() < 0.05


def test_zimage_qwen_and_sd3_gguf_files_load_and_generate(world, tiny) -> None:
    folder = world.root / "diffusion_models"
    for family in ("zimage", "qwenimage", "sd3"):
        world.install_folder(tiny[family], f"{family}-base")
    save_zimage_single_file(tiny["zimage"], world.root / "z.safetensors")
    save_gguf(load_file(str(world.root / "z.safetensors")), folder / "z-image-Q8_0.gguf", "Q8_0")
    for family in ("qwenimage", "sd3"):  # these files keep diffusers' key names
        state = load_file(str(tiny[family] / "transformer" / "diffusion_pytorch_model.safetensors"))
        save_gguf(state, folder / f"{family}-Q8_0.gguf", "Q8_0")
    manager = world.manager(checkpoint_dirs=[folder])
    for name, arch in (("z-image-Q8_0", Arch.ZIMAGE), ("qwenimage-Q8_0", Arch.QWEN), ("sd3-Q8_0", Arch.SD3)):
        entry = manager.find_checkpoint(name)
        assert (entry.arch, entry.storage, entry.supported) == (arch, "GGUF Q8_0", True), entry.reason
        loaded = manager.get(name, "txt2img")
        assert "GGUFLinear" in _linear_types(loaded.pipe.transformer), name
        assert generate(loaded).shape == (32, 32, 3)


# ------------------------------------------------------------------------------------------------ fp8
@pytest.mark.parametrize("dtype, label", [(torch.float8_e4m3fn, "fp8 e4m3fn"), (torch.float8_e5m2, "fp8 e5m2")])
def test_fp8_flux_file_stays_fp8_and_computes_in_the_compute_dtype(world, tiny, dtype, label) -> None:
    world.install_folder(tiny["flux"], "flux-base")
    path = save_fp8(flux_folder_original_state(tiny["flux"]), world.checkpoints / "flux-fp8.safetensors", dtype)
    assert identify_file(path).storage == label
    manager = world.manager()
    loaded = manager.get("flux-fp8", "txt2img")
    transformer = loaded.pipe.transformer
    assert transformer.transformer_blocks[0].attn.to_q.weight.dtype == dtype  # stored in fp8 between steps
    assert storage_of(transformer) == label
    reference = generate(manager.get("flux-base", "txt2img"))
    assert np.abs(generate(manager.get("flux-fp8", "txt2img")) - reference).max() < (0.05 if "e4" in label else 0.1)


def test_precision_fp8_stores_any_loaded_denoiser_in_fp8(world, tiny) -> None:
    world.install_folder(tiny["sd1"], "sd")
    plain = world.manager().get("sd", "txt2img")
    manager = world.manager(storage="fp8")
    loaded = manager.get("sd", "txt2img")
    unet = loaded.pipe.unet
    assert storage_of(unet) == "fp8 e4m3fn"
    assert resident_bytes(unet) < 0.5 * resident_bytes(plain.pipe.unet)
    assert np.abs(generate(loaded) - generate(plain)).max() < 0.1


@pytest.mark.parametrize("option", ["nf4", "int8"])
def test_bitsandbytes_without_cuda_names_the_option(world, option: str) -> None:
    with pytest.raises(ValueError) as caught:
        world.manager(storage=option, device="cpu")
    message = str(caught.value)
    assert f"--precision {option}" in message and "CUDA" in message


# ------------------------------------------------------------------------------------------------ components
def test_text_encoder_files_are_recognised_and_missing_parts_named(world, tiny) -> None:
    from webui.model_manager.components import scan_components

    folder = world.root / "diffusion_models"
    encoders = world.root / "text_encoders"
    encoders.mkdir()
    save_gguf(flux_folder_original_state(tiny["flux"]), folder / "flux-Q8_0.gguf", "Q8_0")
    manager = world.manager(checkpoint_dirs=[folder], text_encoder_dirs=[encoders])
    entry = manager.find_checkpoint("flux-Q8_0")
    needs = manager.catalogue.missing_components(entry)
    assert needs[:3] == ["Flux.1 needs a CLIP-L text encoder in models/text_encoders/",
                         "Flux.1 needs a T5-XXL text encoder in models/text_encoders/",
                         "Flux.1 needs a 16-channel VAE (the Flux.1 ae.safetensors) in models/VAE/"]
    assert "T5 tokenizer" in needs[3] and len(needs) == 4
    save_file(load_file(str(tiny["flux"] / "text_encoder" / "model.safetensors")), str(encoders / "clip_l.safetensors"))
    t5 = load_file(str(tiny["flux"] / "text_encoder_2" / "model.safetensors"))
    save_fp8(t5, encoders / "t5xxl_fp8_e4m3fn.safetensors")
    shutil.copytree(tiny["flux"] / "tokenizer_2", encoders / "t5-tokenizer")
    make_header_only_safetensors(world.vae / "sdxl_vae.safetensors", {"decoder.conv_in.weight": (8, 4, 3, 3)})
    manager.refresh()
    assert len(manager.catalogue.missing_components(entry)) == 1  # a 4-channel VAE is not Flux's
    make_header_only_safetensors(world.vae / "ae.safetensors", {"decoder.conv_in.weight": (8, 16, 3, 3),
                                                                "encoder.conv_in.weight": (8, 3, 3, 3)})
    kinds = {c.name: (c.kind, c.storage) for c in scan_components([encoders])}
    assert kinds == {"clip_l": ("clip-l", ""), "t5xxl_fp8_e4m3fn": ("t5-xxl", "fp8 e4m3fn")}
    manager.refresh()
    assert manager.catalogue.missing_components(entry) == []


def _separate_flux_files(world, tiny, folder: Path, encoders: Path, t5: bool = True) -> Path:
    """A Flux GGUF transformer with a `.config/` folder of configs and tokenizers only (no weights), its CLIP-L
    and T5 as separate files, and its VAE in the VAE folder: no diffusers folder anywhere."""
    path = save_gguf(flux_folder_original_state(tiny["flux"]), folder / "flux-Q8_0.gguf", "Q8_0")
    shutil.copytree(tiny["flux"], path.with_name(path.stem + ".config"), ignore=shutil.ignore_patterns("*.safetensors"))
    encoders.mkdir(exist_ok=True)
    save_file(load_file(str(tiny["flux"] / "text_encoder" / "model.safetensors")), str(encoders / "clip_l.safetensors"))
    if t5:
        save_file(load_file(str(tiny["flux"] / "text_encoder_2" / "model.safetensors")), str(encoders / "t5xxl.safetensors"))
    save_file(load_file(str(tiny["flux"] / "vae" / "diffusion_pytorch_model.safetensors")), str(world.vae / "ae.safetensors"))
    return path


def test_flux_assembled_from_separate_files_matches_the_diffusers_folder(world, tiny) -> None:
    folder, encoders = world.root / "diffusion_models", world.root / "text_encoders"
    _separate_flux_files(world, tiny, folder, encoders)
    manager = world.manager(checkpoint_dirs=[folder], text_encoder_dirs=[encoders])
    assembled = manager.get("flux-Q8_0", "txt2img")
    assert "GGUFLinear" in _linear_types(assembled.pipe.transformer)
    clip = load_file(str(tiny["flux"] / "text_encoder" / "model.safetensors"))
    assert all(torch.equal(assembled.pipe.text_encoder.state_dict()[k], v) for k, v in clip.items())
    image = generate(assembled)
    world.install_folder(tiny["flux"], "flux-base")  # the same model from its diffusers folder, same GGUF file
    other = world.manager(checkpoint_dirs=[folder], text_encoder_dirs=[encoders], hash_cache_path=None)
    shutil.rmtree(folder / "flux-Q8_0.config")
    reference = generate(other.get("flux-Q8_0", "txt2img"))
    assert np.allclose(image, reference, atol=1e-5)


def test_assembly_names_the_missing_text_encoder(world, tiny) -> None:
    from webui.model_manager.errors import ModelLoadError

    folder, encoders = world.root / "diffusion_models", world.root / "text_encoders"
    _separate_flux_files(world, tiny, folder, encoders, t5=False)
    manager = world.manager(checkpoint_dirs=[folder], text_encoder_dirs=[encoders])
    with pytest.raises(ModelLoadError) as caught:
        manager.get("flux-Q8_0", "txt2img")
    message = str(caught.value)
    assert "T5-XXL text encoder in models/text_encoders/" in message and "CLIP-L" not in message


def test_shipped_flux_config_describes_flux1() -> None:
    """The configs/flux folder builds (on the meta device) a Flux.1 of the published sizes."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from webui.model_manager.loading import CONFIGS_DIR

    config = CONFIGS_DIR / "flux"
    with init_empty_weights():
        transformer = FluxTransformer2DModel.from_config(FluxTransformer2DModel.load_config(str(config / "transformer")))
        t5 = T5EncoderModel(T5Config.from_pretrained(str(config / "text_encoder_2")))
        clip = CLIPTextModel(CLIPTextConfig.from_pretrained(str(config / "text_encoder")))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(config / "vae")))
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert 11.8e9 < count(transformer) < 12.0e9  # Flux.1 [dev]: 11.9 B parameters
    t5_count = sum(p.numel() for n, p in t5.named_parameters() if not n.startswith("encoder.embed_tokens."))
    assert 4.7e9 < t5_count < 4.8e9  # the T5 v1.1 XXL encoder: 4.76 B (its embedding table counted once)
    assert 1.2e8 < count(clip) < 1.3e8  # CLIP ViT-L/14 text tower: 123 M
    assert 8.0e7 < count(vae) < 8.8e7 and vae.config.latent_channels == 16


def test_corrupt_and_truncated_gguf_files_are_listed_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "garbage.gguf").write_bytes(b"not a gguf file at all" * 10)
    good = save_gguf({"double_blocks.0.img_attn.qkv.weight": torch.randn(96, 32)}, tmp_path / "good.gguf")
    (tmp_path / "cut.gguf").write_bytes(good.read_bytes()[:40])
    for name in ("garbage.gguf", "cut.gguf"):
        found = identify_file(tmp_path / name)
        assert found.arch == Arch.UNKNOWN and not found.supported and "GGUF" in found.reason, found
