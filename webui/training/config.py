"""The LoRA training configuration: one frozen dataclass, read from YAML by the CLI and the Train tab alike.

`load_config(path)` reads a YAML file, `config_from_dict(data, base_dir)` builds and checks the config from
plain data (the Train tab edits the same YAML text). Every problem raises `ConfigError(field, message)`, a
`ValueError` whose text starts with the field's name, so "rank: must be at least 1" tells the user what to fix.
Paths must lie inside the training folders (webui/training/folders.py: datasets in `data/`, the LoRA in a LoRA
folder, the base model by name from the model folders); relative ones start at Easel's data folder (`base_dir`,
the current folder when none is given). Every size has an upper bound (the `MAX_*` constants, listed in
docs/TRAINING.md), checked here, before any image is opened.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webui.security import PathRefused
from webui.training.folders import TrainingFolders, dataset_folder, find_base_model, output_folder

OPTIMIZERS = ("adamw", "adamw8bit", "prodigy")
PRECISIONS = ("fp32", "bf16")
DEFAULT_OUTPUT_DIR = Path("models/Lora")

# Upper bounds: generous for real LoRAs (kohya and AUTOMATIC1111 users train at 512 to 1024 pixels, rank 4 to 128,
# batches of 1 to 16, a few thousand steps), far below what would exhaust the machine's memory or time.
MAX_CONFIG_CHARS = 100_000  # the YAML text
MAX_SIDE = 2048  # resolution: a bucket's width and height
MAX_BUCKETS = 32
MAX_RANK = 1024
MAX_ALPHA = 1024.0
MAX_STEPS = 100_000  # steps, sample_every, save_every
MAX_BATCH = 64  # batch_size, preservation_batch_size
MAX_LEARNING_RATE = 10.0  # learning_rate, trigger_embedding_lr
MAX_WEIGHT_DECAY = 1.0
MAX_PRESERVATION = 100.0  # prior_preservation, differential_preservation
MAX_SAMPLE_PROMPTS = 16
MAX_SAMPLE_STEPS = 150
MAX_GUIDANCE = 30.0
MAX_THREADS = 256
MAX_SEED = 2**32 - 1
MAX_ITEMS = 64  # target_modules, preservation_words
MAX_PROMPT_CHARS = 1000  # each sample prompt
MAX_NAME_CHARS = 200  # trigger, output_name, device, each word and module name
# field: (lowest, highest) for the numbers
RANGES: dict[str, tuple[float, float]] = {
    "rank": (1, MAX_RANK), "steps": (1, MAX_STEPS), "batch_size": (1, MAX_BATCH),
    "sample_steps": (1, MAX_SAMPLE_STEPS), "threads": (1, MAX_THREADS), "sample_every": (0, MAX_STEPS),
    "save_every": (0, MAX_STEPS), "seed": (0, MAX_SEED), "weight_decay": (0, MAX_WEIGHT_DECAY),
    "preservation_batch_size": (0, MAX_BATCH), "sample_guidance": (0, MAX_GUIDANCE),
    "trigger_embedding_lr": (0, MAX_LEARNING_RATE), "prior_preservation": (0, MAX_PRESERVATION),
    "differential_preservation": (0, MAX_PRESERVATION),
}


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

    base_model: str  # a model's name in the model folders: a diffusers folder or a .safetensors checkpoint
    dataset: Path  # images + same-name .txt captions, inside data/
    trigger: str = ""  # replaces `[trigger]` in captions and sample prompts
    output_name: str = "my-lora"
    output_dir: Path = DEFAULT_OUTPUT_DIR  # inside a LoRA folder
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


def load_config(path: str | Path, overrides: dict[str, Any] | None = None, base_dir: Path | None = None,
                folders: TrainingFolders | None = None) -> TrainConfig:
    """Read a YAML config file; relative paths in it are taken from `base_dir` (default: the current folder)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("config", f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    data = parse_yaml(text, str(path))
    data.update(overrides or {})
    return config_from_dict(data, base_dir=base_dir, folders=folders)


def parse_yaml(text: str, source: str = "config") -> dict[str, Any]:
    import yaml

    if len(text) > MAX_CONFIG_CHARS:
        raise ConfigError("config", f"{source} is {len(text):,} characters long; the limit is {MAX_CONFIG_CHARS:,}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("config", f"{source} is not valid YAML: {exc}") from exc
    except ValueError as exc:  # a value YAML cannot build, such as an integer of more than 4300 digits
        raise ConfigError("config", f"{source} holds a value that cannot be read: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("config", f"{source} must be a mapping of keys to values, got {type(data).__name__}")
    return data


def config_from_yaml(text: str, base_dir: Path | None = None, folders: TrainingFolders | None = None
                     ) -> TrainConfig:
    return config_from_dict(parse_yaml(text), base_dir, folders)


def config_from_dict(data: dict[str, Any], base_dir: Path | None = None, folders: TrainingFolders | None = None
                     ) -> TrainConfig:
    """Check and convert plain data into a TrainConfig (unknown keys and wrong types are errors). Paths must lie
    in `folders` (default: those under `base_dir`, else under the current folder)."""
    if folders is None:
        folders = TrainingFolders.under(Path(base_dir) if base_dir is not None else Path.cwd())
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
        values[name] = _convert(name, value, folders)
    values.setdefault("output_dir", Path(folders.loras[0]).resolve())
    config = TrainConfig(**values)
    check(config)
    return config


def base_model_path(name: str, model_dirs: list[Path] | tuple[Path, ...], data_dir: Path | None = None) -> Path:
    """The base model `name` names in the model folders (see webui/training/folders.py), or ConfigError."""
    try:
        return find_base_model(name, model_dirs, data_dir)
    except PathRefused as exc:
        raise ConfigError(exc.field, exc.message) from None


def _convert(name: str, value: Any, folders: TrainingFolders) -> Any:
    default = FIELDS[name].default
    if name in ("dataset", "output_dir", "base_model"):
        try:
            if name == "dataset":
                return dataset_folder(folders, value)
            if name == "output_dir":
                return output_folder(folders, value)
            find_base_model(value, folders.models, folders.data_dir)
            return value.strip()
        except PathRefused as exc:
            raise ConfigError(exc.field, exc.message) from None
    if name == "resolution":
        return _buckets(value)
    if name in ("sample_prompts", "target_modules", "preservation_words"):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
            raise ConfigError(name, f"must be a list of strings, got {_shown(value)}")
        most = MAX_SAMPLE_PROMPTS if name == "sample_prompts" else MAX_ITEMS
        if len(items) > most:
            raise ConfigError(name, f"has {len(items)} items; the limit is {most}")
        longest = MAX_PROMPT_CHARS if name == "sample_prompts" else MAX_NAME_CHARS
        if any(len(p) > longest for p in items):
            raise ConfigError(name, f"each item must be at most {longest} characters long")
        return tuple(p for p in items if p.strip())
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(name, f"must be true or false, got {_shown(value)}")
        return value
    if isinstance(value, bool):
        raise ConfigError(name, f"must be a {type(default).__name__}, got {_shown(value)}")
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ConfigError(name, f"must be a whole number, got {_shown(value)}")
        return value
    if isinstance(default, float):
        if isinstance(value, str):
            try:
                value = float(value)  # YAML reads 1e-4 (no dot) as a string
            except ValueError:
                raise ConfigError(name, f"must be a number, got {_shown(value)}") from None
        if not isinstance(value, (int, float)):
            raise ConfigError(name, f"must be a number, got {_shown(value)}")
        try:
            return float(value)
        except OverflowError:  # an integer with hundreds of digits
            raise ConfigError(name, f"must be a number, got {_shown(value)}") from None
    if not isinstance(value, str):
        raise ConfigError(name, f"must be text, got {_shown(value)}")
    if len(value) > MAX_NAME_CHARS:
        raise ConfigError(name, f"must be at most {MAX_NAME_CHARS} characters long, got {len(value)}")
    return value


def _buckets(value: Any) -> tuple[tuple[int, int], ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError("resolution", "needs at least one size")
    if len(items) > MAX_BUCKETS:
        raise ConfigError("resolution", f"has {len(items)} buckets; the limit is {MAX_BUCKETS}")
    buckets = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            w = h = item
        elif (isinstance(item, list) and len(item) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
            w, h = item
        else:
            raise ConfigError("resolution", f"each bucket is a size or [width, height], got {_shown(item)}")
        if w < 8 or h < 8 or w % 8 or h % 8:
            raise ConfigError("resolution", f"bucket {w}x{h}: width and height must be multiples of 8, at least 8")
        if w > MAX_SIDE or h > MAX_SIDE:
            raise ConfigError("resolution", f"bucket {w}x{h}: width and height must be at most {MAX_SIDE}")
        if (w, h) not in buckets:
            buckets.append((w, h))
    return tuple(buckets)


def _number(value: float) -> str:
    if isinstance(value, int):
        text = str(value) if value.bit_length() < 64 else f"a number of {len(str(abs(value)))} digits"
        return text
    return f"{value:g}"


def _shown(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut short."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() >= 64:
        return _number(value)
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def check(config: TrainConfig) -> None:
    """Range checks that need the whole config; raises ConfigError naming the field."""
    for name, (low, high) in RANGES.items():
        value = getattr(config, name)
        if not value >= low:  # written so that NaN fails too
            raise ConfigError(name, f"must be at least {_number(low)}, got {_number(value)}")
        if not value <= high:
            raise ConfigError(name, f"must be at most {_number(high)} (the limit), got {_number(value)}")
    if not 0.0 < config.alpha <= MAX_ALPHA:
        raise ConfigError("alpha", f"must be positive and at most {_number(MAX_ALPHA)} (the limit), got "
                                   f"{_number(config.alpha)}")
    if not 0.0 < config.learning_rate <= MAX_LEARNING_RATE:
        raise ConfigError("learning_rate", f"must be positive and at most {_number(MAX_LEARNING_RATE)} (the limit), "
                                           f"got {_number(config.learning_rate)}")
    if config.precision not in PRECISIONS:
        raise ConfigError("precision", f"must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
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
