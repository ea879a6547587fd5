"""Write tiny models the way community quantized files are published: GGUF and fp8, original key names.

`flux_original_state` turns a diffusers FluxTransformer2DModel state dict into the original (BFL) key layout
that Flux GGUF and fp8 files use (`double_blocks.0.img_attn.qkv.weight`, fused q/k/v, `final_layer` with shift
and scale in BFL order); `sdxl_unet_original_state` takes the UNet of an original-layout SDXL single file
(`input_blocks.0.0.weight`, no `model.diffusion_model.` prefix, as the GGUF converters write it).
`save_gguf` / `save_fp8` write such a state as `.gguf` (webui.model_manager.gguf_files) or as an fp8
`.safetensors`.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from webui.model_manager.gguf_files import write_gguf


def _flux_pairs(prefix_from: str, prefix_to: str, names: dict[str, str], state: dict, out: dict) -> None:
    for new, old in names.items():
        for suffix in ("weight", "bias"):
            if f"{prefix_from}{old}.{suffix}" in state:
                out[f"{prefix_to}{new}.{suffix}"] = state[f"{prefix_from}{old}.{suffix}"]


def _cat(state: dict, keys: list[str], suffix: str) -> torch.Tensor | None:
    parts = [state.get(f"{k}.{suffix}") for k in keys]
    return torch.cat(parts, dim=0) if all(p is not None for p in parts) else None


def _swap_halves(weight: torch.Tensor) -> torch.Tensor:
    first, second = weight.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def flux_original_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers Flux transformer state dict in the original (BFL / community file) key layout."""
    out: dict[str, torch.Tensor] = {}
    top = {"time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
           "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
           "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
           "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
           "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
           "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
           "txt_in": "context_embedder", "img_in": "x_embedder", "final_layer.linear": "proj_out"}
    _flux_pairs("", "", top, state, out)
    for suffix in ("weight", "bias"):
        if f"norm_out.linear.{suffix}" in state:
            out[f"final_layer.adaLN_modulation.1.{suffix}"] = _swap_halves(state[f"norm_out.linear.{suffix}"])
    double = {k.split(".")[1] for k in state if k.startswith("transformer_blocks.")}
    for i in sorted(double, key=int):
        src, dst = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        _flux_pairs(src, dst, {"img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
                               "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out",
                               "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2",
                               "txt_mlp.0": "ff_context.net.0.proj", "txt_mlp.2": "ff_context.net.2"}, state, out)
        for suffix in ("weight", "bias"):
            img = _cat(state, [src + "attn.to_q", src + "attn.to_k", src + "attn.to_v"], suffix)
            txt = _cat(state, [src + "attn.add_q_proj", src + "attn.add_k_proj", src + "attn.add_v_proj"], suffix)
            if img is not None:
                out[dst + f"img_attn.qkv.{suffix}"] = img
            if txt is not None:
                out[dst + f"txt_attn.qkv.{suffix}"] = txt
        for new, old in {"img_attn.norm.query_norm.scale": "attn.norm_q.weight",
                         "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
                         "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
                         "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight"}.items():
            out[dst + new] = state[src + old]
    single = {k.split(".")[1] for k in state if k.startswith("single_transformer_blocks.")}
    for i in sorted(single, key=int):
        src, dst = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        _flux_pairs(src, dst, {"linear2": "proj_out", "modulation.lin": "norm.linear"}, state, out)
        for suffix in ("weight", "bias"):
            fused = _cat(state, [src + "attn.to_q", src + "attn.to_k", src + "attn.to_v", src + "proj_mlp"], suffix)
            if fused is not None:
                out[dst + f"linear1.{suffix}"] = fused
        out[dst + "norm.query_norm.scale"] = state[src + "attn.norm_q.weight"]
        out[dst + "norm.key_norm.scale"] = state[src + "attn.norm_k.weight"]
    return out


def flux_folder_original_state(folder: Path) -> dict[str, torch.Tensor]:
    """The transformer of a saved diffusers Flux folder, in the original key layout."""
    return flux_original_state(load_file(str(Path(folder) / "transformer" / "diffusion_pytorch_model.safetensors")))


