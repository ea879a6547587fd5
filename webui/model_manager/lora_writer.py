"""Writing LoRA files: the one writer Easel uses (the trainer, the tests, the benchmarks).

`write_lora(path, tensors, metadata)` writes a `.safetensors` file atomically (a hidden temporary file beside it,
then a rename), readable by everyone (0644). `metadata` is either a `LoraMetadata`, which describes the LoRA and is
written as the header keys other tools read (below), or a plain mapping of strings, written as it is (files
laid out the way other tools write them, for tests).

The keys a `LoraMetadata` becomes, all strings:
  - kohya's (sd-scripts) `ss_*` keys, which AUTOMATIC1111, Forge, Civitai and kohya's own tools show:
    `ss_network_module` ("networks.lora", a plain LoRA), `ss_network_dim`, `ss_network_alpha`,
    `ss_base_model_version` (`BASE_MODELS`), `ss_output_name`, `ss_training_started_at` (Unix time),
    `ss_steps` (steps trained) and `ss_max_train_steps`, `ss_resolution` ("512x512", buckets joined by ","),
    `ss_num_train_images`, `ss_tag_frequency` (JSON {dataset folder: {caption tag: count}}) when known,
    `ss_learning_rate`, `ss_seed`, `ss_sd_model_name` and `ss_sd_model_hash` (the base model's name and its
    10-hex short hash, as Easel's model list shows it), and `sshs_model_hash`: the SHA-256 of the file's tensor
    bytes, which AUTOMATIC1111 takes as the LoRA's hash (the same number as Easel's LoRA hash, hashes.py);
  - Stability AI's model metadata spec (modelspec 1.0.0): `modelspec.sai_model_spec`, `modelspec.architecture`
    (e.g. "stable-diffusion-v1/lora"), `modelspec.implementation` ("diffusers": the keys are diffusers module
    names), `modelspec.title`, `modelspec.date` (ISO 8601), `modelspec.resolution` ("WxH", the first bucket),
    `modelspec.trigger_phrase` and `modelspec.thumbnail` (a data: URI) when there is one;
  - Easel's own: `easel_trigger`; for the built-in model `easel_base_model` and `easel_base_hash` (which mark
    the file as Easel's layout, its alpha in `ss_network_alpha`); `easel_alpha_folded` when alpha/rank is
    already multiplied into every lora_B (the diffusers families, so diffusers and ComfyUI, which read no
    metadata, load them at their trained strength).
Reading these keys back (family, trigger words, preview) is webui.model_manager.lora_files.

`lora_file_tensors` lays an adapter's weights out as Easel's files hold them: `<denoiser>.<module>.lora_A.weight`
/ `.lora_B.weight` (the built-in model's `transformer.…` and the diffusers families' `unet.…` / `transformer.…`,
the names diffusers' `save_lora_weights` writes), and AUTOMATIC1111's `bundle_emb.<word>.string_to_param.*` for a
word vector learned with the LoRA. torch and safetensors are imported when a file is written, not before.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from webui.model_manager.identify import Arch

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MODELSPEC_VERSION = "1.0.0"
NETWORK_MODULE = "networks.lora"
BUNDLE_PREFIX = "bundle_emb."
MAX_TAGS = 1000  # ss_tag_frequency keeps the most frequent tags of each dataset folder

# Arch -> (kohya's ss_base_model_version, modelspec architecture of the base model)
BASE_MODELS: dict[Arch, tuple[str, str]] = {
    Arch.EASEL: ("easel", "easel-shapes"),
    Arch.SD1: ("sd_v1", "stable-diffusion-v1"),
    Arch.SD2: ("sd_v2", "stable-diffusion-v2-512"),
    Arch.SDXL: ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base"),
    Arch.SD3: ("sd3", "stable-diffusion-3-medium"),
    Arch.FLUX: ("flux1", "flux-1-dev"),
    Arch.ZIMAGE: ("zimage", "z-image-turbo"),
    Arch.QWEN: ("qwen_image", "qwen-image"),
}
# (Arch, variant) whose modelspec architecture differs from the family's
VARIANT_ARCHITECTURES: dict[tuple[Arch, str], str] = {
    (Arch.SD2, "v_prediction"): "stable-diffusion-v2-768-v",
    (Arch.SD3, "3.5 large"): "stable-diffusion-3.5-large",
    (Arch.SD3, "3.5 medium"): "stable-diffusion-3.5-medium",
    (Arch.FLUX, "schnell"): "flux-1-schnell",
}


def base_model_version(arch: Arch, variant: str = "") -> tuple[str, str]:
    """(kohya's ss_base_model_version, modelspec.architecture) of a LoRA for this family (and variant: the
    catalogue's, or "v_prediction" for a v-prediction SD 2.x)."""
    if arch not in BASE_MODELS:
        raise ValueError(f"no LoRA metadata for the {arch.value} family; known: "
                         f"{', '.join(a.value for a in BASE_MODELS)}")
    version, architecture = BASE_MODELS[arch]
    return version, VARIANT_ARCHITECTURES.get((arch, variant), architecture) + "/lora"


@dataclass(frozen=True)
class LoraMetadata:
    """What a LoRA file's header says about it (see the module docstring for the keys each field becomes)."""

    arch: Arch
    name: str  # ss_output_name and modelspec.title
    rank: int
    alpha: float
    base_model: str = ""  # the base model's name (its file or folder name)
    base_hash: str = ""  # its 10-hex short hash
    trigger: str = ""
    steps: int = 0  # steps trained so far
    max_steps: int | None = None  # steps the run is set to
    resolution: tuple[tuple[int, int], ...] = ()  # (width, height) buckets
    num_train_images: int = 0
    tag_frequency: Mapping[str, Mapping[str, int]] | None = None  # dataset folder -> caption tag -> count
    learning_rate: float | None = None
    seed: int | None = None
    started_at: float | None = None  # Unix time the training started (resumes keep the first run's)
    variant: str = ""  # refines modelspec.architecture (VARIANT_ARCHITECTURES)
    alpha_folded: bool = False  # alpha/rank is already multiplied into every lora_B
    thumbnail: bytes | None = None  # an encoded image (PNG, JPEG or WebP)
    extra: Mapping[str, str] = field(default_factory=dict)  # more keys, written last

    def to_dict(self, saved_at: float | None = None) -> dict[str, str]:
        """The header keys (all strings); `saved_at` (Unix time, default now) becomes modelspec.date."""
        version, architecture = base_model_version(self.arch, self.variant)
        meta = {
            "ss_network_module": NETWORK_MODULE, "ss_network_dim": str(self.rank),
            "ss_network_alpha": f"{self.alpha:g}", "ss_base_model_version": version, "ss_output_name": self.name,
            "ss_steps": str(self.steps), "ss_num_train_images": str(self.num_train_images),
            "modelspec.sai_model_spec": MODELSPEC_VERSION, "modelspec.architecture": architecture,
            "modelspec.implementation": "easel" if self.arch == Arch.EASEL else "diffusers",
            "modelspec.title": self.name,
            "modelspec.date": datetime.fromtimestamp(time.time() if saved_at is None else saved_at,
                                                     timezone.utc).isoformat(timespec="seconds"),
            "easel_trigger": self.trigger,
        }
        if self.max_steps is not None:
            meta["ss_max_train_steps"] = str(self.max_steps)
        if self.started_at is not None:
            meta["ss_training_started_at"] = f"{self.started_at:.3f}"
        if self.resolution:
            meta["ss_resolution"] = ",".join(f"{w}x{h}" for w, h in self.resolution)
            meta["modelspec.resolution"] = "{}x{}".format(*self.resolution[0])
        if self.tag_frequency:
            meta["ss_tag_frequency"] = json.dumps({folder: dict(tags) for folder, tags in self.tag_frequency.items()},
                                                  ensure_ascii=False)
        if self.learning_rate is not None:
            meta["ss_learning_rate"] = f"{self.learning_rate:g}"
        if self.seed is not None:
            meta["ss_seed"] = str(self.seed)
        if self.base_model:
            meta["ss_sd_model_name"] = self.base_model
        if self.base_hash:
            meta["ss_sd_model_hash"] = self.base_hash
        if self.trigger:
            meta["modelspec.trigger_phrase"] = self.trigger
        if self.thumbnail:
            meta["modelspec.thumbnail"] = f"data:{_image_type(self.thumbnail)};base64," + \
                base64.b64encode(self.thumbnail).decode("ascii")
        if self.arch == Arch.EASEL:
            meta.update(easel_base_model=self.base_model, easel_base_hash=self.base_hash)
        elif self.alpha_folded:
            meta["easel_alpha_folded"] = "true"
        meta.update(self.extra)
        return meta


def _image_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise ValueError("thumbnail must be a PNG, JPEG or WebP image")


def tag_frequency(captions: list[str] | tuple[str, ...], folder: str) -> dict[str, dict[str, int]]:
    """kohya's ss_tag_frequency for captions of one dataset folder: each caption's comma-separated tags counted
    (the MAX_TAGS most frequent kept)."""
    counts: dict[str, int] = {}
    for caption in captions:
        for tag in caption.split(","):
            tag = tag.strip()
            if tag:
                counts[tag] = counts.get(tag, 0) + 1
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:MAX_TAGS]
    return {folder: dict(top)} if top else {}


