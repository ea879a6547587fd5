"""Convert a pickle checkpoint (.ckpt, .pt, .bin, .pth) to .safetensors without running code from it.

Easel never loads pickle files: unpickling can run any Python the file's author put in it. This converter is the
one place that opens them, and only with `torch.load(weights_only=True)`, PyTorch's restricted unpickler that
rebuilds tensors, numbers, strings and containers and refuses everything else (a file that needs other objects
is refused, not converted). The tensors of the checkpoint (its `state_dict` when it has one, as Stable Diffusion
.ckpt files do) are written beside it as `<stem>.safetensors`, through a temporary file, so a failed conversion
leaves nothing half-written. Run it from the Models tab ("Convert to safetensors") or from a shell:

    python -m webui.model_manager.convert models/Stable-diffusion/old-model.ckpt [--out FILE] [--overwrite]
"""
from __future__ import annotations

import argparse
import logging
import os
import pickle
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from webui.model_manager.identify import PICKLE_SUFFIXES

log = logging.getLogger(__name__)

STATE_KEYS = ("state_dict", "model", "module", "model_state_dict")


class ConversionError(ValueError):
    """The file was not converted; the message names it and says why."""


def converted_path(source: Path) -> Path:
    return Path(source).with_suffix(".safetensors")


def read_weights_only(source: Path) -> Any:
    """The unpickled object, through PyTorch's weights-only unpickler. Raises ConversionError naming the file when
    it needs anything else, is not a PyTorch file, or cannot be read."""
    try:
        return torch.load(str(source), map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as exc:
        raise ConversionError(
            f"{source}: refused. It holds Python objects other than tensors and plain data, which could run code "
            f"when loaded, so it was not converted ({_refusal_detail(str(exc))}). Get a .safetensors version of "
            "this model from its author instead.") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, KeyError, IndexError, TypeError) as exc:
        raise ConversionError(f"{source}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else 'no detail'})"
                              ) from None


def _refusal_detail(text: str) -> str:
    """What the weights-only unpickler objected to, without PyTorch's advice to turn the check off."""
    found = re.search(r"Unsupported (global: GLOBAL [\w.]+|operand \d+|class [\w.]+)", text)
    if found:
        return f"unsupported {found.group(1).replace('global: GLOBAL ', 'object ')}"
    return "the weights-only unpickler refused it"


def tensors_of(loaded: Any, source: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors by name: its state dict when it wraps one, nested dicts flattened with dots."""
    if isinstance(loaded, dict):
        for key in STATE_KEYS:
            inner = loaded.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                loaded = inner
                break
    if not isinstance(loaded, dict):
        raise ConversionError(f"{source}: holds a {type(loaded).__name__}, not a dictionary of tensors")
    found: dict[str, torch.Tensor] = {}

    def collect(prefix: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            found[prefix] = value
        elif isinstance(value, dict):
            for key, inner in value.items():
                collect(f"{prefix}.{key}" if prefix else str(key), inner)

    collect("", loaded)
    if not found:
        raise ConversionError(f"{source}: holds no tensors")
    return found


def _own_storage(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors that share no memory with each other (safetensors stores each one separately)."""
    seen: set[tuple[int, int]] = set()
    result: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach()
        key = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if key in seen or not tensor.is_contiguous():
            tensor = tensor.contiguous().clone()
        elif tensor.numel() * tensor.element_size() != tensor.untyped_storage().nbytes():
            tensor = tensor.clone()  # a view into a larger buffer: store only its own elements
        seen.add((tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes()))
        result[name] = tensor
    return result


def convert_checkpoint(source: Path, target: Path | None = None, overwrite: bool = False) -> Path:
    """Write the tensors of pickle checkpoint `source` to `target` (default: beside it, `.safetensors`).

    Raises ConversionError (naming the file) when it is not a pickle checkpoint, cannot be read, needs more than
    the weights-only unpickler allows, or when the target exists and `overwrite` is False."""
    from safetensors.torch import save_file

    source = Path(source)
    target = Path(target) if target is not None else converted_path(source)
    if source.suffix.lower() not in PICKLE_SUFFIXES:
        raise ConversionError(f"{source}: only pickle checkpoints ({', '.join(PICKLE_SUFFIXES)}) are converted")
    if not source.is_file():
        raise ConversionError(f"{source}: no such file")
    if target.suffix.lower() != ".safetensors":
        raise ConversionError(f"{target}: the converted file must end in .safetensors")
    if target.exists() and not overwrite:
        raise ConversionError(f"{target} already exists; remove it first (or pass --overwrite)")
    tensors = _own_storage(tensors_of(read_weights_only(source), source))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".safetensors.tmp", dir=target.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp_name, metadata={"format": "pt", "converted_from": source.name})
        os.replace(tmp_name, target)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConversionError(f"{target}: could not be written ({type(exc).__name__}: {exc})") from None
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    log.info("converted %s to %s (%d tensors)", source, target, len(tensors))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webui.model_manager.convert",
                                     description="Convert a pickle checkpoint to .safetensors (weights only).")
    parser.add_argument("file", type=Path, help="a .ckpt, .pt, .bin or .pth file")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: beside it, .safetensors)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing .safetensors file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        convert_checkpoint(args.file, args.out, args.overwrite)
    except ConversionError as exc:
        log.error("not converted: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
