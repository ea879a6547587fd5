"""The LoRA training configuration: one frozen dataclass, read from YAML by the CLI and the Train tab alike.

`load_config(path)` reads a YAML file, `config_from_dict(data, base_dir)` builds and checks the config from
plain data (the Train tab edits the same YAML text). Every problem raises `ConfigError(field, message)`, a
`ValueError` whose text starts with the field's name, so "rank: must be at least 1" tells the user what to fix.
Relative paths (dataset, output dir, base model) are resolved against `base_dir`: Easel's data folder (where
`models/` lives), the current folder when none is given.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPTIMIZERS = ("adamw", "adamw8bit", "prodigy")
PRECISIONS = ("fp32", "bf16")
DEFAULT_OUTPUT_DIR = Path("models/Lora")


class ConfigError(ValueError):
    """A bad training config; `field` names the YAML key."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class TrainConfig:
    """Everything one LoRA training run needs. Sizes are pixels; `resolution` lists the buckets (square sizes
    or [width, height] pairs): each image trains at the bucket whose aspect ratio is closest to its own."""

    base_model: str  # a diffusers folder, a single-file checkpoint, or a model name under models/
    dataset: Path  # images + same-name .txt captions
    trigger: str = ""  # replaces `[trigger]` in captions and sample prompts
    output_name: str = "my-lora"
    output_dir: Path = DEFAULT_OUTPUT_DIR
    rank: int = 8
    alpha: float = 8.0
    learning_rate: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    steps: int = 500
    batch_size: int = 4
    resolution: tuple[tuple[int, int], ...] = ((64, 64),)
    caption_dropout: float = 0.05
    sample_prompts: tuple[str, ...] = ()
    sample_every: int = 0  # 0 = only at the end (when there are sample prompts)
    sample_steps: int = 20
    sample_guidance: float = 4.0
    save_every: int = 0  # 0 = only at the end (and when cancelled)
    seed: int = 0
    threads: int = 2
    device: str = "cpu"
    precision: str = "fp32"  # fp32, or bf16 autocast (faster on recent CPUs and GPUs)
    target_modules: tuple[str, ...] = ()  # empty = the family's default layers
    # built-in model only: weight of the prior-preservation term (the base model's own tasks, distilled); 0 = off
    prior_preservation: float = 0.0
    preservation_batch_size: int = 0  # examples per step for the prior-preservation term; 0 = batch_size
    # built-in model only: weight of the differential preservation term (each caption with the trigger word swapped
    # for one of `preservation_words` must give the base model's prediction on the same noisy image); 0 = off
    differential_preservation: float = 0.0
    preservation_words: tuple[str, ...] = ()
    # built-in model only: also learn a vector for the trigger word (one word), saved in the LoRA file and used
    # for that word while the LoRA is active
    trigger_embedding: bool = False
    trigger_embedding_lr: float = 0.0  # its learning rate; 0 = learning_rate

    @property
    def output_path(self) -> Path:
        return self.output_dir / f"{self.output_name}.safetensors"

    @property
    def state_path(self) -> Path:
        """Resume state beside the LoRA: LoRA weights, optimizer, step, loss history."""
        return self.output_dir / f"{self.output_name}.state.pt"

    @property
    def samples_dir(self) -> Path:
        return self.output_dir / f"{self.output_name}.samples"

    def caption(self, text: str) -> str:
        return text.replace("[trigger]", self.trigger)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML-ready): paths as strings, buckets as [w, h] lists."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif f.name == "resolution":
                value = [w if w == h else [w, h] for w, h in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
REQUIRED = tuple(name for name, f in FIELDS.items()
                 if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)


def trigger_pattern(trigger: str) -> re.Pattern[str]:
    """The trigger as a whole word (or phrase) in a caption."""
    return re.compile(rf"\b{re.escape(trigger)}\b")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None, base_dir: Path | None = None
                ) -> TrainConfig:
    """Read a YAML config file; relative paths in it are taken from `base_dir` (default: the current folder)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror or exc}") from exc
    data = parse_yaml(text, str(path))
    data.update(overrides or {})
    return config_from_dict(data, base_dir=base_dir)


def parse_yaml(text: str, source: str = "config") -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("config", f"{source} is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("config", f"{source} must be a mapping of keys to values, got {type(data).__name__}")
    return data


def config_from_yaml(text: str, base_dir: Path | None = None) -> TrainConfig:
    return config_from_dict(parse_yaml(text), base_dir)


def config_from_dict(data: dict[str, Any], base_dir: Path | None = None) -> TrainConfig:
    """Check and convert plain data into a TrainConfig (unknown keys and wrong types are errors)."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    unknown = sorted(str(k) for k in data if k not in FIELDS)
    if unknown:
        raise ConfigError(unknown[0], f"unknown key (known keys: {', '.join(FIELDS)})")
    for name in REQUIRED:
        if data.get(name) in (None, ""):
            raise ConfigError(name, "is required")
    values: dict[str, Any] = {}
    for name, value in data.items():
        if value is None:
            continue  # YAML `key:` with nothing after it keeps the default
        values[name] = _convert(name, value, base)
    values.setdefault("output_dir", _resolve(DEFAULT_OUTPUT_DIR, base))
    config = TrainConfig(**values)
    check(config)
    return config


