"""Easel's LoRA writer: the metadata other tools read (kohya's `ss_*`, modelspec), read back with safetensors, and
what the LoRA list (the Models tab, /sdapi/v1/loras) and generation make of the same file."""
from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from tests.conftest import REPO, api_client
from tests.lora.conftest import UNET_ATTENTION
from tests.lora.lora_files import peft_layout, random_lora
from webui.model_manager.hashes import safetensors_payload_sha256
from webui.model_manager.identify import Arch
from webui.model_manager.lora_files import arch_from_metadata, describe_lora
from webui.model_manager.lora_writer import (BASE_MODELS, LoraMetadata, base_model_version, lora_file_tensors,
                                             read_metadata, tag_frequency, write_lora)

SAVED_AT = 1_700_000_000.0  # 2023-11-14T22:13:20+00:00
EXAMPLE = REPO / "models" / "Lora" / "easel-example-heart.safetensors"


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 60)).save(out, format="PNG")
    return out.getvalue()


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


@pytest.fixture
def sd1_tensors(sd1_modules) -> dict[str, torch.Tensor]:
    """A LoRA for the tiny SD 1.x UNet's attention, as the trainer writes one (PEFT names, alpha folded)."""
    unet, _ = sd1_modules
    return peft_layout(random_lora(unet, UNET_ATTENTION, rank=4, seed=3), "unet")


def test_sd1_metadata_read_back(tmp_path: Path, sd1_tensors: dict[str, torch.Tensor]) -> None:
    thumbnail = png(32, 16)
    tags = tag_frequency(["zqx style, a red cube", "zqx style, a blue ball", "zqx style"], "ds")
    meta = LoraMetadata(Arch.SD1, "ink-v1", rank=4, alpha=2, base_model="tiny-sd1", base_hash="0123456789",
                        trigger="zqx style", steps=10, max_steps=20, resolution=((64, 64), (64, 48)),
                        num_train_images=3, tag_frequency=tags, learning_rate=1e-4, seed=7,
                        started_at=1_699_999_000.25, alpha_folded=True, thumbnail=thumbnail)
    path = write_lora(tmp_path / "Lora" / "ink.safetensors", sd1_tensors, meta, saved_at=SAVED_AT)

    tensors, header = read(path)
    assert header == {
        "ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "2",
        "ss_base_model_version": "sd_v1", "ss_output_name": "ink-v1", "ss_training_started_at": "1699999000.250",
        "ss_steps": "10", "ss_max_train_steps": "20", "ss_resolution": "64x64,64x48", "ss_num_train_images": "3",
        "ss_tag_frequency": json.dumps({"ds": {"zqx style": 3, "a blue ball": 1, "a red cube": 1}}),
        "ss_learning_rate": "0.0001", "ss_seed": "7", "ss_sd_model_name": "tiny-sd1", "ss_sd_model_hash": "0123456789",
        "sshs_model_hash": safetensors_payload_sha256(path),  # AUTOMATIC1111's LoRA hash: the tensor bytes only
        "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.implementation": "diffusers", "modelspec.title": "ink-v1",
        "modelspec.date": "2023-11-14T22:13:20+00:00", "modelspec.resolution": "64x64",
        "modelspec.trigger_phrase": "zqx style",
        "modelspec.thumbnail": "data:image/png;base64," + base64.b64encode(thumbnail).decode(),
        "easel_trigger": "zqx style", "easel_alpha_folded": "true",
    }
    assert read_metadata(path) == header  # the header-only reader the LoRA list uses agrees
    assert tensors.keys() == sd1_tensors.keys()
    assert all(torch.equal(tensors[k], sd1_tensors[k]) for k in tensors)
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["ink.safetensors"]  # no temporary file left


def test_builtin_metadata_read_back(tmp_path: Path) -> None:
    """The shipped example LoRA's tensors (learned trigger vector included) written again: Easel's keys for the
    built-in model, and the same tensor bytes, so the same AUTOMATIC1111 hash."""
    if not EXAMPLE.is_file():
        pytest.skip("the example LoRA is not in models/Lora")
    shipped, _ = read(EXAMPLE)
    meta = LoraMetadata(Arch.EASEL, "heart", rank=8, alpha=8, base_model="easel-shapes", base_hash="aeb6a10104",
                        trigger="heart", steps=540, max_steps=540, resolution=((64, 64),), num_train_images=40)
    path = write_lora(tmp_path / "heart.safetensors", shipped, meta, saved_at=SAVED_AT)
    tensors, header = read(path)
    assert tensors.keys() == shipped.keys() and "bundle_emb.heart.string_to_param.*" in tensors
    assert header["sshs_model_hash"] == safetensors_payload_sha256(EXAMPLE)
    assert {k: v for k, v in header.items() if k.startswith(("ss_", "modelspec.", "easel_"))} == {
        "ss_network_module": "networks.lora", "ss_network_dim": "8", "ss_network_alpha": "8",
        "ss_base_model_version": "easel", "ss_output_name": "heart", "ss_steps": "540", "ss_max_train_steps": "540",
        "ss_resolution": "64x64", "ss_num_train_images": "40", "ss_sd_model_name": "easel-shapes",
        "ss_sd_model_hash": "aeb6a10104", "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "easel-shapes/lora", "modelspec.implementation": "easel",
        "modelspec.title": "heart", "modelspec.date": "2023-11-14T22:13:20+00:00", "modelspec.resolution": "64x64",
        "modelspec.trigger_phrase": "heart", "easel_trigger": "heart", "easel_base_model": "easel-shapes",
        "easel_base_hash": "aeb6a10104",
    }
    entry = describe_lora("heart", path)  # listed as the shipped one is
    assert (entry.arch, entry.format, entry.trigger_words, entry.rank) == (Arch.EASEL, "easel", ("heart",), 8)


