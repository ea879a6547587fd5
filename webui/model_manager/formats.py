"""How a denoiser's weights are stored in memory: GGUF blocks, fp8 with layerwise upcasting, bitsandbytes.

* **GGUF** files (`.gguf`, see gguf_files.py) load through diffusers' `GGUFQuantizationConfig`: every quantized
  2-D weight stays in its ggml blocks (Q8_0, Q4_K, ...) and each `GGUFLinear` dequantizes its weight at run time,
  one layer at a time, in the compute dtype. Original (community) key names go through diffusers' single-file
  converters; an SD/SDXL UNet without the `model.diffusion_model.` prefix gets it first.
* **fp8** safetensors files (float8_e4m3fn / float8_e5m2 tensors) and `--precision fp8` keep the denoiser's
  weights in fp8 with diffusers' layerwise casting (`enable_layerwise_casting`): each layer's weights are cast to
  the compute dtype just before it runs and back after. Norms, embeddings and patch projections stay in the
  compute dtype (diffusers' default skip list). Loading reads the weights in the compute dtype first, so the
  peak while loading is that of the unquantized model.
* **bitsandbytes** NF4 / int8 (`--precision nf4` / `int8`) quantize the denoiser while it loads; they need an
  NVIDIA GPU (CUDA) and the `bitsandbytes` package, and say so where either is missing.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from webui.model_manager.flux_keys import flux_to_diffusers, is_original_flux

log = logging.getLogger(__name__)

STORAGES = ("", "fp8", "nf4", "int8")  # "" = the compute dtype (what --precision full/half/bf16 give)
_LDM_UNET = "model.diffusion_model."


def storage_dtype(storage: str) -> torch.dtype | None:
    """The torch dtype of an "fp8 ..." storage label, or of the `--precision fp8` option (e4m3fn)."""
    if storage in ("fp8", "fp8 e4m3fn"):
        return torch.float8_e4m3fn
    if storage == "fp8 e5m2":
        return torch.float8_e5m2
    return None


def check_storage(storage: str, device: str, option: str = "--precision") -> None:
    """Raise ValueError naming `option` (the flag or the setting) when `storage` cannot work on this machine."""
    if storage not in STORAGES:
        raise ValueError(f"{option}: storage must be one of fp8, nf4, int8 (or none), got {storage!r}")
    if storage in ("nf4", "int8"):
        if not (device.startswith("cuda") and torch.cuda.is_available()):
            raise ValueError(f"{option} {storage} (bitsandbytes) needs an NVIDIA GPU with CUDA, and this machine "
                             f"runs on {device}; use fp8, or a GGUF file (models/diffusion_models/), "
                             "which work everywhere")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ValueError(f"{option} {storage} needs the bitsandbytes package: pip install bitsandbytes"
                             ) from None


def bnb_config(storage: str, compute_dtype: torch.dtype) -> Any:
    """diffusers' BitsAndBytesConfig for `--precision nf4` / `int8`."""
    from diffusers import BitsAndBytesConfig

    if storage == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def pipeline_quantization(storage: str, compute_dtype: torch.dtype) -> Any | None:
    """A PipelineQuantizationConfig quantizing the denoiser of a folder with bitsandbytes, or None."""
    if storage not in ("nf4", "int8"):
        return None
    from diffusers import PipelineQuantizationConfig

    return PipelineQuantizationConfig(quant_mapping={"transformer": bnb_config(storage, compute_dtype),
                                                     "unet": bnb_config(storage, compute_dtype)})


def load_gguf_denoiser(path: Path, cls: Any, config: str, subfolder: str, local: bool,
                       dtype: torch.dtype, dtype_kwargs: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """A transformer/UNet from a GGUF file, quantized weights kept as GGUF blocks (dequantized per layer)."""
    from diffusers import GGUFQuantizationConfig
    from diffusers.models.model_loading_utils import load_gguf_checkpoint

    state = load_gguf_checkpoint(str(path))
    for prefix in ("model.diffusion_model.", "diffusion_model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            break
    if cls.__name__ == "UNet2DConditionModel" and any(k.startswith("input_blocks.") for k in state):
        state = {_LDM_UNET + k: v for k, v in state.items()}  # diffusers' LDM converter reads prefixed keys
    elif is_original_flux(state):
        state = flux_to_diffusers(state)  # any width; GGUF blocks stay packed
    model = cls.from_single_file(state, config=config, subfolder=subfolder, local_files_only=local,
                                 quantization_config=GGUFQuantizationConfig(compute_dtype=dtype), **dtype_kwargs,
                                 **overrides)
    return model.eval()


def upcast_layerwise(model: torch.nn.Module, storage: torch.dtype, compute: torch.dtype) -> torch.nn.Module:
    """Keep `model`'s weights in `storage` (fp8), each layer computed in `compute` (diffusers' layerwise casting)."""
    model.to(compute)
    model.enable_layerwise_casting(storage_dtype=storage, compute_dtype=compute)
    return model


def is_quantized(model: Any) -> bool:
    """True when diffusers quantized this model (GGUF, bitsandbytes) or it already casts layerwise."""
    if getattr(model, "hf_quantizer", None) is not None or getattr(model, "is_quantized", False):
        return True
    return storage_of(model) != ""


def storage_of(model: Any) -> str:
    """How a loaded denoiser stores its weights: "GGUF", "fp8 e4m3fn", "nf4", ... or "" (the compute dtype)."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        method = str(getattr(quantizer.quantization_config, "quant_method", "")).lower()
        if "gguf" in method:
            return "GGUF"
        config = quantizer.quantization_config
        return "nf4" if getattr(config, "load_in_4bit", False) else "int8"
    if isinstance(model, torch.nn.Module):
        dtypes = {p.dtype for p in model.parameters()}
        for dtype, name in ((torch.float8_e4m3fn, "fp8 e4m3fn"), (torch.float8_e5m2, "fp8 e5m2")):
            if dtype in dtypes:
                return name
    return ""


def apply_storage(pipe: Any, storage: str, compute: torch.dtype) -> str:
    """Store the pipeline's denoiser as `--precision` asks (fp8: layerwise casting), unless it is already
    quantized; returns how it is stored now."""
    denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    if denoiser is None or not isinstance(denoiser, torch.nn.Module):
        return ""
    wanted = storage_dtype(storage)
    if wanted is not None and not is_quantized(denoiser):
        upcast_layerwise(denoiser, wanted, compute)
        log.info("storing %s weights in %s, computing in %s", type(denoiser).__name__, wanted, compute)
    return storage_of(denoiser)


def resident_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers as they are held (GGUF blocks count their packed size)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        data = tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor
        key = data.untyped_storage().data_ptr() if data.device.type != "meta" else id(data)
        if key in seen:
            continue
        seen.add(key)
        total += data.numel() * data.element_size()
    return total
