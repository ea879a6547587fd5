"""Safe loading: a pickle checkpoint whose unpickling would create a file never runs, whatever is asked; the
converter refuses it with a clear message and converts a tensors-only one, which then loads and generates;
a broken or wrong-architecture .safetensors chosen through the API gives an error naming the file and the
previous model keeps working.

The manager-level checks for truncated and mismatched files live in tests/model_manager/test_manager.py; these
tests go through what a user or a client touches: the API, the engine's load jobs, the Models tab's converter and
the command line.
"""
from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.security.conftest import TINY, write_malicious_checkpoint
from webui.engine.worker import JobState
from webui.model_manager.convert import ConversionError, convert_checkpoint, main as convert_main
from webui.model_manager.errors import ModelLoadError


class Opaque:
    """An ordinary class: harmless, but nothing the weights-only unpickler may rebuild."""


@pytest.fixture
def evil(api_client, tmp_path):
    """An Easel (API client beside it) whose checkpoint, VAE and LoRA folders hold code-running pickles."""
    easel, client = api_client(api=True)
    marker = tmp_path / "pwned.txt"
    models = easel.settings.models_dir
    paths = [write_malicious_checkpoint(models / "Stable-diffusion" / "evil.ckpt", marker)]
    for folder, name in (("Stable-diffusion", "evil2.pt"), ("Stable-diffusion", "evil3.bin"),
                         ("Stable-diffusion", "evil4.pth"), ("VAE", "evil-vae.pt"), ("Lora", "evil-lora.pt"),
                         ("embeddings", "evil-embedding.pt")):
        paths.append(write_malicious_checkpoint(models / folder / name, marker))
    easel.manager.refresh()
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    return easel, client, marker, paths


def test_a_malicious_pickle_never_runs(evil) -> None:
    easel, client, marker, _ = evil
    names = {e.name: e for e in easel.manager.checkpoints()}
    for name in ("evil", "evil2", "evil3", "evil4"):
        assert not names[name].supported and "pickle" in names[name].reason

    # The model manager and the engine's load job (what the Models tab's Load button queues).
    with pytest.raises(ModelLoadError, match="pickle"):
        easel.manager.get("evil", "txt2img")
    job = easel.engine.load("evil", None, source="ui")
    assert job.state == JobState.FAILED and "pickle" in (job.error or "")

    # The API: switching the model, a per-request override, listings that read the folders, a pickle VAE/LoRA.
    switched = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "evil"})
    assert switched.status_code == 422 and switched.json()["field"] == "sd_model_checkpoint"
    assert "pickle" in switched.json()["detail"]
    for name in ("evil2", "evil.ckpt", "Stable-diffusion/evil3.bin"):
        response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY,
                                                          "override_settings": {"sd_model_checkpoint": name}})
        assert response.status_code in (404, 422), (name, response.text)
    vae = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "override_settings": {"sd_vae": "evil-vae"}})
    assert vae.status_code == 404 and vae.json()["field"] == "override_settings.sd_vae"
    for path in ("/sdapi/v1/sd-models", "/sdapi/v1/sd-vae", "/sdapi/v1/loras", "/sdapi/v1/embeddings",
                 "/sdapi/v1/options"):
        assert client.get(path).status_code == 200, path
    lora = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat <lora:evil-lora:1>", **TINY, "steps": 1})
    assert lora.status_code < 500, lora.text

    # The converter, from the Models tab and the command line, refuses it and writes nothing.
    with pytest.raises(ConversionError) as caught:
        easel.convert_checkpoint("evil")
    message = str(caught.value)
    assert "evil.ckpt" in message and "refused" in message and "unsupported object io.open" in message
    assert "safetensors version" in message and "weights_only" not in message
    assert convert_main([str(easel.settings.models_dir / "Stable-diffusion" / "evil2.pt")]) == 1
    assert not list(easel.settings.models_dir.rglob("evil*.safetensors"))
    assert not list(easel.settings.models_dir.rglob("*.tmp"))

    assert not marker.exists()
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "still fine", **TINY}).status_code == 200


