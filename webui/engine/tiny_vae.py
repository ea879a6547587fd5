"""Tiny VAEs (the TAESD family) from models/VAE-approx: a fast decode instead of the full VAE, and live previews.

A tiny VAE decodes a latent in a few milliseconds where the full SD VAE takes most of a second on a CPU; its
images are close to the full VAE's but not the same (it is opt-in for the final decode: the Settings tab's
`tiny_vae_decode`), and much better than the linear latent preview (used for previews whenever its file is there,
`tiny_vae_preview`).

Files, per family (FILE_NAMES): a diffusers `AutoencoderTiny` folder (`taesd/` with config.json), or one file
`taesd_decoder.safetensors` / `.pth` (the decoder alone in TAESD's own layout, a `torch.nn.Sequential` whose index 0
is the clamp) or `taesd.safetensors` (diffusers' key names). `.pth` files are read by the weights-only unpickler.
A tiny VAE takes the latents as the denoiser makes them (not divided by the VAE's scaling factor) and gives pixels
in [-1, 1].
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

FILE_NAMES = {"sd1": "taesd", "sd2": "taesd", "sdxl": "taesdxl", "sd3": "taesd3", "flux": "taef1"}
SUFFIXES = (".safetensors", ".pth", ".pt")
_RAW_KEY = re.compile(r"^(\d+)\.(.+)$")


class TinyVaeError(ValueError):
    """A tiny VAE file that cannot be used (unreadable, not a TAESD decoder)."""


def find_file(folder: Path, arch: str) -> Path | None:
    """The tiny VAE for family `arch` in `folder`: a diffusers folder, then `<name>_decoder.*`, then `<name>.*`."""
    name = FILE_NAMES.get(arch)
    if name is None or not folder.is_dir():
        return None
    if (folder / name / "config.json").is_file():
        return folder / name
    for stem in (f"{name}_decoder", name):
        for suffix in SUFFIXES:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    return None


def decoder_state(tensors: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The decoder's weights under diffusers' names (`decoder.layers.N...`), from either layout."""
    if any(key.startswith("decoder.") for key in tensors):
        return {key: value for key, value in tensors.items() if key.startswith("decoder.")}
    state = {}
    for key, value in tensors.items():
        match = _RAW_KEY.match(key)
        if match is None or int(match.group(1)) < 1:
            raise TinyVaeError(f"{source}: key {key!r} is not a TAESD decoder's")
        state[f"decoder.layers.{int(match.group(1)) - 1}.{match.group(2)}"] = value  # index 0 is the clamp
    if not state:
        raise TinyVaeError(f"{source}: no decoder weights in it")
    return state


def load_tiny_vae(path: Path, dtype: torch.dtype = torch.float32) -> Any:
    """An AutoencoderTiny whose decoder holds `path`'s weights (the encoder is unused and left untrained)."""
    from diffusers import AutoencoderTiny

    if path.is_dir():
        return AutoencoderTiny.from_pretrained(str(path), local_files_only=True).to(dtype).eval()
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 -- safetensors raises its own error types
            raise TinyVaeError(f"{path.name}: cannot be read ({exc})") from None
    else:
        from webui.model_manager.weights import read_pickle

        tensors = read_pickle(path, "tiny VAE")
        tensors = tensors.get("state_dict", tensors) if isinstance(tensors, dict) else tensors
        if not isinstance(tensors, dict):
            raise TinyVaeError(f"{path.name}: not a state dict")
    state = decoder_state(tensors, path.name)
    first = state.get("decoder.layers.0.weight")
    if first is None or first.ndim != 4:
        raise TinyVaeError(f"{path.name}: no first decoder convolution (decoder.layers.0.weight)")
    width, latent_channels = int(first.shape[0]), int(first.shape[1])
    model = AutoencoderTiny(latent_channels=latent_channels, encoder_block_out_channels=(width,) * 4,
                            decoder_block_out_channels=(width,) * 4)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if key.startswith("decoder.")]
    if missing or unexpected:
        raise TinyVaeError(f"{path.name}: does not fit a TAESD decoder (missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]})")
    return model.to(dtype).eval()


def upscale(model: Any) -> int:
    """How many pixels a latent becomes per side: 8 for the TAESD family, as for the SD VAEs they stand in for."""
    config = model.config
    if hasattr(config, "upsampling_scaling_factor"):  # AutoencoderTiny
        return int(config.upsampling_scaling_factor) ** (len(config.decoder_block_out_channels) - 1)
    return 2 ** (len(config.block_out_channels) - 1)  # AutoencoderKL


def fits(tiny: Any, vae: Any) -> bool:
    """Whether `tiny` can decode what `vae` decodes: the same latent channels and the same upscale."""
    return (int(tiny.config.latent_channels) == int(getattr(vae.config, "latent_channels", -1))
            and upscale(tiny) == upscale(vae))


class TinyVaes:
    """Tiny VAEs from `folder`, loaded on first use (reloaded when the file changes); `settings()` gives
    (decode with it, preview with it)."""

    def __init__(self, folder: Path, settings: Callable[[], tuple[bool, bool]] = lambda: (False, True)) -> None:
        self.folder = Path(folder)
        self.settings = settings
        self._loaded: dict[Path, tuple[float, Any]] = {}
        self._bad: dict[Path, float] = {}  # files that failed, by mtime: not retried until they change

    def get(self, arch: str) -> Any:
        path = find_file(self.folder, arch)
        if path is None:
            return None
        stamp = path.stat().st_mtime
        held = self._loaded.get(path)
        if held is not None and held[0] == stamp:
            return held[1]
        if self._bad.get(path) == stamp:
            return None
        try:
            model = load_tiny_vae(path)
        except (TinyVaeError, ValueError, OSError, RuntimeError) as exc:
            log.warning("tiny VAE %s not used: %s", path.name, exc)
            self._bad[path] = stamp
            return None
        log.info("tiny VAE %s loaded for %s", path.name, arch)
        self._loaded[path] = (stamp, model)
        return model

    def for_decode(self, arch: str, vae: Any) -> Any:
        """The tiny VAE to decode with in place of `vae`, when the setting asks for it and a file for `arch` that
        fits `vae` is there."""
        tiny = self.get(arch) if self.settings()[0] else None
        if tiny is not None and not fits(tiny, vae):
            log.warning("tiny VAE for %s not used: it does not fit this model's VAE (latent channels or scale)", arch)
            return None
        return tiny

    def previewer(self, arch: str) -> Callable[[torch.Tensor], Image.Image | None] | None:
        """latents [B,C,h,w] -> the first one as a PIL image, by the tiny VAE; None where none is used."""
        if not self.settings()[1]:
            return None
        model = self.get(arch)
        if model is None:
            return None

        def preview(latents: torch.Tensor) -> Image.Image | None:
            if latents.ndim != 4 or latents.shape[1] != model.config.latent_channels:
                return None  # packed latents (Flux) and such: the linear preview
            with torch.no_grad():
                pixels = model.decode(latents[:1].detach().float().cpu(), return_dict=False)[0][0]  # [3,H,W]
            array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
            return Image.fromarray(np.ascontiguousarray(array))

        return preview
