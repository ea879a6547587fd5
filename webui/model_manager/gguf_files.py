"""GGUF model files: read their tensor names, shapes and quantization types, and write them.

A `.gguf` file (the llama.cpp container) holds key/value metadata and a list of tensors, each with a ggml type:
F32/F16/BF16, or a block quantization (Q8_0: blocks of 32 int8 with one fp16 scale; Q4_0: 32 4-bit values and
a scale; Q4_K/Q5_K/Q6_K: 256-value super-blocks with 6-bit sub-block scales and minimums). Community diffusion
files (Flux, SD3, SDXL, Z-Image, Qwen-Image) keep the original model's key names (`double_blocks.0.img_attn.qkv
.weight`, `input_blocks.0.0.weight`) and quantize the linear (2-D) weights; small, 1-D and convolution
tensors stay F32/F16.

`gguf_shapes` reads only the header (names, logical shapes in PyTorch order, types), which is what identification
needs. `write_gguf` writes a state dict that way (used by the tests, the benchmark, and
`python -m webui.model_manager.gguf_files SRC.safetensors DST.gguf Q8_0`). gguf-py quantizes Q8_0/Q4_0/Q5_0
itself; Q4_K is packed here (gguf-py only reads it), with the layout llama.cpp's `dequantize_row_q4_K` reads.
Loading is diffusers' business (`GGUFQuantizationConfig`): see webui.model_manager.formats.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

GGUF_SUFFIXES = (".gguf",)
QUANTIZE_MIN_ELEMENTS = 1024  # smaller tensors stay F32, as the community converters leave them
QUANT_TYPES = ("Q8_0", "Q6_K", "Q5_K", "Q5_0", "Q5_1", "Q4_K", "Q4_0", "Q4_1", "Q3_K", "Q2_K", "BF16", "F16", "F32")
WRITABLE_TYPES = ("Q8_0", "Q5_0", "Q5_1", "Q4_K", "Q4_0", "Q4_1", "BF16", "F16", "F32")


class GGUFError(ValueError):
    """A GGUF file could not be read, or a state dict could not be written as GGUF."""


def _gguf() -> Any:
    try:
        import gguf
    except ImportError as exc:  # an optional dependency until a GGUF file is met
        raise GGUFError("reading GGUF files needs the 'gguf' package: pip install gguf") from exc
    return gguf


def gguf_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str], str]:
    """(tensor name -> logical shape in PyTorch order, tensor name -> ggml type name, general.architecture)."""
    gguf = _gguf()
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # gguf-py raises many types (ValueError, IndexError, struct/numpy errors) on bad files
        raise GGUFError(f"not a readable GGUF file ({type(exc).__name__}: {exc})") from None
    try:
        shapes = {t.name: tuple(int(d) for d in reversed([int(x) for x in t.shape])) for t in reader.tensors}
        types = {t.name: t.tensor_type.name for t in reader.tensors}
    except Exception as exc:  # an unknown ggml type or a mangled tensor list
        raise GGUFError(f"unreadable GGUF tensor list ({type(exc).__name__}: {exc})") from None
    arch = ""
    field = reader.get_field("general.architecture")
    if field is not None:
        try:
            arch = bytes(field.parts[field.data[0]]).decode("utf-8")
        except (IndexError, UnicodeDecodeError):
            arch = ""
    return shapes, types, arch


def main_quant_type(types: dict[str, str]) -> str:
    """The ggml type most tensors (by count) of a file use, quantized types first: "Q8_0", "Q4_K", ..."""
    quantized = [t for t in types.values() if t not in ("F32", "F16", "BF16")]
    pool = quantized or list(types.values())
    return max(set(pool), key=pool.count) if pool else ""


# ------------------------------------------------------------------------------------------------ writing
def _q4_k_blocks(blocks: np.ndarray) -> np.ndarray:
    """Q4_K super-blocks: (n, 256) float32 -> (n, 144) uint8 = d, dmin (fp16), 12 bytes of scales, 128 of codes."""
    n = blocks.shape[0]
    sub = blocks.reshape(n, 8, 32)                                   # 8 sub-blocks of 32
    low = np.minimum(sub.min(axis=-1), 0.0)                          # (n, 8) minimum, never above 0
    scale = (sub.max(axis=-1) - low) / 15.0                          # (n, 8) step of the 4-bit codes
    d = (scale.max(axis=-1) / 63.0).astype(np.float16)               # (n,) super-scale of the 6-bit scales
    dmin = ((-low).max(axis=-1) / 63.0).astype(np.float16)           # (n,) super-scale of the 6-bit minimums
    d32, dmin32 = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d32 > 0, np.rint(scale / d32), 0).clip(0, 63).astype(np.uint8)    # (n, 8)
        mn = np.where(dmin32 > 0, np.rint(-low / dmin32), 0).clip(0, 63).astype(np.uint8)  # (n, 8)
        step = (d32 * sc)[:, :, None]                                # (n, 8, 1)
        offset = (dmin32 * mn)[:, :, None]
        q = np.where(step > 0, np.rint((sub + offset) / step), 0).clip(0, 15).astype(np.uint8)  # (n, 8, 32)
    packed = np.empty((n, 12), dtype=np.uint8)
    packed[:, 0:4] = (sc[:, :4] & 0x3F) | ((sc[:, 4:] >> 4) << 6)
    packed[:, 4:8] = (mn[:, :4] & 0x3F) | ((mn[:, 4:] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    q = q.reshape(n, 4, 2, 32)                                       # pairs of sub-blocks share 32 bytes
    codes = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(n, 128)
    return np.concatenate([d.view(np.uint8).reshape(n, 2), dmin.view(np.uint8).reshape(n, 2), packed, codes],
                          axis=1)


def quantize_array(array: np.ndarray, qtype: str) -> tuple[np.ndarray, Any]:
    """(data to store, ggml type) for one float32 array; the last dimension must be a whole number of blocks."""
    gguf = _gguf()
    kind = gguf.GGMLQuantizationType[qtype]
    if qtype == "F32":
        return array.astype(np.float32), kind
    if qtype == "F16":
        return array.astype(np.float16), kind
    block, size = gguf.GGML_QUANT_SIZES[kind]
    if array.shape[-1] % block:
        raise GGUFError(f"{qtype} needs rows of a multiple of {block} values, got {array.shape[-1]}")
    if qtype == "Q4_K":
        rows = array.reshape(-1, block).astype(np.float32)
        data = _q4_k_blocks(rows).reshape(*array.shape[:-1], array.shape[-1] // block * size)
        return data, kind
    try:
        return gguf.quants.quantize(array.astype(np.float32), kind), kind
    except NotImplementedError as exc:
        raise GGUFError(f"writing {qtype} is not supported; writable types: {', '.join(WRITABLE_TYPES)}") from exc


def write_gguf(state: dict[str, Any], path: Path, qtype: str = "Q8_0", arch: str = "",
               min_elements: int = QUANTIZE_MIN_ELEMENTS) -> Path:
    """Write tensors (torch or numpy) as GGUF: linear weights (2-D `*.weight`) with at least `min_elements`
    values and rows that divide into blocks in `qtype`; the rest (biases, norms, convolutions, position tables)
    in F32, which is what diffusers' GGUF loader can run. Returns `path`."""
    gguf = _gguf()
    if qtype not in WRITABLE_TYPES:
        raise GGUFError(f"qtype must be one of {', '.join(WRITABLE_TYPES)}, got {qtype!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch=arch or "diffusion")
    kind = gguf.GGMLQuantizationType[qtype]
    block = gguf.GGML_QUANT_SIZES[kind][0]
    for name, value in state.items():
        array = value.detach().float().cpu().numpy() if hasattr(value, "detach") else np.asarray(value, np.float32)
        linear = array.ndim == 2 and name.endswith(".weight")
        wanted = qtype if (linear and array.size >= min_elements and array.shape[-1] % block == 0) else "F32"
        data, raw = quantize_array(array, wanted)
        writer.add_tensor(name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    """Quantize a `.safetensors` model file to GGUF, keeping its key names."""
    from safetensors.torch import load_file

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("qtype", nargs="?", default="Q8_0", choices=WRITABLE_TYPES)
    args = parser.parse_args(argv)
    write_gguf(load_file(str(args.source)), args.target, args.qtype)
    print(f"wrote {args.target} ({args.qtype})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
