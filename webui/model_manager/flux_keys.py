"""Flux.1 transformer weights from the original (BFL / community file) key layout to diffusers', at any width.

Flux GGUF and fp8 files keep the original names: `double_blocks.N.img_attn.qkv.weight` (q, k and v fused),
`single_blocks.N.linear1.weight` (q, k, v and the MLP input fused), `final_layer.adaLN_modulation.1` (shift
before scale). diffusers' own converter assumes the full 3072-wide model; this one reads the width from
`img_in.weight`, so narrower models convert too. It only renames, splits along dim 0 and swaps halves along dim
0, which keep GGUF blocks intact (each row of a quantized weight is its own run of blocks), so it converts
quantized states without dequantizing them. The result matches diffusers' converter on full-width files (tested).
"""
from __future__ import annotations

from typing import Any

_TOP = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder", "img_in": "x_embedder", "final_layer.linear": "proj_out",
}
_DOUBLE = {
    "img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear", "img_attn.proj": "attn.to_out.0",
    "txt_attn.proj": "attn.to_add_out", "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj", "txt_mlp.2": "ff_context.net.2",
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight", "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
}
_SINGLE = {"linear2": "proj_out", "modulation.lin": "norm.linear", "norm.query_norm.scale": "attn.norm_q.weight",
           "norm.key_norm.scale": "attn.norm_k.weight"}
_FUSED_DOUBLE = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
                 "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}


def is_original_flux(state: dict[str, Any]) -> bool:
    return any(k.startswith("double_blocks.") for k in state) and "img_in.weight" in state


def _swap_halves(tensor: Any) -> Any:
    import torch

    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _rename(name: str, table: dict[str, str], src: str, dst: str) -> str | None:
    rest = name[len(src):]
    for old, new in table.items():
        if rest == old:
            return dst + new
        if rest.startswith(old + "."):
            return dst + new + rest[len(old):]
    return None


def flux_to_diffusers(state: dict[str, Any]) -> dict[str, Any]:
    """The same weights under diffusers' FluxTransformer2DModel names. Raises ValueError on unknown keys."""
    import torch

    inner = int(state["img_in.weight"].shape[0])  # the model's width (3072 for Flux.1)
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for name, tensor in state.items():
        parts = name.split(".")
        if name.startswith("final_layer.adaLN_modulation.1."):
            out["norm_out.linear." + parts[-1]] = _swap_halves(tensor)
        elif parts[0] == "double_blocks":
            src, dst = f"double_blocks.{parts[1]}.", f"transformer_blocks.{parts[1]}."
            fused = ".".join(parts[2:4])
            if fused in _FUSED_DOUBLE:
                for target, piece in zip(_FUSED_DOUBLE[fused], torch.chunk(tensor, 3, dim=0)):
                    out[f"{dst}{target}.{parts[-1]}"] = piece
            elif (new := _rename(name, _DOUBLE, src, dst)) is not None:
                out[new] = tensor
            else:
                unknown.append(name)
        elif parts[0] == "single_blocks":
            src, dst = f"single_blocks.{parts[1]}.", f"single_transformer_blocks.{parts[1]}."
            if parts[2] == "linear1":
                sizes = (inner, inner, inner, int(tensor.shape[0]) - 3 * inner)
                targets = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")
                for target, piece in zip(targets, torch.split(tensor, sizes, dim=0)):
                    out[f"{dst}{target}.{parts[-1]}"] = piece
            elif (new := _rename(name, _SINGLE, src, dst)) is not None:
                out[new] = tensor
            else:
                unknown.append(name)
        elif (new := _rename(name, _TOP, "", "")) is not None:
            out[new] = tensor
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"{len(unknown)} weights have no Flux.1 name (e.g. {', '.join(unknown[:3])})")
    return out