def sdxl_unet_original_state(single_file: Path) -> dict[str, torch.Tensor]:
    """The UNet of an original-layout SD/SDXL single file, without the `model.diffusion_model.` prefix."""
    prefix = "model.diffusion_model."
    return {k[len(prefix):]: v for k, v in load_file(str(single_file)).items() if k.startswith(prefix)}


def save_gguf(state: dict[str, torch.Tensor], path: Path, qtype: str = "Q8_0", arch: str = "",
              min_elements: int = 256) -> Path:
    """`state` as a GGUF file (2-D weights with whole blocks in `qtype`, the rest F32)."""
    return write_gguf(state, path, qtype, arch=arch, min_elements=min_elements)


def save_fp8(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype = torch.float8_e4m3fn) -> Path:
    """`state` as a safetensors file whose 2-D+ weights are fp8 (the rest float32), as fp8 checkpoints are."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: (v.to(dtype) if v.ndim >= 2 else v.float()).contiguous() for k, v in state.items()}, str(path))
    return path


def sd3_original_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers SD3Transformer2DModel state dict in the original (MMDiT, Stability / community file) layout:
    `joint_blocks.N.x_block.attn.qkv` (q, k, v fused), `x_embedder.proj`, `t_embedder.mlp.0`, `y_embedder`,
    `final_layer.adaLN_modulation.1` (shift before scale), the last block's context `adaLN_modulation` swapped too."""
    out: dict[str, torch.Tensor] = {"pos_embed": state["pos_embed.pos_embed"]}
    top = {"x_embedder.proj": "pos_embed.proj", "t_embedder.mlp.0": "time_text_embed.timestep_embedder.linear_1",
           "t_embedder.mlp.2": "time_text_embed.timestep_embedder.linear_2", "context_embedder": "context_embedder",
           "y_embedder.mlp.0": "time_text_embed.text_embedder.linear_1",
           "y_embedder.mlp.2": "time_text_embed.text_embedder.linear_2", "final_layer.linear": "proj_out"}
    _flux_pairs("", "", top, state, out)
    for suffix in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{suffix}"] = _swap_halves(state[f"norm_out.linear.{suffix}"])
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("transformer_blocks.")})
    for i in blocks:
        src, dst = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        last = i == blocks[-1]
        _flux_pairs(src, dst, {"x_block.attn.proj": "attn.to_out.0", "x_block.adaLN_modulation.1": "norm1.linear",
                               "x_block.mlp.fc1": "ff.net.0.proj", "x_block.mlp.fc2": "ff.net.2",
                               "context_block.attn.proj": "attn.to_add_out",
                               "context_block.mlp.fc1": "ff_context.net.0.proj",
                               "context_block.mlp.fc2": "ff_context.net.2",
                               "x_block.attn2.proj": "attn2.to_out.0"}, state, out)
        for suffix in ("weight", "bias"):
            for part, names in (("x_block.attn", ("attn.to_q", "attn.to_k", "attn.to_v")),
                                ("context_block.attn", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")),
                                ("x_block.attn2", ("attn2.to_q", "attn2.to_k", "attn2.to_v"))):
                fused = _cat(state, [src + n for n in names], suffix)
                if fused is not None:
                    out[f"{dst}{part}.qkv.{suffix}"] = fused
            context = state[f"{src}norm1_context.linear.{suffix}"]
            out[f"{dst}context_block.adaLN_modulation.1.{suffix}"] = _swap_halves(context) if last else context
        for new, old in (("x_block.attn.ln_q", "attn.norm_q"), ("x_block.attn.ln_k", "attn.norm_k"),
                         ("context_block.attn.ln_q", "attn.norm_added_q"),
                         ("context_block.attn.ln_k", "attn.norm_added_k"),
                         ("x_block.attn2.ln_q", "attn2.norm_q"), ("x_block.attn2.ln_k", "attn2.norm_k")):
            if f"{src}{old}.weight" in state:
                out[f"{dst}{new}.weight"] = state[f"{src}{old}.weight"]
    return out


def comfy_state(state: dict[str, torch.Tensor], prefix: str = "model.diffusion_model.") -> dict[str, torch.Tensor]:
    """A diffusers-named transformer state under ComfyUI's `model.diffusion_model.` prefix (Qwen-Image files)."""
    return {prefix + k: v for k, v in state.items()}


def save_gguf_text_encoder(model: torch.nn.Module, path: Path, arch: str, qtype: str = "Q8_0") -> Path:
    """A transformers text encoder as a llama.cpp-layout GGUF (`arch` "t5encoder" as city96's T5 files, "qwen3"
    as Qwen3 GGUFs): tensor names from gguf-py's own name table (`enc.blk.0.attn_q.weight`, `token_embd.weight`,
    `blk.0.attn_q_norm.weight`), general.architecture set, 2-D weights in `qtype`."""
    import gguf

    kind = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    state = model.state_dict()
    blocks = 1 + max(int(p) for name in state for p in name.split(".") if p.isdigit())
    names = gguf.get_tensor_name_map(kind, blocks)
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        base, _, suffix = name.rpartition(".")
        found = names.get_name(base)
        if found is not None and f"{found}.{suffix}" not in out:
            out[f"{found}.{suffix}"] = value
    return write_gguf(out, path, qtype, arch=arch, min_elements=256)


def save_scaled_fp8(state: dict[str, torch.Tensor], path: Path) -> Path:
    """`state` as a "scaled fp8" safetensors (ComfyUI's *_fp8_scaled files): each 2-D weight divided by a
    per-tensor scale into e4m3fn range, the scale beside it as `<layer>.scale_weight`, and a `scaled_fp8` marker."""
    out: dict[str, torch.Tensor] = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}
    for key, value in state.items():
        if value.ndim == 2 and key.endswith(".weight"):
            scale = value.abs().max().float().clamp(min=1e-12) / 448.0
            out[key] = (value.float() / scale).to(torch.float8_e4m3fn)
            out[key[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            out[key] = value.float().contiguous()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path))
    return Path(path)


