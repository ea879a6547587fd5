"""Tiny StyleGAN generators saved as a user has them (tests/tiny_gan.py), and an Easel with them in models/GAN."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture(scope="session")
def gan_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> file: StyleGAN2 64 px (safetensors, and the same tensors as a pickle), a 5-class StyleGAN2, and
    StyleGAN3 T and R generators (32 px, one conditional)."""
    from tests import tiny_gan

    root = tmp_path_factory.mktemp("gan")
    sg2 = tiny_gan.tiny_state("stylegan2", resolution=64)
    return {
        "sg2-64": tiny_gan.save_safetensors(root / "sg2-64.safetensors", sg2),
        "sg2-64-pkl": tiny_gan.save_pickle(root / "sg2-64-pkl.pkl", sg2),
        "sg2-cond": tiny_gan.save_safetensors(root / "sg2-cond.safetensors",
                                              tiny_gan.tiny_state("stylegan2", seed=1, resolution=32, c_dim=5)),
        "sg3-t": tiny_gan.save_safetensors(root / "sg3-t.safetensors", tiny_gan.tiny_state("stylegan3-t", seed=2)),
        "sg3-r-cond": tiny_gan.save_safetensors(root / "sg3-r-cond.safetensors",
                                                tiny_gan.tiny_state("stylegan3-r", seed=3, c_dim=4)),
    }


@pytest.fixture
def gan_easel(make_easel, tmp_path: Path, gan_files: dict[str, Path]) -> Callable:
    """An Easel with the named tiny generators in models/GAN (and the tiny SD 1.x model when asked)."""
    def build(*names: str, install_sd1: bool = False, extra: dict[str, Path] | None = None):
        folder = tmp_path / "data" / "models" / "GAN"
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(gan_files[name], folder / gan_files[name].name)
        for name, path in (extra or {}).items():
            shutil.copy(path, folder / name)
        return make_easel(install_sd1=install_sd1)

    return build
