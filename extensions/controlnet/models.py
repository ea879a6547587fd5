"""ControlNet models: find them in the ControlNet folders, tell their family, load them once, name them.

A model is a diffusers folder (`config.json` + weights; `ControlNetModel` for SD 1.x/2.x/SDXL, `ControlNetUnionModel`
for SDXL union models, `FluxControlNetModel`, `ZImageControlNetModel`, `SD3ControlNetModel`,
`QwenImageControlNetModel`) or a single SD-family file (`.safetensors`, `.pth`, `.pt`, `.ckpt`, `.bin`) in
AUTOMATIC1111's layout or diffusers'. A single file loads with the `.yaml` of the same name
beside it when there is one (as AUTOMATIC1111 ships them), else with the config under `configs/` matching its
cross-attention width (768 SD 1.x, 1024 SD 2.x, 2048 SDXL). Files are read without running code from them:
pickle files through the weights-only unpickler (TorchScript archives refused unread) and handed to diffusers as
tensors, folders with `use_safetensors=True` (a folder with only pickle weights is refused, naming the files).
Folders named `annotators` hold preprocessor weights and are skipped. Titles are AUTOMATIC1111's: `name [first 8
hex of the SHA-256]`. Loaded models are held in Easel's one memory cache (`api.memory`, by file, dtype, device and
copy) and count against its budgets with every other model; consecutive generations do not read them again, and
Unload frees them.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from webui.extension_api import RequestError, pickle_folder_reason, pickle_weights_in, read_state_dict

log = logging.getLogger("easel.extensions.controlnet")

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
CONFIGS = Path(__file__).resolve().parent / "configs"
# Single-file families by the width of their cross-attention (attn2.to_k takes [inner, width]).
CROSS_ATTENTION_FAMILIES: dict[int, str] = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
SINGLE_FILE_CONFIGS: dict[str, Path] = {"sd1": CONFIGS / "sd15", "sd2": CONFIGS / "sd21", "sdxl": CONFIGS / "sdxl"}
FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "sd3": "SD3", "flux": "Flux.1",
                 "zimage": "Z-Image", "qwenimage": "Qwen-Image", "unknown": "an unknown model family"}
FOLDER_CLASSES = {"ControlNetModel": None, "FluxControlNetModel": "flux", "ZImageControlNetModel": "zimage",
                  "SD3ControlNetModel": "sd3", "QwenImageControlNetModel": "qwenimage",
                  "T2IAdapter": None, "ControlNetUnionModel": None}
KIND = "controlnet"  # their kind in the memory cache
HASH_LENGTH = 8


@dataclass(frozen=True)
class ControlNetEntry:
    """One installed ControlNet model."""

    name: str  # relative path without suffix, "/"-separated
    path: Path  # the file, or the diffusers folder
    folder: bool

    @property
    def weights(self) -> Path:
        """The file whose hash names the model (a folder's main weights file)."""
        if not self.folder:
            return self.path
        for pattern in ("diffusion_pytorch_model.safetensors", "*.safetensors", "diffusion_pytorch_model.bin",
                        "*.bin"):
            found = sorted(self.path.glob(pattern))
            if found:
                return found[0]
        return self.path / "config.json"


def folder_family(config: dict[str, Any]) -> str:
    """The family of a diffusers ControlNet folder from its config."""
    cls = config.get("_class_name", "ControlNetModel")
    if cls not in FOLDER_CLASSES:
        return "unknown"
    if FOLDER_CLASSES[cls] is not None:
        return FOLDER_CLASSES[cls]  # type: ignore[return-value]
    if cls == "T2IAdapter":  # T2I-Adapters (t2iadapter.py): SDXL's have their own adapter type
        return "sdxl" if config.get("adapter_type") == "full_adapter_xl" else "sd1"
    if config.get("addition_embed_type") == "text_time":
        return "sdxl"
    return "sd2" if config.get("cross_attention_dim") == 1024 else "sd1"


def file_keys_and_width(path: Path) -> tuple[set[str], int | None]:
    """A single file's tensor names and its cross-attention width (None when it has no cross-attention)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            keys = set(handle.keys())
            width = next((handle.get_slice(k).get_shape()[1] for k in sorted(keys) if k.endswith("attn2.to_k.weight")),
                         None)
        return keys, width
    state = read_state_dict(path, "model", mmap=True)  # tensors only; raises UnsafeModelFileError otherwise
    keys = set(state)
    width = next((state[k].shape[1] for k in sorted(keys) if k.endswith("attn2.to_k.weight")), None)
    return keys, width


UNION_KEYS = ("task_embedding", "control_add_embedding.linear_1.weight")  # ControlNetUnionModel's own tensors


def file_family(path: Path) -> str:
    keys, width = file_keys_and_width(path)
    if any(key in keys for key in UNION_KEYS):  # union ControlNets exist for SDXL only
        return "sdxl"
    if width is None:
        if any(k.startswith(("control_layers.", "control_noise_refiner.", "control_all_x_embedder.")) for k in keys):
            return "zimage"
        if any(k.startswith(("controlnet_single_blocks.", "controlnet_x_embedder.")) for k in keys):
            return "flux"
    return CROSS_ATTENTION_FAMILIES.get(width or -1, "unknown")


@dataclass
class ControlNetModels:
    """The installed ControlNet models of some folders; loaded ones are held in `memory`."""

    folders: Callable[[], list[Path]]
    file_hash: Callable[[Path], str]
    memory: Any = None  # Easel's MemoryCache (`api.memory`); None: one of its own
    _entries: dict[str, ControlNetEntry] = field(default_factory=dict)
    _families: dict[tuple[str, int], str] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        if self.memory is None:
            from webui.extension_api import MemoryCache

            self.memory = MemoryCache()

    # Listing ---------------------------------------------------------------------------------------------------
    def scan(self) -> list[ControlNetEntry]:
        found: dict[str, ControlNetEntry] = {}
        for root in self.folders():
            if not root.is_dir():
                continue
            self._scan_folder(root, root, found)
        with self._lock:
            self._entries = dict(sorted(found.items(), key=lambda kv: kv[0].lower()))
            return list(self._entries.values())

    def _scan_folder(self, root: Path, folder: Path, found: dict[str, ControlNetEntry]) -> None:
        for child in sorted(folder.iterdir()):
            if child.name.startswith(".") or child.name == "annotators":
                continue
            name = child.relative_to(root).with_suffix("").as_posix() if child.is_file() else \
                child.relative_to(root).as_posix()
            if child.is_dir():
                if (child / "config.json").is_file():
                    found.setdefault(name, ControlNetEntry(name, child, True))
                else:
                    self._scan_folder(root, child, found)
            elif child.suffix.lower() in WEIGHT_SUFFIXES:
                found.setdefault(name, ControlNetEntry(name, child, False))

    def entries(self) -> list[ControlNetEntry]:
        with self._lock:
            if not self._entries:
                return self.scan()
            return list(self._entries.values())

    def title(self, entry: ControlNetEntry) -> str:
        try:
            return f"{entry.name} [{self.file_hash(entry.weights)[:HASH_LENGTH]}]"
        except OSError:
            return entry.name

    def find(self, query: str) -> ControlNetEntry:
        """By name, title ("name [hash]"), file name or stem, in any case; rescans once before giving up."""
        wanted = query.strip()
        if wanted.endswith("]") and " [" in wanted:
            wanted = wanted[: wanted.rindex(" [")].strip()
        for attempt in range(2):
            entries = self.scan() if attempt else self.entries()
            for entry in entries:
                candidates = {entry.name, entry.path.name, entry.path.stem, entry.name.rsplit("/", 1)[-1]}
                if wanted.lower() in {c.lower() for c in candidates}:
                    return entry
        names = ", ".join(e.name for e in self.entries()) or "none (put ControlNet models in models/ControlNet)"
        raise LookupError(f"unknown ControlNet model {query!r}; installed: {names}")

    def family(self, entry: ControlNetEntry) -> str:
        """sd1, sd2, sdxl, flux, zimage or unknown (read from the config or the file's header, remembered)."""
        stamp = (str(entry.path), int(entry.weights.stat().st_mtime_ns) if entry.weights.exists() else 0)
        with self._lock:
            if stamp not in self._families:
                if entry.folder:
                    config = json.loads((entry.path / "config.json").read_text(encoding="utf-8"))
                    self._families[stamp] = folder_family(config)
                else:
                    self._families[stamp] = file_family(entry.path)
            return self._families[stamp]

    # Loading ---------------------------------------------------------------------------------------------------
    def load(self, entry: ControlNetEntry, device: Any, dtype: Any, copy: int = 0) -> Any:
        """The model on `device` in `dtype`, from the cache when it was loaded recently. `copy` > 0 asks for
        another instance of the same model (two units using one model each get their own)."""
        key = (str(entry.path), str(dtype), str(device), copy)
        with self._lock:
            model = self.memory.get(KIND, key)
            if model is None:
                model = self._read(entry, dtype).to(device=device, dtype=dtype).eval()
                model.requires_grad_(False)
                self.memory.add(KIND, key, model, name=entry.name if not copy else f"{entry.name} (copy {copy + 1})")
            return model

    def clear(self) -> None:
        self.memory.clear(KIND)

    def _read(self, entry: ControlNetEntry, dtype: Any) -> Any:
        import diffusers

        family = self.family(entry)
        log.info("loading ControlNet %s (%s)", entry.name, FAMILY_LABELS.get(family, family))
        if entry.folder:
            config = json.loads((entry.path / "config.json").read_text(encoding="utf-8"))
            cls_name = config.get("_class_name", "ControlNetModel")
            if cls_name not in FOLDER_CLASSES:
                raise RequestError("model", f"{entry.name} is a {cls_name}; Easel runs "
                                            f"{', '.join(FOLDER_CLASSES)} folders")
            cls = getattr(diffusers, cls_name)
            pickled = pickle_weights_in(entry.path)
            if pickled:
                raise RequestError("model", f"{entry.name} is not loaded: "
                                            f"{pickle_folder_reason(entry.path, pickled)}")
            return cls.from_pretrained(str(entry.path), torch_dtype=dtype, local_files_only=True,
                                       use_safetensors=True)
        if family in ("flux", "zimage", "sd3", "qwenimage"):
            raise RequestError("model", f"{entry.name} is a {FAMILY_LABELS[family]} ControlNet in one file; "
                                        "Easel loads those from a diffusers folder (config.json beside the weights)")
        if any(key in file_keys_and_width(entry.path)[0] for key in UNION_KEYS):
            raise RequestError("model", f"{entry.name} is an SDXL union ControlNet in one file; Easel loads those "
                                        "from a diffusers folder: put it in a folder of its own with the config.json "
                                        "of the model's repository (config_promax.json for ProMax), as "
                                        "diffusion_pytorch_model.safetensors")
        yaml = entry.path.with_suffix(".yaml")
        if not yaml.is_file() and family not in SINGLE_FILE_CONFIGS:
            raise RequestError("model", f"cannot tell which model family {entry.path.name} is for; put its .yaml "
                                        f"config beside it ({yaml.name}) or use a diffusers folder with a config.json")
        # diffusers gets the tensors, never the file: a pickle is read here with the weights-only unpickler
        source: Any = str(entry.path) if entry.path.suffix.lower() == ".safetensors" else \
            read_state_dict(entry.path, "model")
        if yaml.is_file():
            return diffusers.ControlNetModel.from_single_file(source, original_config=str(yaml),
                                                              torch_dtype=dtype, local_files_only=True)
        return diffusers.ControlNetModel.from_single_file(source, config=str(SINGLE_FILE_CONFIGS[family]),
                                                          torch_dtype=dtype, local_files_only=True)
