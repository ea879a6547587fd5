"""Assemble a whole pipeline from separate files: a transformer/UNet file, text encoder files and a VAE file.

When a transformer-only (or UNet-only) file has no `<stem>.config/` folder with weights and no diffusers folder
of its family beside it, the model manager builds the pipeline from what is on disk: the denoiser from the file
itself (GGUF, fp8 or float), each text encoder from `models/text_encoders/` (or `models/clip/`) by kind (CLIP-L,
CLIP-G, T5-XXL, ...; see components.py), the VAE from `models/VAE/` (the one whose latent channels fit), and
the configs, scheduler and tokenizers from a config folder: the file's `<stem>.config/` when it has one, else
the family's folder shipped under `configs/`. CLIP tokenizers are built offline (clip_tokenizer.py); the T5
tokenizer (`spiece.model`) is taken from the config folder or from any folder under `models/text_encoders/`
that holds one. Nothing is downloaded. What is missing is named in the error, file kind and folder.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch

from webui.model_manager.components import (FAMILY_TEXT_ENCODERS, KIND_LABELS, ComponentFile, family_components,
                                            t5_tokenizer_folders, vae_kind)
from webui.model_manager.errors import ModelLoadError
from webui.model_manager.identify import ARCH_LABELS, Arch, Identification

log = logging.getLogger(__name__)

SHIPPED = {Arch.FLUX: "flux"}  # families with a config folder under configs/ for assembly
_PREFIXES = ("text_encoders.clip_l.transformer.", "text_encoders.clip_g.transformer.",
             "text_encoders.t5xxl.transformer.",
             "cond_stage_model.transformer.", "transformer.")


def assembly_config(path: Path, arch: Arch, configs_dir: Path) -> Path | None:
    """The config folder that assembles `path`: its `<stem>.config/`, else the shipped one, else None."""
    sidecar = path.with_name(path.stem + ".config")
    if (sidecar / "model_index.json").is_file():
        return sidecar
    shipped = SHIPPED.get(arch)
    return configs_dir / shipped if shipped and (configs_dir / shipped / "model_index.json").is_file() else None


def _strip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_text_encoder(file: ComponentFile, config_dir: Path, class_name: str, dtype: torch.dtype) -> Any:
    """A transformers text encoder of class `class_name` (config from `config_dir`) with the file's weights."""
    import transformers
    from accelerate import init_empty_weights
    from safetensors.torch import load_file

    if file.storage.startswith("GGUF"):
        raise ModelLoadError(f"{file.path.name}: GGUF text encoders are listed but not loaded yet; use a "
                             f"safetensors {KIND_LABELS.get(file.kind, file.kind)} file (fp16 or fp8)")
    cls = getattr(transformers, class_name)
    config = cls.config_class.from_pretrained(str(config_dir))
    state = {k: (v.to(dtype) if v.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) else v)
             for k, v in _strip(load_file(str(file.path))).items()}  # fp8 text encoders run in the compute dtype
    if "shared.weight" not in state and "encoder.embed_tokens.weight" in state:  # T5: one table, two names
        state["shared.weight"] = state["encoder.embed_tokens.weight"]
    with init_empty_weights():
        model = cls(config)
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()  # T5's encoder.embed_tokens is shared.weight
    empty = [name for name, p in model.named_parameters() if p.is_meta]
    if empty:
        raise ModelLoadError(f"{file.path.name} does not fit a {class_name} ({config_dir.name}): {len(empty)} "
                             f"weights missing, e.g. {', '.join(empty[:3])}")
    return model.to(dtype).eval()


def _t5_tokenizer(config: Path, slot: str, search: list[Path]) -> Any | None:
    from transformers import T5TokenizerFast

    for folder in [config / slot, *t5_tokenizer_folders(search)]:
        if (folder / "spiece.model").is_file() or (folder / "tokenizer.json").is_file():
            return T5TokenizerFast.from_pretrained(str(folder))
    return None


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
    chosen = family_components(ident.arch, components)
    missing = [f"a {KIND_LABELS.get(k, k)} text encoder in models/text_encoders/" for k in kinds if k not in chosen]
    vae_class = getattr(diffusers, index["vae"][1])
    vae_config = vae_class.load_config(str(config / "vae"))
    wanted = "3d" if "QwenImage" in vae_class.__name__ else str(vae_config.get("latent_channels", 4))
    vae_file = next((p for p in vae_files if vae_kind(p) == wanted), None)
    if vae_file is None:
        missing.append(f"a {wanted}-channel VAE in models/VAE/")
    tokenizers = dict(tokenizer_kwargs)
    for slot in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        kind = (index.get(slot) or [None, None])[1] or ""
        if not kind or slot in tokenizers:
            continue
        if any((config / slot / name).is_file() for name in ("tokenizer.json", "vocab.json", "spiece.model")):
            import transformers

            tokenizers[slot] = getattr(transformers, kind).from_pretrained(str(config / slot))
        elif kind.startswith("T5"):
            found = _t5_tokenizer(config, slot, text_encoder_dirs)
            if found is None:
                missing.append("the T5 tokenizer (spiece.model, from the tokenizer_2 folder of a Flux.1 or the "
                               "google/t5-v1_1-xxl repository) in a folder under models/text_encoders/")
            else:
                tokenizers[slot] = found
    if missing:
        raise ModelLoadError(f"{path.name} holds only the {label} transformer and there is no {label} diffusers "
                             f"folder; to assemble it from separate files Easel still needs {'; '.join(missing)}")
    parts: dict[str, Any] = {**tokenizers}
    denoiser = "unet" if "unet" in index else "transformer"
    parts[denoiser] = load_denoiser(str(config))
    for slot, kind in zip(slots, kinds):
        parts[slot] = load_text_encoder(chosen[kind], config / slot, index[slot][1], dtype)
    with init_empty_weights():
        template = vae_class.from_config(vae_config)
    parts["vae"] = load_vae(vae_file, template, str(config))
    log.info("assembled %s from %s, %s and %s", label, path.name, ", ".join(chosen[k].path.name for k in chosen),
             vae_file.name)
    pipeline_class = getattr(diffusers, index["_class_name"])
    scheduler_class = getattr(diffusers, index["scheduler"][1])
    parts["scheduler"] = scheduler_class.from_pretrained(str(config), subfolder="scheduler")
    return pipeline_class(**parts)
