"""Separate model components on disk: text encoder files, and what a transformer/UNet-only family still needs.

Forge and ComfyUI users keep a Flux, SD3, Z-Image or Qwen-Image model as separate files: the transformer in
`models/diffusion_models/` (or `models/unet/`), the text encoders in `models/text_encoders/` (or `models/clip/`),
the VAE in `models/VAE/`. This module tells each text encoder file's kind from its header alone (CLIP-L, CLIP-G,
T5-XXL, Qwen2.5-VL, Qwen3; safetensors or GGUF) and says, per family, which of the parts it needs are still
missing, in sentences the Models tab shows ("Flux.1 needs a T5-XXL text encoder in models/text_encoders/").
Standard library and header readers only: no torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from webui.model_manager.folders import model_files, relative_name
from webui.model_manager.gguf_files import GGUF_SUFFIXES, GGUFError, gguf_shapes, main_quant_type
from webui.model_manager.identify import (ARCH_LABELS, SAFETENSORS_SUFFIXES, Arch, HeaderError, fp8_storage,
                                          read_safetensors_header)

KIND_LABELS = {"clip-l": "CLIP-L", "clip-g": "CLIP-G (OpenCLIP bigG)", "t5-xxl": "T5-XXL", "qwen2.5-vl": "Qwen2.5-VL",
               "qwen3": "Qwen3", "clip-h": "OpenCLIP ViT-H", "unknown": "unknown"}
# family -> the text encoders it needs, and the latent channels of its VAE ("3d" = Qwen-Image's video-style VAE)
FAMILY_TEXT_ENCODERS: dict[Arch, tuple[str, ...]] = {
    Arch.FLUX: ("clip-l", "t5-xxl"), Arch.SD3: ("clip-l", "clip-g", "t5-xxl"), Arch.ZIMAGE: ("qwen3",),
    Arch.QWEN: ("qwen2.5-vl",), Arch.SDXL: ("clip-l", "clip-g"), Arch.SD1: ("clip-l",), Arch.SD2: ("clip-h",),
}
FAMILY_VAE: dict[Arch, str] = {Arch.FLUX: "16", Arch.SD3: "16", Arch.ZIMAGE: "16", Arch.QWEN: "3d", Arch.SDXL: "4",
                               Arch.SD1: "4", Arch.SD2: "4"}
_VAE_LABELS = {"16": "a 16-channel VAE (the Flux.1 ae.safetensors; SD3 and Z-Image use their own 16-channel one)",
               "3d": "the Qwen-Image VAE", "4": "an SD/SDXL VAE"}


@dataclass(frozen=True)
class ComponentFile:
    """One separate text encoder file: its name (path under its folder, no suffix), kind and storage."""

    name: str
    path: Path
    kind: str
    storage: str = ""
    reason: str = ""


def text_encoder_kind(shapes: dict[str, tuple[int, ...]], file_name: str = "") -> str:
    """"clip-l", "clip-g", "t5-xxl", "qwen2.5-vl", "qwen3" or "unknown", from tensor names and shapes."""
    keys = {k.removeprefix("text_encoders.").removeprefix("model.text_model.") for k in shapes}
    lowered = file_name.lower()
    if any(k.startswith(("encoder.block.", "enc.blk.")) for k in keys) or "shared.weight" in keys:
        return "t5-xxl"
    if any(k.startswith(("visual.", "model.visual.")) for k in keys) and any("layers." in k for k in keys):
        return "qwen2.5-vl"
    if any(k.endswith("self_attn.q_norm.weight") or k.endswith("attn_q_norm.weight") for k in keys):
        return "qwen3"
    if any(k.startswith("model.layers.") or k.startswith("blk.") for k in keys):
        return "qwen2.5-vl" if "vl" in lowered else "qwen3"
    width = next((s[1] for k, s in shapes.items() if k.endswith("token_embedding.weight") and len(s) == 2), 0)
    if any("text_model.encoder.layers." in k for k in shapes) or width:
        if width >= 1280 or (width not in (768, 1024) and ("clip_g" in lowered or "clip-g" in lowered)):
            return "clip-g"
        if width == 1024:
            return "clip-h"
        return "clip-l"
    return "unknown"


def identify_component(path: Path) -> tuple[str, str, str]:
    """(kind, storage, reason) of one text encoder file, from its header."""
    try:
        if path.suffix.lower() in GGUF_SUFFIXES:
            shapes, types, _ = gguf_shapes(path)
            storage = f"GGUF {main_quant_type(types)}"
        else:
            header = read_safetensors_header(path)
            shapes = {k: tuple(int(d) for d in v["shape"]) for k, v in header.items()}
            storage = fp8_storage({k: (str(v.get("dtype", "")), _numel(v["shape"])) for k, v in header.items()})
    except (HeaderError, GGUFError, OSError) as exc:
        return "unknown", "", f"cannot read: {exc}"
    kind = text_encoder_kind(shapes, path.name)
    label = KIND_LABELS.get(kind, kind.upper())
    return kind, storage, f"{label} text encoder" + (f" ({storage})" if storage else "")


def _numel(shape: list) -> int:
    total = 1
    for dim in shape:
        total *= int(dim)
    return total


def scan_components(roots: list[Path]) -> list[ComponentFile]:
    """Text encoder files under `roots` (safetensors and GGUF), by name; the first root wins a name."""
    found: dict[str, ComponentFile] = {}
    for root in roots:
        for path in sorted(model_files(Path(root), SAFETENSORS_SUFFIXES + GGUF_SUFFIXES)):
            name = relative_name(path, Path(root), True)
            if name not in found:
                kind, storage, reason = identify_component(path)
                found[name] = ComponentFile(name, path, kind, storage, reason)
    return sorted(found.values(), key=lambda c: c.name.lower())


def t5_tokenizer_folders(roots: list[Path]) -> list[Path]:
    """Folders under `roots` holding a T5 tokenizer: a `spiece.model`, or a tokenizer_config.json naming T5."""
    found: list[Path] = []
    for root in roots:
        if not Path(root).is_dir():
            continue
        found += [p.parent for p in sorted(Path(root).rglob("spiece.model"))]
        for settings in sorted(Path(root).rglob("tokenizer_config.json")):
            text = settings.read_text(encoding="utf-8", errors="replace")
            if '"T5Tokenizer' in text and settings.parent not in found:
                found.append(settings.parent)
    return found


def vae_kind(path: Path) -> str:
    """"16", "4" (latent channels) or "3d" for a VAE file, "" when its header says nothing of it."""
    try:
        shapes = {k: tuple(int(d) for d in v["shape"]) for k, v in read_safetensors_header(path).items()}
    except (HeaderError, OSError):
        return ""
    for key, shape in shapes.items():
        if key.removeprefix("first_stage_model.").removeprefix("vae.") == "decoder.conv_in.weight":
            return "3d" if len(shape) == 5 else str(shape[1])
    return ""


def family_needs(arch: Arch, components: list[ComponentFile], vae_files: list[Path]) -> list[str]:
    """What a transformer/UNet-only file of `arch` still lacks among the separate files on disk."""
    label = ARCH_LABELS[arch]
    have = {c.kind for c in components}
    needs = [f"{label} needs a {KIND_LABELS.get(kind, kind.upper())} text encoder in models/text_encoders/"
             for kind in FAMILY_TEXT_ENCODERS.get(arch, ()) if kind not in have]
    wanted = FAMILY_VAE.get(arch)
    if wanted and not any(vae_kind(p) == wanted for p in vae_files):
        needs.append(f"{label} needs {_VAE_LABELS[wanted]} in models/VAE/")
    return needs


def family_components(arch: Arch, components: list[ComponentFile]) -> dict[str, ComponentFile]:
    """The first file of each text encoder kind `arch` needs (kind -> file); kinds without a file are left out."""
    chosen: dict[str, ComponentFile] = {}
    for kind in FAMILY_TEXT_ENCODERS.get(arch, ()):
        match = next((c for c in components if c.kind == kind), None)
        if match is not None:
            chosen[kind] = match
    return chosen