def install_separate_files(family: str, folder: Path, models: Path) -> str:
    """Lay a tiny diffusers `folder` of `family` ("sd3", "zimage", "qwenimage", "sdxl") out under `models/` as a
    Forge/ComfyUI user has it: the denoiser in its community layout as GGUF Q8_0 in diffusion_models/ (SDXL: unet/)
    with a configs-only `<name>.config/` beside it, the text encoders in text_encoders/, the VAE in VAE/.
    Returns the checkpoint name."""
    import shutil

    from tests.tiny_models import save_sdxl_single_file, save_zimage_single_file

    def component(name: str) -> dict[str, torch.Tensor]:
        return load_file(str(next((Path(folder) / name).glob("*.safetensors"))))

    encoders, vae = models / "text_encoders", models / "VAE"
    encoders.mkdir(parents=True, exist_ok=True)
    vae.mkdir(parents=True, exist_ok=True)
    if family == "sd3":
        path = save_gguf(sd3_original_state(component("transformer")), models / "diffusion_models" / "sd3-Q8_0.gguf")
        encoder_files = {"text_encoder": "clip_l", "text_encoder_2": "clip_g", "text_encoder_3": "t5xxl_fp16"}
    elif family == "zimage":
        original = save_zimage_single_file(folder, models / "z-original.safetensors")
        path = save_gguf(load_file(str(original)), models / "diffusion_models" / "z_image_turbo-Q8_0.gguf")
        original.unlink()
        encoder_files = {"text_encoder": "qwen_3_4b"}
    elif family == "qwenimage":
        path = save_gguf(comfy_state(component("transformer")), models / "diffusion_models" / "qwen-image-Q8_0.gguf")
        encoder_files = {"text_encoder": "qwen_2.5_vl_7b"}
    else:
        full = save_sdxl_single_file(folder, models / "sdxl-full.safetensors")
        path = save_gguf(sdxl_unet_original_state(full), models / "unet" / "sdxl-unet-Q8_0.gguf")
        full.unlink()
        encoder_files = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}
    shutil.copytree(folder, path.with_name(path.stem + ".config"), ignore=shutil.ignore_patterns("*.safetensors"))
    for slot, name in encoder_files.items():
        save_file(component(slot), str(encoders / f"{name}.safetensors"))
    vae_name = {"sd3": "sd3_vae", "zimage": "ae", "qwenimage": "qwen_image_vae", "sdxl": "sdxl_vae"}[family]
    save_file(component("vae"), str(vae / f"{vae_name}.safetensors"))
    return path.stem
