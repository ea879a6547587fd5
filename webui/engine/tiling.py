"""Memory for large images: VAE tiling and slicing, and tiled diffusion (MultiDiffusion), around one pipeline call.

**VAE tiling** decodes (and encodes) the image in overlapping tiles that diffusers' AutoencoderKL blends, so a VAE
pass needs the memory of one tile, not of the whole image; **slicing** runs the images of a batch one at a time.
The `vae_tiling` setting says when: "Automatic" tiles above `AUTO_VAE_TILING_PIXELS` (1536×1536: SDXL's own
1024×1024 and smaller never tile, a 2× hires fix of it does) or whenever tiled diffusion runs, and slices a batch
of more than one image; "Always" tiles and slices every call; "Never" neither. Tiling changes the pixels slightly
(within a few 1/255 on real VAEs), so the infotext records it as `Tiled VAE: <tile>px`.

**Tiled diffusion** splits the latent into overlapping tiles and runs the denoiser on each tile at every step;
the tiles' predictions are averaged with weights that fall off linearly across the overlap towards the tile's
inner edges (never towards the image's own border), so neighbouring tiles hand over smoothly and the seams of a
plain tiling do not appear. `TiledDenoiser` wraps a UNet for the duration of one call (the pipeline's `unet`
component is swapped and put back, whatever happens). It works for the UNet families (SD 1.x, SD 2.x, SDXL): the
flow transformers take packed sequences with positional ids of the whole image and the built-in model draws
pixels with global attention, so `check_tiled_diffusion` refuses them with a message naming the field.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from webui.requests import TILED_DIFFUSION_ARCHS, RequestError, tiled_diffusion_refusal
from webui.settings import VAE_TILING_CHOICES

log = logging.getLogger(__name__)

AUTO_VAE_TILING_PIXELS = 1536 * 1536  # "Automatic" tiles the VAE above this many pixels per image
TILED_DIFFUSION_METHOD = "MultiDiffusion"
_LATENT_ALIGN = 8  # UNet tiles and steps are multiples of this many latent cells (three down-samplings)


@dataclass(frozen=True)
class TileOptions:
    """Tiled diffusion's tile size and overlap, in latent cells (1 cell = the VAE's 8 pixels)."""

    width: int = 96
    height: int = 96
    overlap: int = 48


# ============================================================================================ VAE tiling
def vae_plan(setting: str, width: int, height: int, batch: int, tiled_diffusion: bool = False
             ) -> tuple[bool, bool]:
    """(tile, slice) for one VAE pass of `batch` images of `width` × `height` pixels under the `vae_tiling`
    setting."""
    if setting == "Never":
        return False, False
    if setting == "Always":
        return True, True
    if setting != "Automatic":
        raise ValueError(f"vae_tiling must be one of {', '.join(VAE_TILING_CHOICES)}, got {setting!r}")
    return tiled_diffusion or width * height > AUTO_VAE_TILING_PIXELS, batch > 1


def call_size(pipe: Any, kwargs: dict[str, Any]) -> tuple[int, int, int]:
    """(width, height, images) a pipeline call will decode: its width and height arguments, else its input
    image's size (a PIL image, a list of them, or latents (B, C, h, w) scaled by the VAE's factor)."""
    count = int(kwargs.get("num_images_per_prompt") or 1)
    if kwargs.get("width") and kwargs.get("height"):
        return int(kwargs["width"]), int(kwargs["height"]), count
    image = kwargs.get("image")
    if isinstance(image, (list, tuple)) and image:
        count *= len(image)
        image = image[0]
    if isinstance(image, torch.Tensor):
        scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
        return int(image.shape[-1]) * scale, int(image.shape[-2]) * scale, max(count, int(image.shape[0]))
    if image is not None and hasattr(image, "size"):
        return int(image.size[0]), int(image.size[1]), count
    return 0, 0, count


def vae_tile_px(vae: Any) -> int:
    """The tile size (pixels) diffusers' AutoencoderKL uses: its `tile_sample_min_size`."""
    size = getattr(vae, "tile_sample_min_size", 0) or 0
    return int(size[0] if isinstance(size, (list, tuple)) else size)


