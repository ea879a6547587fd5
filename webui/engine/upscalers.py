"""Upscalers: Lanczos and Nearest built in, ESRGAN-family models from `models/ESRGAN/` through spandrel.

`Upscalers` lists what is installed (built-ins first, then every model file in the upscaler folders by name),
loads models (held, like every loaded model, in the model manager's memory cache) and runs them tile by tile, so
a large image needs little memory. Easel reads the file itself, without running code from it
(`webui.model_manager.weights`: safetensors, or a pickle through the weights-only unpickler; TorchScript archives
are refused unread), and hands spandrel only the tensors, from which it recognises ESRGAN, Real-ESRGAN, SwinIR,
DAT, HAT and the other single-image super-resolution architectures. A file that is refused or is no upscaler
raises `UpscalerLoadError` naming it. A model scales by its own factor; `upscale` repeats it until the image
reaches the target size, then resizes to the exact size with Lanczos (for Extras, a pass that would make more than
the per-image limit is made on the image shrunk to land on the target). Hires fix, the Extras tab and
`/sdapi/v1/extra-single-image` all go through here, on the worker thread that owns the device.

The latent upscalers of hires fix ("Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic
antialiased)", "Latent (nearest)", "Latent (nearest-exact)") resize the first pass's latents themselves
(`upscale_latents`), so the image is never decoded between the passes. Outside hires fix (Extras), their names
resize in pixel space with the matching interpolation.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from webui.requests import LATENT_UPSCALERS, RequestError

log = logging.getLogger(__name__)

NONE = "None"
BUILTIN_FILTERS: dict[str, Image.Resampling] = {"Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}
LATENT_FILTERS: dict[str, Image.Resampling] = {
    "latent": Image.BILINEAR, "latent (antialiased)": Image.BILINEAR, "latent (bicubic)": Image.BICUBIC,
    "latent (bicubic antialiased)": Image.BICUBIC, "latent (nearest)": Image.NEAREST,
    "latent (nearest-exact)": Image.NEAREST,
}
# name (lower case) -> (torch interpolation mode, antialias)
LATENT_MODES: dict[str, tuple[str, bool]] = {
    "latent": ("bilinear", False), "latent (antialiased)": ("bilinear", True), "latent (bicubic)": ("bicubic", False),
    "latent (bicubic antialiased)": ("bicubic", True), "latent (nearest)": ("nearest", False),
    "latent (nearest-exact)": ("nearest-exact", False),
}
LATENT_NAMES = LATENT_UPSCALERS
MODEL_SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt")
MAX_PASSES = 4
UPSCALER = "upscaler"  # their kind in the memory cache
_SCALE_IN_NAME = re.compile(r"(?:^|[^0-9a-z])(?:x(\d)(?!\d)|(\d)x)", re.IGNORECASE)  # "x4plus", "4x-", "2xNomos"


class UpscalerNotFoundError(LookupError):
    """No upscaler has this name; the message lists the installed ones."""


class UpscalerLoadError(ValueError):
    """An upscaler's file was refused or is not an upscaler; the message names the file (not the field)."""


@dataclass(frozen=True)
class UpscalerEntry:
    """One upscaler the user can pick. `scale` is the model's own factor (from its name until loaded)."""

    name: str
    kind: Literal["builtin", "model"]
    path: Path | None = None
    scale: int | None = None


def scale_from_name(name: str) -> int | None:
    """The factor a model's file name announces ("4x-UltraSharp", "RealESRGAN_x2plus"), if any."""
    match = _SCALE_IN_NAME.search(name.replace("_", "-"))
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


def is_latent(name: str) -> bool:
    """A latent upscaler: hires fix resizes the latents, not the decoded image."""
    return str(name).strip().lower() in LATENT_MODES


def upscale_latents(latents: torch.Tensor, name: str, size: tuple[int, int]) -> torch.Tensor:
    """Latents (B, C, h, w) resized to `size` = (width, height) in latent cells with the named latent upscaler's
    interpolation."""
    mode, antialias = LATENT_MODES[str(name).strip().lower()]
    width, height = size
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return torch.nn.functional.interpolate(latents, size=(height, width), mode=mode, antialias=antialias,
                                           **kwargs)  # (B, C, height, width)


def target_size(size: tuple[int, int], scale: float | None, width: int | None = None,
                height: int | None = None) -> tuple[int, int]:
    """The output size for a scale factor, or for an explicit width and height (which win when given)."""
    if width and height:
        return int(width), int(height)
    if scale is None or scale <= 0:
        raise RequestError("upscaling_resize", f"the scale must be above 0, got {scale}")
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


