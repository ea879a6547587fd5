"""LoRA files on disk: list them and tell what each one is, from the safetensors header alone (no torch).

A LoRA's key names and shapes give the model family and the file layout (kohya/AUTOMATIC1111 `lora_unet_…` with
`.alpha`, diffusers/PEFT `…lora_A/lora_B`, ai-toolkit/ComfyUI `diffusion_model.…`, LyCORIS LoCon, Easel's own);
its metadata gives trigger words (`easel_trigger`, `modelspec.trigger_phrase`, else the most frequent
`ss_tag_frequency` tags) and maybe a thumbnail (`modelspec.thumbnail`); a `name.preview.png` beside the file is
the preview image when present. Applying LoRAs to a loaded pipeline is webui.model_manager.loras.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui.model_manager.identify import ARCH_LABELS, Arch, HeaderError, read_safetensors_header

log = logging.getLogger(__name__)

LORA_SUFFIXES = (".safetensors",)
PREVIEW_SUFFIXES = (".preview.png", ".preview.jpg", ".preview.jpeg", ".preview.webp", ".png", ".jpg", ".jpeg",
                    ".webp")
HASH_AT_SCAN_LIMIT = 64 * 1024 * 1024  # bigger files are hashed when first used (keeps the first scan quick)
MAX_TRIGGER_TAGS = 8
_EASEL_KEY = re.compile(r"(?:^|[._])blocks[._]\d+[._](?:qkv|proj|mlp|ada)[._]")


@dataclass(frozen=True)
class LoraEntry:
    """One listed LoRA. `name` is what `<lora:name:weight>` uses: the path under its folder, no extension."""

    name: str
    path: Path
    arch: Arch
    short_hash: str | None = None  # AUTOMATIC1111's 12-digit tensor-bytes hash, once computed
    format: str = ""  # "kohya", "peft", "comfyui", "lycoris", "easel", "unknown"
    trigger_words: tuple[str, ...] = ()
    preview: Path | None = None  # an image file beside the LoRA
    rank: int | None = None
    metadata: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def alias(self) -> str:
        """AUTOMATIC1111's alias: the training run's output name when the metadata has one."""
        return self.metadata.get("ss_output_name") or self.name

    @property
    def arch_label(self) -> str:
        return ARCH_LABELS.get(self.arch, self.arch.value)


# ==================================================================================== reading files
def read_lora_header(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """(tensor name -> shape, metadata) from a safetensors header; raises HeaderError or OSError."""
    header = read_safetensors_header(path)
    with Path(path).open("rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
        raw = json.loads(fh.read(length).decode("utf-8"))
    metadata = raw.get("__metadata__") or {}
    metadata = {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}
    shapes = {name: tuple(int(d) for d in info["shape"]) for name, info in header.items()}
    return shapes, metadata


def arch_from_metadata(metadata: dict[str, str]) -> Arch:
    """The family named by training tools' metadata (Easel, kohya `ss_base_model_version`, modelspec)."""
    version = metadata.get("ss_base_model_version", "").lower()
    if "easel_base_model" in metadata or version.startswith("easel"):
        return Arch.EASEL
    spec = metadata.get("modelspec.architecture", "").lower()
    for text in (version, spec):
        if not text:
            continue
        if text.startswith("sdxl") or "stable-diffusion-xl" in text:
            return Arch.SDXL
        if text.startswith(("sd_v1", "sd1")) or "stable-diffusion-v1" in text:
            return Arch.SD1
        if text.startswith(("sd_v2", "sd2")) or "stable-diffusion-v2" in text:
            return Arch.SD2
        if text.startswith("sd3") or "stable-diffusion-v3" in text or "stable-diffusion-3" in text:
            return Arch.SD3
        if text.startswith("flux") or text.startswith("flux-1"):
            return Arch.FLUX
        if "z-image" in text or "z_image" in text or text.startswith("zimage"):
            return Arch.ZIMAGE
        if "qwen" in text:
            return Arch.QWEN
    return Arch.UNKNOWN


def arch_from_keys(shapes: dict[str, tuple[int, ...]]) -> Arch:
    """Best-effort family from key names and shapes (kohya, PEFT, ComfyUI and Easel naming)."""
    keys = list(shapes)
    joined = " ".join(keys[:4000])
    if "lora_te2_" in joined or "lora_te1_" in joined or "text_encoder_2." in joined:
        return Arch.SDXL
    if "double_blocks" in joined or "single_blocks" in joined or "single_transformer_blocks" in joined:
        return Arch.FLUX
    if "joint_blocks" in joined or "context_block" in joined:
        return Arch.SD3
    if "img_mod" in joined or "txt_mod" in joined:
        return Arch.QWEN
    if "noise_refiner" in joined or "context_refiner" in joined or re.search(r"layers[._]\d+[._]attention", joined):
        return Arch.ZIMAGE
    if "transformer_blocks" not in joined and _EASEL_KEY.search(joined):
        return Arch.EASEL
    for key, shape in shapes.items():  # cross-attention key projections: input width = text width
        if ("attn2_to_k" in key or "attn2.to_k" in key) and ("lora_down" in key or "lora_A" in key) and len(shape) == 2:
            return {768: Arch.SD1, 1024: Arch.SD2, 2048: Arch.SDXL}.get(shape[1], Arch.UNKNOWN)
    if "lora_unet_" in joined or "unet." in joined:
        return Arch.SD1
    if "transformer_blocks" in joined and "attn.add_q_proj" in joined:
        return Arch.SD3
    return Arch.UNKNOWN


