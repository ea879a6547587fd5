"""Where LoRA training may read and write: the allowed folders, and the one way a config's paths get into them.

A training config names three paths, and each must lie inside its folders once links are followed
(`webui.security.resolve_in_roots`; absolute paths are accepted only when they already point there):
  - `dataset`: a folder inside `data/` of Easel's data folder (where the example's dataset is made);
  - `output_dir`: a folder inside the LoRA folders (`models/Lora`, and `--lora-dir` in the app);
  - `base_model`: the name of a model in the model folders (the built-in model's folder, `models/diffusers`,
    `models/Stable-diffusion`, and `--ckpt-dir` in the app), as the model list shows it.
A path outside them, one that does not exist and one with `~` or `..` all get the same answer, so a config
cannot learn which paths exist elsewhere on the machine.

`claim_output_name` keeps a run from replacing a file that is not its own: `<name>.safetensors` is the run's when
it is absent or has its resume state `<name>.state.pt` beside it (an earlier run of the same name, which this one
resumes); otherwise the run saves as `<name>-1`, `<name>-2`, ... and says so. The command line's `--replace` keeps
the name whatever is there. Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from webui.security import PathRefused, folder_label, resolve_in_roots

if TYPE_CHECKING:
    from webui.settings import Settings

REPO = Path(__file__).resolve().parents[2]
REPO_BUILTIN = REPO / "models" / "builtin"
DATASETS = "data"  # datasets live in <data dir>/data/
MAX_RENAMES = 1000


@dataclass(frozen=True)
class TrainingFolders:
    """The folders a training config may name (see the module docstring); relative paths start at `data_dir`."""

    data_dir: Path
    datasets: tuple[Path, ...]
    loras: tuple[Path, ...]
    models: tuple[Path, ...]

    @classmethod
    def under(cls, data_dir: Path, lora_dirs: Sequence[Path] = (), model_dirs: Sequence[Path] = ()
              ) -> "TrainingFolders":
        """The folders of a data folder, as the command line uses them (extra LoRA and model folders added)."""
        data_dir = Path(data_dir)
        models = data_dir / "models"
        return cls(data_dir, (data_dir / DATASETS,), (models / "Lora", *map(Path, lora_dirs)),
                   _unique([*map(Path, model_dirs), models / "builtin", REPO_BUILTIN, models / "diffusers",
                            models / "Stable-diffusion"]))

    @classmethod
    def of_settings(cls, settings: "Settings") -> "TrainingFolders":
        """The running app's folders: its data folder, `--lora-dir`, `--ckpt-dir` and its built-in model folder."""
        return cls(settings.data_dir, (settings.data_dir / DATASETS,), tuple(settings.all_lora_dirs()),
                   _unique([*settings.builtin_dirs(), *settings.diffusers_dirs(), *settings.checkpoint_dirs()]))

    @property
    def lora_label(self) -> str:
        """How messages name the LoRA folders (never their place on disk outside the data folder)."""
        return folder_label(self.loras[0], self.data_dir) + (" or a --lora-dir folder" if len(self.loras) > 1 else "")


def _unique(folders: list[Path]) -> tuple[Path, ...]:
    seen: dict[Path, Path] = {}
    for folder in folders:
        seen.setdefault(folder.resolve(), folder)
    return tuple(seen.values())


def dataset_folder(folders: TrainingFolders, value: object) -> Path:
    """The dataset folder `value` names: an existing folder inside `data/` (PathRefused otherwise)."""
    return resolve_in_roots(folders.datasets, value, "dataset", base=folders.data_dir, kind="folder", folder=True,
                            where=f"{DATASETS}/ (in Easel's data folder)")


def output_folder(folders: TrainingFolders, value: object) -> Path:
    """The folder the LoRA goes to: inside a LoRA folder (made when the run first saves)."""
    path = resolve_in_roots(folders.loras, value, "output_dir", base=folders.data_dir, kind="folder",
                            where=folders.lora_label)
    if path.exists() and not path.is_dir():
        raise PathRefused("output_dir", f"must be a folder inside {folders.lora_label}, got {str(value)[:200]!r}")
    return path


MODEL_FOLDERS = "models/builtin, models/diffusers, models/Stable-diffusion or a --ckpt-dir folder"


def find_base_model(name: object, model_dirs: Sequence[Path], data_dir: Path | None = None) -> Path:
    """The model `name` names in `model_dirs`, in their order: a diffusers folder (model_index.json) or a
    `.safetensors` checkpoint (the extension may be left out). PathRefused when it is not one of them."""
    for folder in model_dirs:
        for suffix in ("", ".safetensors"):
            try:
                path = resolve_in_roots([folder], name + suffix if isinstance(name, str) else name, "base_model",
                                        base=folder, kind="model")
            except PathRefused:
                continue
            if (path / "model_index.json").is_file():
                return path
            if path.is_file():
                if path.suffix.lower() != ".safetensors":
                    raise PathRefused("base_model", f"{path.name} in {folder_label(folder, data_dir)} is not a "
                                                    ".safetensors checkpoint or a diffusers folder")
                return path
            if path.is_dir():
                raise PathRefused("base_model", f"{path.name} in {folder_label(folder, data_dir)} has no "
                                                "model_index.json (not a diffusers folder)")
    shown = repr(name[:200]) if isinstance(name, str) else repr(name)[:200]
    raise PathRefused("base_model", f"must be the name of a model in the model folders ({MODEL_FOLDERS}): a "
                                    f"diffusers folder or a .safetensors checkpoint, got {shown}")


def output_owner(output_dir: Path, name: str) -> str:
    """"own" (its resume state is there), "free" (nothing of that name) or "taken" (someone else's file)."""
    lora, state = output_dir / f"{name}.safetensors", output_dir / f"{name}.state.pt"
    samples = output_dir / f"{name}.samples"
    if any(p.is_symlink() for p in (lora, state, samples)):
        return "taken"  # never write through a link
    if state.is_file():
        return "own"
    return "taken" if lora.exists() or state.exists() else "free"


def claim_output_name(output_dir: Path, name: str, replace: bool = False) -> tuple[str, str]:
    """(the name this run saves under, a note when it is not `name`); see the module docstring."""
    if replace or output_owner(output_dir, name) != "taken":
        return name, ""
    for number in range(1, MAX_RENAMES + 1):
        candidate = f"{name}-{number}"
        if output_owner(output_dir, candidate) != "taken":
            return candidate, (f"saving as {candidate}: {name}.safetensors already exists in {output_dir.name}/ and "
                               f"is not this run's (no {name}.state.pt beside it to resume), so it is kept")
    raise PathRefused("output_name", f"{name}.safetensors and {name}-1 ... {name}-{MAX_RENAMES} are all taken; "
                                     "choose another output_name")
