"""Read model weights without running anything from the file: the one door every model file goes through.

A `.safetensors` file is a JSON header and raw tensor bytes; nothing in it can run, so it is read with
safetensors. The pickle formats (`.pt`, `.pth`, `.ckpt`, `.bin`) can hold instructions that call any Python
function while they are unpickled, so they are read only with `torch.load(weights_only=True)`, PyTorch's
restricted unpickler, which rebuilds tensors, numbers, strings and containers and refuses everything else. A
TorchScript archive (a zip holding `constants.pkl` and a `code/` folder) is compiled code that runs when
`torch.jit.load` opens it; it is refused from its list of entries, before anything in it is read. Refusals are
`UnsafeModelFileError`s, files that are not weights at all `ModelFileError`s; both name the file (by its name,
never its absolute path) and say why.

Diffusers and transformers folders are read by their own `from_pretrained`; `pickle_weights_in` finds the
components of such a folder whose weights exist only as pickle files, so a loader can refuse them (and offer
the converter, `webui.model_manager.convert`) instead of letting `from_pretrained` unpickle them.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".bin", ".pth")
STATE_KEYS = ("state_dict", "model", "module", "model_state_dict", "params_ema", "params")


class ModelFileError(ValueError):
    """A model file could not be read as weights; the message names the file and says why."""


class UnsafeModelFileError(ModelFileError):
    """A model file was refused because reading it would run code (or could); the message names the file."""


def display_name(path: Path, root: Path | None = None) -> str:
    """How messages name a file: relative to `root` when it is inside it, else its own name."""
    path = Path(path)
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.name


# ------------------------------------------------------------------------------------------------ TorchScript
def torchscript_reason(path: Path) -> str | None:
    """Why `path` is a TorchScript archive (None when it is not a zip, or a zip without compiled code).

    Reads only the zip's list of entries. PyTorch's own test is `constants.pkl` in the archive; the `code/`
    folder holds the compiled Python. Either one is enough to refuse."""
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None  # not a readable zip: torch.load (weights only) will say it is not a checkpoint
    inner = [name.split("/", 1)[1] if "/" in name else name for name in names]
    found = [what for what, hit in (("constants.pkl", any(n == "constants.pkl" for n in inner)),
                                    ("a code/ folder", any(n.startswith("code/") for n in inner))) if hit]
    if not found:
        return None
    return (f"it is a TorchScript archive ({' and '.join(found)}): compiled code that would run when it is "
            "loaded")


# ------------------------------------------------------------------------------------------------ pickles
def _refusal_detail(text: str) -> str:
    """What the weights-only unpickler objected to, without PyTorch's advice to turn the check off."""
    found = re.search(r"Unsupported (global: GLOBAL [\w.]+|operand \d+|class [\w.]+)", text)
    if found:
        return f"unsupported {found.group(1).replace('global: GLOBAL ', 'object ')}"
    return "the weights-only unpickler refused it"


def read_pickle(path: Path, what: str = "", mmap: bool = False) -> Any:
    """The object a pickle checkpoint holds, rebuilt by the weights-only unpickler (tensors on the CPU).

    `what` starts the messages ("upscaler", "model", ...). With `mmap`, tensors of a zip checkpoint stay in the
    file (cheap, for checking a file without reading its data). Raises UnsafeModelFileError for a TorchScript
    archive or anything beyond tensors and plain data, ModelFileError for a file that is not a checkpoint."""
    path = Path(path)
    lead = f"{what}: " if what else ""
    try:
        reason = torchscript_reason(path)
    except OSError as exc:
        raise ModelFileError(f"{lead}{path.name}: cannot be read ({exc.strerror or exc})") from None
    if reason is not None:
        raise UnsafeModelFileError(f"{lead}{path.name} refused: {reason}. Easel loads only tensors; get a "
                                   ".safetensors version of this model from its author")
    import torch

    try:
        with open(path, "rb") as fh:
            zipped = fh.read(4) == b"PK\x03\x04"
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap and zipped)
    except pickle.UnpicklingError as exc:
        raise UnsafeModelFileError(
            f"{lead}{path.name} refused: it holds Python objects other than tensors and plain data, which could run "
            f"code when loaded ({_refusal_detail(str(exc))}). Get a .safetensors version of this model from its "
            "author") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, KeyError, IndexError, TypeError,
            zipfile.BadZipFile) as exc:
        if "TorchScript" in str(exc):  # PyTorch's own check, should a zip fool the one above
            raise UnsafeModelFileError(f"{lead}{path.name} refused: it is a TorchScript archive, compiled code "
                                       "that would run when it is loaded") from None
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "no detail"
        raise ModelFileError(f"{lead}{path.name}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                             f"{first.replace(str(path), path.name)})") from None


