"""Per-model defaults: the size, steps, CFG scale, sampler and distilled guidance a checkpoint is meant to run at,
and the range of sizes it draws well.

Each family has its defaults (`FAMILY_DEFAULTS`), refined by what the files say: a Flux.1 transformer without a
guidance embedding (`guidance_embeds` false in `transformer/config.json`, no `guidance_in.*` tensors in a single
file) is schnell, 4 steps without guidance; the built-in model's own size is its transformer's `sample_size`. A model
folder may declare its own defaults in an `easel_defaults` object of its `model_index.json` or in a `defaults.json`
inside it (read last, so it wins); a single-file checkpoint in a `<file name without suffix>.defaults.json` beside
it. Declared keys (`width`, `height`, `steps`, `cfg_scale`, `sampler`, `distilled_cfg_scale`, `min_side`,
`max_side`, `outside`) replace the family's; unknown keys and values of the wrong kind are ignored with a log line,
so a bad file never stops a model loading.

`outside` says what a size outside [`min_side`, `max_side`] does: "allow" runs it as asked, "resize" renders at
the model's own size (the asked aspect ratio kept) and resizes the image to the asked size, "refuse" is a
`RequestError` naming `width` and the range. The built-in model resizes (it draws 64x64 and nothing else well);
the diffusers families allow every size within Easel's limits (they degrade gradually).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webui.model_manager.identify import Arch

log = logging.getLogger(__name__)

OUTSIDE_POLICIES = ("allow", "resize", "refuse")
DECLARATION_KEY = "easel_defaults"


@dataclass(frozen=True)
class ModelDefaults:
    """What one model runs at unless told otherwise. `sampler` None is the Easel's default sampler for the family;
    `distilled_cfg_scale` None means the model has no distilled guidance."""

    width: int = 512
    height: int = 512
    steps: int = 20
    cfg_scale: float = 7.0
    sampler: str | None = None
    distilled_cfg_scale: float | None = None
    min_side: int = 64
    max_side: int = 2048
    outside: str = "allow"
    source: str = "family"  # "family" or the file the declaration came from (its name only)

    def fits(self, width: int, height: int) -> bool:
        return self.min_side <= width <= self.max_side and self.min_side <= height <= self.max_side

    def render_size(self, width: int, height: int) -> tuple[int, int]:
        """The size the model renders an asked size at: its own area with the asked aspect ratio, each side a
        multiple of 8 within [min_side, max_side]."""
        if self.fits(width, height):
            return width, height
        scale = math.sqrt(self.width * self.height / (width * height))

        def side(value: int) -> int:
            return max(self.min_side, min(self.max_side, max(8, round(value * scale / 8) * 8)))

        return side(width), side(height)

    def range_text(self) -> str:
        return f"{self.min_side} to {self.max_side} pixels per side"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FAMILY_DEFAULTS: dict[Arch, ModelDefaults] = {
    Arch.SD1: ModelDefaults(512, 512, 20, 7.0, None, None, 256, 1024),
    Arch.SD2: ModelDefaults(768, 768, 20, 7.0, None, None, 384, 1536),
    Arch.SDXL: ModelDefaults(1024, 1024, 20, 7.0, None, None, 512, 2048),
    Arch.SD3: ModelDefaults(1024, 1024, 28, 4.5, "Euler", None, 512, 2048),
    Arch.FLUX: ModelDefaults(1024, 1024, 20, 1.0, "Euler", 3.5, 256, 2048),
    Arch.ZIMAGE: ModelDefaults(1024, 1024, 8, 0.0, "Euler", None, 512, 2048),  # Turbo; its guidance adds w*(pos-neg)
    Arch.QWEN: ModelDefaults(1328, 1328, 30, 4.0, "Euler", None, 512, 2048),
    Arch.EASEL: ModelDefaults(64, 64, 20, 4.0, "Euler", None, 48, 128, "resize"),
    # the other diffusers families run their own scheduler ("Default"); see docs/FAMILIES.md
    Arch.DIT: ModelDefaults(256, 256, 25, 4.0, "Default", None, 256, 256, "resize"),  # its one size, from the config
    Arch.PIXART: ModelDefaults(1024, 1024, 20, 4.5, "Default", None, 256, 2048),
    Arch.SANA: ModelDefaults(1024, 1024, 20, 4.5, "Default", None, 256, 4096),
    Arch.AMUSED: ModelDefaults(512, 512, 12, 10.0, "Default", None, 256, 1024),
    Arch.UNCLIP: ModelDefaults(768, 768, 20, 10.0, "Default", None, 256, 1024),
    Arch.IF: ModelDefaults(1024, 1024, 50, 7.0, "Default", None, 64, 1024),  # the final size; stage I draws 1/16
    # StyleGAN: no steps or CFG (the request's declared defaults, which its runner accepts); its one size, from its file
    Arch.GAN: ModelDefaults(256, 256, 20, 7.0, "Default", None, 256, 256, "resize"),
}
FLUX_SCHNELL = dataclasses.replace(FAMILY_DEFAULTS[Arch.FLUX], steps=4, distilled_cfg_scale=None)
FALLBACK = ModelDefaults()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _declared(data: Any, base: ModelDefaults, source: str) -> ModelDefaults:
    """`base` with the keys a declaration sets (each checked; a bad one is skipped with a log line)."""
    if not isinstance(data, dict):
        if data is not None:
            log.warning("%s: %s is not an object; ignored", source, DECLARATION_KEY)
        return base
    kinds: dict[str, tuple[type, ...]] = {"width": (int,), "height": (int,), "steps": (int,), "min_side": (int,),
                                          "max_side": (int,), "cfg_scale": (int, float),
                                          "distilled_cfg_scale": (int, float, type(None)), "sampler": (str,),
                                          "outside": (str,)}
    changes: dict[str, Any] = {}
    for key, value in data.items():
        kind = kinds.get(key)
        if kind is None or isinstance(value, bool) or not isinstance(value, kind):
            log.warning("%s: default %r = %r is not recognised; ignored", source, key, value)
            continue
        if key == "outside" and value not in OUTSIDE_POLICIES:
            log.warning("%s: outside must be one of %s; ignored", source, ", ".join(OUTSIDE_POLICIES))
            continue
        if key in ("width", "height", "steps", "min_side", "max_side") and value < 1:
            log.warning("%s: default %r must be positive; ignored", source, key)
            continue
        changes[key] = float(value) if key in ("cfg_scale", "distilled_cfg_scale") and value is not None else value
    return dataclasses.replace(base, **changes, source=source) if changes else base


def family_defaults(arch: Arch, variant: str = "") -> ModelDefaults:
    """A family's defaults (Flux.1 schnell has its own)."""
    if arch == Arch.FLUX and variant == "schnell":
        return FLUX_SCHNELL
    return FAMILY_DEFAULTS.get(arch, FALLBACK)