class Upscalers:
    """The installed upscalers and the one model currently loaded. Listing is thread-safe; upscaling runs on
    the worker thread."""

    def __init__(self, dirs: list[Path], device: str = "cpu", dtype: torch.dtype = torch.float32,
                 tile: int = 192, tile_overlap: int = 16, memory: Any = None) -> None:
        if tile < 16 or tile_overlap < 0 or tile_overlap * 2 >= tile:
            raise ValueError(f"tile: needs tile >= 16 and 0 <= overlap < tile / 2, got {tile} and {tile_overlap}")
        self.dirs = [Path(d) for d in dirs]
        self.device = device
        self.dtype = dtype
        self.tile = tile
        self.tile_overlap = tile_overlap
        self._lock = threading.Lock()
        self._entries: list[UpscalerEntry] | None = None
        if memory is None:  # the model manager's memory cache, where every loaded model is held (engine.py)
            from webui.model_manager.memory import MemoryCache

            memory = MemoryCache(device)
        self.memory = memory  # loaded models by (path, mtime, dtype), as kind "upscaler"

    # Listing ---------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Rescan the upscaler folders."""
        found: dict[str, UpscalerEntry] = {}
        for root in self.dirs:
            if not root.is_dir():
                continue
            for path in sorted(root.rglob("*")):
                if path.suffix.lower() not in MODEL_SUFFIXES or not path.is_file():
                    continue
                if any(part.startswith(".") for part in path.relative_to(root).parts):
                    continue
                name = path.relative_to(root).with_suffix("").as_posix()
                if name in BUILTIN_FILTERS or name == NONE or name in found:
                    continue
                found[name] = UpscalerEntry(name, "model", path, scale_from_name(path.stem))
        builtin = [UpscalerEntry(name, "builtin") for name in BUILTIN_FILTERS]
        with self._lock:
            self._entries = builtin + sorted(found.values(), key=lambda e: e.name.lower())

    def entries(self) -> list[UpscalerEntry]:
        """Lanczos and Nearest, then the installed models by name."""
        with self._lock:
            entries = self._entries
        if entries is None:
            self.refresh()
            with self._lock:
                entries = self._entries
        return list(entries or [])

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def hires_names(self) -> list[str]:
        """What hires fix offers: the latent upscalers, then Lanczos, Nearest and the installed models."""
        return [*LATENT_NAMES, *self.names()]

    def find(self, name: str) -> UpscalerEntry:
        """By name (any case) or model file name; raises UpscalerNotFoundError listing the choices."""
        wanted = str(name).strip()
        entries = self.entries()
        for entry in entries:
            if entry.name.lower() == wanted.lower():
                return entry
        for entry in entries:
            if entry.path is not None and wanted.lower() in (entry.path.name.lower(), entry.path.stem.lower()):
                return entry
        raise UpscalerNotFoundError(f"unknown upscaler {wanted!r}; installed: {', '.join(e.name for e in entries)} "
                                    f"(put ESRGAN-family models in {self.dirs[0] if self.dirs else 'models/ESRGAN'})")

    def check_hires(self, name: str) -> str:
        """The name to use for hires fix: an installed upscaler, a latent upscaler (its listed spelling) or "None"
        (= Lanczos)."""
        key = str(name).strip()
        if key.lower() in LATENT_MODES:
            return next(n for n in LATENT_NAMES if n.lower() == key.lower())
        if key in ("", NONE):
            return NONE
        return self.find(name).name

    # Upscaling (worker thread) ---------------------------------------------------------------------
    def upscale(self, image: Image.Image, name: str, size: tuple[int, int],
                max_pixels: int | None = None) -> Image.Image:
        """`image` resized to `size` by the named upscaler ("None" and latent names: plain resampling).

        With `max_pixels` (the Extras tab and API pass the per-image limit), a model's pass makes at most that
        many pixels, or the target's when that is more: before a pass that would make more, the image is first
        resized so that the pass lands on the target size (an image just under the target would otherwise
        become scale² times its size first)."""
        key = str(name).strip()
        if key in ("", NONE):
            return image.resize(size, Image.LANCZOS) if image.size != size else image
        if key.lower() in LATENT_FILTERS:
            return image.resize(size, LATENT_FILTERS[key.lower()])
        entry = self.find(key)
        if entry.kind == "builtin":
            return image.resize(size, BUILTIN_FILTERS[entry.name])
        return self._upscale_with_model(image, entry, size, max(max_pixels, size[0] * size[1]) if max_pixels else None)

    def _upscale_with_model(self, image: Image.Image, entry: UpscalerEntry, size: tuple[int, int],
                            max_pixels: int | None) -> Image.Image:
        model = self._load(entry)
        current = image.convert("RGB")
        for _ in range(MAX_PASSES):
            if current.width >= size[0] and current.height >= size[1]:
                break
            scale = max(1, int(model.scale))
            if max_pixels is not None and current.width * scale * current.height * scale > max_pixels:
                # shrink first, so the pass makes about the target size and not up to scale² times more
                current = current.resize((max(1, -(-size[0] // scale)), max(1, -(-size[1] // scale))),
                                         Image.LANCZOS)
            current = self._run_model(model, current)
            if model.scale <= 1:
                break
        return current.resize(size, Image.LANCZOS) if current.size != size else current

    def _load(self, entry: UpscalerEntry) -> Any:
        assert entry.path is not None
        mtime = entry.path.stat().st_mtime
        key = (str(entry.path), mtime, str(self.dtype))
        found = self.memory.get(UPSCALER, key)
        if found is not None:
            return found
        self.memory.clear(UPSCALER, where=lambda held: held[0] == key[0])  # an older version of the file
        from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

        from webui.model_manager.weights import ModelFileError, read_weights

        try:
            state = read_weights(entry.path)  # tensors only: nothing in the file runs
        except ModelFileError as exc:
            raise UpscalerLoadError(str(exc)) from None
        if not isinstance(state, dict):
            raise UpscalerLoadError(f"{entry.path.name}: holds a {type(state).__name__}, not a dictionary of tensors")
        try:
            model = ModelLoader(device="cpu").load_from_state_dict(state)
        except UnsupportedModelError:
            raise UpscalerLoadError(f"{entry.path.name} is not a model architecture spandrel knows "
                                    "(ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT, ...)") from None
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError, AttributeError) as exc:
            raise UpscalerLoadError(f"{entry.path.name}: its weights do not fit the architecture they look like "
                                    f"({type(exc).__name__}: {str(exc).strip()[:200]})") from None
        if not isinstance(model, ImageModelDescriptor) or model.input_channels != 3:
            raise UpscalerLoadError(f"{entry.path.name} is a {model.architecture.name} model, not an RGB image "
                                    "upscaler")
        dtype = self.dtype
        if (dtype == torch.float16 and not model.supports_half) or \
           (dtype == torch.bfloat16 and not model.supports_bfloat16):
            dtype = torch.float32
        model.to(self.device).to(dtype).eval()
        log.info("upscaler %s loaded (%s, %dx)", entry.name, model.architecture.name, model.scale)
        self.memory.add(UPSCALER, key, model, name=entry.name)
        return model

    def unload(self) -> None:
        """Forget the loaded models."""
        self.memory.clear(UPSCALER)

    def _run_model(self, model: Any, image: Image.Image) -> Image.Image:
        array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3) in [0, 1]
        x = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
        x = x.to(model.device, model.dtype)
        y = run_tiled(model, x, model.scale, self.tile, self.tile_overlap)  # (1, 3, H*s, W*s)
        out = (y[0].float().clamp(0, 1) * 255.0).round().byte().permute(1, 2, 0).cpu().numpy()  # (H*s, W*s, 3)
        return Image.fromarray(np.ascontiguousarray(out))


def run_tiled(model: Any, x: torch.Tensor, scale: int, tile: int, overlap: int) -> torch.Tensor:
    """Run `model` over (1, C, H, W) in tiles of `tile` px, each seen with `overlap` px of context around it.

    Only each tile's own area (without the context) is kept, so neighbouring tiles meet without seams from
    missing context and memory stays bounded by the tile size.
    """
    _, channels, height, width = x.shape
    out = torch.zeros((1, channels, height * scale, width * scale), dtype=x.dtype, device=x.device)
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            # the tile with its context, clamped to the image
            y0, x0 = max(0, top - overlap), max(0, left - overlap)
            y1, x1 = min(height, bottom + overlap), min(width, right + overlap)
            with torch.inference_mode():
                result = model(x[:, :, y0:y1, x0:x1])  # (1, C, (y1-y0)*s, (x1-x0)*s)
            # keep the tile's own area
            oy, ox = (top - y0) * scale, (left - x0) * scale
            h, w = (bottom - top) * scale, (right - left) * scale
            out[:, :, top * scale:top * scale + h, left * scale:left * scale + w] = result[:, :, oy:oy + h, ox:ox + w]
    return out

