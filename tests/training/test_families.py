"""LoRA training on tiny diffusers models of each family: a couple of steps, and the file loads back in diffusers.

The SD 1.x test always runs; SDXL, SD3, Flux and Z-Image take longer on a shared CPU and are marked slow.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training.conftest import make_dataset
from webui.training.config import config_from_dict
from webui.training.folders import TrainingFolders
from webui.training.trainer import train

SIZE = 32


def run_family(builder, tmp_path: Path, prompt_kwargs: dict | None = None) -> None:
    """Train on the tiny model in the data folder `tmp_path` (models/diffusers/base), dataset in data/ds, LoRA in
    models/Lora/out."""
    from diffusers import DiffusionPipeline

    base = builder(tmp_path / "models" / "diffusers" / "base")
    dataset = make_dataset(tmp_path / "data" / "ds", n=2, size=(SIZE, SIZE))
    folders = TrainingFolders.under(tmp_path)
    config = config_from_dict({"base_model": "base", "dataset": "data/ds", "trigger": "zork",
                               "output_dir": "models/Lora/out", "output_name": "fam", "steps": 2,
                               "batch_size": 2, "rank": 4, "alpha": 8, "learning_rate": 5e-2,
                               "resolution": [SIZE], "caption_dropout": 0.0}, folders=folders)
    assert config.dataset == dataset
    result = train(config, search_dirs=list(folders.models))
    assert result.step == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    pipe = DiffusionPipeline.from_pretrained(str(base))
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"prompt": "a zork", "height": SIZE, "width": SIZE, "num_inference_steps": 2, "output_type": "np",
              **(prompt_kwargs or {})}
    before = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    pipe.load_lora_weights(str(result.path.parent), weight_name=result.path.name, adapter_name="trained")
    assert "trained" in sum(pipe.get_list_adapters().values(), [])
    after = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    assert abs(after - before).max() > 1e-6  # the trained (non-zero lora_B) adapter changes the output


def test_sd1_lora_loads_in_diffusers(tmp_path: Path) -> None:
    from tests.tiny_models import make_tiny_sd1
    from webui.training.trainer import read_metadata

    run_family(make_tiny_sd1, tmp_path)
    meta = read_metadata(tmp_path / "models" / "Lora" / "out" / "fam.safetensors")
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_network_dim"] == "4"
    assert meta["modelspec.trigger_phrase"] == "zork" and "easel_base_model" not in meta


@pytest.mark.parametrize("key", ["prior_preservation", "differential_preservation", "trigger_embedding"])
def test_preservation_is_refused_for_other_families(key: str, tmp_path: Path) -> None:
    from tests.tiny_models import make_tiny_sd1
    from webui.training.config import ConfigError

    make_tiny_sd1(tmp_path / "models" / "diffusers" / "base")
    make_dataset(tmp_path / "data" / "ds", n=1)
    config = config_from_dict({"base_model": "base", "dataset": "data/ds",
                               "trigger": "zork", "output_dir": "models/Lora/out", "steps": 1,
                               key: True if key == "trigger_embedding" else 1.0, "preservation_words": ["cross"]},
                              base_dir=tmp_path)
    with pytest.raises(ConfigError) as info:
        train(config, search_dirs=list(TrainingFolders.under(tmp_path).models))
    assert info.value.field == key and "built-in model" in str(info.value)
    assert not (tmp_path / "models" / "Lora").exists()  # refused before anything was written


def test_sd1_single_file_checkpoint_as_base(tmp_path: Path) -> None:
    """An AUTOMATIC1111-style checkpoint file (with its `<name>.config/` folder, as tiny models need) trains too."""
    import shutil

    from tests.tiny_models import make_tiny_sd1, save_sd1_single_file
    from webui.training.trainer import read_metadata

    folder = make_tiny_sd1(tmp_path / "folder")
    checkpoints = tmp_path / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True)
    save_sd1_single_file(folder, checkpoints / "tiny.safetensors")
    shutil.copytree(folder, checkpoints / "tiny.config", ignore=shutil.ignore_patterns("*.safetensors"))
    make_dataset(tmp_path / "data" / "ds", n=2, size=(SIZE, SIZE))
    config = config_from_dict({"base_model": "tiny", "dataset": "data/ds", "trigger": "zork",
                               "output_name": "file", "steps": 1, "batch_size": 2, "rank": 4,
                               "resolution": [SIZE]}, base_dir=tmp_path)
    result = train(config, search_dirs=[checkpoints])
    assert result.path == tmp_path / "models" / "Lora" / "file.safetensors"
    meta = read_metadata(result.path)
    assert meta["ss_sd_model_name"] == "tiny.safetensors" and meta["ss_base_model_version"] == "sd_v1"
    assert len(meta["ss_sd_model_hash"]) == 10


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux", "zimage"])
def test_transformer_families_lora_loads_in_diffusers(family: str, tmp_path: Path) -> None:
    from tests import tiny_models

    extra = {"max_sequence_length": 32} if family in ("sd3", "flux") else {}
    run_family(getattr(tiny_models, f"make_tiny_{family}"), tmp_path, extra)
