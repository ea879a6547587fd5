"""The LoRA training loop, one for every supported architecture, shared by the CLI and the Train tab.

`train(config, on_event=..., cancel=...)` reads the dataset, finds the base model in a catalogue of the model
folders training may read (webui/training/folders.py confines the name first; webui.model_manager.catalogue tells
its architecture from its header or model_index.json), loads it with the model manager's own loaders (the code
the app generates with, so the same files load and the same ones are refused: pickle weights, unsupported
files), puts a PEFT LoRA on its denoiser (the UNet or transformer; text encoders stay frozen) and trains it with
the objective of its architecture (webui/training/objectives.py). Each step's randomness (batch, caption
dropout, noise, noise level) comes from a generator seeded by (seed, step), so a resumed run continues exactly
where the saved one would have gone. Every `save_every` steps, on cancel and at the end, the LoRA is written to
`<output_dir>/<output_name>.safetensors` by Easel's LoRA writer (webui.model_manager.lora_writer: kohya's and
modelspec's metadata, the latest sample as its thumbnail) and the resume state (LoRA weights, optimizer, step,
loss history) to `<output_name>.state.pt` beside it; sample images go to `<output_name>.samples/`. Cancelling
(a `threading.Event`) stops before the next step.

File layouts: the built-in model's LoRA is `transformer.<module>.lora_A/B.weight` with alpha in the metadata
(`ss_network_alpha`), plus `bundle_emb.<trigger>.string_to_param.*` [1,dim] when `trigger_embedding` learned a
vector for the trigger word (AUTOMATIC1111's key for an embedding bundled in a LoRA); the diffusers families'
are `unet.…` / `transformer.…` (the names diffusers' `save_lora_weights` writes) with alpha folded into lora_B,
which diffusers, ComfyUI and Easel load.
"""
from __future__ import annotations

import logging
import math
import os
import pickle
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as replace_fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from webui.model_manager.identify import ARCH_LABELS, Arch
from webui.model_manager.lora_writer import tag_frequency
from webui.training.config import FIELDS, ConfigError, TrainConfig, base_model_path
from webui.training.dataset import Dataset, load_dataset
from webui.training.folders import TrainingFolders, claim_output_name, output_owner
from webui.training.objectives import ADAPTER, OBJECTIVES, Objective, check_pipeline, objective_for

if TYPE_CHECKING:
    from webui.model_manager.catalogue import Catalogue, CheckpointEntry
    from webui.model_manager.lora_writer import LoraMetadata

log = logging.getLogger(__name__)

STATE_VERSION = 1
WARMUP_FRACTION = 0.05
SAMPLE_SEED_OFFSET = 1000
THUMBNAIL_SIZE = 256  # pixels on the longest side of the thumbnail in the LoRA's metadata


class TrainingError(RuntimeError):
    """Training could not go on (a loss that is not finite, a model that cannot be trained)."""


@dataclass(frozen=True)
class TrainEvent:
    """What the loop reports. kind: "start", "step", "sample", "save", "done" or "cancelled"."""

    kind: str
    step: int
    total: int
    loss: float | None = None
    elapsed_s: float = 0.0
    samples: tuple[Path, ...] = ()
    path: Path | None = None
    message: str = ""


@dataclass(frozen=True)
class TrainResult:
    path: Path
    step: int
    cancelled: bool
    losses: tuple[float, ...]
    wall_s: float  # wall time of all runs of this LoRA, resumes included
    cpu_s: float  # CPU time of this process during them
    samples: tuple[Path, ...] = ()


# ============================================================================================ base models
def default_search_dirs(models_dir: Path | None = None) -> list[Path]:
    """The model folders of a data folder (`models_dir` is its models/; default: the current folder's)."""
    data_dir = Path(models_dir).parent if models_dir is not None else Path.cwd()
    return list(TrainingFolders.under(data_dir).models)


def model_catalogue(search_dirs: Sequence[Path]) -> "Catalogue":
    """A catalogue of the model folders training may read. The folders are not told apart (the built-in model's,
    models/diffusers, models/Stable-diffusion, --ckpt-dir), so each is scanned for diffusers folders and for
    checkpoint files alike."""
    from webui.model_manager.catalogue import Catalogue

    folders = [Path(p) for p in search_dirs]
    return Catalogue(checkpoint_dirs=folders, diffusers_dirs=folders)


