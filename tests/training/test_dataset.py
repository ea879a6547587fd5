"""Dataset loading: captions with the trigger, buckets, and errors that name the file at fault."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.training.conftest import make_dataset
from webui.training.dataset import DatasetError, load_dataset


def test_captions_buckets_and_batches(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "ds", n=2, size=(64, 64), caption="a  [trigger]\non blue")
    Image.new("RGB", (120, 60), (1, 2, 3)).save(folder / "wide.jpg")
    (folder / "wide.txt").write_text("wide [trigger]")
    ds = load_dataset(folder, ((64, 64), (96, 48)), trigger="zork")
    assert len(ds) == 3
    assert sorted(i.caption for i in ds.items) == ["a zork on blue", "a zork on blue", "wide zork"]
    assert ds.buckets == {(64, 64): (0, 1), (96, 48): (2,)}
    wide = ds.items[2]
    assert wide.pixels.shape == (3, 48, 96)
    assert float(wide.pixels.min()) >= -1.0 and float(wide.pixels.max()) <= 1.0
    for seed in range(6):
        prompts, pixels = ds.batch(torch.Generator().manual_seed(seed), 4)
        assert len(prompts) == pixels.shape[0] and pixels.shape[1] == 3
        assert pixels.shape[-2:] in ((64, 64), (48, 96))


def test_no_images(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="no images") as info:
        load_dataset(tmp_path / "empty", ((64, 64),))
    assert info.value.path == tmp_path / "empty"
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nowhere", ((64, 64),))


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "ds", n=2)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "broken.txt").write_text("a [trigger]")
    with pytest.raises(DatasetError, match="unreadable image") as info:
        load_dataset(folder, ((64, 64),), trigger="zork")
    assert info.value.path == folder / "broken.png"
    assert "broken.png" in str(info.value)


def test_missing_and_empty_captions_are_named(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "ds", n=2)
    (folder / "img1.txt").unlink()
    with pytest.raises(DatasetError, match="caption missing") as info:
        load_dataset(folder, ((64, 64),), trigger="zork")
    assert info.value.path == folder / "img1.png" and "img1.txt" in str(info.value)
    (folder / "img1.txt").write_text("  \n")
    with pytest.raises(DatasetError, match="empty") as info:
        load_dataset(folder, ((64, 64),), trigger="zork")
    assert info.value.path == folder / "img1.txt"
    (folder / "img1.txt").write_text("a [trigger]")
    with pytest.raises(DatasetError, match="no trigger"):
        load_dataset(folder, ((64, 64),), trigger="")