@contextmanager
def vae_tiling(pipe: Any, tile: bool, slice_batch: bool, tile_px: int = 0) -> Iterator[dict[str, Any]]:
    """While the block runs, the pipeline's VAE tiles (`tile`, tiles of `tile_px` pixels when above 0, else the
    VAE's own) and slices (`slice_batch`); its previous state is put back afterwards. Yields the infotext entries
    (`Tiled VAE`) when tiling is on; nothing changes for a VAE that cannot tile."""
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "enable_tiling") or not (tile or slice_batch):
        yield {}
        return
    before = (getattr(vae, "use_tiling", False), getattr(vae, "use_slicing", False),
              getattr(vae, "tile_sample_min_size", None), getattr(vae, "tile_latent_min_size", None))
    notes: dict[str, Any] = {}
    try:
        if tile:
            vae.enable_tiling()
            if tile_px > 0 and hasattr(vae, "tile_latent_min_size"):
                scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
                vae.tile_sample_min_size, vae.tile_latent_min_size = tile_px, max(1, tile_px // scale)
            notes["Tiled VAE"] = f"{vae_tile_px(vae)}px"
        if slice_batch and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
        yield notes
    finally:
        vae.use_tiling, vae.use_slicing = before[0], before[1]
        if before[2] is not None:
            vae.tile_sample_min_size, vae.tile_latent_min_size = before[2], before[3]


# ============================================================================================ tiled diffusion
def check_tiled_diffusion(arch: str, options: TileOptions) -> None:
    """RequestError naming the field when tiled diffusion cannot run on this family or with these tiles."""
    if arch not in TILED_DIFFUSION_ARCHS:
        raise RequestError("tiled_diffusion", tiled_diffusion_refusal(arch))
    if options.overlap >= min(options.width, options.height):
        raise RequestError("tiled_diffusion_overlap", f"the overlap ({options.overlap}) must be smaller than the "
                                                      f"tile ({options.width}x{options.height} latent cells)")


def tile_options(request: Any) -> TileOptions | None:
    """The request's tiles, or None when it does not ask for tiled diffusion."""
    if not getattr(request, "tiled_diffusion", False):
        return None
    return TileOptions(request.tiled_diffusion_tile_width, request.tiled_diffusion_tile_height,
                       request.tiled_diffusion_overlap)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one side of `size` cells start: every `tile - overlap` cells (multiples of 8 when
    the tile allows), the last one flush with the end; one tile when the side fits."""
    if size <= tile:
        return [0]
    stride = max(1, tile - overlap)
    if stride >= _LATENT_ALIGN:
        stride -= stride % _LATENT_ALIGN
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def ramp(length: int, start: int, size: int, overlap: int) -> torch.Tensor:
    """One tile's weights along one side (length,): 1 inside, falling linearly across the overlap with the
    neighbouring tile on each side that has one (never to 0), flat at the image's border."""
    weights = torch.ones(length)
    if overlap <= 0:
        return weights
    ramp_up = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)  # (overlap,) in (0, 1)
    if start > 0:  # a tile before this one
        n = min(overlap, length)
        weights[:n] = torch.minimum(weights[:n], ramp_up[:n])
    if start + length < size:  # a tile after this one
        n = min(overlap, length)
        weights[length - n:] = torch.minimum(weights[length - n:], ramp_up[:n].flip(0))
    return weights