def resolve_base_model(name: str, search_dirs: Sequence[Path]) -> tuple["CheckpointEntry", "Catalogue"]:
    """(the catalogue entry of the model `name` names, the catalogue). The name is confined to the model folders
    first (webui/training/folders.py), then found in the catalogue; ConfigError naming base_model when it is not
    there or is a model Easel does not load (the reason is the model list's: pickle weights, an unknown file)."""
    from webui.model_manager.errors import ModelNotFoundError
    from webui.model_manager.identify import identify_file

    path = base_model_path(name, list(search_dirs)).resolve()
    catalogue = model_catalogue(search_dirs)
    try:
        entry: CheckpointEntry | None = catalogue.find_checkpoint(name)
    except ModelNotFoundError:
        entry = None
    if entry is None or entry.path.resolve() != path:  # another model of the same name was found first
        entry = next((e for e in catalogue.checkpoints() if e.kind != "hub" and e.path.resolve() == path), None)
    if entry is None:
        raise ConfigError("base_model", f"{path.name} is not in the model list (another model in the model folders "
                                        "has the same name, or it is in a hidden folder); rename it")
    reason = entry.reason if not entry.supported else ""
    if entry.kind == "file" and not reason:
        ident = identify_file(entry.path)  # the file may have changed since the scan
        reason = ident.reason if not ident.supported else ""
    if reason:
        raise ConfigError("base_model", f"cannot load {entry.path.name}: {reason}")
    return entry, catalogue


def base_hash(path: Path) -> str:
    """Short (10 hex) hash of the base model, as Easel's model list shows it (webui.model_manager.hashes)."""
    from webui.model_manager.hashes import HashCache

    return HashCache(None).short_hash(Path(path))


def load_base(entry: "CheckpointEntry", catalogue: "Catalogue", objective: type[Objective]) -> Any:
    """The base pipeline in float32, loaded by webui.model_manager.loading as the app loads it to generate:
    a diffusers folder with safetensors weights only (the safety checker left out), the built-in model, or a
    single file with its shipped configs or `<name>.config/` folder (a transformer-only file takes its text
    encoders and VAE from a diffusers folder of its family in the model folders; nothing is downloaded)."""
    from webui.model_manager.clip_tokenizer import load_clip_tokenizer
    from webui.model_manager.errors import ModelLoadError
    from webui.model_manager.loading import LoadContext, load_checkpoint

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "easel"
    context = LoadContext(dtype=torch.float32, clip_tokenizer=lambda pad: load_clip_tokenizer(cache, pad),
                          family_folders=catalogue.family_folders, hub_offline=lambda: True)
    try:
        pipe = load_checkpoint(entry, context).pipe
    except ModelLoadError as exc:
        raise ConfigError("base_model", str(exc)) from exc
    check_pipeline(objective, type(pipe).__name__, entry.name)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ============================================================================================ LoRA weights
def add_lora(denoiser: torch.nn.Module, config: TrainConfig, arch: Arch) -> list[torch.nn.Parameter]:
    """Inject a PEFT LoRA adapter (the config's target modules, else the architecture's default); only its
    weights train. Returns them."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = list(config.target_modules) if config.target_modules else OBJECTIVES[arch].default_targets
    denoiser.requires_grad_(False)
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=targets, lora_dropout=0.0,
                      init_lora_weights=True)
    try:
        inject_adapter_in_model(lora, denoiser, adapter_name=ADAPTER)
    except ValueError as exc:
        raise ConfigError("target_modules", f"no layer of the model matches {targets}: {exc}") from exc
    params = []
    for name, p in denoiser.named_parameters():
        if ".lora_" in name:
            p.requires_grad_(True)
            params.append(p)
    if not params:
        raise ConfigError("target_modules", f"no layer of the model matches {targets}")
    return params


def lora_state(denoiser: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's weights, keys `<module>.lora_A.weight` / `.lora_B.weight` (no adapter name)."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(denoiser, adapter_name=ADAPTER)
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


def bundled_state(words: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """Learned word vectors under AUTOMATIC1111's key for an embedding bundled in a LoRA."""
    from webui.builtin.lora import bundle_key

    return {bundle_key(word): v.detach().to("cpu", torch.float32).contiguous() for word, v in words.items()}


