"""`launch.py train config.yaml` (webui.training.cli.main): trains, resumes, and exits 2 on a bad config."""
from __future__ import annotations

from pathlib import Path

from tests.training.conftest import make_dataset
from webui.training.cli import main
from webui.training.trainer import read_metadata


def test_cli_trains_and_reports_bad_configs(tiny_easel_dir: Path, tmp_path: Path, capsys) -> None:
    make_dataset(tmp_path / "data" / "ds")
    config = tmp_path / "c.yaml"
    config.write_text(f"base_model: {tiny_easel_dir}\ndataset: data/ds\ntrigger: zork\noutput_name: cli\n"
                      "steps: 2\nbatch_size: 2\nrank: 4\n")
    assert main([str(config), "--data-dir", str(tmp_path)]) == 0
    out = tmp_path / "models" / "Lora" / "cli.safetensors"
    assert read_metadata(out)["ss_steps"] == "2"
    assert main([str(config), "--data-dir", str(tmp_path), "--steps", "3"]) == 0  # resumes from step 2
    assert read_metadata(out)["ss_steps"] == "3"
    assert "done at step 3/3" in capsys.readouterr().out

    config.write_text("base_model: x\ndataset: data/ds\nrank: 0\n")
    assert main([str(config), "--data-dir", str(tmp_path)]) == 2
    assert "rank: must be at least 1" in capsys.readouterr().err
    config.write_text(f"base_model: {tiny_easel_dir}\ndataset: data/none\n")
    assert main([str(config), "--data-dir", str(tmp_path)]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
