"""Fixtures for the model manager tests: tiny models of every family, built once per session.

`tiny` maps a family name to a saved tiny diffusers folder (built lazily, once); `manager_world(...)` lays out
checkpoint / diffusers / VAE / LoRA / built-in folders under a test's tmp_path and builds a ModelManager over
them, the way webui.app does for users.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from tests.tiny_models import TINY_BUILDERS


class TinyModels:
    """Family name -> tiny diffusers folder, created on first use (seed 0) and shared by the session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[tuple[str, int], Path] = {}

    def __call__(self, family: str, seed: int = 0) -> Path:
        key = (family, seed)
        if key not in self._made:
            self._made[key] = TINY_BUILDERS[family](self.root / f"{family}-{seed}", seed=seed)
        return self._made[key]

    def __getitem__(self, family: str) -> Path:
        return self(family)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    return TinyModels(tmp_path_factory.mktemp("tiny-models"))


@dataclass
class World:
    root: Path
    checkpoints: Path
    diffusers: Path
    vae: Path
    lora: Path
    builtin: Path

    def manager(self, **kwargs):
        from webui.model_manager.manager import ModelManager

        options = {"hash_cache_path": self.root / "hashes.json", "cache_dir": self.root / "cache",
                   "checkpoint_dirs": [self.checkpoints], "diffusers_dirs": [self.diffusers], "vae_dirs": [self.vae],
                   "lora_dirs": [self.lora], "builtin_dirs": [self.builtin]}
        options.update(kwargs)  # a test may replace any folder list
        return ModelManager(**options)

    def install_folder(self, source: Path, name: str) -> Path:
        return Path(shutil.copytree(source, self.diffusers / name))

    def install_single_file(self, folder: Path, name: str, saver: Callable[[Path, Path], Path],
                            with_config: bool = True) -> Path:
        """Write `folder` as an original-layout file `name`.safetensors, with a `<name>.config/` sidecar."""
        path = self.checkpoints / f"{name}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        saver(folder, path)
        if with_config:
            shutil.copytree(folder, path.with_name(path.stem + ".config"),
                            ignore=shutil.ignore_patterns("*.safetensors"))
        return path


@pytest.fixture
def world(tmp_path: Path) -> World:
    dirs = {name: tmp_path / name for name in ("checkpoints", "diffusers", "vae", "lora", "builtin")}
    for path in dirs.values():
        path.mkdir()
    return World(root=tmp_path, **dirs)