def thumbnail_of(image_path: Path, size: int = 256) -> bytes | None:
    """PNG bytes of the image at `image_path`, shrunk to at most `size` pixels on its longest side (for
    `LoraMetadata.thumbnail`); None when it cannot be read."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image_path) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size))
            out = io.BytesIO()
            image.save(out, format="PNG")
            return out.getvalue()
    except (OSError, UnidentifiedImageError) as exc:
        log.warning("no thumbnail from %s: %s", image_path, exc)
        return None


def lora_file_tensors(state: Mapping[str, "torch.Tensor"], prefix: str, scale: float | None = None
                      ) -> dict[str, "torch.Tensor"]:
    """An adapter's weights (`<module>.lora_A.weight` / `.lora_B.weight`, PEFT's names without the adapter) as a
    file holds them: `<prefix>.<module>...`; `scale` (alpha / rank), when given, multiplied into each lora_B.
    Bundled word vectors (`bundle_emb.*`) keep their keys."""
    out = {}
    for key, value in state.items():
        if key.startswith(BUNDLE_PREFIX):
            out[key] = value
            continue
        out[f"{prefix}.{key}"] = value * scale if scale is not None and ".lora_B." in key else value
    return out


def payload_sha256(data: bytes) -> str:
    """Hex SHA-256 of a serialized safetensors file's tensor bytes (after the length prefix and the header)."""
    length = int.from_bytes(data[:8], "little")
    return hashlib.sha256(memoryview(data)[8 + length:]).hexdigest()


def write_lora(path: Path, tensors: Mapping[str, "torch.Tensor"],
               metadata: LoraMetadata | Mapping[str, str] | None = None, *, saved_at: float | None = None) -> Path:
    """Write `tensors` to `path` with `metadata` (see the module docstring), atomically; returns `path`."""
    from safetensors.torch import save, save_file

    path = Path(path)
    contiguous = {k: v.detach().contiguous() for k, v in tensors.items()}
    if isinstance(metadata, LoraMetadata):
        header = metadata.to_dict(saved_at)
        # the tensor bytes do not depend on the header, so they can be hashed before it is complete
        header["sshs_model_hash"] = payload_sha256(save(contiguous))
    else:
        header = dict(metadata or {})
    bad = [k for k, v in header.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise ValueError(f"LoRA metadata must map strings to strings; {bad[0]!r} does not")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(contiguous, str(tmp), metadata=header or None)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata of a .safetensors file's header (no tensor is read)."""
    from webui.model_manager.lora_files import read_lora_header

    return read_lora_header(Path(path))[1]

