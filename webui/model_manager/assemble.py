"""Assemble a whole pipeline from separate files: a transformer/UNet file, text encoder files and a VAE file.

When a transformer-only (or UNet-only) file has no `<stem>.config/` folder with weights and no diffusers folder
of its family beside it, the model manager builds the pipeline from what is on disk: the denoiser from the file
itself (GGUF, fp8 or float), each text encoder from `models/text_encoders/` (or `models/clip/`) by kind (CLIP-L,
CLIP-G, T5-XXL, Qwen3, Qwen2.5-VL; see components.py), the VAE from `models/VAE/` (the one whose latent channels
fit, preferring a name that says the family), and the configs, scheduler and tokenizers from a config folder: the
file's `<stem>.config/` when it has one, else the family's folder shipped under `configs/` (Flux.1, SD3/3.5,
Z-Image, Qwen-Image, SDXL, SD 1.x/2.x). CLIP tokenizers are built offline (clip_tokenizer.py); the T5 tokenizer
(`spiece.model`) and the Qwen tokenizer (`vocab.json` + `merges.txt`) are taken from the config folder or from a
folder under `models/text_encoders/` that holds one. Nothing is downloaded. What is missing is named in the error,
file kind and folder.

Text encoder files come in the layouts Forge and ComfyUI users have: transformers' names with or without a
prefix (`text_encoders.t5xxl.transformer.`, `model.`), fp8 (also "scaled" fp8, whose `scale_weight` tensors are
applied), and GGUF for T5 and Qwen3 (llama.cpp tensor names such as `enc.blk.0.attn_q.weight`, dequantized to
the compute dtype while loading: the file is small, the loaded encoder is not). A Qwen2.5-VL GGUF holds no vision
tower and is refused with a message.
"""
from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch

from webui.model_manager.components import (FAMILY_TEXT_ENCODERS, KIND_LABELS, TOKENIZER_NEEDS, ComponentFile,
                                            family_components, pick_vae, tokenizer_folders)
from webui.model_manager.errors import ModelLoadError
from webui.model_manager.identify import ARCH_LABELS, Arch, Identification

log = logging.getLogger(__name__)

SHIPPED = {Arch.FLUX: "flux", Arch.SD3: "sd3", Arch.ZIMAGE: "zimage", Arch.QWEN: "qwenimage", Arch.SDXL: "sdxl",
           Arch.SD1: "sd1", Arch.SD2: "sd2"}  # families with a config folder under configs/ for assembly
_SHIPPED_VARIANTS = {(Arch.SDXL, "refiner"): "sdxl-refiner"}
_UNSHIPPED_VARIANTS = {"inpaint", "fill", "control", "edit"}  # other input channels: a .config/ folder is needed
_PREFIXES = ("text_encoders.clip_l.transformer.", "text_encoders.clip_g.transformer.",
             "text_encoders.t5xxl.transformer.",
             "cond_stage_model.transformer.", "transformer.")


def assembly_config(path: Path, arch: Arch, configs_dir: Path, variant: str = "") -> Path | None:
    """The config folder that assembles `path`: its `<stem>.config/`, else the shipped one, else None."""
    sidecar = path.with_name(path.stem + ".config")
    if (sidecar / "model_index.json").is_file():
        return sidecar
    if variant in _UNSHIPPED_VARIANTS:
        return None
    shipped = _SHIPPED_VARIANTS.get((arch, variant)) or SHIPPED.get(arch)
    return configs_dir / shipped if shipped and (configs_dir / shipped / "model_index.json").is_file() else None


def _candidates(key: str) -> list[str]:
    """Names a text encoder file's tensor may have in transformers' model: as is, without a known prefix, or with
    the `model.language_model.` / `model.visual.` nesting transformers gives Qwen2.5-VL."""
    names = [key]
    for prefix in _PREFIXES + ("model.",):
        if key.startswith(prefix):
            names.append(key[len(prefix):])
    if key.startswith("model.") and not key.startswith(("model.language_model.", "model.visual.")):
        names.append("model.language_model." + key[len("model."):])
    if key.startswith("visual."):
        names.append("model." + key)
    return names


