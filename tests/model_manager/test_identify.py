"""Identification from safetensors headers (every family, both key layouts) and from diffusers folders."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from tests.tiny_models import (make_header_only_safetensors, save_sd1_single_file, save_sd2_single_file,
                               save_sdxl_single_file)
from webui.model_manager.identify import (PICKLE_REASON, Arch, HeaderError, identify_file, identify_folder,
                                          read_safetensors_header)
from webui.model_manager.manager import identify_lora

U = "model.diffusion_model."
SD_COMMON = {
    U + "input_blocks.0.0.weight": (8, 4, 3, 3),
    U + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (8, 8),
    U + "output_blocks.11.0.skip_connection.weight": (8, 8, 1, 1),
    U + "time_embed.0.weight": (8, 8),
    "first_stage_model.encoder.conv_in.weight": (8, 3, 3, 3),
    "first_stage_model.decoder.conv_out.weight": (3, 8, 3, 3),
}
SD1_TEXT = {"cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 8),
            "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight": (8, 8)}
SD2_TEXT = {"cond_stage_model.model.token_embedding.weight": (16, 8),
            "cond_stage_model.model.positional_embedding": (77, 8),
            "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": (24, 8)}
SDXL_TEXT = {"conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": (77, 8),
             "conditioner.embedders.1.model.positional_embedding": (77, 16),
             "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (16,),
             "conditioner.embedders.1.model.text_projection": (16, 16)}


def sd3_keys(blocks: int, dual: bool = False, prefix: str = U) -> dict[str, tuple[int, ...]]:
    keys = {prefix + "pos_embed": (1, 16, 8), prefix + "x_embedder.proj.weight": (8, 16, 2, 2),
            prefix + "context_embedder.weight": (8, 32), prefix + "final_layer.linear.weight": (64, 8)}
    for n in range(blocks):
        keys[prefix + f"joint_blocks.{n}.context_block.adaLN_modulation.1.bias"] = (4,)
        keys[prefix + f"joint_blocks.{n}.x_block.attn.qkv.weight"] = (6, 2)
        if dual:
            keys[prefix + f"joint_blocks.{n}.x_block.attn2.qkv.weight"] = (6, 2)
    return keys


def flux_keys(prefix: str = "", guidance: bool = True, in_features: int = 64) -> dict[str, tuple[int, ...]]:
    keys = {"img_in.weight": (8, in_features), "txt_in.weight": (8, 16), "time_in.in_layer.weight": (8, 256),
            "vector_in.in_layer.weight": (8, 12), "final_layer.linear.weight": (64, 8),
            "double_blocks.0.img_attn.norm.key_norm.scale": (4,), "double_blocks.0.img_attn.qkv.weight": (24, 8),
            "double_blocks.0.txt_mod.lin.weight": (48, 8), "double_blocks.1.img_attn.qkv.weight": (24, 8),
            "single_blocks.0.linear1.weight": (40, 8), "single_blocks.0.modulation.lin.weight": (24, 8)}
    if guidance:
        keys["guidance_in.in_layer.weight"] = (8, 256)
    return {prefix + k: v for k, v in keys.items()}


def zimage_keys(prefix: str = "") -> dict[str, tuple[int, ...]]:
    keys = {"x_embedder.weight": (8, 64), "final_layer.linear.weight": (64, 8), "t_embedder.mlp.0.weight": (16, 8),
            "cap_embedder.0.weight": (16,), "cap_embedder.1.weight": (8, 16), "x_pad_token": (1, 8),
            "cap_pad_token": (1, 8), "noise_refiner.0.attention.qkv.weight": (24, 8),
            "context_refiner.0.attention.qkv.weight": (24, 8), "layers.0.adaLN_modulation.0.weight": (32, 8),
            "layers.0.attention.qkv.weight": (24, 8), "layers.0.attention.out.weight": (8, 8),
            "layers.0.attention.k_norm.weight": (4,), "layers.1.adaLN_modulation.0.weight": (32, 8)}
    return {prefix + k: v for k, v in keys.items()}


def qwen_keys(prefix: str = "") -> dict[str, tuple[int, ...]]:
    keys = {"img_in.weight": (8, 64), "txt_in.weight": (8, 16), "txt_norm.weight": (16,),
            "time_text_embed.timestep_embedder.linear_1.weight": (8, 256), "norm_out.linear.weight": (16, 8),
            "proj_out.weight": (64, 8), "transformer_blocks.0.img_mod.1.weight": (48, 8),
            "transformer_blocks.0.txt_mod.1.weight": (48, 8), "transformer_blocks.0.attn.to_q.weight": (8, 8),
            "transformer_blocks.0.attn.add_q_proj.weight": (8, 8)}
    return {prefix + k: v for k, v in keys.items()}


CASES = {
    "sd1": ({**SD_COMMON, **SD1_TEXT}, Arch.SD1, "", True),
    "sd1-inpaint": ({**SD_COMMON, **SD1_TEXT, U + "input_blocks.0.0.weight": (8, 9, 3, 3)}, Arch.SD1, "inpaint", True),
    "sd1-pix2pix": ({**SD_COMMON, **SD1_TEXT, U + "input_blocks.0.0.weight": (8, 8, 3, 3)}, Arch.SD1,
                    "instruct-pix2pix", False),
    "sd2": ({**SD_COMMON, **SD2_TEXT}, Arch.SD2, "", True),
    "sd2-unet-only": ({U + "input_blocks.0.0.weight": (8, 4, 3, 3),
                       U + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (8, 1024)}, Arch.SD2, "", True),
    "sdxl": ({**SD_COMMON, **SDXL_TEXT, U + "label_emb.0.0.weight": (8, 2816)}, Arch.SDXL, "", True),
    "sdxl-refiner": ({**SD_COMMON, "conditioner.embedders.0.model.positional_embedding": (77, 16),
                      U + "label_emb.0.0.weight": (8, 2560)}, Arch.SDXL, "refiner", True),
    "sdxl-refiner-unet-only": ({U + "input_blocks.0.0.weight": (8, 4, 3, 3), U + "label_emb.0.0.weight": (8, 2560)},
                               Arch.SDXL, "refiner", False),
    "sd3-medium": (sd3_keys(24), Arch.SD3, "3 medium", True),
    "sd35-medium": (sd3_keys(24, dual=True, prefix=""), Arch.SD3, "3.5 medium", True),
    "sd35-large": (sd3_keys(38), Arch.SD3, "3.5 large", True),
    "flux-dev": (flux_keys(), Arch.FLUX, "dev", True),
    "flux-schnell-prefixed": (flux_keys(U, guidance=False), Arch.FLUX, "schnell", True),
    "flux-fill": (flux_keys(in_features=384), Arch.FLUX, "fill", False),
    "zimage": (zimage_keys(), Arch.ZIMAGE, "", True),
    "zimage-comfy": (zimage_keys(U), Arch.ZIMAGE, "", True),
    "qwen": (qwen_keys(), Arch.QWEN, "", True),
    "qwen-comfy": (qwen_keys(U), Arch.QWEN, "", True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_header_identification(tmp_path: Path, case: str) -> None:
    keys, arch, variant, supported = CASES[case]
    path = make_header_only_safetensors(tmp_path / f"{case}.safetensors", keys)
    found = identify_file(path)
    assert (found.arch, found.variant, found.supported) == (arch, variant, supported), found
    assert found.reason


@pytest.mark.parametrize("keys, words", [
    ({"foo.bar.weight": (2, 2), "baz.weight": (2,)}, ["foo.*", "baz.*", "2 tensors"]),
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 8)}, ["LoRA", "models/Lora"]),
    ({"encoder.down.0.block.0.conv1.weight": (8, 8, 3, 3), "decoder.conv_out.weight": (3, 8, 3, 3)}, ["VAE"]),
    ({"control_model.time_embed.0.weight": (8, 8)}, ["ControlNet"]),
    ({"encoder.block.0.layer.0.SelfAttention.q.weight": (8, 8), "shared.weight": (16, 8)}, ["T5"]),
    ({**flux_keys(), "single_stream_modulation.lin.weight": (8, 8)}, ["Flux.2"]),
    ({**flux_keys(), "distilled_guidance_layer.in_proj.bias": (8,)}, ["Chroma"]),
    ({k.replace("adaLN_modulation.0", "adaLN_modulation.1"): v for k, v in zimage_keys().items()}, ["Lumina"]),
])
def test_unknown_files_say_what_they_are(tmp_path: Path, keys: dict, words: list[str]) -> None:
    found = identify_file(make_header_only_safetensors(tmp_path / "x.safetensors", keys))
    assert found.arch == Arch.UNKNOWN and not found.supported
    for word in words:
        assert word in found.reason, found.reason


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin", ".pth"])
def test_pickle_files_are_never_opened(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04 not even read")
    found = identify_file(path)
    assert found.arch == Arch.UNKNOWN and found.reason == PICKLE_REASON


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    assert "not a valid safetensors file" in identify_file(garbage).reason

    good = make_header_only_safetensors(tmp_path / "good.safetensors", {**SD_COMMON, **SD1_TEXT})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    found = identify_file(cut)
    assert found.arch == Arch.UNKNOWN and "truncated" in found.reason

    bad_json = tmp_path / "json.safetensors"
    bad_json.write_bytes(struct.pack("<Q", 5) + b"{oops")
    assert "JSON" in identify_file(bad_json).reason
    with pytest.raises(HeaderError):
        read_safetensors_header(bad_json)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    assert not identify_file(tmp_path / "empty.safetensors").supported


def test_identification_reads_only_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_header_only_safetensors(tmp_path / "sd1.safetensors", {**SD_COMMON, **SD1_TEXT,
                                                                      "big": (256, 1024)})
    header_end = 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]
    read_sizes: list[int] = []
    real_open = Path.open

    def spy_open(self: Path, *args, **kwargs):
        handle = real_open(self, *args, **kwargs)
        if self == path:
            original = handle.read

            def read(size: int = -1) -> bytes:
                read_sizes.append(size)
                return original(size)
            handle.read = read
        return handle

    monkeypatch.setattr(Path, "open", spy_open)
    assert identify_file(path).arch == Arch.SD1
    assert read_sizes and all(0 <= size for size in read_sizes) and sum(read_sizes) == header_end


# ------------------------------------------------------------------------------------------ real tiny models
FOLDER_ARCH = {"sd1": Arch.SD1, "sd2": Arch.SD2, "sdxl": Arch.SDXL, "sd3": Arch.SD3, "flux": Arch.FLUX,
               "zimage": Arch.ZIMAGE, "qwenimage": Arch.QWEN}


@pytest.mark.parametrize("family", sorted(FOLDER_ARCH))
def test_tiny_folders_identify(tiny, family: str) -> None:
    found = identify_folder(tiny[family])
    assert found.arch == FOLDER_ARCH[family] and found.supported, found


@pytest.mark.parametrize("family, saver, arch", [("sd1", save_sd1_single_file, Arch.SD1),
                                                 ("sd2", save_sd2_single_file, Arch.SD2),
                                                 ("sdxl", save_sdxl_single_file, Arch.SDXL)])
def test_tiny_original_layout_files_identify(tiny, tmp_path: Path, family: str, saver, arch: Arch) -> None:
    found = identify_file(saver(tiny[family], tmp_path / f"{family}.safetensors"))
    assert (found.arch, found.supported, found.layout) == (arch, True, "original"), found


@pytest.mark.parametrize("family", ["sd3", "flux", "zimage", "qwenimage"])
def test_tiny_transformer_files_identify(tiny, tmp_path: Path, family: str) -> None:
    state = load_file(str(tiny[family] / "transformer" / "diffusion_pytorch_model.safetensors"))
    plain = tmp_path / "plain.safetensors"
    save_file(state, str(plain))
    prefixed = tmp_path / "prefixed.safetensors"
    save_file({U + k: v for k, v in state.items()}, str(prefixed))
    for path in (plain, prefixed):
        found = identify_file(path)
        assert found.arch == FOLDER_ARCH[family] and found.supported and found.layout == "diffusers", found


def _folder(tmp_path: Path, index: dict, files: dict[str, str] | None = None) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps(index))
    for name, text in (files or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_folder_edge_cases(tmp_path: Path) -> None:
    easel = _folder(tmp_path / "a", {"_class_name": "EaselPipeline"})
    assert identify_folder(easel).arch == Arch.EASEL
    other = _folder(tmp_path / "b", {"_class_name": "WanPipeline"})
    assert not identify_folder(other).supported and "WanPipeline" in identify_folder(other).reason
    empty = _folder(tmp_path / "c", {"_class_name": "FluxPipeline"}, {"transformer/config.json": "{}"})
    found = identify_folder(empty)
    assert found.arch == Arch.FLUX and not found.supported and "without weights" in found.reason
    sd2 = _folder(tmp_path / "d", {"_class_name": "StableDiffusionPipeline"},
                  {"unet/config.json": json.dumps({"cross_attention_dim": 1024}), "unet/x.safetensors": ""})
    assert identify_folder(sd2).arch == Arch.SD2
    assert not identify_folder(tmp_path).supported  # no model_index.json


@pytest.mark.parametrize("keys, arch", [
    ({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768)}, Arch.SD1),
    ({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 1024)}, Arch.SD2),
    ({"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 768)}, Arch.SDXL),
    ({"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": (4, 8)}, Arch.FLUX),
    ({"transformer.transformer_blocks.0.img_mod.1.lora_A.weight": (4, 8)}, Arch.QWEN),
    ({"something.else": (2,)}, Arch.UNKNOWN),
])
def test_lora_families(tmp_path: Path, keys: dict, arch: Arch) -> None:
    assert identify_lora(make_header_only_safetensors(tmp_path / "lora.safetensors", keys)) == arch
