"""GGUF files in models/diffusion_models and models/unet generate through /sdapi/v1, like any checkpoint."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.api.conftest import TINY, open_b64
from tests.conftest import api_client
from tests.tiny_formats import flux_folder_original_state, save_gguf, sdxl_unet_original_state


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.tiny_models import make_tiny_flux, make_tiny_sdxl, save_sdxl_single_file

    root = tmp_path_factory.mktemp("formats")
    flux, sdxl = make_tiny_flux(root / "tiny-flux"), make_tiny_sdxl(root / "tiny-sdxl")
    single = save_sdxl_single_file(sdxl, root / "sdxl-full.safetensors")
    return {"flux": flux, "sdxl": sdxl, "sdxl-file": single}


def test_gguf_flux_and_sdxl_files_generate_through_the_api(make_easel, tiny_dirs: dict[str, Path]) -> None:
    easel = make_easel(install_sd1=False)
    models = easel.settings.data_dir / "models"
    shutil.copytree(tiny_dirs["flux"], models / "diffusers" / "flux-base")
    shutil.copytree(tiny_dirs["sdxl"], models / "diffusers" / "sdxl-base")
    save_gguf(flux_folder_original_state(tiny_dirs["flux"]), models / "diffusion_models" / "flux1-dev-Q8_0.gguf",
              "Q8_0", arch="flux")
    save_gguf(sdxl_unet_original_state(tiny_dirs["sdxl-file"]), models / "unet" / "sdxl-Q4_0.gguf", "Q4_0",
              arch="sdxl")
    easel.manager.refresh()
    with api_client(easel) as client:
        listed = {m["model_name"]: m for m in client.get("/sdapi/v1/sd-models").json()}
        assert {"flux1-dev-Q8_0", "sdxl-Q4_0"} <= set(listed)
        images = {}
        for name in ("flux1-dev-Q8_0", "sdxl-Q4_0", "flux-base"):
            response = client.post("/sdapi/v1/txt2img", json={"prompt": "a red cube", "seed": 3, **TINY,
                                                              "override_settings": {"sd_model_checkpoint": name}})
            assert response.status_code == 200, response.text
            image = open_b64(response.json()["images"][0])
            assert image.size == (64, 64)
            images[name] = image
    loaded = easel.manager.get("flux1-dev-Q8_0", "txt2img").pipe.transformer
    assert type(loaded.transformer_blocks[0].attn.to_q).__name__ == "GGUFLinear"
    import numpy as np

    difference = np.abs(np.asarray(images["flux1-dev-Q8_0"], dtype=float) - np.asarray(images["flux-base"], dtype=float))
    assert difference.max() <= 8  # Q8_0 of the same weights: the same picture within a few levels of 255


def test_precision_flag_parses_and_picks_the_compute_dtype() -> None:
    import torch

    from webui.settings import Settings, build_parser, settings_from_args

    args = build_parser().parse_args(["--precision", "fp8", "--device", "cpu"])
    settings = settings_from_args(args)
    assert settings.weight_storage() == "fp8" and settings.resolved_dtype() == torch.bfloat16
    assert Settings(precision="full").weight_storage() == ""
    assert any(p.name == "diffusion_models" for p in settings.checkpoint_dirs())
    assert [p.name for p in settings.text_encoder_dirs()] == ["text_encoders", "clip"]


def test_bitsandbytes_precision_without_cuda_stops_the_launch_naming_the_flag(tmp_path: Path, caplog) -> None:
    from webui.app import main

    with pytest.raises(SystemExit) as stopped:
        main(["--precision", "nf4", "--device", "cpu", "--data-dir", str(tmp_path), "--nowebui"])
    assert stopped.value.code == 2
    assert "--precision nf4" in caplog.text and "CUDA" in caplog.text
    assert not (tmp_path / "models").exists()  # refused before anything was built


def test_sd3_zimage_qwen_and_sdxl_assembled_from_separate_files_generate_through_the_api(make_easel,
                                                                                          tmp_path: Path) -> None:
    """One Easel with no diffusers folder of these families: each GGUF denoiser, with its text encoders and VAE
    as separate files, is listed, complete, and answers txt2img. The tiny families' CLIP encoders differ in size,
    so each family's separate files replace the previous family's (a user's clip_l.safetensors serves them all)."""
    from tests.tiny_formats import install_separate_files
    from tests.tiny_models import make_tiny_qwenimage, make_tiny_sd3, make_tiny_sdxl, make_tiny_zimage

    easel = make_easel(install_sd1=False)
    models = easel.settings.data_dir / "models"
    builders = {"sd3": make_tiny_sd3, "zimage": make_tiny_zimage, "qwenimage": make_tiny_qwenimage,
                "sdxl": make_tiny_sdxl}
    with api_client(easel) as client:
        for family, build in builders.items():
            for shared in ("text_encoders", "VAE"):
                shutil.rmtree(models / shared, ignore_errors=True)
            name = install_separate_files(family, build(tmp_path / f"tiny-{family}"), models)
            easel.manager.refresh()
            assert name in {m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()}
            entry = easel.manager.find_checkpoint(name)
            assert easel.manager.missing_components(entry) == [], (family, easel.manager.missing_components(entry))
            response = client.post("/sdapi/v1/txt2img", json={"prompt": "a red cube", "seed": 3, **TINY,
                                                              "override_settings": {"sd_model_checkpoint": name}})
            assert response.status_code == 200, (family, response.text)
            image = open_b64(response.json()["images"][0])
            assert image.size == (64, 64) and len(set(image.getdata())) > 1, family
            pipe = easel.manager.get(name, "txt2img").pipe
            denoiser = getattr(pipe, "transformer", None) or pipe.unet
            assert any(type(m).__name__ == "GGUFLinear" for m in denoiser.modules()), family
