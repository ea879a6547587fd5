"""The training config: YAML in, a checked frozen dataclass out; every error names its field."""
from __future__ import annotations

from pathlib import Path

import pytest

from webui.training.config import ConfigError, TrainConfig, config_from_dict, config_from_yaml, load_config

BASE = {"base_model": "easel-shapes", "dataset": "data/ds"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A data folder with the dataset folder `data/ds` (datasets must exist, inside data/)."""
    (tmp_path / "data" / "ds").mkdir(parents=True)
    return tmp_path


def test_yaml_round_trip_resolves_paths(home: Path) -> None:
    tmp_path = home
    path = tmp_path / "c.yaml"
    path.write_text("base_model: easel-shapes\ndataset: data/ds\ntrigger: zork\nrank: 4\nalpha: 2\n"
                    "learning_rate: 1e-4\nresolution: [64, [96, 64]]\nsample_prompts: [\"a [trigger]\"]\n")
    config = load_config(path, base_dir=tmp_path)
    assert isinstance(config, TrainConfig)
    assert config.dataset == tmp_path / "data" / "ds"
    assert config.output_dir == tmp_path / "models" / "Lora"
    assert config.output_path == tmp_path / "models" / "Lora" / "my-lora.safetensors"
    assert config.resolution == ((64, 64), (96, 64))
    assert config.learning_rate == 1e-4 and config.alpha == 2.0 and config.rank == 4
    assert config.caption("a [trigger]") == "a zork"
    again = config_from_dict(config.to_dict(), base_dir=tmp_path)
    assert again == config
    with pytest.raises(AttributeError):
        config.rank = 3  # type: ignore[misc]


@pytest.mark.parametrize("changes, field", [
    ({"rank": 0}, "rank"),
    ({"rank": "eight"}, "rank"),
    ({"alpha": -1}, "alpha"),
    ({"learning_rate": 0}, "learning_rate"),
    ({"optimizer": "sgd"}, "optimizer"),
    ({"steps": 0}, "steps"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"resolution": [60]}, "resolution"),
    ({"resolution": ["big"]}, "resolution"),
    ({"caption_dropout": 1.5}, "caption_dropout"),
    ({"sample_prompts": "a [trigger]"}, "trigger"),
    ({"output_name": "../escape"}, "output_name"),
    ({"precision": "fp8"}, "precision"),
    ({"save_every": -1}, "save_every"),
    ({"prior_preservation": -0.5}, "prior_preservation"),
    ({"prior_preservation": "lots"}, "prior_preservation"),
    ({"differential_preservation": -1, "trigger": "zork", "preservation_words": ["cross"]},
     "differential_preservation"),
    ({"differential_preservation": 1, "preservation_words": ["cross"]}, "differential_preservation"),
    ({"differential_preservation": 1, "trigger": "zork"}, "preservation_words"),
    ({"differential_preservation": 1, "trigger": "zork", "preservation_words": ["big zork"]}, "preservation_words"),
    ({"preservation_words": [3]}, "preservation_words"),
    ({"preservation_batch_size": -1}, "preservation_batch_size"),
    ({"trigger_embedding": "yes", "trigger": "zork"}, "trigger_embedding"),
    ({"trigger_embedding": True}, "trigger_embedding"),
    ({"trigger_embedding": True, "trigger": "red zork"}, "trigger_embedding"),
    ({"rank": True}, "rank"),
    ({"trigger_embedding_lr": -1e-3}, "trigger_embedding_lr"),
    ({"learnin_rate": 1e-3}, "learnin_rate"),
    ({"base_model": ""}, "base_model"),
    ({"dataset": None}, "dataset"),
])
def test_errors_name_the_field(changes: dict, field: str, home: Path) -> None:
    data = {**BASE, **changes}
    if data.get("dataset") is None:
        data.pop("dataset")
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, base_dir=home)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}:")


def test_optional_optimizers_need_their_packages(home: Path) -> None:
    import importlib.util

    for name, package in (("adamw8bit", "bitsandbytes"), ("prodigy", "prodigyopt")):
        if importlib.util.find_spec(package) is not None:
            config_from_dict({**BASE, "optimizer": name}, base_dir=home)
            continue
        with pytest.raises(ConfigError, match=package) as info:
            config_from_dict({**BASE, "optimizer": name}, base_dir=home)
        assert info.value.field == "optimizer"


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        config_from_yaml("rank: [1,")
    with pytest.raises(ConfigError, match="mapping"):
        config_from_yaml("- a\n- b\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