def folder_variant(path: Path, arch: Arch) -> str:
    """What a diffusers folder's configs say about its variant: "schnell" for a Flux.1 transformer without a
    guidance embedding."""
    if arch == Arch.FLUX:
        config = _read_json(path / "transformer" / "config.json")
        if config.get("guidance_embeds") is False:
            return "schnell"
        return "dev" if config.get("guidance_embeds") else ""
    return ""


def defaults_for(arch: Arch, path: Path | None = None, variant: str = "", kind: str = "folder") -> ModelDefaults:
    """The defaults of one checkpoint: its family's, refined by its files, then its own declaration."""
    path = Path(path) if path is not None else None
    if path is not None and kind == "folder" and path.is_dir():
        variant = folder_variant(path, arch) or variant
        base = family_defaults(arch, variant)
        if arch == Arch.DIT:  # DiT draws one size: its latent size times the VAE's scale (8 for SD's VAE)
            latent = _read_json(path / "transformer" / "config.json").get("sample_size")
            blocks = _read_json(path / "vae" / "config.json").get("block_out_channels") or [0] * 4
            if isinstance(latent, int) and not isinstance(latent, bool) and latent >= 1:
                side = latent * 2 ** (len(blocks) - 1)
                base = dataclasses.replace(base, width=side, height=side, min_side=side, max_side=side)
        if arch == Arch.UNCLIP and (path / "super_res_last").is_dir():  # Karlo draws its super-resolution size
            side = _read_json(path / "super_res_last" / "config.json").get("sample_size")
            if isinstance(side, int) and not isinstance(side, bool) and side >= 8:
                base = dataclasses.replace(base, width=side, height=side, steps=25, cfg_scale=4.0)
        if arch == Arch.EASEL:
            size = _read_json(path / "transformer" / "config.json").get("sample_size")
            if isinstance(size, int) and not isinstance(size, bool) and size >= 8:
                base = dataclasses.replace(base, width=size, height=size, min_side=max(8, size * 3 // 4),
                                           max_side=size * 2)
        declared = _read_json(path / "model_index.json").get(DECLARATION_KEY)
        base = _declared(declared, base, "model_index.json") if declared is not None else base
        beside = path / "defaults.json"
        return _declared(_read_json(beside), base, beside.name) if beside.is_file() else base
    base = family_defaults(arch, variant)
    if arch == Arch.GAN:  # its one size, from the catalogue's variant "<generation>:<resolution>:<classes>"
        parts = variant.split(":")
        if len(parts) == 3 and parts[1].isdigit() and int(parts[1]) >= 8:
            side = int(parts[1])  # asked at least 64 (the smallest size a request takes), resized from its own
            base = dataclasses.replace(base, width=max(64, side), height=max(64, side), min_side=side, max_side=side)
    if path is not None and kind == "file":
        beside = path.with_name(path.stem + ".defaults.json")
        if beside.is_file():
            return _declared(_read_json(beside), base, beside.name)
    return base


def entry_defaults(entry: Any) -> ModelDefaults:
    """The defaults of a catalogue entry (`CheckpointEntry`: arch, path, variant, kind)."""
    return defaults_for(entry.arch, getattr(entry, "path", None), getattr(entry, "variant", ""),
                        getattr(entry, "kind", "folder"))


def size_plan(defaults: ModelDefaults, width: int, height: int) -> tuple[int, int] | None:
    """The size to render an asked size at, when the model renders at its own size and resizes (None: render as
    asked). Raises `RequestError` on `width` naming the range when the model refuses the size."""
    from webui.requests import RequestError

    if defaults.outside == "allow" or defaults.fits(width, height):
        return None
    if defaults.outside == "refuse":
        raise RequestError("width", f"{width}x{height} is outside the sizes this model draws "
                                    f"({defaults.range_text()}; its own size is {defaults.width}x{defaults.height})")
    return defaults.render_size(width, height)