def test_each_family_is_named_as_the_lora_list_reads_it() -> None:
    for arch in BASE_MODELS:
        meta = LoraMetadata(arch, "x", rank=4, alpha=4).to_dict(SAVED_AT)
        assert arch_from_metadata(meta) == arch, meta
    assert base_model_version(Arch.SD2, "v_prediction") == ("sd_v2", "stable-diffusion-v2-768-v/lora")
    assert base_model_version(Arch.SD3, "3.5 large") == ("sd3", "stable-diffusion-3.5-large/lora")
    assert base_model_version(Arch.FLUX, "schnell") == ("flux1", "flux-1-schnell/lora")
    assert base_model_version(Arch.SDXL) == ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora")
    with pytest.raises(ValueError, match="unknown"):
        base_model_version(Arch.UNKNOWN)


def test_plain_metadata_is_written_as_given(tmp_path: Path) -> None:
    tensors = {"lora_unet_a.lora_down.weight": torch.ones(2, 3), "lora_unet_a.alpha": torch.tensor(1.0)}
    assert read(write_lora(tmp_path / "a.safetensors", tensors, {"ss_output_name": "a"}))[1] == {"ss_output_name": "a"}
    assert read(write_lora(tmp_path / "b.safetensors", tensors))[1] == {}
    with pytest.raises(ValueError, match="'ss_steps'"):
        write_lora(tmp_path / "c.safetensors", tensors, {"ss_steps": 3})  # type: ignore[dict-item]
    assert not (tmp_path / "c.safetensors").exists() and not (tmp_path / ".c.safetensors.tmp").exists()
    folded = lora_file_tensors({"m.lora_A.weight": torch.ones(2, 3), "m.lora_B.weight": torch.ones(3, 2),
                                "bundle_emb.w.string_to_param.*": torch.ones(1, 4)}, "unet", scale=0.5)
    assert sorted(folded) == ["bundle_emb.w.string_to_param.*", "unet.m.lora_A.weight", "unet.m.lora_B.weight"]
    assert float(folded["unet.m.lora_B.weight"][0, 0]) == 0.5 and float(folded["unet.m.lora_A.weight"][0, 0]) == 1.0


def test_the_lora_list_and_generation_read_the_written_file(make_easel, sd1_tensors) -> None:
    """/sdapi/v1/loras shows the file's own metadata (JSON values decoded), the Models tab its family, hash and
    trigger word, the preview is the thumbnail, and `<lora:ink:1>` changes the image."""
    from webui.model_manager.lora_files import preview_image
    from webui.ui.tabs.models import lora_rows

    easel = make_easel()
    path = write_lora(easel.settings.models_dir / "Lora" / "ink.safetensors", sd1_tensors,
                      LoraMetadata(Arch.SD1, "ink-v1", rank=4, alpha=4, base_model="tiny-sd1", trigger="zqx",
                                   resolution=((64, 64),), tag_frequency=tag_frequency(["zqx, a cube"], "ds"),
                                   alpha_folded=True, thumbnail=png(32, 16)))
    header = read_metadata(path)
    with api_client(easel) as client:
        assert client.post("/sdapi/v1/refresh-loras").status_code == 200
        (row,) = client.get("/sdapi/v1/loras").json()
        assert row["metadata"] == {**header, "ss_tag_frequency": {"ds": {"zqx": 1, "a cube": 1}}}
        assert (row["name"], row["alias"], row["arch"], row["format"], row["trigger_words"]) == \
            ("ink", "ink-v1", "sd1", "peft", ["zqx"])
        assert row["hash"] == header["sshs_model_hash"][:12]
        entry = easel.manager.find_lora("ink")
        assert lora_rows([entry]) == [["ink", "SD 1.x", header["sshs_model_hash"][:12], "zqx"]]
        assert preview_image(entry).size == (32, 16)

        body = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2, "seed": 3, "sampler_name": "Euler",
                "override_settings": {"sd_model_checkpoint": "tiny-sd1"}}
        plain = client.post("/sdapi/v1/txt2img", json=body).json()
        styled = client.post("/sdapi/v1/txt2img", json={**body, "prompt": "a red cube <lora:ink:1>"}).json()

    def image(result: dict) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(result["images"][0]))).convert("RGB"), dtype=int)

    assert np.abs(image(styled) - image(plain)).max() > 0
    assert f'Lora hashes: "ink: {row["hash"]}"' in json.loads(styled["info"])["infotexts"][0]