def match_keys(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """`state` under the model's own names (tensors that fit no name are left out)."""
    matched: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = next((c for c in _candidates(key) if c in expected), None)
        if name is not None and name not in matched:
            matched[name] = value
    return matched


def _unscale_fp8(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """fp8 tensors in the compute dtype; "scaled fp8" files keep a `<layer>.scale_weight` per weight: applied."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(".scale_weight") or key.endswith(".scale_input") or key == "scaled_fp8":
            continue
        scale = state.get(key[: -len("weight")] + "scale_weight") if key.endswith(".weight") else None
        if value.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) or scale is not None:
            value = value.to(torch.float32) * (scale.to(torch.float32) if scale is not None else 1.0)
        out[key] = value.to(dtype) if value.is_floating_point() else value
    return out


def gguf_text_encoder_state(path: Path, model: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The tensors of a llama.cpp-layout GGUF text encoder (T5 `enc.blk.N.attn_q`, Qwen3 `blk.N.attn_q`) under
    `model`'s names, dequantized to `dtype`."""
    import gguf

    from webui.model_manager.gguf_files import GGUFError, gguf_shapes

    _, _, arch_name = gguf_shapes(path)
    arch = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch_name), None)
    if arch is None:
        raise ModelLoadError(f"{path.name}: GGUF architecture {arch_name!r} is not a text encoder Easel can read "
                             "(T5: t5encoder/t5, Qwen3: qwen3)")
    expected = list(model.state_dict())
    blocks = 1 + max([int(part) for name in expected for part in name.split(".") if part.isdigit()] or [0])
    names = gguf.get_tensor_name_map(arch, blocks)
    to_model: dict[str, str] = {}
    for name in expected:
        base, _, suffix = name.rpartition(".")
        for candidate in (base, "model." + base, base.removeprefix("model.")):
            found = names.get_name(candidate)
            if found is not None:
                to_model.setdefault(f"{found}.{suffix}", name)
                break
    try:
        reader = gguf.GGUFReader(str(path))
        state: dict[str, torch.Tensor] = {}
        for tensor in reader.tensors:
            name = to_model.get(tensor.name)
            if name is None:
                continue
            values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)  # float32, rows of the logical shape
            shape = tuple(int(d) for d in reversed([int(x) for x in tensor.shape]))
            state[name] = torch.from_numpy(values.copy()).reshape(shape).to(dtype)
    except (ValueError, NotImplementedError, GGUFError) as exc:
        raise ModelLoadError(f"{path.name}: cannot read its GGUF tensors ({exc})") from None
    return state


def load_text_encoder(file: ComponentFile, config_dir: Path, class_name: str, dtype: torch.dtype) -> Any:
    """A transformers text encoder of class `class_name` (config from `config_dir`) with the file's weights."""
    import transformers
    from accelerate import init_empty_weights
    from safetensors.torch import load_file

    cls = getattr(transformers, class_name)
    config = cls.config_class.from_pretrained(str(config_dir))
    with init_empty_weights():
        model = cls(config)
    expected = set(model.state_dict())
    if file.storage.startswith("GGUF"):
        if file.kind not in ("t5-xxl", "qwen3"):
            raise ModelLoadError(f"{file.path.name}: a GGUF {KIND_LABELS.get(file.kind, file.kind)} text encoder "
                                 "cannot be loaded (GGUF files of it carry no vision tower, which the pipeline "
                                 "builds on); use a safetensors one (bf16 or fp8)")
        state = gguf_text_encoder_state(file.path, model, dtype)
    else:
        state = match_keys(_unscale_fp8(load_file(str(file.path)), dtype), expected | {"encoder.embed_tokens.weight"})
    if "shared.weight" not in state and "encoder.embed_tokens.weight" in state:  # T5: one table, two names
        state["shared.weight"] = state["encoder.embed_tokens.weight"]
    if "lm_head.weight" in expected and "lm_head.weight" not in state:  # encoders stop before the head: any fills it
        embeddings = next((v for k, v in state.items() if k.endswith("embed_tokens.weight")), None)
        if embeddings is not None:
            state["lm_head.weight"] = embeddings
    if "text_projection.weight" in expected and "text_projection.weight" not in state:
        width = config.hidden_size
        if config.projection_dim == width:  # CLIP-L files made for Flux have none; SD3 then projects by identity
            state["text_projection.weight"] = torch.eye(width, dtype=dtype)
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()  # T5's encoder.embed_tokens is shared.weight
    empty = [name for name, p in [*model.named_parameters(), *model.named_buffers()] if p.is_meta]
    if empty:
        raise ModelLoadError(f"{file.path.name} does not fit a {class_name} ({config_dir.name}): {len(empty)} "
                             f"weights missing, e.g. {', '.join(empty[:3])}")
    return model.to(dtype).eval()


def _found_tokenizer(config: Path, slot: str, class_name: str, search: list[Path]) -> Any | None:
    """A T5 or Qwen tokenizer from the config folder's `slot`, else from a folder under `search`."""
    import transformers

    kind = "t5" if class_name.startswith("T5") else "qwen"
    for folder in [config / slot, *tokenizer_folders(search, kind)]:
        if any((folder / name).is_file() for name in ("spiece.model", "tokenizer.json", "vocab.json")):
            return getattr(transformers, class_name).from_pretrained(str(folder))
    return None