def _resolve(value: Path, base: Path) -> Path:
    value = value.expanduser()
    return value if value.is_absolute() else base / value


def _convert(name: str, value: Any, base: Path) -> Any:
    default = FIELDS[name].default
    if name in ("dataset", "output_dir"):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(name, f"must be a folder path, got {value!r}")
        return _resolve(Path(value), base)
    if name == "base_model":
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(name, f"must be a model name or path, got {value!r}")
        candidate = _resolve(Path(value), base)
        return str(candidate) if candidate.exists() else value.strip()
    if name == "resolution":
        return _buckets(value)
    if name in ("sample_prompts", "target_modules", "preservation_words"):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
            raise ConfigError(name, f"must be a list of strings, got {value!r}")
        return tuple(p for p in items if p.strip())
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(name, f"must be true or false, got {value!r}")
        return value
    if isinstance(value, bool):
        raise ConfigError(name, f"must be a {type(default).__name__}, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ConfigError(name, f"must be a whole number, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, str):
            try:
                value = float(value)  # YAML reads 1e-4 (no dot) as a string
            except ValueError:
                raise ConfigError(name, f"must be a number, got {value!r}") from None
        if not isinstance(value, (int, float)):
            raise ConfigError(name, f"must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(name, f"must be text, got {value!r}")
    return value


def _buckets(value: Any) -> tuple[tuple[int, int], ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError("resolution", "needs at least one size")
    buckets = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            w = h = item
        elif (isinstance(item, list) and len(item) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
            w, h = item
        else:
            raise ConfigError("resolution", f"each bucket is a size or [width, height], got {item!r}")
        if w < 8 or h < 8 or w % 8 or h % 8:
            raise ConfigError("resolution", f"bucket {w}x{h}: width and height must be multiples of 8, at least 8")
        if (w, h) not in buckets:
            buckets.append((w, h))
    return tuple(buckets)


def check(config: TrainConfig) -> None:
    """Range checks that need the whole config; raises ConfigError naming the field."""
    def at_least(name: str, low: float) -> None:
        if getattr(config, name) < low:
            raise ConfigError(name, f"must be at least {low}, got {getattr(config, name)}")

    for name in ("rank", "steps", "batch_size", "sample_steps", "threads"):
        at_least(name, 1)
    for name in ("sample_every", "save_every", "seed", "weight_decay", "preservation_batch_size"):
        at_least(name, 0)
    if config.alpha <= 0:
        raise ConfigError("alpha", f"must be positive, got {config.alpha}")
    if not 0.0 < config.learning_rate <= 10.0:
        raise ConfigError("learning_rate", f"must be positive (and at most 10), got {config.learning_rate}")
    if not 0.0 <= config.trigger_embedding_lr <= 10.0:
        raise ConfigError("trigger_embedding_lr", f"must be between 0 (= learning_rate) and 10, got "
                                                  f"{config.trigger_embedding_lr}")
    if config.precision not in PRECISIONS:
        raise ConfigError("precision", f"must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    if not 0.0 <= config.prior_preservation <= 100.0:
        raise ConfigError("prior_preservation", f"must be between 0 (off) and 100, got {config.prior_preservation}")
    if not 0.0 <= config.differential_preservation <= 100.0:
        raise ConfigError("differential_preservation",
                          f"must be between 0 (off) and 100, got {config.differential_preservation}")
    if config.differential_preservation > 0:
        if not config.trigger:
            raise ConfigError("differential_preservation", "needs a trigger word (the word it swaps out)")
        if not config.preservation_words:
            raise ConfigError("preservation_words", "needs at least one word to put in the trigger's place "
                                                    "(differential_preservation is on)")
        if any(trigger_pattern(config.trigger).search(word) for word in config.preservation_words):
            raise ConfigError("preservation_words", f"must not contain the trigger word {config.trigger!r}")
    if config.trigger_embedding and not re.fullmatch(r"\w+", config.trigger):
        raise ConfigError("trigger_embedding", f"needs a trigger of one word (letters, digits, _) to learn a vector "
                                               f"for, got {config.trigger!r}")
    if not 0.0 <= config.caption_dropout < 1.0:
        raise ConfigError("caption_dropout", f"must be in [0, 1), got {config.caption_dropout}")
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError("optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}")
    if config.optimizer == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("optimizer", "adamw8bit needs the bitsandbytes package (pip install bitsandbytes, "
                                       "CUDA only); use adamw")
    if config.optimizer == "prodigy" and importlib.util.find_spec("prodigyopt") is None:
        raise ConfigError("optimizer", "prodigy needs the prodigyopt package (pip install prodigyopt); use adamw")
    name = config.output_name
    if not name or name.strip() != name or any(c in name for c in "/\\:*?\"<>|") or name.startswith("."):
        raise ConfigError("output_name", f"must be a plain file name without a folder or extension, got {name!r}")
    if "[trigger]" in "".join(config.sample_prompts) and not config.trigger:
        raise ConfigError("trigger", "sample prompts use [trigger] but no trigger word is set")
    if not config.device.strip():
        raise ConfigError("device", "must name a torch device such as cpu or cuda")
