"""Separate model components on disk: text encoder files, and what a transformer/UNet-only family still needs.

Forge and ComfyUI users keep a Flux, SD3, Z-Image or Qwen-Image model as separate files: the transformer in
`models/diffusion_models/` (or `models/unet/`), the text encoders in `models/text_encoders/` (or `models/clip/`),
the VAE in `models/VAE/`. This module tells each text encoder file's kind from its header alone (CLIP-L, CLIP-G,
T5-XXL, Qwen2.5-VL, Qwen3; safetensors or GGUF) and says, per family, which of the parts it needs are still
missing, in sentences the Models tab shows ("Flux.1 needs a T5-XXL text encoder in models/text_encoders/"):
text encoders, the VAE (picked by latent channels and, among same-shaped ones, by a name that says the family)
and the tokenizers that are not built offline (T5's, Qwen's: folders under models/text_encoders/).
Standard library and header readers only: no torch.
"""
from __future__ import annotations

import json
import re
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
# what the Models tab asks for, and the file-name fragments that pick a family's own VAE among same-shaped ones
_VAE_LABELS: dict[Arch, str] = {
    Arch.FLUX: "a 16-channel VAE (the Flux.1 ae.safetensors)",
    Arch.ZIMAGE: "a 16-channel VAE (the Flux.1 ae.safetensors, which Z-Image uses)",
    Arch.SD3: "the SD3 VAE (16 channels, e.g. sd3_vae.safetensors from the vae folder of an SD3/3.5 repository)",
    Arch.QWEN: "the Qwen-Image VAE (qwen_image_vae.safetensors)",
    Arch.SDXL: "an SDXL VAE (sdxl_vae.safetensors)", Arch.SD1: "an SD VAE (4 channels)",
    Arch.SD2: "an SD VAE (4 channels)"}
_VAE_HINTS: dict[Arch, tuple[str, ...]] = {Arch.SD3: ("sd3",), Arch.SDXL: ("xl",), Arch.FLUX: ("ae", "flux"),
                                           Arch.ZIMAGE: ("ae", "flux", "z_image", "z-image", "zimage")}
# tokenizers that are not built offline (CLIP's are): which family needs which, and how to ask for it
FAMILY_TOKENIZERS: dict[Arch, str] = {Arch.FLUX: "t5", Arch.SD3: "t5", Arch.ZIMAGE: "qwen", Arch.QWEN: "qwen"}
TOKENIZER_NEEDS = {
    "t5": "the T5 tokenizer (spiece.model, e.g. the tokenizer_2 folder of FLUX.1-schnell) in a folder under "
          "models/text_encoders/",
    "qwen": "the Qwen tokenizer (vocab.json, merges.txt and tokenizer_config.json: the tokenizer folder of "
            "Qwen/Qwen-Image or Tongyi-MAI/Z-Image-Turbo) in a folder under models/text_encoders/",
}


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


def tokenizer_folders(roots: list[Path], kind: str) -> list[Path]:
    """Folders under `roots` holding a tokenizer of `kind`: "t5" (a `spiece.model`, or a tokenizer_config.json
    naming T5) or "qwen" (a tokenizer_config.json naming Qwen2Tokenizer, beside its vocab.json or tokenizer.json)."""
    found: list[Path] = []
    for root in roots:
        if not Path(root).is_dir():
            continue
        if kind == "t5":
            found += [p.parent for p in sorted(Path(root).rglob("spiece.model"))]
        for settings in sorted(Path(root).rglob("tokenizer_config.json")):
            text = settings.read_text(encoding="utf-8", errors="replace")
            folder = settings.parent
            if kind == "t5" and '"T5Tokenizer' in text and folder not in found:
                found.append(folder)
            elif kind == "qwen" and '"Qwen2Tokenizer' in text and folder not in found and any(
                    (folder / name).is_file() for name in ("vocab.json", "tokenizer.json")):
                found.append(folder)
    return found


def t5_tokenizer_folders(roots: list[Path]) -> list[Path]:
    """Folders under `roots` holding a T5 tokenizer."""
    return tokenizer_folders(roots, "t5")


