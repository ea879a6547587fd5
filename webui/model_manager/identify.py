"""Tell a checkpoint's architecture from its safetensors header or its diffusers folder, without reading weights.

A `.safetensors` file starts with 8 bytes (little-endian header length) and a JSON header naming every tensor
with its dtype, shape and byte range. The key names and shapes there are enough to recognise each family Easel
loads: Stable Diffusion 1.x / 2.x / XL in the original (LDM, AUTOMATIC1111) layout, the SD3/3.5, Flux.1,
Z-Image and Qwen-Image transformers (original or diffusers key names, with or without a
`model.diffusion_model.` prefix). Files that are something else (a VAE, a LoRA, a ControlNet, a text encoder,
an unsupported model) come back with a reason a person can act on. `.gguf` files are read the same way from
their tensor list (gguf_files.py); `storage` says when weights are GGUF blocks or fp8, `denoiser_only` when a
file holds a transformer/UNet alone. Pickle checkpoints (.ckpt/.pt/.bin/.pth)
are never opened, and a diffusers folder whose weights are only pickle `.bin` files is not supported (the
reason names the files and offers the converter). For a diffusers folder, `model_index.json` names the pipeline class; SD 1.x and 2.x share
one class and are told apart by the text encoder (OpenAI CLIP uses quick_gelu, OpenCLIP gelu) or the UNet's
cross-attention width.
"""
from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

from webui.model_manager.gguf_files import GGUF_SUFFIXES, GGUFError, gguf_shapes, main_quant_type
from webui.model_manager.weights import (PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, pickle_folder_reason,
                                         pickle_weights_in, pipeline_components)
PICKLE_REASON = ("pickle checkpoint: not loaded, because unpickling can run code hidden in the file; convert it to "
                 ".safetensors (Models tab, Convert to safetensors; or python -m webui.model_manager.convert FILE), "
                 "which reads only its tensors")
MAX_HEADER_BYTES = 100 * 1024 * 1024
_UNET = "model.diffusion_model."
_TRANSFORMER_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")


class Arch(str, Enum):
    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"
    SD3 = "sd3"
    FLUX = "flux"
    ZIMAGE = "zimage"
    QWEN = "qwenimage"
    EASEL = "easel"
    DIT = "dit"
    PIXART = "pixart"
    SANA = "sana"
    AMUSED = "amused"
    UNCLIP = "unclip"
    IF = "deepfloyd_if"
    GAN = "stylegan"
    UNKNOWN = "unknown"


ARCH_LABELS = {
    Arch.SD1: "SD 1.x", Arch.SD2: "SD 2.x", Arch.SDXL: "SDXL", Arch.SD3: "SD3", Arch.FLUX: "Flux.1",
    Arch.ZIMAGE: "Z-Image", Arch.QWEN: "Qwen-Image", Arch.EASEL: "Easel built-in", Arch.UNKNOWN: "unknown",
    Arch.DIT: "DiT", Arch.PIXART: "PixArt", Arch.SANA: "Sana", Arch.AMUSED: "aMUSEd", Arch.UNCLIP: "unCLIP",
    Arch.IF: "DeepFloyd IF", Arch.GAN: "StyleGAN",
}


@dataclass(frozen=True)
class Identification:
    """What a file or folder is. `reason` is for people: what was recognised, or why it cannot be loaded.

    `variant` refines the family ("inpaint", "refiner", "dev", "schnell", "3.5 large", ...); `layout` is
    "original" or "diffusers" for single files (which key names they use); `supported` is False for files
    Easel lists but will not load (arch UNKNOWN is never supported).
    """

    arch: Arch
    reason: str
    variant: str = ""
    supported: bool = True
    layout: str = ""
    storage: str = ""  # "" (float weights), "GGUF Q8_0", "fp8 e4m3fn", ...: how the file stores its weights
    denoiser_only: bool = False  # a transformer/UNet alone: text encoders and VAE come from elsewhere

    def __post_init__(self) -> None:
        if self.arch == Arch.UNKNOWN and self.supported:
            object.__setattr__(self, "supported", False)


def unknown(reason: str) -> Identification:
    return Identification(Arch.UNKNOWN, reason, supported=False)


class HeaderError(ValueError):
    """The file is not a readable safetensors file (bad length, bad JSON, truncated data)."""


