"""Flux.1 IP-Adapters: the XLabs file layout, and one pipeline call with the adapters in the transformer.

A Flux.1 IP-Adapter file (`ip_adapter.safetensors` as XLabs-AI ships it) holds an image projection under
`ip_adapter_proj_model.` (a linear layer from the CLIP ViT-L/14 image embedding to 4 tokens of the transformer's
text width, then a LayerNorm) and, for each double-stream block N, the image key/value projections under
`double_blocks.N.processor.ip_adapter_double_stream_{k,v}_proj.{weight,bias}`. `flux_state_dict` renames them to
the keys diffusers' Flux IP-Adapter loader takes (`image_proj.proj.*`, `ip_adapter.N.to_{k,v}_ip.*`), the renaming
diffusers' `FluxIPAdapterMixin.load_ip_adapter` applies to such files.

`run_flux` puts the adapters into the transformer for one call (diffusers' `_load_ip_adapter_weights`: an
IP-Adapter attention processor in every double-stream block, and the image projection), hands the pipeline the
image embeddings of the references (and zero embeddings for the negative side of true CFG), sets each unit's scale
step by step from its weight and guidance window, and puts the transformer's own processors back afterwards.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from webui.extension_api import PipelineCall, RequestError

FIELD = "alwayson_scripts.controlnet"
PROJ_PREFIX = "ip_adapter_proj_model."
BLOCK_PREFIX = "double_blocks."


def is_flux_layout(keys: set[str] | dict[str, Any]) -> bool:
    return any(key.startswith(BLOCK_PREFIX) for key in keys)


def flux_key(key: str) -> tuple[str, str] | None:
    """("image_proj" | "ip_adapter", the diffusers name) for one key of a Flux IP-Adapter file; None for others."""
    if key.startswith(PROJ_PREFIX):
        return "image_proj", key.removeprefix(PROJ_PREFIX)
    if key.startswith(BLOCK_PREFIX):  # double_blocks.3.processor.ip_adapter_double_stream_k_proj.weight
        rest = key.removeprefix(BLOCK_PREFIX).replace("processor.", "")
        return "ip_adapter", (rest.replace("ip_adapter_double_stream_k_proj", "to_k_ip")
                              .replace("ip_adapter_double_stream_v_proj", "to_v_ip"))
    if key.startswith(("image_proj.", "ip_adapter.")):  # already in diffusers' names
        part, _, rest = key.partition(".")
        return part, rest
    return None


def flux_shapes(shapes: dict[str, list[int]]) -> tuple[int, int, int]:
    """(text width it was trained for, image embedding width, number of double-stream blocks) of a Flux adapter."""
    renamed = {flux_key(k): v for k, v in shapes.items() if flux_key(k) is not None}
    k_proj = renamed.get(("ip_adapter", "0.to_k_ip.weight"))
    proj = renamed.get(("image_proj", "proj.weight"))
    if k_proj is None or proj is None:
        raise ValueError("no double_blocks.0 key projection or no ip_adapter_proj_model.proj")
    blocks = len({name.split(".")[0] for part, name in renamed if part == "ip_adapter"})
    return int(k_proj[1]), int(proj[1]), blocks


def check_fits(transformer: Any, cross_width: int, blocks: int) -> str | None:
    """Why an adapter does not fit `transformer` (None when it does)."""
    width = int(transformer.config.joint_attention_dim)
    layers = int(transformer.config.num_layers)
    if cross_width != width:
        return f"its image tokens are {cross_width} wide, the transformer's text width is {width}"
    if blocks != layers:
        return f"it has {blocks} double-stream blocks, the transformer has {layers}"
    return None


def windowed_scales(kwargs: dict[str, Any], units: list[Any], active: Callable[[int, int, float, float], bool]
                    ) -> tuple[list[Any], Callable[[int, int], None], int]:
    """(the processors to scale, set_scales(step, total), the step count estimated before the run): a step-end
    callback put into `kwargs` (after the caller's own) sets every processor's `scale` to each unit's weight inside
    its guidance window and 0 outside; the caller fills the list once the adapter's processors are in place."""
    steps = int(kwargs.get("num_inference_steps") or 1)
    estimate = max(1, min(steps, int(steps * float(kwargs.get("strength", 1.0)))))  # before the run knows
    processors: list[Any] = []

    def set_scales(step: int, total: int) -> None:
        scales = [u.weight if active(step, total, u.guidance_start, u.guidance_end) else 0.0 for u in units]
        for processor in processors:
            processor.scale = list(scales)

    original = kwargs.get("callback_on_step_end")

    def on_step_end(p: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        out = original(p, step, timestep, tensors) if original is not None else {}
        set_scales(step + 1, int(getattr(p, "_num_timesteps", 0) or estimate))
        return out

    kwargs["callback_on_step_end"] = on_step_end
    return processors, set_scales, estimate


def run_flux(call: PipelineCall, run: Callable[[PipelineCall], Any], units: list[Any], state_dicts: list[Any],
             embeds: list[Any], active: Callable[[int, int, float, float], bool]) -> Any:
    """One Flux pipeline call with the adapters in its transformer. `embeds`: per unit, [2, n, dim] (zeros first,
    then the n reference images' image embeddings)."""
    pipe = call.pipe
    accepted = inspect.signature(type(pipe).__call__).parameters
    if "ip_adapter_image_embeds" not in accepted:
        raise RequestError(FIELD, f"IP-Adapter units do not run with diffusers' {type(pipe).__name__} (Flux.1 "
                                  f"IP-Adapters run in txt2img, img2img and inpaint, and beside ControlNet units "
                                  f"in txt2img only)")
    transformer = pipe.transformer
    device, dtype = pipe._execution_device, transformer.dtype
    kwargs = dict(call.kwargs)
    kwargs["ip_adapter_image_embeds"] = [e[1:2].to(device=device, dtype=dtype) for e in embeds]  # each [1, n, dim]
    kwargs["negative_ip_adapter_image_embeds"] = [e[0:1].to(device=device, dtype=dtype) for e in embeds]
    processors, set_scales, estimate = windowed_scales(kwargs, units, active)
    had_proj = "encoder_hid_proj" in transformer.__dict__ or "encoder_hid_proj" in transformer._modules
    had_type = "encoder_hid_dim_type" in vars(transformer.config)
    saved = (dict(transformer.attn_processors), getattr(transformer, "encoder_hid_proj", None),
             getattr(transformer.config, "encoder_hid_dim_type", None))
    try:
        transformer._load_ip_adapter_weights(state_dicts, low_cpu_mem_usage=False)
        # diffusers builds the image projection on the CPU in float32: put it beside the transformer
        transformer.encoder_hid_proj.to(device=device, dtype=dtype)
        processors.extend(p for p in transformer.attn_processors.values() if isinstance(getattr(p, "scale", None),
                                                                                         list))
        set_scales(0, estimate)
        return run(call.replace(kwargs=kwargs))
    finally:
        transformer.set_attn_processor(saved[0])
        transformer.encoder_hid_proj = saved[1]
        if not had_proj and saved[1] is None:
            transformer._modules.pop("encoder_hid_proj", None)
            transformer.__dict__.pop("encoder_hid_proj", None)
        if had_type:
            transformer.config.encoder_hid_dim_type = saved[2]
        else:  # diffusers set it as an attribute of the config; the transformer had none
            vars(transformer.config).pop("encoder_hid_dim_type", None)