def tensors_of(loaded: Any, path: Path, what: str = "") -> dict[str, torch.Tensor]:
    """A checkpoint's tensors by name: its state dict when it wraps one, nested dicts flattened with dots."""
    import torch

    lead = f"{what}: " if what else ""
    if isinstance(loaded, dict):
        for key in STATE_KEYS:
            inner = loaded.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                loaded = inner
                break
    if not isinstance(loaded, dict):
        raise ModelFileError(f"{lead}{Path(path).name}: holds a {type(loaded).__name__}, not a dictionary of "
                             "tensors")
    found: dict[str, torch.Tensor] = {}

    def collect(prefix: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            found[prefix] = value
        elif isinstance(value, dict):
            for key, inner in value.items():
                collect(f"{prefix}.{key}" if prefix else str(key), inner)

    collect("", loaded)
    if not found:
        raise ModelFileError(f"{lead}{Path(path).name}: holds no tensors")
    return found


# ------------------------------------------------------------------------------------------------ any file
def read_weights(path: Path, what: str = "", mmap: bool = False) -> Any:
    """The file's contents, read without running code: a dict of tensors for safetensors, the weights-only
    unpickled object for a pickle (with `mmap`, a zip checkpoint's tensors stay in the file). Raises
    ModelFileError (UnsafeModelFileError for refusals)."""
    path = Path(path)
    suffix = path.suffix.lower()
    lead = f"{what}: " if what else ""
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{lead}{path.name}: not a readable safetensors file "
                                 f"({str(exc).strip()[:300] or type(exc).__name__})") from None
    if suffix in PICKLE_SUFFIXES:
        return read_pickle(path, what, mmap=mmap)
    raise ModelFileError(f"{lead}{path.name}: unsupported file type {suffix or '(none)'}; model files are "
                         f"{', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)}")


def read_state_dict(path: Path, what: str = "", mmap: bool = False) -> dict[str, torch.Tensor]:
    """The file's tensors by name (a wrapped `state_dict` unwrapped), read without running code."""
    return tensors_of(read_weights(path, what, mmap), path, what)


def check_weights_file(path: Path, what: str = "") -> None:
    """Raise UnsafeModelFileError unless `path` reads as tensors and plain data. A zip checkpoint is checked
    without reading its tensor data; a safetensors file by its header."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        read_pickle(path, what, mmap=True)
        return
    from webui.model_manager.identify import HeaderError, read_safetensors_header

    try:
        read_safetensors_header(path)
    except (HeaderError, OSError) as exc:
        raise ModelFileError(f"{what + ': ' if what else ''}{path.name}: not a readable safetensors file "
                             f"({exc})") from None


# ------------------------------------------------------------------------------------------------ folders
def _weight_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)


def pickle_weights_in(folder: Path, components: list[str] | None = None) -> list[Path]:
    """Pickle weight files of a diffusers / transformers folder that have no safetensors beside them.

    `components` are the subfolders to look in (a pipeline's `model_index.json` entries); None looks in the
    folder itself (a single model: a ControlNet, a segmenter). A component with any safetensors weights is
    fine: `from_pretrained(use_safetensors=True)` reads those."""
    folders = [folder / name for name in components] if components is not None else [folder]
    found: list[Path] = []
    for part in folders:
        files = _weight_files(part)
        if any(p.suffix.lower() in SAFETENSORS_SUFFIXES for p in files):
            continue
        found.extend(p for p in files if p.suffix.lower() in PICKLE_SUFFIXES)
    return found


def pipeline_components(folder: Path, index: dict[str, Any]) -> list[str]:
    """The subfolders of a diffusers pipeline folder that hold a model (entries of its model_index.json)."""
    return [name for name, value in index.items() if not name.startswith("_") and isinstance(value, list)
            and len(value) == 2 and value[0] is not None and (folder / name).is_dir()]


def pickle_folder_reason(folder: Path, files: list[Path]) -> str:
    """Why a folder whose weights are only pickle files is not loaded, naming the files inside it."""
    names = ", ".join(display_name(p, folder) for p in files[:4]) + (f" and {len(files) - 4} more"
                                                                     if len(files) > 4 else "")
    return (f"its weights ({names}) are pickle files, which are not loaded because unpickling can run code hidden "
            "in them; convert them to .safetensors (Models tab, Convert to safetensors on this model; or "
            "python -m webui.model_manager.convert FOLDER), which reads only their tensors")