def read_safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """Tensor name -> {"dtype", "shape", "data_offsets"}, read from the header only.

    Raises HeaderError when the header is malformed or the file is shorter than the header says.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise HeaderError(f"file is {size} bytes, too short for a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise HeaderError(f"header length {length} does not fit in a {size}-byte file")
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HeaderError(f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise HeaderError("header is not a JSON object")
    header.pop("__metadata__", None)
    data_end = 0
    for name, info in header.items():
        if not (isinstance(info, dict) and isinstance(info.get("shape"), list)
                and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2):
            raise HeaderError(f"header entry {name!r} lacks dtype/shape/data_offsets")
        data_end = max(data_end, int(info["data_offsets"][1]))
    if 8 + length + data_end > size:
        raise HeaderError(f"truncated: the header describes {8 + length + data_end} bytes, the file has {size}")
    return header


def header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the header alone."""
    return {name: tuple(int(d) for d in info["shape"]) for name, info in read_safetensors_header(path).items()}


def identify_file(path: Path) -> Identification:
    """Identify one checkpoint file from its name and its safetensors or GGUF header."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return unknown(PICKLE_REASON)
    if suffix in GGUF_SUFFIXES:
        return _identify_gguf(path)
    if suffix not in SAFETENSORS_SUFFIXES:
        return unknown(f"unsupported file type {suffix or '(none)'}; Easel loads .safetensors and .gguf files")
    try:
        header = read_safetensors_header(path)
    except HeaderError as exc:
        return unknown(f"not a valid safetensors file: {exc}")
    except OSError as exc:
        return unknown(f"cannot read file: {exc.strerror or exc}")
    found = identify_keys({name: tuple(int(d) for d in info["shape"]) for name, info in header.items()})
    storage = fp8_storage({name: (str(info.get("dtype", "")), _numel(info["shape"])) for name, info in header.items()})
    return _with_storage(found, storage)


def _numel(shape: list) -> int:
    total = 1
    for dim in shape:
        total *= int(dim)
    return total


FP8_NAMES = {"F8_E4M3": "fp8 e4m3fn", "F8_E5M2": "fp8 e5m2"}  # safetensors dtype -> storage label


def fp8_storage(tensors: dict[str, tuple[str, int]]) -> str:
    """"fp8 e4m3fn" / "fp8 e5m2" when most of a file's values (name -> (dtype, element count)) are fp8, else ""."""
    counts: dict[str, int] = {}
    for dtype, size in tensors.values():
        counts[dtype] = counts.get(dtype, 0) + size
    fp8 = {d: n for d, n in counts.items() if d in FP8_NAMES}
    if not fp8 or sum(fp8.values()) * 2 < sum(counts.values()):
        return ""
    return FP8_NAMES[max(fp8, key=fp8.__getitem__)]


def _identify_gguf(path: Path) -> Identification:
    try:
        shapes, types, _ = gguf_shapes(path)
    except GGUFError as exc:
        return unknown(str(exc))
    except OSError as exc:
        return unknown(f"cannot read file: {exc.strerror or exc}")
    return _with_storage(identify_keys(shapes), f"GGUF {main_quant_type(types)}".strip())


def _with_storage(found: Identification, storage: str) -> Identification:
    if not storage or found.arch == Arch.UNKNOWN:
        return found
    return replace(found, storage=storage, reason=f"{found.reason}; weights stored as {storage}")


def identify_keys(shapes: dict[str, tuple[int, ...]]) -> Identification:
    """Identify a checkpoint from its tensor names and shapes."""
    if not shapes:
        return unknown("the file holds no tensors")
    if any(k.startswith(_UNET + "input_blocks.") for k in shapes):
        return _identify_ldm_unet(shapes)
    if any(k.startswith("input_blocks.") for k in shapes) and "out.2.weight" in shapes:  # a UNet file alone
        return _identify_ldm_unet({_UNET + k: v for k, v in shapes.items()})
    other = _identify_other_file(shapes)
    if other is not None:
        return other
    stripped, prefixed = _strip_transformer_prefix(shapes)
    for recognise in (_identify_sd3, _identify_flux, _identify_zimage, _identify_qwen, _identify_diffusers_unet):
        found = recognise(stripped)
        if found is not None:
            return found
    return unknown(f"no known model layout; saw {len(shapes)} tensors under {_describe_prefixes(shapes)}")


