"""`launch.py train config.yaml` (webui.training.cli.main): trains, resumes, and exits 2 on a bad config; an
existing LoRA of the output name that is not the run's own is kept (the run saves beside it) unless --replace."""
from __future__ import annotations

import shutil
from pathlib import Path

from tests.training.conftest import make_dataset
from webui.training.cli import main
from webui.training.trainer import read_metadata


def test_cli_trains_and_reports_bad_configs(tiny_easel_dir: Path, tmp_path: Path, capsys) -> None:
    make_dataset(tmp_path / "data" / "ds")
    shutil.copytree(tiny_easel_dir, tmp_path / "models" / "builtin" / "tiny-easel")  # the data folder's models/
    config = tmp_path / "c.yaml"
    config.write_text("base_model: tiny-easel\ndataset: data/ds\ntrigger: zork\noutput_name: cli\n"
                      "steps: 2\nbatch_size: 2\nrank: 4\n")
    assert main([str(config), "--data-dir", str(tmp_path)]) == 0
    out = tmp_path / "models" / "Lora" / "cli.safetensors"
    assert read_metadata(out)["ss_steps"] == "2"
    assert main([str(config), "--data-dir", str(tmp_path), "--steps", "3"]) == 0  # resumes from step 2
    assert read_metadata(out)["ss_steps"] == "3"
    assert "done at step 3/3" in capsys.readouterr().out

    config.write_text("base_model: tiny-easel\ndataset: data/ds\nrank: 0\n")
    assert main([str(config), "--data-dir", str(tmp_path)]) == 2
    assert "rank: must be at least 1" in capsys.readouterr().err
    config.write_text("base_model: tiny-easel\ndataset: data/none\n")
    assert main([str(config), "--data-dir", str(tmp_path)]) == 2
    assert "dataset: must be a folder inside data/ (in Easel's data folder), got 'data/none'" in capsys.readouterr().err


def test_cli_keeps_a_lora_that_is_not_its_own(tiny_easel_dir: Path, tmp_path: Path, capsys) -> None:
    make_dataset(tmp_path / "data" / "ds")
    shutil.copytree(tiny_easel_dir, tmp_path / "models" / "builtin" / "tiny-easel")
    loras = tmp_path / "models" / "Lora"
    loras.mkdir(parents=True)
    (loras / "mine.safetensors").write_bytes(b"someone else's LoRA")
    config = tmp_path / "c.yaml"
    config.write_text("base_model: tiny-easel\ndataset: data/ds\ntrigger: zork\noutput_name: mine\nsteps: 1\n"
                      "batch_size: 2\nrank: 4\n")
    assert main([str(config), "--data-dir", str(tmp_path)]) == 0
    assert (loras / "mine.safetensors").read_bytes() == b"someone else's LoRA"
    assert read_metadata(loras / "mine-1.safetensors")["ss_output_name"] == "mine-1"
    assert "saving as mine-1: mine.safetensors already exists" in capsys.readouterr().out
    assert main([str(config), "--data-dir", str(tmp_path), "--steps", "2"]) == 0  # resumes mine-1, its own
    assert read_metadata(loras / "mine-1.safetensors")["ss_steps"] == "2"
    assert not (loras / "mine-2.safetensors").exists()
    assert main([str(config), "--data-dir", str(tmp_path), "--replace"]) == 0  # the owner's explicit choice
    assert read_metadata(loras / "mine.safetensors")["ss_output_name"] == "mine"