def tokenizer_needs(arch: Arch, roots: list[Path]) -> list[str]:
    """The tokenizer a family's assembly still lacks under `roots`, as a Models tab sentence (or nothing)."""
    kind = FAMILY_TOKENIZERS.get(arch)
    if kind is None or tokenizer_folders(roots, kind):
        return []
    return [f"{ARCH_LABELS[arch]} needs {TOKENIZER_NEEDS[kind]}"]


def vae_kind(path: Path) -> str:
    """"16", "4" (latent channels) or "3d" for a VAE file, "" when its header says nothing of it."""
    try:
        shapes = {k: tuple(int(d) for d in v["shape"]) for k, v in read_safetensors_header(path).items()}
    except (HeaderError, OSError):
        return ""
    for key, shape in shapes.items():
        name = key.removeprefix("first_stage_model.").removeprefix("vae.")
        if name == "decoder.conv_in.weight":
            return "3d" if len(shape) == 5 else str(shape[1])
        if name == "decoder.conv1.weight" and len(shape) == 5:  # the Wan / Qwen-Image VAE in its original layout
            return "3d"
    return ""


def pick_vae(arch: Arch, vae_files: list[Path], wanted: str | None = None) -> Path | None:
    """The VAE file for `arch`: one whose latent channels (`wanted`, else the family's) fit, preferring a name
    that says the family (SD3's and Flux's VAEs have the same shapes, as have SD's and SDXL's); None when none
    fits."""
    wanted = wanted or FAMILY_VAE.get(arch)
    fitting = [p for p in vae_files if wanted and vae_kind(p) == wanted]
    named = [p for p in fitting if _says_family(p.stem, _VAE_HINTS.get(arch, ()))]
    others = [p for p in fitting if p not in named and not (arch != Arch.SD3 and "sd3" in p.stem.lower())]
    return (named or others or fitting or [None])[0]


def _says_family(stem: str, hints: tuple[str, ...]) -> bool:
    """True when a file name carries one of `hints`: as a word ("ae", "xl" in "sdxl_vae" via its tail) or, for
    longer hints, anywhere ("sd3.5_vae")."""
    lowered = stem.lower()
    words = set(re.split(r"[^a-z0-9]+", lowered))
    return any(h in words or (len(h) > 2 and h in lowered) or lowered.startswith("sd" + h) for h in hints)


def config_vae_kind(config: Path) -> str | None:
    """The VAE kind ("16", "4", "3d") a diffusers config folder's vae/config.json describes, or None."""
    try:
        settings = json.loads((Path(config) / "vae" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if "QwenImage" in str(settings.get("_class_name", "")):
        return "3d"
    return str(settings.get("latent_channels", 4))


def family_needs(arch: Arch, components: list[ComponentFile], vae_files: list[Path],
                 config: Path | None = None) -> list[str]:
    """What a transformer/UNet-only file of `arch` still lacks among the separate files on disk (its VAE's
    channels from `config`, the file's own config folder, when it has one)."""
    label = ARCH_LABELS[arch]
    have = {c.kind for c in components}
    needs = [f"{label} needs a {KIND_LABELS.get(kind, kind.upper())} text encoder in models/text_encoders/"
             for kind in FAMILY_TEXT_ENCODERS.get(arch, ()) if kind not in have]
    if FAMILY_VAE.get(arch) and pick_vae(arch, vae_files, config_vae_kind(config) if config else None) is None:
        needs.append(f"{label} needs {_VAE_LABELS[arch]} in models/VAE/")
    return needs


def family_components(arch: Arch, components: list[ComponentFile]) -> dict[str, ComponentFile]:
    """The first file of each text encoder kind `arch` needs (kind -> file); kinds without a file are left out."""
    chosen: dict[str, ComponentFile] = {}
    for kind in FAMILY_TEXT_ENCODERS.get(arch, ()):
        match = next((c for c in components if c.kind == kind), None)
        if match is not None:
            chosen[kind] = match
    return chosen
