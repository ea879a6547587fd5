"""Model hashes as AUTOMATIC1111 shows them, computed once per file version and remembered on disk.

The short hash is the first 10 hex digits of the SHA-256 of the whole file — the "Model hash" in infotext and
the `[abcdef1234]` in checkpoint titles, so the same file gets the same hash in Easel and AUTOMATIC1111. Hashing
a multi-gigabyte checkpoint takes a while, so results live in a JSON file keyed by absolute path and checked
against the file's size and modification time: a file is hashed again only after it changes.

A diffusers folder has no single file. Its hash is taken over its main weights, the denoiser: the bytes of the
`*.safetensors` files in `unet/` or `transformer/` (falling back to `*.bin`), concatenated in file-name order.
For the usual unsharded folder that is exactly the SHA-256 of `diffusion_pytorch_model.safetensors`.

LoRAs are hashed the way AUTOMATIC1111 hashes them for `Lora hashes:` (kohya's "addnet" hash): the SHA-256 of
the tensor bytes only, after the 8-byte length and the JSON header, so editing a file's metadata keeps its hash;
the short form is the first 12 hex digits. `HashCache.sha256(path, payload=True)` computes and remembers it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SHORT_HASH_LENGTH = 10
LORA_SHORT_HASH_LENGTH = 12
_CHUNK = 1 << 20


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def safetensors_payload_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a .safetensors file's tensor bytes (everything after the length prefix and the header)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path}: too short for a safetensors file")
        fh.seek(8 + int.from_bytes(prefix, "little"))
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_weight_files(folder: Path) -> list[Path]:
    """The files whose bytes stand for a diffusers folder: its denoiser weights, in name order."""
    folder = Path(folder)
    for component in ("unet", "transformer"):
        sub = folder / component
        if sub.is_dir():
            for pattern in ("*.safetensors", "*.bin"):
                files = sorted(p for p in sub.glob(pattern) if p.is_file())
                if files:
                    return files
    files = sorted(p for p in folder.rglob("*.safetensors") if p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no weight files to hash")
    return files


def sha256_files(paths: list[Path]) -> str:
    """Hex SHA-256 of the concatenated bytes of several files, in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _fingerprint(path: Path) -> tuple[list[str], int, int]:
    """The files behind `path`, their total size and newest mtime (ns): what invalidates a cached hash."""
    files = folder_weight_files(path) if path.is_dir() else [path]
    stats = [f.stat() for f in files]
    return [str(f) for f in files], sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats)


class HashCache:
    """SHA-256 of model files and folders, persisted as JSON at `path` (None: kept in memory only).

    `stats["computed"]` counts real hash computations, which tests and the Models tab can show.
    Safe to share between threads.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.stats = {"computed": 0}
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = self._load()

    def _load(self) -> dict[str, dict]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("ignoring unreadable hash cache %s: %s", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".hashes.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self._entries, fh, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    def cached_sha256(self, path: Path, payload: bool = False) -> str | None:
        """The remembered hash if the file is unchanged since it was hashed; never computes."""
        key = _key(path, payload)
        try:
            _, size, mtime = _fingerprint(Path(path))
        except (OSError, FileNotFoundError):
            return None
        with self._lock:
            entry = self._entries.get(key)
        if entry and entry.get("size") == size and entry.get("mtime_ns") == mtime:
            return str(entry["sha256"])
        return None

    def sha256(self, path: Path, payload: bool = False) -> str:
        """The file's (or folder's) SHA-256, computed only if unknown or the file changed. `payload`: the hash of a
        .safetensors file's tensor bytes only (AUTOMATIC1111's LoRA hash)."""
        path = Path(path)
        cached = self.cached_sha256(path, payload)
        if cached is not None:
            return cached
        files, size, mtime = _fingerprint(path)
        log.info("hashing %s", path)
        digest = safetensors_payload_sha256(path) if payload else sha256_files([Path(f) for f in files])
        with self._lock:
            self.stats["computed"] += 1
            self._entries[_key(path, payload)] = {"sha256": digest, "size": size, "mtime_ns": mtime}
            self._save()
        return digest

    def short_hash(self, path: Path) -> str:
        """AUTOMATIC1111's short model hash: the first 10 hex digits of the SHA-256."""
        return self.sha256(path)[:SHORT_HASH_LENGTH]

    def cached_short_hash(self, path: Path) -> str | None:
        full = self.cached_sha256(path)
        return full[:SHORT_HASH_LENGTH] if full else None

    def lora_short_hash(self, path: Path) -> str:
        """AUTOMATIC1111's short LoRA hash: the first 12 hex digits of the tensor-bytes SHA-256."""
        return self.sha256(path, payload=True)[:LORA_SHORT_HASH_LENGTH]

    def cached_lora_short_hash(self, path: Path) -> str | None:
        full = self.cached_sha256(path, payload=True)
        return full[:LORA_SHORT_HASH_LENGTH] if full else None


def _key(path: Path, payload: bool) -> str:
    key = str(Path(path).resolve())
    return key + "#payload" if payload else key
