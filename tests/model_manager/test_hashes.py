"""AUTOMATIC1111 short hashes: first 10 hex of the file's sha256, computed once, remembered on disk."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from webui.model_manager.hashes import HashCache, folder_weight_files, sha256_file


def test_sha256_and_short_hash(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(os.urandom(3 << 20))  # spans several read chunks
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_file(path) == expected
    assert HashCache(None).short_hash(path) == expected[:10]


def test_hash_is_cached_on_disk_and_not_recomputed(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights" * 1000)
    store = tmp_path / "data" / "hashes.json"
    first = HashCache(store)
    short = first.short_hash(path)
    assert first.short_hash(path) == short and first.stats["computed"] == 1
    assert store.is_file()

    second = HashCache(store)  # a new process: reads the JSON, computes nothing
    assert second.cached_short_hash(path) == short
    assert second.short_hash(path) == short and second.stats["computed"] == 0

    path.write_bytes(b"other weights" * 1000)  # the file changed: size and mtime differ
    assert second.cached_short_hash(path) is None
    assert second.short_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    assert second.stats["computed"] == 1


def test_unreadable_cache_file_is_ignored(tmp_path: Path) -> None:
    store = tmp_path / "hashes.json"
    store.write_text("{not json")
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"x")
    assert HashCache(store).short_hash(path) == hashlib.sha256(b"x").hexdigest()[:10]


def test_folder_hash_is_the_denoiser_weights(tiny, tmp_path: Path) -> None:
    folder = tiny["sd1"]
    files = folder_weight_files(folder)
    assert files == [folder / "unet" / "diffusion_pytorch_model.safetensors"]
    assert HashCache(None).sha256(folder) == sha256_file(files[0])
    assert folder_weight_files(tiny["flux"])[0].parent.name == "transformer"