def test_other_pickled_objects_and_non_checkpoints_are_refused(tmp_path) -> None:
    odd = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": Opaque()}, str(odd))  # a class it does not know
    with pytest.raises(ConversionError, match="refused"):
        convert_checkpoint(odd)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04 a broken zip archive")
    with pytest.raises(ConversionError, match="not a readable PyTorch checkpoint"):
        convert_checkpoint(junk)
    empty = tmp_path / "empty.pth"
    torch.save({"step": 3}, str(empty))
    with pytest.raises(ConversionError, match="holds no tensors"):
        convert_checkpoint(empty)
    with pytest.raises(ConversionError, match="only pickle checkpoints"):
        convert_checkpoint(tmp_path / "model.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.pth", "junk.pt", "odd.ckpt"]


def test_a_tensors_only_checkpoint_converts_and_loads(api_client, tiny_sd1_dir, tmp_path) -> None:
    from tests.tiny_models import save_sd1_single_file

    easel, client = api_client(api=True)
    folder = easel.settings.models_dir / "Stable-diffusion"
    reference = save_sd1_single_file(tiny_sd1_dir, tmp_path / "reference.safetensors")
    tensors = load_file(str(reference))
    legacy = folder / "legacy.ckpt"
    torch.save({"state_dict": tensors, "global_step": 470000, "epoch": 6}, str(legacy))  # the usual .ckpt shape
    shutil.copytree(tiny_sd1_dir, folder / "legacy.config", ignore=shutil.ignore_patterns("*.safetensors"))
    easel.manager.refresh()

    target = easel.convert_checkpoint("legacy")
    assert target == folder / "legacy.safetensors"
    converted = load_file(str(target))
    assert converted.keys() == tensors.keys()
    assert all(torch.equal(converted[k], tensors[k]) for k in tensors)
    with pytest.raises(ConversionError, match="already exists"):
        convert_checkpoint(legacy)

    entry = easel.manager.find_checkpoint("legacy.safetensors")
    assert entry.supported and entry.path == target
    switched = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "legacy.safetensors"})
    assert switched.status_code == 200, switched.text
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "converted", **TINY})
    assert response.status_code == 200
    assert easel.manager.current().path == target


def test_broken_safetensors_name_the_file_and_the_previous_model_stays(api_client, tiny_sd1_dir, tmp_path) -> None:
    from tests.tiny_models import make_tiny_sd2, save_sd1_single_file, save_sd2_single_file

    easel, client = api_client(api=True)
    folder = easel.settings.models_dir / "Stable-diffusion"
    good = save_sd1_single_file(tiny_sd1_dir, tmp_path / "good.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (folder / "garbage.safetensors").write_bytes(b"\xff" * 64)
    sd2 = make_tiny_sd2(tmp_path / "tiny-sd2")
    save_sd2_single_file(sd2, folder / "wrong-arch.safetensors")
    shutil.copytree(tiny_sd1_dir, folder / "wrong-arch.config", ignore=shutil.ignore_patterns("*.safetensors"))
    easel.manager.refresh()

    first = client.post("/sdapi/v1/txt2img", json={"prompt": "before", "seed": 5, **TINY})
    assert first.status_code == 200
    before = easel.manager.current().name
    for name in ("truncated", "garbage", "wrong-arch"):
        response = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": name})
        assert 400 <= response.status_code < 500, (name, response.text)
        body = response.json()
        assert body["field"] == "sd_model_checkpoint" and f"{name}.safetensors" in body["detail"], body
        job = easel.engine.load(name, None, source="ui")
        assert job.state == JobState.FAILED and f"{name}.safetensors" in (job.error or "")
        assert easel.manager.current().name == before
    again = client.post("/sdapi/v1/txt2img", json={"prompt": "before", "seed": 5, **TINY})
    assert again.status_code == 200 and again.json()["images"] == first.json()["images"]