def load_lora_state(denoiser: torch.nn.Module, state: dict[str, torch.Tensor],
                    words: dict[str, torch.nn.Parameter] | None = None) -> None:
    """Put saved adapter weights (and learned word vectors) back: resuming a run."""
    from peft.utils import set_peft_model_state_dict

    from webui.builtin.lora import bundle_key

    for word, vector in (words or {}).items():
        saved = state.get(bundle_key(word))
        if saved is None or saved.shape != vector.shape:
            raise ConfigError("output_name", f"the resume state has no learned vector for {word!r}; delete the "
                                             ".state.pt file or choose another output_name")
        with torch.no_grad():
            vector.copy_(saved.to(vector.device))
    state = {k: v for k, v in state.items() if not k.startswith("bundle_emb.")}
    result = set_peft_model_state_dict(denoiser, state, adapter_name=ADAPTER)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) or [] if "lora_" in k]
    if unexpected:
        raise ConfigError("output_name", f"the resume state does not fit this model ({unexpected[0]} ...); "
                                         "delete the .state.pt file or choose another output_name")


def lora_tensors(state: dict[str, torch.Tensor], objective: Objective, arch: Arch, config: TrainConfig
                 ) -> dict[str, torch.Tensor]:
    """The adapter's weights as the LoRA file holds them (see the module docstring)."""
    from webui.model_manager.lora_writer import lora_file_tensors

    scale = None if arch == Arch.EASEL else config.alpha / config.rank  # diffusers and ComfyUI read no alpha
    return lora_file_tensors(state, objective.denoiser_name, scale)


def lora_metadata(config: TrainConfig, entry: "CheckpointEntry", objective: Objective, short_hash: str, run: "_Run",
                  dataset: Dataset, tags: dict[str, dict[str, int]]) -> "LoraMetadata":
    """What the LoRA file's header says (webui.model_manager.lora_writer turns it into kohya's and modelspec's
    keys and Easel's own)."""
    from webui.model_manager.lora_writer import LoraMetadata

    return LoraMetadata(
        arch=entry.arch, name=config.output_name, rank=config.rank, alpha=config.alpha, base_model=entry.path.name,
        base_hash=short_hash, trigger=config.trigger, steps=run.step, max_steps=config.steps,
        resolution=config.resolution, num_train_images=len(dataset), tag_frequency=tags,
        learning_rate=config.learning_rate, seed=config.seed, started_at=run.started_at,
        variant=objective.metadata_variant(entry.variant), alpha_folded=entry.arch != Arch.EASEL,
        thumbnail=thumbnail(run.samples))


def thumbnail(samples: Sequence[Path]) -> bytes | None:
    """The LoRA's thumbnail: the first image of the latest samples (`step<N>_<i>.png`); None without samples."""
    from webui.model_manager.lora_writer import thumbnail_of

    def order(path: Path) -> tuple[str, int]:  # the latest step first, then its first prompt
        step, _, index = path.stem.partition("_")
        return step, -int(index) if index.isdigit() else 0

    return thumbnail_of(max(samples, key=order), THUMBNAIL_SIZE) if samples else None


# ============================================================================================ optimizers
def make_optimizer(config: TrainConfig, params: list[torch.nn.Parameter] | list[dict[str, Any]]
                   ) -> torch.optim.Optimizer:
    """The optimizer over `params` (or param groups; a group's "lr_scale" multiplies the schedule's rate)."""
    if config.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "prodigy":
        from prodigyopt import Prodigy

        return Prodigy(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.learning_rate, betas=(0.9, 0.99), weight_decay=config.weight_decay)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up over the first 5% of the steps, then constant."""
    warmup = max(1, int(config.steps * WARMUP_FRACTION))
    return config.learning_rate * min(1.0, (step + 1) / warmup)


def step_generator(config: TrainConfig, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(config.seed * 1_000_003 + step)


# ============================================================================================ the loop
RESUME_KEYS = ("base_model", "rank", "alpha", "target_modules", "optimizer", "trigger_embedding")


@dataclass
class _Run:
    """Mutable state of one run (what the resume state holds)."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    samples: list[Path] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)  # Unix time the first run of this LoRA started


def claim_output(config: TrainConfig, replace: bool = False) -> tuple[TrainConfig, str]:
    """The config with the output name this run may write (webui/training/folders.py: its own file, or
    `<name>-1`, ... beside someone else's), and a note when the name changed."""
    name, note = claim_output_name(config.output_dir, config.output_name, replace)
    return (config if name == config.output_name else replace_fields(config, output_name=name)), note


