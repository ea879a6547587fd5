"""Convert a pickle checkpoint (.ckpt, .pt, .bin, .pth) to .safetensors without running code from it.

Easel never loads pickle checkpoints: unpickling can run any Python the file's author put in it. This converter
opens them only through `webui.model_manager.weights.read_pickle`: `torch.load(weights_only=True)`, PyTorch's
restricted unpickler that rebuilds tensors, numbers, strings and containers and refuses everything else (a file
that needs other objects is refused, not converted), after refusing TorchScript archives unread. The tensors of the checkpoint (its `state_dict` when it has one, as Stable Diffusion
.ckpt files do) are written beside it as `<stem>.safetensors`, through a temporary file, so a failed conversion
leaves nothing half-written. A diffusers or transformers folder whose weights are pickle `.bin` files is converted
file by file to the names `from_pretrained` reads (`diffusion_pytorch_model.safetensors`, `model.safetensors`),
after every file has been checked. Run it from the Models tab ("Convert to safetensors") or from a shell:

    python -m webui.model_manager.convert models/Stable-diffusion/old-model.ckpt [--out FILE] [--overwrite]
    python -m webui.model_manager.convert models/diffusers/old-pipeline
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from webui.model_manager.identify import PICKLE_SUFFIXES
from webui.model_manager.weights import ModelFileError, pickle_weights_in, pipeline_components, read_pickle, tensors_of

log = logging.getLogger(__name__)


class ConversionError(ValueError):
    """The file was not converted; the message names it and says why."""


def converted_path(source: Path) -> Path:
    """Where the tensors of `source` go: beside it as `.safetensors`; in a model folder, under the name
    diffusers and transformers look for (`pytorch_model.bin` -> `model.safetensors`)."""
    source = Path(source)
    stem = source.stem
    for old, new in (("pytorch_model", "model"),):
        if stem == old or stem.startswith((old + ".", old + "-")):  # variants (.fp16) and shards (-00001-of-2)
            if source.parent.joinpath("config.json").is_file():
                stem = new + stem[len(old):]
    return source.with_name(stem + ".safetensors")


def read_weights_only(source: Path) -> Any:
    """The unpickled object, through PyTorch's weights-only unpickler (TorchScript archives refused unread).
    Raises ConversionError naming the file when it needs anything else, is not a PyTorch file, or cannot be
    read."""
    try:
        return read_pickle(source)
    except ModelFileError as exc:
        raise ConversionError(str(exc)) from None


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
    try:
        tensors = _own_storage(tensors_of(read_weights_only(source), source))
    except ModelFileError as exc:
        raise ConversionError(str(exc)) from None
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


def convert_folder(folder: Path, overwrite: bool = False) -> list[Path]:
    """Convert the pickle weights of a model folder to the `.safetensors` files `from_pretrained` reads.

    `folder` is a diffusers pipeline folder (`model_index.json`: each component's subfolder is converted) or one
    model's folder (`config.json` beside its weights: a ControlNet, a segmenter, a component). Every pickle file
    is checked before anything is written, so a refused file leaves the folder as it was; a sharded model gets
    its safetensors index too. Returns the files written; raises ConversionError naming the file."""
    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        try:
            index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConversionError(f"{folder.name}/model_index.json: cannot be read ({exc})") from None
        components: list[str] | None = pipeline_components(folder, index if isinstance(index, dict) else {})
    elif (folder / "config.json").is_file():
        components = None
    else:
        raise ConversionError(f"{folder.name}: not a model folder (it has no model_index.json or config.json)")
    sources = pickle_weights_in(folder, components)
    if not sources:
        raise ConversionError(f"{folder.name}: no pickle weights without a .safetensors version to convert")
    for source in sources:  # refuse before writing anything
        try:
            read_pickle(source, mmap=True)
        except ModelFileError as exc:
            raise ConversionError(str(exc).replace(source.name, f"{folder.name}/{source.relative_to(folder).as_posix()}",
                                                   1)) from None
    written = [convert_checkpoint(source, overwrite=overwrite) for source in sources]
    for part in sorted({source.parent for source in sources}):
        for pickle_index in sorted(part.glob("*.bin.index.json")):
            written.append(_convert_index(pickle_index, overwrite))
    return written


def _convert_index(pickle_index: Path, overwrite: bool) -> Path:
    """The safetensors index of a sharded model, its weight map pointing at the converted shards."""
    data = json.loads(pickle_index.read_text(encoding="utf-8"))
    weights = pickle_index.with_name(pickle_index.name[:-len(".index.json")])
    target = converted_path(weights).with_name(converted_path(weights).name + ".index.json")
    if target.exists() and not overwrite:
        raise ConversionError(f"{target.name} already exists; remove it first (or pass --overwrite)")
    data["weight_map"] = {key: converted_path(pickle_index.parent / shard).name
                          for key, shard in dict(data.get("weight_map") or {}).items()}
    target.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webui.model_manager.convert",
                                     description="Convert a pickle checkpoint to .safetensors (weights only).")
    parser.add_argument("file", type=Path, help="a .ckpt, .pt, .bin or .pth file, or a diffusers/transformers folder")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: beside it, .safetensors)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing .safetensors file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        if args.file.is_dir():
            convert_folder(args.file, args.overwrite)
        else:
            convert_checkpoint(args.file, args.out, args.overwrite)
    except ConversionError as exc:
        log.error("not converted: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