def _diffusers_vae(path: Path) -> bool:
    """True when a VAE file uses diffusers' names (`decoder.conv_in`), not an original layout's."""
    from webui.model_manager.identify import header_shapes

    return any(k.removeprefix("vae.").startswith("decoder.conv_in.") for k in header_shapes(path))


def assemble(path: Path, ident: Identification, config: Path, *, dtype: torch.dtype, components: list[ComponentFile],
             vae_files: list[Path], text_encoder_dirs: list[Path], tokenizer_kwargs: dict[str, Any],
             load_denoiser: Callable[[str], Any], load_vae: Callable[[Path, Any, str], Any]) -> Any:
    """The pipeline: denoiser from `path` (via `load_denoiser(config)`), the rest from separate files."""
    import diffusers
    from accelerate import init_empty_weights

    label = ARCH_LABELS[ident.arch]
    index = json.loads((config / "model_index.json").read_text(encoding="utf-8"))
    slots = [s for s in ("text_encoder", "text_encoder_2", "text_encoder_3") if (index.get(s) or [None])[0]]
    kinds = FAMILY_TEXT_ENCODERS.get(ident.arch, ())
    kinds = kinds[len(kinds) - len(slots):]  # the SDXL refiner has only the second (CLIP-G) encoder
    chosen = {k: v for k, v in family_components(ident.arch, components).items() if k in kinds}
    missing = [f"a {KIND_LABELS.get(k, k)} text encoder in models/text_encoders/" for k in kinds if k not in chosen]
    vae_class = getattr(diffusers, index["vae"][1])
    vae_config = vae_class.load_config(str(config / "vae"))
    wanted = "3d" if "QwenImage" in vae_class.__name__ else str(vae_config.get("latent_channels", 4))
    vae_file = pick_vae(ident.arch, vae_files, wanted)
    if vae_file is None:
        missing.append("the Qwen-Image VAE in models/VAE/" if wanted == "3d" else
                       f"a {wanted}-channel VAE in models/VAE/")
    tokenizers = dict(tokenizer_kwargs)
    for slot in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        kind = (index.get(slot) or [None, None])[1] or ""
        if not kind or slot in tokenizers:
            continue
        if any((config / slot / name).is_file() for name in ("tokenizer.json", "vocab.json", "spiece.model")):
            import transformers

            tokenizers[slot] = getattr(transformers, kind).from_pretrained(str(config / slot))
        elif kind.startswith(("T5", "Qwen2")):
            found = _found_tokenizer(config, slot, kind, text_encoder_dirs)
            if found is None:
                missing.append(TOKENIZER_NEEDS["t5" if kind.startswith("T5") else "qwen"])
            else:
                tokenizers[slot] = found
    if missing:
        what = "UNet" if "unet" in index else "transformer"
        raise ModelLoadError(f"{path.name} holds only the {label} {what} and there is no {label} diffusers "
                             f"folder; to assemble it from separate files Easel still needs {'; '.join(missing)}")
    parts: dict[str, Any] = {**tokenizers}
    denoiser = "unet" if "unet" in index else "transformer"
    parts[denoiser] = load_denoiser(str(config))
    for slot, kind in zip(slots, kinds):
        parts[slot] = load_text_encoder(chosen[kind], config / slot, index[slot][1], dtype)
    if wanted == "3d" and not _diffusers_vae(vae_file):
        raise ModelLoadError(f"{vae_file.name} is a Qwen-Image (Wan) VAE in its original layout, which Easel does "
                             "not convert yet; use the vae/diffusion_pytorch_model.safetensors of Qwen/Qwen-Image "
                             "(diffusers names) in models/VAE/")
    with init_empty_weights():
        template = vae_class.from_config(vae_config)
    parts["vae"] = load_vae(vae_file, template, str(config))
    log.info("assembled %s from %s, %s and %s", label, path.name, ", ".join(chosen[k].path.name for k in chosen),
             vae_file.name)
    pipeline_class = getattr(diffusers, index["_class_name"])
    scheduler_class = getattr(diffusers, index["scheduler"][1])
    parts["scheduler"] = scheduler_class.from_pretrained(str(config), subfolder="scheduler")
    accepted = inspect.signature(pipeline_class.__init__).parameters
    for name, parameter in accepted.items():  # optional parts Easel does not assemble (image encoders, ...)
        if name not in parts and name != "self" and parameter.default is inspect.Parameter.empty:
            parts[name] = None
    if "requires_safety_checker" in accepted:  # Easel never runs the SD 1.x/2.x safety checker
        parts["requires_safety_checker"] = False
    return pipeline_class(**parts)