def train(config: TrainConfig, *, on_event: Callable[[TrainEvent], None] | None = None,
          cancel: threading.Event | None = None, search_dirs: list[Path] | None = None,
          resume: bool = True, set_threads: bool = True, replace: bool = False) -> TrainResult:
    """Train the LoRA `config` describes (see the module docstring); returns where it was written.

    The base model is looked up by name in `search_dirs` (default: the current folder's model folders) only,
    through a catalogue of those folders (`resolve_base_model`).
    An existing `<output_name>.safetensors` without its resume state is kept and the run saves under the next
    free name, unless `replace` (the command line's --replace). `set_threads` applies `config.threads` to
    torch's (process-wide) thread pool: right for the CLI; the app passes False so generation keeps its own
    setting."""
    emit = on_event or (lambda event: None)
    cancel = cancel or threading.Event()

    # 1. check inputs: the base model and its objective, the output name, the dataset, before anything heavy
    search = search_dirs or default_search_dirs()
    entry, catalogue = resolve_base_model(config.base_model, search)
    objective_type = objective_for(entry)
    for key in ("prior_preservation", "differential_preservation", "trigger_embedding"):
        if getattr(config, key) and not objective_type.has_preservation:
            raise ConfigError(key, f"is only available for the built-in model (easel); {entry.name} is a "
                                   f"{ARCH_LABELS[entry.arch]} model: set it to "
                                   f"{'false' if key == 'trigger_embedding' else 0}")
    config, renamed = claim_output(config, replace)
    dataset = load_dataset(config.dataset, config.resolution, config.trigger)
    if set_threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)

    # 2. prepare: the model with its adapter, the optimizer, and the saved state to resume from
    pipe = load_base(entry, catalogue, objective_type)
    pipe.to(device)
    objective = objective_type(pipe, device)
    denoiser = objective.denoiser
    torch.manual_seed(config.seed)  # lora_A's random initialisation
    params = add_lora(denoiser, config, entry.arch)
    groups: list[dict[str, Any]] = [{"params": list(params)}]
    if config.trigger_embedding:
        vector = objective.learn_trigger(config.trigger.lower())
        params.append(vector)
        rate = config.trigger_embedding_lr or config.learning_rate
        groups.append({"params": [vector], "lr_scale": rate / config.learning_rate})
    optimizer = make_optimizer(config, groups)
    run = _Run()
    if resume and config.state_path.is_file():
        run = _restore(config, denoiser, optimizer, objective.words)
        for group, wanted in zip(optimizer.param_groups, groups):  # the config's rates, not the saved run's
            group["lr_scale"] = wanted.get("lr_scale", 1.0)
        log.info("resuming %s at step %d", config.output_name, run.step)
    short_hash = catalogue.with_hash(entry).short_hash or ""
    tags = tag_frequency([item.caption for item in dataset.items], dataset.folder.name)
    n_trainable = sum(p.numel() for p in params)
    message = (f"{ARCH_LABELS[entry.arch]} base {entry.name} [{short_hash}], {len(dataset)} images, "
               f"{n_trainable:,} LoRA parameters")
    if objective.words:
        message += f" (a learned vector for {config.trigger!r} included)"
    if renamed:
        message = f"{renamed}; {message}"
    emit(TrainEvent("start", run.step, config.steps, message=message + (f"; resuming at step {run.step}"
                                                                        if run.step else "")))

    def save(kind: str) -> Path:
        from webui.model_manager.lora_writer import write_lora

        if not replace and output_owner(config.output_dir, config.output_name) == "taken":  # appeared meanwhile
            raise TrainingError(f"{config.output_path} appeared while training and is not this run's; it was kept "
                                "(start again to save under the next free name)")
        state = lora_state(denoiser)
        state.update(bundled_state(objective.words))
        meta = lora_metadata(config, entry, objective, short_hash, run, dataset, tags)
        path = write_lora(config.output_path, lora_tensors(state, objective, entry.arch, config), meta)
        _save_state(config, state, optimizer, run)
        emit(TrainEvent(kind, run.step, config.steps, run.losses[-1] if run.losses else None, run.wall_s, path=path))
        return path

    # 3. run: one optimizer step per loop, cancel checked before each
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    wall0, cpu0 = time.monotonic(), time.process_time()
    base_wall, base_cpu = run.wall_s, run.cpu_s
    cancelled = False
    denoiser.train()
    while run.step < config.steps:
        if cancel.is_set():
            cancelled = True
            break
        gen = step_generator(config, run.step)
        prompts, pixels = dataset.batch(gen, config.batch_size)
        drop = torch.rand(len(prompts), generator=gen) < config.caption_dropout
        prompts = ["" if d else p for p, d in zip(prompts, drop.tolist())]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, run.step) * group.get("lr_scale", 1.0)
        with autocast:
            loss = objective.loss(pixels, prompts, gen)
            if config.differential_preservation > 0:
                loss = loss + config.differential_preservation * objective.differential_loss(
                    pixels, prompts, config.trigger, config.preservation_words, gen)
            if config.prior_preservation > 0:
                loss = loss + config.prior_preservation * objective.preservation_loss(
                    config.preservation_batch_size or config.batch_size, gen)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(f"the loss became {value} at step {run.step + 1}; lower learning_rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        run.step += 1
        run.losses.append(value)
        run.wall_s = base_wall + time.monotonic() - wall0
        run.cpu_s = base_cpu + time.process_time() - cpu0
        emit(TrainEvent("step", run.step, config.steps, value, run.wall_s))
        if config.sample_every and config.sample_prompts and run.step % config.sample_every == 0 \
                and run.step < config.steps:
            _samples(config, objective, run, emit)
        if config.save_every and run.step % config.save_every == 0 and run.step < config.steps:
            save("save")

    # 4. finish: save (also when cancelled, so a resume continues from here), final samples
    if run.step == 0 and not run.losses:
        emit(TrainEvent("cancelled", 0, config.steps, message="cancelled before the first step"))
        return TrainResult(config.output_path, 0, True, (), 0.0, 0.0)
    if not cancelled and config.sample_prompts:
        _samples(config, objective, run, emit)
    path = save("cancelled" if cancelled else "done")
    denoiser.eval()
    return TrainResult(path, run.step, cancelled, tuple(run.losses), run.wall_s, run.cpu_s, tuple(run.samples))


def _samples(config: TrainConfig, objective: Objective, run: _Run, emit: Callable[[TrainEvent], None]) -> None:
    """Render the sample prompts with the LoRA as it is now; PNGs under `<output_name>.samples/`."""
    prompts = [config.caption(p) for p in config.sample_prompts]
    objective.denoiser.eval()
    try:
        with torch.no_grad():
            images = objective.sample(prompts, config.resolution[0], config.sample_steps, config.sample_guidance,
                                      config.seed + SAMPLE_SEED_OFFSET)
    finally:
        objective.denoiser.train()
    config.samples_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = config.samples_dir / f"step{run.step:06d}_{i}.png"
        image.save(path)
        paths.append(path)
    run.samples.extend(paths)
    emit(TrainEvent("sample", run.step, config.steps, run.losses[-1] if run.losses else None, run.wall_s,
                    samples=tuple(paths), message=" | ".join(prompts)))


def _save_state(config: TrainConfig, state: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                run: _Run) -> None:
    payload = {"version": STATE_VERSION, "lora": state, "optimizer": optimizer.state_dict(), "step": run.step,
               "losses": run.losses, "wall_s": run.wall_s, "cpu_s": run.cpu_s,
               "samples": [str(p) for p in run.samples], "started_at": run.started_at,
               "config": {k: config.to_dict()[k] for k in RESUME_KEYS}}
    tmp = config.state_path.with_name(f".{config.state_path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, config.state_path)


def _restore(config: TrainConfig, denoiser: torch.nn.Module, optimizer: torch.optim.Optimizer,
             words: dict[str, torch.nn.Parameter] | None = None) -> _Run:
    try:  # the weights-only unpickler rebuilds tensors and plain data only: a state file cannot run code
        payload = torch.load(config.state_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # an object it may not rebuild, or not a PyTorch file at all
        raise ConfigError("output_name", f"the resume state {config.state_path} was refused: it holds more than the "
                                         "tensors and plain data this trainer writes, and loading other objects "
                                         "could run code; delete it to start over") from None
    except Exception as exc:  # torch.load raises many types for a damaged file
        raise ConfigError("output_name", f"cannot read the resume state {config.state_path} ({exc}); delete it "
                                         "to start over") from exc
    saved = payload.get("config", {})
    wanted = {k: config.to_dict()[k] for k in RESUME_KEYS}
    changed = [k for k in RESUME_KEYS if saved.get(k, FIELDS[k].default) != wanted[k]]
    if changed:
        raise ConfigError("output_name", f"{config.state_path} is from a run with different {', '.join(changed)}; "
                                         "delete it or choose another output_name")
    load_lora_state(denoiser, payload["lora"], words)
    optimizer.load_state_dict(payload["optimizer"])
    return _Run(step=int(payload["step"]), losses=list(payload["losses"]), wall_s=float(payload["wall_s"]),
                cpu_s=float(payload["cpu_s"]), samples=[Path(p) for p in payload.get("samples", [])],
                started_at=float(payload.get("started_at", time.time())))