class TiledDenoiser(torch.nn.Module):
    """A UNet run tile by tile: `forward` takes the full latent (B, C, H, W) as the UNet does, runs the UNet on
    each overlapping tile with the same timestep and conditioning, and returns the weighted average of the
    tiles' predictions (B, C', H, W). Attributes it does not have (config, dtype, device, add_embedding, ...)
    are the UNet's, so the pipeline sees its own UNet. `blend=False` is a plain tiling (uniform weights, no
    overlap needed): the comparison that shows seams."""

    def __init__(self, unet: torch.nn.Module, options: TileOptions, blend: bool = True) -> None:
        super().__init__()
        self.inner = unet
        self.options = options
        self.blend = blend
        self.calls = 0  # tile evaluations, for tests and logs

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)

    def forward(self, sample: torch.Tensor, timestep: Any, *args: Any, return_dict: bool = True,
                **kwargs: Any) -> Any:
        for key in ("down_block_additional_residuals", "mid_block_additional_residual",
                    "down_intrablock_additional_residuals"):
            if kwargs.get(key) is not None:
                raise RequestError("tiled_diffusion", "tiled diffusion does not combine with ControlNet or "
                                                      "T2I adapters; turn one of them off")
        _, _, height, width = sample.shape  # (B, C, H, W)
        opts = self.options
        overlap = opts.overlap if self.blend else 0
        rows, cols = tile_starts(height, opts.height, overlap), tile_starts(width, opts.width, overlap)
        total: torch.Tensor | None = None
        weight_sum = torch.zeros(1, 1, height, width, device=sample.device, dtype=torch.float32)
        for top in rows:
            for left in cols:
                th, tw = min(opts.height, height), min(opts.width, width)
                tile = sample[:, :, top:top + th, left:left + tw]  # (B, C, th, tw)
                out = self.inner(tile, timestep, *args, return_dict=False, **kwargs)[0]  # (B, C', th, tw)
                self.calls += 1
                if total is None:
                    total = torch.zeros(out.shape[0], out.shape[1], height, width, device=out.device,
                                        dtype=torch.float32)
                if self.blend:
                    w = (ramp(th, top, height, overlap)[:, None] *
                         ramp(tw, left, width, overlap)[None, :]).to(out.device)  # (th, tw)
                else:
                    w = torch.ones(th, tw, device=out.device)
                total[:, :, top:top + th, left:left + tw] += out.float() * w
                weight_sum[:, :, top:top + th, left:left + tw] += w
        assert total is not None
        result = (total / weight_sum).to(sample.dtype)  # (B, C', H, W)
        return (result,) if not return_dict else _unet_output(result)


def _unet_output(sample: torch.Tensor) -> Any:
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    return UNet2DConditionOutput(sample=sample)


@contextmanager
def tiled_denoiser(pipe: Any, options: TileOptions, latent_size: tuple[int, int], blend: bool = True
                   ) -> Iterator[TiledDenoiser | None]:
    """While the block runs, `pipe.unet` is a `TiledDenoiser` around the pipeline's UNet; put back afterwards.
    Yields None (nothing changes) when the latent (h, w) fits one tile."""
    unet = getattr(pipe, "unet", None)
    if unet is None:
        raise RequestError("tiled_diffusion", "this model has no UNet to tile; turn tiled diffusion off")
    h, w = latent_size
    if h <= options.height and w <= options.width:
        yield None
        return
    wrapper = TiledDenoiser(unet, options, blend)
    pipe.unet = wrapper
    try:
        yield wrapper
    finally:
        pipe.unet = unet
    log.info("tiled diffusion: %d tile evaluations of %dx%d cells (overlap %d) on a %dx%d latent", wrapper.calls,
             options.width, options.height, options.overlap, w, h)


def tiled_infotext(options: TileOptions) -> dict[str, Any]:
    """The keys the request fields read back (`Tiled Diffusion: True`; the method is always MultiDiffusion)."""
    return {"Tiled Diffusion": True, "Tiled Diffusion tile width": options.width,
            "Tiled Diffusion tile height": options.height, "Tiled Diffusion overlap": options.overlap}


@contextmanager
def memory_tiling(pipe: Any, arch: str, kwargs: dict[str, Any], vae_setting: str, vae_tile: int = 0,
                  tiles: TileOptions | None = None) -> Iterator[dict[str, Any]]:
    """Around one pipeline call: VAE tiling/slicing as `vae_setting` says for the call's size, and tiled
    diffusion with `tiles` (None: off). Yields the infotext entries for what ran (filled in as it is decided)."""
    width, height, count = call_size(pipe, kwargs)
    if tiles is not None:
        check_tiled_diffusion(arch, tiles)
    tile, slice_batch = vae_plan(vae_setting, width, height, count, tiles is not None)
    scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
    with vae_tiling(pipe, tile, slice_batch, vae_tile) as notes:
        if tile:
            log.info("VAE tiling on for %dx%d (%s)", width, height, notes.get("Tiled VAE", "its own tiles"))
        if tiles is None:
            yield notes
            return
        with tiled_denoiser(pipe, tiles, (height // scale, width // scale)) as wrapper:
            if wrapper is not None:
                notes.update(tiled_infotext(tiles))
            yield notes