# ----------------------------------------------------------------------------------------- LDM UNet files
def _identify_ldm_unet(shapes: dict[str, tuple[int, ...]]) -> Identification:
    keys = shapes.keys()
    in_channels = shapes.get(_UNET + "input_blocks.0.0.weight", (0, 4))[1]
    has_vae = any(k.startswith(("first_stage_model.", "vae.")) for k in keys)
    context = _context_dim(shapes)
    label = shapes.get(_UNET + "label_emb.0.0.weight")
    if any(k.startswith("conditioner.embedders.") for k in keys) or label is not None:
        arch = Arch.SDXL
        first_is_openclip = any(k.startswith("conditioner.embedders.0.model.") for k in keys)
        has_second = any(k.startswith("conditioner.embedders.1.") for k in keys)
        if (first_is_openclip and not has_second) or (label is not None and label[1] == 2560):
            if not first_is_openclip or not has_vae:
                return Identification(arch, "SDXL refiner without its text encoder or VAE weights; Easel needs the "
                                            "full checkpoint", "refiner", False, "original")
            return Identification(arch, "SDXL refiner (original layout: one OpenCLIP text encoder, "
                                        "conditioner.embedders.0.model.*): refines SDXL images", "refiner", True,
                                  "original")
        has_text = any(k.startswith("conditioner.embedders.0.transformer.") for k in keys) and has_second
        evidence = "conditioner.embedders.* text encoders, label_emb"
    elif any(k.startswith("cond_stage_model.model.") for k in keys) or context == 1024:
        arch, has_text = Arch.SD2, any(k.startswith("cond_stage_model.model.") for k in keys)
        evidence = "OpenCLIP text encoder (cond_stage_model.model.*)" if has_text else "1024-wide cross-attention"
    else:
        arch = Arch.SD1
        has_text = any(k.startswith("cond_stage_model.transformer.") for k in keys)
        evidence = "CLIP text encoder (cond_stage_model.transformer.*)" if has_text else "768-wide cross-attention"
    label_text = ARCH_LABELS[arch]
    if in_channels == 9:
        variant = "inpaint"
    elif in_channels == 8:
        return Identification(arch, f"{label_text} InstructPix2Pix: not supported as a single file", "instruct-pix2pix",
                              False, "original")
    elif in_channels != 4:
        return Identification(arch, f"{label_text} with a {in_channels}-channel UNet input (e.g. depth): not "
                                    "supported", f"{in_channels}ch", False, "original")
    else:
        variant = ""
    if not has_text and not has_vae:  # a UNet alone (models/unet, GGUF): the rest comes from elsewhere
        return Identification(arch, f"{label_text} UNet alone (original layout); its text encoders and VAE come "
                                    f"from a {label_text} diffusers folder", variant, True, "original",
                              denoiser_only=True)
    if not has_text:
        return Identification(arch, f"{label_text} UNet without text encoder weights in the file; Easel needs the "
                                    "full checkpoint", variant, False, "original")
    if not has_vae:
        return Identification(arch, f"{label_text} checkpoint without VAE weights (first_stage_model.*); Easel "
                                    "needs the full checkpoint", variant, False, "original")
    detail = f"{label_text}{' inpainting' if variant else ''} (original layout: {evidence})"
    if arch == Arch.SD2 and variant != "inpaint":
        detail += "; v-prediction 768 assumed unless a <name>.config/ folder says otherwise"
    return Identification(arch, detail, variant, True, "original")


def _context_dim(shapes: dict[str, tuple[int, ...]]) -> int | None:
    for key, shape in shapes.items():
        if key.startswith(_UNET) and key.endswith("attn2.to_k.weight") and len(shape) == 2:
            return shape[1]
    return None


# ----------------------------------------------------------------------------------------- not a checkpoint
def _identify_other_file(shapes: dict[str, tuple[int, ...]]) -> Identification | None:
    keys = list(shapes)
    if any(".lora_down." in k or ".lora_A." in k or k.startswith(("lora_unet_", "lora_te")) for k in keys):
        return unknown("this is a LoRA; put it in models/Lora")
    if any(k.endswith("mapping.fc0.weight") for k in keys) and any(".synthesis." in f".{k}" for k in keys):
        return unknown("this is a StyleGAN generator; put it in models/GAN")
    if any(k.startswith("control_model.") or k.startswith("controlnet_") for k in keys) or any(
            k.startswith(("control_layers.", "control_all_x_embedder.")) for k in keys):
        return unknown("this is a ControlNet, not a checkpoint")
    vae_like = all(k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "first_stage_model."))
                   for k in keys)
    if vae_like:
        return unknown("this is a VAE; put it in models/VAE")
    if any(k.startswith(("encoder.block.", "shared.")) for k in keys) and all(
            k.startswith(("encoder.", "shared.", "decoder.", "lm_head.")) for k in keys):
        return unknown("this is a T5 text encoder, not a checkpoint")
    clip_heads = ("text_model.", "text_projection", "logit_scale", "vision_model.", "visual_projection",
                  "embeddings.", "encoder.layers.", "final_layer_norm.")
    if all(k.startswith(clip_heads) for k in keys) and any("self_attn" in k for k in keys):
        return unknown("this is a CLIP text encoder, not a checkpoint")
    return None


