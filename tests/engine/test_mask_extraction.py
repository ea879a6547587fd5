"""Mask extraction on constructed source/edit pairs with exactly known masks."""
import numpy as np
import pytest
from PIL import Image

from webui.engine.mask_extraction import MaskSettings, cutout, extract_mask, iou, overlay

H = W = 64
MAGENTA = (255, 0, 255)


def disc(cx, cy, r):
    yy, xx = np.mgrid[:H, :W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def scene():
    img = np.zeros((H, W, 3), np.uint8)
    img[:] = (40, 90, 220)  # blue background
    circle = disc(18, 20, 8)
    square = np.zeros((H, W), bool)
    square[36:52, 36:52] = True
    img[circle] = (220, 40, 40)
    img[square] = (40, 170, 70)
    return img, circle, square


def test_highlighted_object_gives_its_exact_mask():
    src, circle, _ = scene()
    edited = src.copy()
    edited[circle] = MAGENTA
    result = extract_mask(src, edited)
    assert result.found
    assert np.array_equal(result.mask, circle)


def test_noise_and_near_colours_are_tolerated():
    src, _, square = scene()
    rng = np.random.default_rng(0)
    edited = src.astype(int) + rng.integers(-4, 5, src.shape)
    edited[square] = (245, 20, 240)  # not exactly magenta
    result = extract_mask(Image.fromarray(src), Image.fromarray(np.clip(edited, 0, 255).astype(np.uint8)))
    assert iou(result.mask, square) == 1.0


def test_unchanged_image_means_not_found():
    src, _, _ = scene()
    result = extract_mask(src, src.copy())
    assert not result.found and not result.mask.any()
    assert "nothing" in result.message


def test_whole_image_repaint_is_reported_not_returned():
    src, _, _ = scene()
    edited = np.zeros_like(src)
    edited[:] = MAGENTA
    result = extract_mask(src, edited)
    assert not result.found and not result.mask.any()
    assert "changed 100% of the image" in result.message


def test_specks_removed_and_largest_component_kept():
    src, circle, square = scene()
    edited = src.copy()
    edited[circle] = MAGENTA
    edited[square] = MAGENTA
    edited[2, 60] = MAGENTA  # a one-pixel speck
    plain = extract_mask(src, edited)
    assert not plain.mask[2, 60]
    assert iou(plain.mask, circle | square) == 1.0
    largest = extract_mask(src, edited, settings=MaskSettings(keep_largest=True))
    assert np.array_equal(largest.mask, square)  # 256 px square beats the 197 px circle


def test_highlight_colour_is_a_parameter():
    src, circle, _ = scene()
    edited = src.copy()
    edited[circle] = (0, 255, 255)
    assert not extract_mask(src, edited).found  # looking for magenta
    assert np.array_equal(extract_mask(src, edited, highlight=(0, 255, 255)).mask, circle)


def test_overlay_and_cutout():
    src, circle, square = scene()
    image = Image.fromarray(src)
    over = np.asarray(overlay(image, [circle, square]))
    assert not np.array_equal(over[circle][0], over[square][0])
    assert np.array_equal(over[~(circle | square)], src[~(circle | square)])
    cut = np.asarray(cutout(image, circle))
    assert cut.shape == (H, W, 4)
    assert (cut[..., 3][circle] == 255).all() and (cut[..., 3][~circle] == 0).all()


def test_mask_image_is_white_on_black():
    src, circle, _ = scene()
    edited = src.copy()
    edited[circle] = MAGENTA
    png = extract_mask(src, edited).image()
    assert png.mode == "L" and set(np.unique(np.asarray(png))) == {0, 255}


@pytest.mark.parametrize("threshold", [5.0, 30.0])
def test_change_threshold_is_respected(threshold):
    src, circle, _ = scene()
    edited = src.copy()
    edited[circle] = MAGENTA
    assert extract_mask(src, edited, settings=MaskSettings(change_threshold=threshold)).found


def test_snap_to_regions_reads_a_partial_or_spilling_highlight_as_the_whole_object():
    """A model that paints only the upper half of the square and spills a few pixels onto the background answers,
    with `snap_to_regions`, with exactly the square; without it, with what it painted. A highlight that covers too
    little of any object is left as it is, and an absent answer stays empty."""
    src, circle, square = scene()
    edited = src.copy()
    painted = square.copy()
    painted[44:, :] = False  # half the square
    painted[30:36, 40:46] = True  # a spill above it onto the background
    edited[painted] = MAGENTA
    plain = extract_mask(src, edited)
    snapped = extract_mask(src, edited, settings=MaskSettings(snap_to_regions=True))
    assert plain.found and iou(plain.mask, square) < 0.7
    assert snapped.found and np.array_equal(snapped.mask, square)
    speck = src.copy()
    speck[36:40, 36:42] = MAGENTA  # 24 of the square's 256 pixels: under the default share of 0.3
    kept = extract_mask(src, speck, settings=MaskSettings(snap_to_regions=True))
    assert np.array_equal(kept.mask, extract_mask(src, speck).mask)
    assert not extract_mask(src, src, settings=MaskSettings(snap_to_regions=True)).found
