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