def _strip_transformer_prefix(shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, tuple[int, ...]], str]:
    for prefix in _TRANSFORMER_PREFIXES:
        if all(k.startswith(prefix) for k in shapes):
            return {k[len(prefix):]: v for k, v in shapes.items()}, prefix
    for prefix in _TRANSFORMER_PREFIXES:  # files that also carry text encoders / VAE beside the prefixed model
        inner = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
        if len(inner) >= len(shapes) // 2 and inner:
            return inner, prefix
    return dict(shapes), ""


# ----------------------------------------------------------------------------------------- transformers
def _has(keys: dict[str, tuple[int, ...]], *names: str) -> bool:
    return all(n in keys for n in names)


def _any_prefix(keys: dict[str, tuple[int, ...]], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def _count_blocks(keys: dict[str, tuple[int, ...]], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def _identify_sd3(keys: dict[str, tuple[int, ...]]) -> Identification | None:
    if _any_prefix(keys, "joint_blocks."):
        blocks = _count_blocks(keys, "joint_blocks.")
        layout = "original"
        dual = _any_prefix(keys, "joint_blocks.0.x_block.attn2.")
    elif _any_prefix(keys, "transformer_blocks.") and _has(keys, "pos_embed.proj.weight", "context_embedder.weight"):
        blocks = _count_blocks(keys, "transformer_blocks.")
        layout = "diffusers"
        dual = _any_prefix(keys, "transformer_blocks.0.attn2.")
    else:
        return None
    variant = "3.5 large" if blocks >= 38 else "3.5 medium" if dual else "3 medium" if blocks == 24 else ""
    name = {"3.5 large": "SD3.5 Large", "3.5 medium": "SD3.5 Medium", "3 medium": "SD3 Medium"}.get(variant, "SD3")
    return Identification(Arch.SD3, f"{name} transformer ({blocks} joint blocks, {layout} layout)", variant, True,
                          layout)


def _identify_flux(keys: dict[str, tuple[int, ...]]) -> Identification | None:
    if _any_prefix(keys, "single_stream_modulation.") or _any_prefix(keys, "early_stream_modulations."):
        return unknown("Flux.2-style transformer: not supported (Easel loads Flux.1)")
    if _any_prefix(keys, "double_blocks.") and _any_prefix(keys, "single_blocks."):
        if _any_prefix(keys, "distilled_guidance_layer."):
            return unknown("Chroma transformer (Flux-derived): not supported")
        if _any_prefix(keys, "txt_in.individual_token_refiner."):
            return unknown("HunyuanVideo transformer: not supported")
        if not (_any_prefix(keys, "double_blocks.0.img_attn.") and "img_in.weight" in keys):
            return None
        layout, guidance = "original", _any_prefix(keys, "guidance_in.")
        in_features = keys["img_in.weight"][1] if len(keys["img_in.weight"]) == 2 else 64
        blocks = (_count_blocks(keys, "double_blocks."), _count_blocks(keys, "single_blocks."))
    elif _any_prefix(keys, "single_transformer_blocks.") and "x_embedder.weight" in keys and _any_prefix(
            keys, "time_text_embed."):
        layout, guidance = "diffusers", _any_prefix(keys, "time_text_embed.guidance_embedder.")
        in_features = keys["x_embedder.weight"][1] if len(keys["x_embedder.weight"]) == 2 else 64
        blocks = (_count_blocks(keys, "transformer_blocks."), _count_blocks(keys, "single_transformer_blocks."))
    else:
        return None
    if in_features == 384:
        return Identification(Arch.FLUX, "Flux.1 Fill transformer: not supported yet", "fill", False, layout)
    if in_features == 128:
        return Identification(Arch.FLUX, "Flux.1 Depth/Canny transformer: not supported yet", "control", False, layout)
    variant = "dev" if guidance else "schnell"
    return Identification(Arch.FLUX, f"Flux.1 {variant}-style transformer ({blocks[0]} double + {blocks[1]} single "
                                     f"blocks, {layout} layout)", variant, True, layout)


def _identify_zimage(keys: dict[str, tuple[int, ...]]) -> Identification | None:
    if not (_any_prefix(keys, "cap_embedder.") and _any_prefix(keys, "layers.")):
        return None
    if not (_any_prefix(keys, "noise_refiner.") or _any_prefix(keys, "context_refiner.")):
        return None
    if _any_prefix(keys, "all_x_embedder."):
        layout = "diffusers"
    elif "layers.0.adaLN_modulation.0.weight" in keys:
        layout = "original"
    else:
        return unknown("Lumina-2-style transformer (cap_embedder, refiners): not supported")
    layers = _count_blocks(keys, "layers.")
    return Identification(Arch.ZIMAGE, f"Z-Image transformer ({layers} layers, {layout} layout)", "", True, layout)


def _identify_qwen(keys: dict[str, tuple[int, ...]]) -> Identification | None:
    if not ("img_in.weight" in keys and "txt_in.weight" in keys and _any_prefix(keys, "transformer_blocks.")):
        if _any_prefix(keys, "txt_in.text_norm."):
            return unknown("Qwen-Image 2.1 transformer: not supported")
        return None
    if not _any_prefix(keys, "transformer_blocks.0.img_mod."):
        return None
    layers = _count_blocks(keys, "transformer_blocks.")
    return Identification(Arch.QWEN, f"Qwen-Image transformer ({layers} blocks)", "", True, "diffusers")


def _identify_diffusers_unet(keys: dict[str, tuple[int, ...]]) -> Identification | None:
    if not ("conv_in.weight" in keys and _any_prefix(keys, "down_blocks.") and _any_prefix(keys, "time_embedding.")):
        return None
    context = next((s[1] for k, s in keys.items() if k.endswith("attn2.to_k.weight") and len(s) == 2), None)
    arch = Arch.SDXL if _any_prefix(keys, "add_embedding.") else Arch.SD2 if context == 1024 else Arch.SD1
    return Identification(arch, f"a diffusers-format {ARCH_LABELS[arch]} UNet alone: put the whole diffusers folder "
                                "in models/diffusers instead", "unet-only", False, "diffusers")


def _describe_prefixes(shapes: dict[str, tuple[int, ...]], limit: int = 6) -> str:
    prefixes: list[str] = []
    for key in shapes:
        head = key.split(".")[0]
        if head not in prefixes:
            prefixes.append(head)
    shown = ", ".join(f"{p}.*" for p in prefixes[:limit])
    return shown + (f" and {len(prefixes) - limit} more" if len(prefixes) > limit else "")


# ----------------------------------------------------------------------------------------- folders
_PIPELINE_FAMILIES: tuple[tuple[str, Arch], ...] = (
    ("StableDiffusionXL", Arch.SDXL), ("StableDiffusion3", Arch.SD3), ("StableDiffusion", Arch.SD1),
    ("Flux", Arch.FLUX), ("ZImage", Arch.ZIMAGE), ("QwenImage", Arch.QWEN), ("EaselPipeline", Arch.EASEL),
)
_UNSUPPORTED_CLASS_PARTS = ("ControlNet", "Upscale", "Depth2Img", "InstructPix2Pix", "Flux2", "QwenImage21",
                            "Layered", "Kontext", "Fill", "Control")
# Instruction-editing pipelines: loaded for the "edit" mode only (segmentation as editing).
EDIT_PIPELINES = ("StableDiffusionInstructPix2PixPipeline", "FluxKontextPipeline", "QwenImageEditPipeline",
                  "QwenImageEditPlusPipeline")


def arch_from_class_name(class_name: str, text_encoder_config: dict | None = None,
                         unet_config: dict | None = None) -> Arch:
    """The family of a diffusers pipeline class name (SD 1.x vs 2.x decided from component configs)."""
    for prefix, arch in _PIPELINE_FAMILIES:
        if class_name.startswith(prefix):
            if arch == Arch.SD1 and _looks_sd2(text_encoder_config or {}, unet_config or {}):
                return Arch.SD2
            return arch
    return Arch.UNKNOWN


def _looks_sd2(text_encoder_config: dict, unet_config: dict) -> bool:
    act = text_encoder_config.get("hidden_act")
    if act in ("gelu", "quick_gelu"):
        return act == "gelu"  # OpenCLIP (SD 2.x) uses gelu, OpenAI CLIP (SD 1.x) quick_gelu
    cross = unet_config.get("cross_attention_dim")
    if cross in (768, 1024):
        return cross == 1024
    return bool(unet_config.get("use_linear_projection"))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


FLUX_TOOL_LABELS = {"fill": "Flux.1 Fill", "control": "Flux.1 Depth/Canny"}


def flux_tool_variant(path: Path) -> str:
    """"fill" or "control" for a Flux.1 Fill or Depth/Canny folder, told by its transformer's input channels: the
    packed latents (4 x the VAE's latent channels; 64 for Flux.1) take twice as many with the control image's
    latents beside them (Depth/Canny: 128), and also the packed mask (4 x the VAE's downscale squared) with the
    masked image's (Fill: 64 + 64 + 256 = 384). "" for anything else."""
    transformer = _read_json(path / "transformer" / "config.json")
    vae = _read_json(path / "vae" / "config.json")
    in_channels = transformer.get("in_channels")
    latent = int(vae.get("latent_channels", 16)) * 4  # [C, 2, 2] patches
    scale = 2 ** (len(vae.get("block_out_channels", (0, 0, 0, 0))) - 1)
    if in_channels == 2 * latent + 4 * scale * scale:
        return "fill"
    if in_channels == 2 * latent:
        return "control"
    return ""


def _flux_tool(path: Path, index: dict, class_name: str, variant: str) -> Identification:
    label = FLUX_TOOL_LABELS[variant]
    components = [c for c in pipeline_components(path, index) if c != "safety_checker"]
    pickled = pickle_weights_in(path, components)
    if pickled:
        return Identification(Arch.FLUX, f"{label} diffusers folder ({class_name}): "
                                         f"{pickle_folder_reason(path, pickled)}", variant, False, "diffusers")
    return Identification(Arch.FLUX, f"{label} diffusers folder ({class_name})", variant, True, "diffusers")


def identify_folder(path: Path) -> Identification:
    """Identify a diffusers folder from `model_index.json` and, for SD 1.x/2.x, its component configs."""
    path = Path(path)
    index_path = path / "model_index.json"
    if not index_path.is_file():
        return unknown("no model_index.json: not a diffusers pipeline folder")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return unknown(f"model_index.json is unreadable: {exc}")
    class_name = str(index.get("_class_name", "")) if isinstance(index, dict) else ""
    if not class_name:
        return unknown("model_index.json has no _class_name")
    from webui.model_manager.families import identify_family_folder  # the other diffusers families

    family = identify_family_folder(path, class_name, index)
    if family is not None:
        return family
    arch = arch_from_class_name(class_name, _read_json(path / "text_encoder" / "config.json"),
                                _read_json(path / "unet" / "config.json"))
    if arch == Arch.UNKNOWN:
        return unknown(f"pipeline class {class_name} is not supported")
    label = ARCH_LABELS[arch]
    editing = class_name in EDIT_PIPELINES
    tool = flux_tool_variant(path) if arch == Arch.FLUX and "ControlNet" not in class_name else ""
    if tool:
        return _flux_tool(path, index, class_name, tool)
    if arch != Arch.EASEL and not editing and any(part in class_name for part in _UNSUPPORTED_CLASS_PARTS):
        return Identification(arch, f"{label} pipeline {class_name}: this kind of pipeline is not supported",
                              class_name, False, "diffusers")
    variant = "edit" if editing or "Edit" in class_name else "inpaint" if "Inpaint" in class_name else ""
    if arch == Arch.SDXL and index.get("requires_aesthetics_score") and not (index.get("text_encoder") or [None])[0]:
        variant = "refiner"  # an SDXL refiner: the second text encoder only, aesthetic-score time ids
    if arch != Arch.EASEL:
        denoiser = "unet" if (path / "unet").is_dir() else "transformer"
        weights = [p for p in (path / denoiser).glob("*") if p.suffix.lower() in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES]
        if not weights:
            return Identification(arch, f"{label} folder without weights in {denoiser}/", variant, False, "diffusers")
    # the SD 1.x/2.x safety checker is never loaded (see loading.load_folder), so its weights do not matter
    components = [c for c in pipeline_components(path, index) if c != "safety_checker"]
    pickled = pickle_weights_in(path, components)
    if pickled:
        return Identification(arch, f"{label} diffusers folder ({class_name}): {pickle_folder_reason(path, pickled)}",
                              variant, False, "diffusers")
    return Identification(arch, f"{label} diffusers folder ({class_name})", variant, True, "diffusers")
