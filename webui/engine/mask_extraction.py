"""Reading a segmentation mask off an edited image.

Generative segmentation asks an editing model to repaint the referred object in a highlight colour; the mask
is where the edit changed the image *and* the result is close to that colour. Both tests are done in CIELAB,
where distances follow perceived colour differences (ΔE, CIE76). Small specks are removed and holes closed
by dropping tiny components and closing one-pixel gaps, optionally only the largest component is kept, and an edit that changed most of
the image (a repainted scene rather than a highlighted object) is reported instead of returned as a mask.
With `snap_to_regions`, a highlight is read back as whole regions of the source: an editing model that paints
only part of an object, or spills past its edge, still answers with the object's own outline (see
`snap_to_regions` for the rule and docs/SEGMENTATION.md for what it measured).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

HIGHLIGHT_COLOURS: dict[str, tuple[int, int, int]] = {
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
    "lime": (0, 255, 0),
}

# Distinct overlay colours for several queries at once.
OVERLAY_COLOURS = [(255, 0, 255), (0, 200, 255), (255, 200, 0), (0, 230, 90), (255, 80, 80), (150, 90, 255)]


@dataclass(frozen=True)
class MaskSettings:
    change_threshold: float = 12.0  # ΔE between source and edit for a pixel to count as changed
    colour_threshold: float = 40.0  # ΔE between the edit and the highlight colour
    min_area: float = 0.002  # below this share of the image the mask counts as empty
    whole_image_share: float = 0.6  # changed share above which the edit is reported as a repaint
    clean: bool = True
    keep_largest: bool = False
    snap_to_regions: bool = False  # replace the highlight by the source regions it covers (`snap_to_regions`)
    snap_share: float = 0.3  # share of a region the highlight must cover for the region to be taken whole


@dataclass(frozen=True)
class MaskResult:
    mask: np.ndarray  # [H, W] bool, True = object
    found: bool
    changed_share: float  # share of pixels the edit changed
    message: str

    def image(self) -> Image.Image:
        """The mask as a PNG-ready L image: white = object."""
        return Image.fromarray((self.mask * 255).astype(np.uint8), mode="L")


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] uint8 sRGB → [..., 3] CIELAB (D65)."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = linear @ m.T / np.array([0.95047, 1.0, 1.08883])
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    lightness = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1)


def delta_e(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    return np.linalg.norm(lab1 - lab2, axis=-1)


def _rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    return np.asarray(image)[..., :3]


def extract_mask(source: Image.Image | np.ndarray, edited: Image.Image | np.ndarray,
                 highlight: tuple[int, int, int] = HIGHLIGHT_COLOURS["magenta"],
                 settings: MaskSettings = MaskSettings()) -> MaskResult:
    """The mask of what `edited` repainted in `highlight` compared with `source`."""
    src, out = _rgb(source), _rgb(edited)
    if src.shape != out.shape:
        out = np.asarray(Image.fromarray(out).resize((src.shape[1], src.shape[0]), Image.LANCZOS))
    lab_src, lab_out = srgb_to_lab(src), srgb_to_lab(out)
    lab_hi = srgb_to_lab(np.array(highlight, dtype=np.uint8).reshape(1, 1, 3))
    changed = delta_e(lab_src, lab_out) > settings.change_threshold  # [H, W]
    near_highlight = delta_e(lab_out, lab_hi) < settings.colour_threshold  # [H, W]
    changed_share = float(changed.mean())
    mask = changed & near_highlight
    if settings.clean and mask.any():
        mask = clean_mask(mask, changed)
    if settings.keep_largest:
        mask = keep_largest(mask)
    if settings.snap_to_regions and mask.any():
        mask = snap_to_regions(mask, src, settings.snap_share)
    if changed_share > settings.whole_image_share:
        empty = np.zeros_like(mask)
        return MaskResult(empty, False, changed_share,
                          f"the edit changed {changed_share:.0%} of the image instead of highlighting an object; "
                          "try another seed, more steps or a clearer query")
    found = float(mask.mean()) >= settings.min_area
    if not found:
        return MaskResult(np.zeros_like(mask), False, changed_share, "nothing matching the query was found")
    return MaskResult(mask, True, changed_share, f"found: {float(mask.mean()):.1%} of the image")


def clean_mask(mask: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """Drop specks (components under ~0.1% of the image, at least 4 px) and close 1-px gaps inside changed areas."""
    min_pixels = max(4, int(0.001 * mask.size))
    labels, count = ndimage.label(mask)
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    keep = np.zeros(count + 1, bool)
    keep[1:] = sizes >= min_pixels
    mask = keep[labels]
    closed = ndimage.binary_closing(mask, np.ones((3, 3)))
    return mask | (closed & changed)


def source_regions(source: np.ndarray, threshold: float = 20.0, min_pixels: int = 4) -> list[np.ndarray]:
    """The source's objects as boolean masks [H, W]: 4-connected regions of pixels farther than `threshold` (ΔE)
    from the background, the median of the border pixels, and holding at least `min_pixels` pixels."""
    lab = srgb_to_lab(source)
    border = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])  # [4S, 3]
    foreground = delta_e(lab, np.median(border, axis=0)) > threshold  # [H, W]
    labels, count = ndimage.label(foreground)
    sizes = ndimage.sum(foreground, labels, range(1, count + 1))
    return [labels == k + 1 for k in range(count) if sizes[k] >= min_pixels]


def snap_to_regions(mask: np.ndarray, source: np.ndarray, share: float = 0.3) -> np.ndarray:
    """A highlight mask [H, W] read as whole source regions (`source_regions`): each region it covers for at least
    `share` of its pixels is taken whole, highlighted pixels outside every such region are dropped. When the
    highlight covers no region that far, it is returned as it is."""
    taken = [region for region in source_regions(source) if (mask & region).sum() >= share * region.sum()]
    return np.logical_or.reduce(taken) if taken else mask


def keep_largest(mask: np.ndarray) -> np.ndarray:
    """Only the largest 8-connected component of a boolean mask [H, W] (an empty mask stays empty)."""
    if not mask.any():
        return mask
    labels, count = ndimage.label(mask, np.ones((3, 3)))
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    return labels == (int(np.argmax(sizes)) + 1)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; two empty masks agree perfectly."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def overlay(source: Image.Image, masks: list[np.ndarray], alpha: float = 0.55) -> Image.Image:
    """The source with each mask tinted in its own colour."""
    base = np.asarray(source.convert("RGB")).astype(np.float64)
    for i, mask in enumerate(masks):
        colour = np.array(OVERLAY_COLOURS[i % len(OVERLAY_COLOURS)], dtype=np.float64)
        base[mask] = (1 - alpha) * base[mask] + alpha * colour
    return Image.fromarray(base.round().astype(np.uint8))


def cutout(source: Image.Image, mask: np.ndarray) -> Image.Image:
    """The source as RGBA with everything outside the mask transparent."""
    rgba = source.convert("RGBA")
    rgba.putalpha(Image.fromarray((mask * 255).astype(np.uint8), mode="L"))
    return rgba