def lora_arch(shapes: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None) -> Arch:
    """The family a LoRA was trained for: the metadata's word first, else the key names."""
    from_metadata = arch_from_metadata(metadata or {})
    return from_metadata if from_metadata != Arch.UNKNOWN else arch_from_keys(shapes)


def lora_format(shapes: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None) -> str:
    """The key layout: "easel", "kohya", "lycoris", "comfyui", "peft" or "unknown"."""
    keys = list(shapes)
    if "easel_base_model" in (metadata or {}):
        return "easel"
    if any(".hada_" in k or ".lokr_" in k for k in keys):
        return "lycoris"
    if any(k.startswith(("lora_unet_", "lora_te")) for k in keys):
        conv = any("lora_down" in k and len(s) == 4 and s[-1] > 1 for k, s in shapes.items())
        return "lycoris" if conv else "kohya"
    if any(k.startswith("diffusion_model.") for k in keys):
        return "comfyui"
    if any(".lora_A." in k or ".lora_down." in k for k in keys):
        return "peft"
    return "unknown"


def lora_rank(shapes: dict[str, tuple[int, ...]]) -> int | None:
    ranks = [s[0] for k, s in shapes.items() if (".lora_A." in k or ".lora_down." in k) and s]
    return max(ranks) if ranks else None


def trigger_words(metadata: dict[str, str]) -> tuple[str, ...]:
    """Explicit trigger words (Easel, modelspec) or else the most frequent training-caption tags (kohya)."""
    explicit: list[str] = []
    for key in ("easel_trigger", "modelspec.trigger_phrase", "ss_trigger_words"):
        text = metadata.get(key, "").strip()
        if text:
            explicit.extend(t.strip() for t in text.split(",") if t.strip())
    if explicit:
        return tuple(dict.fromkeys(explicit))
    raw = metadata.get("ss_tag_frequency")
    if not raw:
        return ()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return ()
    counts: Counter[str] = Counter()
    if isinstance(data, dict):
        for tags in data.values():
            if isinstance(tags, dict):
                for tag, count in tags.items():
                    if isinstance(count, (int, float)) and str(tag).strip():
                        counts[str(tag).strip()] += int(count)
    return tuple(tag for tag, _ in counts.most_common(MAX_TRIGGER_TAGS))


def find_preview(path: Path) -> Path | None:
    """`name.preview.png` (or .jpg/.webp, or `name.png`) beside the LoRA file."""
    stem = Path(path).with_suffix("")
    for suffix in PREVIEW_SUFFIXES:
        candidate = stem.with_name(stem.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def metadata_thumbnail(metadata: dict[str, str]) -> bytes | None:
    """The image bytes of a base64 thumbnail in the metadata (`modelspec.thumbnail`, a data: URI or bare base64)."""
    for key in ("modelspec.thumbnail", "ssmd_cover_images", "easel_preview"):
        text = metadata.get(key, "").strip()
        if not text:
            continue
        if text.startswith("["):  # ssmd_cover_images: a JSON list of base64 strings
            try:
                items = json.loads(text)
            except json.JSONDecodeError:
                continue
            text = items[0] if items and isinstance(items[0], str) else ""
        if text.startswith("data:"):
            text = text.partition(",")[2]
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            continue
    return None


def preview_image(entry: LoraEntry) -> Any:
    """The LoRA's preview as a PIL image (the file beside it, else the metadata thumbnail), or None."""
    from PIL import Image, UnidentifiedImageError

    try:
        if entry.preview is not None:
            with Image.open(entry.preview) as image:
                return image.convert("RGB")
        data = metadata_thumbnail(entry.metadata)
        if data:
            with Image.open(io.BytesIO(data)) as image:
                return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        log.warning("cannot read the preview of LoRA %s: %s", entry.name, exc)
    return None


def describe_lora(name: str, path: Path, short_hash: str | None = None) -> LoraEntry:
    """A LoraEntry from the file's header; an unreadable file is listed with arch UNKNOWN."""
    try:
        shapes, metadata = read_lora_header(path)
    except (HeaderError, OSError, ValueError) as exc:
        log.warning("cannot read LoRA %s: %s", path, exc)
        return LoraEntry(name, Path(path), Arch.UNKNOWN, short_hash, "unknown", preview=find_preview(path))
    return LoraEntry(name=name, path=Path(path), arch=lora_arch(shapes, metadata), short_hash=short_hash,
                     format=lora_format(shapes, metadata), trigger_words=trigger_words(metadata),
                     preview=find_preview(path), rank=lora_rank(shapes), metadata=metadata)


def identify_lora(path: Path) -> Arch:
    """Best-effort family of a LoRA file from its metadata and key names."""
    try:
        shapes, metadata = read_lora_header(path)
    except (ValueError, OSError):
        return Arch.UNKNOWN
    return lora_arch(shapes, metadata)
