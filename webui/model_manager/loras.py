"""LoRAs on a loaded pipeline: apply them, change their weights, drop them, fuse or hot-swap them.

Listing and describing LoRA files (family, layout, trigger words, preview) is webui.model_manager.lora_files,
which reads headers only and needs no torch; its names are re-exported here.

Applying is `LoraStack.apply`: one stack per loaded denoiser holds the LoRAs as named PEFT adapters (diffusers'
`load_lora_weights`), sets their weights for each generation (`set_adapters`) and drops the ones no longer asked
for (`delete_adapters`); the base weights are never reloaded. With no LoRA left the layers compute exactly the
base model again. Two options trade exactness or memory for speed: fusing folds a LoRA set that repeats into
the base weights (a copy of the touched weights is kept, so unfusing restores them exactly), and hot-swapping
replaces adapter weights in place, so a `torch.compile`d denoiser is not recompiled (diffusers'
`enable_lora_hotswap` / `hotswap=True`; ranks are padded to a fixed maximum). See docs/LORA.md.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from webui.model_manager.identify import ARCH_LABELS, Arch
# Reading and listing LoRA files lives in lora_files (no torch); these names stay importable from here.
from webui.model_manager.lora_files import (HASH_AT_SCAN_LIMIT, LORA_SUFFIXES, PREVIEW_SUFFIXES,  # noqa: F401
                                            LoraEntry, arch_from_keys, arch_from_metadata, describe_lora,
                                            find_preview, identify_lora, lora_arch, lora_format, lora_rank,
                                            metadata_thumbnail, preview_image, read_lora_header, trigger_words)

log = logging.getLogger(__name__)

DENOISER_PREFIX = {Arch.SD1: "unet", Arch.SD2: "unet", Arch.SDXL: "unet"}  # the rest: "transformer"


class LoraError(ValueError):
    """A LoRA that cannot be used with the loaded model (wrong family, unreadable, nothing matched)."""


@dataclass(frozen=True)
class LoraOptions:
    """How LoRAs are applied (user settings): fuse repeated sets, hot-swap in place, compile the denoiser."""

    fuse: bool = False
    hotswap: bool = False
    max_rank: int = 128  # hot-swap pads every adapter to this rank
    compile: bool = False  # torch.compile the denoiser (only with hotswap: a swap then needs no recompile)
    keep_loaded: int = 4  # unused LoRAs kept loaded but inactive (least recently used dropped first); 0 = none


@dataclass(frozen=True)
class AppliedLora:
    """A LoRA a generation used, as infotext records it."""

    name: str
    short_hash: str
    weight: float


# ==================================================================================== state dicts
def load_lora_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of a LoRA file (on the CPU) and its metadata."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            return {k: fh.get_tensor(k) for k in fh.keys()}, metadata
    except (SafetensorError, OSError) as exc:
        raise LoraError(f"cannot read LoRA {path}: {exc}") from None


_TEXT_PREFIXES = ("lora_te_", "lora_te1_", "lora_te2_", "lora_te3_", "text_encoder.", "text_encoder_2.",
                  "text_encoder_3.", "te.", "te1.", "te2.")


LoraTensors = tuple[dict[str, torch.Tensor], dict[str, str]]  # (tensors, metadata)


def split_text_encoder(tensors: LoraTensors) -> tuple[LoraTensors, LoraTensors]:
    """((denoiser tensors, metadata), (text-encoder tensors, metadata)) of a LoRA file's contents."""
    state, metadata = tensors
    text = {k: v for k, v in state.items() if k.startswith(_TEXT_PREFIXES)}
    rest = {k: v for k, v in state.items() if k not in text}
    return (rest, metadata), (text, metadata)


def _denoiser(pipe: Any) -> tuple[str, torch.nn.Module]:
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            return name, module
    raise LoraError(f"{type(pipe).__name__} has no UNet or transformer to apply a LoRA to")


def normalize_state_dict(state: dict[str, torch.Tensor], metadata: dict[str, str], pipe: Any, arch: Arch
                         ) -> dict[str, torch.Tensor]:
    """Bring layouts diffusers does not read itself into one it does, for the loaded pipeline.

    - keys that are the denoiser's own module paths under `diffusion_model.` (ai-toolkit, ComfyUI) or under no
      prefix at all get the pipeline's prefix (`transformer.` / `unet.`);
    - Flux files in ComfyUI's layout (BFL module names with lora_A/lora_B) are renamed to kohya's
      lora_down/lora_up, which diffusers converts;
    - kohya names for a model diffusers has no converter for (the built-in model) are mapped to module paths;
    - alpha (per-key `.alpha`; for the built-in model also `ss_network_alpha`) is folded into the up/B matrix,
      so every layout loads with the scale it was trained with and every adapter runs at scale 1.
    """
    prefix, denoiser = _denoiser(pipe)
    modules = {name for name, _ in denoiser.named_modules() if name}
    keys = list(state)
    if arch == Arch.FLUX and any(k.startswith("diffusion_model.") and (".double_blocks." in k or ".single_blocks." in k
                                                                       or k.startswith("diffusion_model.double_blocks")
                                                                       or k.startswith("diffusion_model.single_blocks"))
                                 for k in keys) and any(".lora_A." in k for k in keys):
        return {k.replace(".lora_A.", ".lora_down.").replace(".lora_B.", ".lora_up."): v for k, v in state.items()}

    def module_of(key: str) -> str:
        return re.sub(r"\.(lora_A|lora_B|lora_down|lora_up)(\.[^.]+)?\.weight$|\.alpha$|\.lora_(A|B)\.bias$", "", key)

    renamed: dict[str, torch.Tensor] = {}
    for old_prefix in ("diffusion_model.", "base_model.model.", ""):
        candidates = [k for k in keys if k.startswith(old_prefix)]
        if len(candidates) != len(keys) or any(k.startswith(("unet.", "transformer.", "text_encoder")) for k in keys):
            continue
        if all(module_of(k[len(old_prefix):]) in modules for k in keys):
            renamed = {f"{prefix}.{k[len(old_prefix):]}": v for k, v in state.items()}
            break
    if renamed:
        state = renamed
    elif arch == Arch.EASEL and any(k.startswith("lora_unet_") for k in keys):
        state = _kohya_to_peft(state, prefix, modules)
    return _fold_alpha(state, metadata, use_metadata=arch == Arch.EASEL)


def _kohya_to_peft(state: dict[str, torch.Tensor], prefix: str, modules: set[str]) -> dict[str, torch.Tensor]:
    """`lora_unet_a_b_0_c.lora_down.weight` (+ `.alpha`) -> `prefix.a.b.0.c.lora_A.weight` by matching module paths."""
    by_flat = {m.replace(".", "_"): m for m in modules}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        stem, _, rest = key.partition(".")
        module = by_flat.get(stem.removeprefix("lora_unet_"))
        if module is None:
            raise LoraError(f"LoRA key {key!r} names no layer of the built-in model")
        rest = rest.replace("lora_down.", "lora_A.").replace("lora_up.", "lora_B.")
        out[f"{prefix}.{module}.{rest}"] = value
    return out


def _fold_alpha(state: dict[str, torch.Tensor], metadata: dict[str, str], use_metadata: bool
                ) -> dict[str, torch.Tensor]:
    """Scale each up/B matrix by alpha / rank and drop the `.alpha` keys, so every adapter runs at scale 1.

    Alpha is the per-key `.alpha` (kohya), else, with `use_metadata`, the file's `ss_network_alpha` (Easel's
    own layout). The product up @ down is what matters, so this is the same model change, and adapters of
    different alphas can then share a hot-swap slot."""
    default_alpha: float | None = None
    if use_metadata and metadata.get("ss_network_alpha"):
        try:
            default_alpha = float(metadata["ss_network_alpha"])
        except ValueError:
            default_alpha = None
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(".alpha"):
            continue
        for up_name, down_name in ((".lora_B.", ".lora_A."), (".lora_up.", ".lora_down.")):
            if up_name in key:
                module, _, rest = key.partition(up_name)
                down = state.get(f"{module}{down_name}{rest}")
                alpha_tensor = state.get(f"{module}.alpha")
                alpha = float(alpha_tensor.item()) if alpha_tensor is not None else default_alpha
                if down is not None and alpha is not None:
                    value = value * (alpha / down.shape[0])
                break
        out[key] = value
    return out


# ==================================================================================== applying
def lora_layers(pipe: Any) -> list[torch.nn.Module]:
    """The PEFT LoRA layers in the pipeline's denoiser and text encoders."""
    from peft.tuners.lora import LoraLayer

    found: dict[int, torch.nn.Module] = {}
    for component in getattr(pipe, "components", {}).values():
        if isinstance(component, torch.nn.Module):
            for module in component.modules():
                if isinstance(module, LoraLayer):
                    found[id(module)] = module
    return list(found.values())


def adapter_name_for(short_hash: str) -> str:
    return f"lora_{short_hash}"


@dataclass
class _Fused:
    key: tuple[tuple[str, float], ...]
    backups: dict[int, tuple[torch.nn.Module, torch.Tensor]]  # id -> (base layer, its weight before fusing)


class LoraStack:
    """The LoRAs on one loaded denoiser (shared by every mode of a checkpoint), reconciled per generation.

    The stack keeps no reference to the pipeline; each call passes the pipeline (any mode's: they share modules).
    """

    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}  # adapter name -> LoRA name it holds (normal mode)
        self.text_loaded: dict[str, str] = {}  # hot-swap mode: text-encoder adapter -> LoRA name
        self.base_scaling: dict[tuple[int, str], float] = {}  # hot-swap mode: (layer id, slot) -> alpha / rank
        self.slots: list[str | None] = []  # hot-swap mode: adapter "slot_i" -> adapter key it holds
        self.hotswap_enabled = False
        self.compiled = False
        self.fused: _Fused | None = None
        self.last_key: tuple[tuple[str, float], ...] = ()
        self.stats = {"loads": 0, "hotswaps": 0, "deletes": 0, "fuses": 0, "unfuses": 0}

    # ----------------------------------------------------------------------------------------------
    def apply(self, pipe: Any, arch: Arch, model_name: str, wanted: Sequence[tuple[LoraEntry, float, str]],
              options: LoraOptions | None = None) -> None:
        """Make exactly `wanted` ((entry, weight, short hash), in order) active on `pipe`; weight 0 = not used."""
        options = options or LoraOptions()
        merged: dict[str, list] = {}
        for entry, weight, short in wanted:
            check_compatible(entry, arch, model_name)
            adapter = adapter_name_for(short)
            if adapter in merged:
                merged[adapter][1] += float(weight)  # the same file twice: weights add up
            else:
                merged[adapter] = [entry, float(weight)]
        active = [(adapter, entry, weight) for adapter, (entry, weight) in merged.items() if weight != 0.0]
        key = tuple((adapter, weight) for adapter, _, weight in active)

        # 1. A fused set that is no longer wanted is taken out first (restoring the exact base weights).
        if self.fused is not None and self.fused.key != key:
            self.unfuse(pipe)
        if self.fused is not None:  # the same set, already folded in
            self.last_key = key
            return

        # 2. Load what is missing, drop what is unused, set the weights.
        if options.hotswap:
            self._apply_hotswap(pipe, arch, model_name, active, options)
        else:
            self._apply_named(pipe, arch, model_name, active, options.keep_loaded)

        # 3. Fuse a set that repeats (not when weights live on the meta device under sequential offload).
        if options.fuse and active and key == self.last_key and not options.hotswap and _weights_materialized(pipe):
            self.fuse(pipe, key)
        self.last_key = key

    def _apply_named(self, pipe: Any, arch: Arch, model_name: str, active: list[tuple[str, LoraEntry, float]],
                     keep_loaded: int = 0) -> None:
        if self.slots or self.text_loaded:
            present = self._present(pipe)
            self._drop(pipe, [name for name in [*self._slot_names(), *self.text_loaded] if name in present])
            self.slots, self.text_loaded = [], {}
        # `self.loaded` is in least-recently-used order. Unused adapters beyond `keep_loaded` are dropped (before
        # anything new is loaded, so memory peaks low); the rest stay loaded but inactive, which costs memory and
        # no compute, and makes switching back to them a matter of setting the active adapters.
        wanted_names = [adapter for adapter, _, _ in active]
        unused = [name for name in self.loaded if name not in wanted_names]
        excess = unused[:max(0, len(unused) - keep_loaded)]
        if excess:
            self._drop(pipe, excess)
            for name in excess:
                self.loaded.pop(name, None)
        for adapter, entry, _ in active:
            if adapter in self.loaded:
                self.loaded[adapter] = self.loaded.pop(adapter)  # most recently used last
            else:
                self._load(pipe, arch, model_name, entry, adapter, hotswap=False)
                self.loaded[adapter] = entry.name
        if active:
            pipe.set_adapters([a for a, _, _ in active], [w for _, _, w in active])
        elif self.loaded:  # only inactive adapters remain: every LoRA layer computes its base layer alone
            for layer in lora_layers(pipe):
                layer.set_adapter([])

    def _apply_hotswap(self, pipe: Any, arch: Arch, model_name: str, active: list[tuple[str, LoraEntry, float]],
                       options: LoraOptions) -> None:
        """Denoiser parts go into fixed adapters "slot_i", swapped in place; text-encoder parts (which diffusers
        cannot hot-swap, and which are never compiled) are ordinary named adapters "te_<hash>"."""
        if self.loaded:
            self._drop(pipe, list(self.loaded))
            self.loaded = {}
        if not self.hotswap_enabled:
            if self._present(pipe):
                raise LoraError("hot-swap must be switched on before any LoRA is loaded; reload the model")
            try:
                pipe.enable_lora_hotswap(target_rank=options.max_rank, check_compiled="ignore")
            except (ValueError, RuntimeError) as exc:
                raise LoraError(f"cannot switch on LoRA hot-swap: {_first_line(exc)}; reload the model") from exc
            self.hotswap_enabled = True
        text_wanted: dict[str, float] = {}
        for i, (adapter, entry, weight) in enumerate(active):
            slot = f"slot_{i}"
            denoiser_part, text_part = split_text_encoder(load_lora_state_dict(entry.path))
            if text_part[0]:
                text_adapter = "te_" + adapter.removeprefix("lora_")
                text_wanted[text_adapter] = weight
                if text_adapter not in self.text_loaded:
                    self._load(pipe, arch, model_name, entry, text_adapter, hotswap=False, tensors=text_part)
                    self.text_loaded[text_adapter] = entry.name
            if i < len(self.slots) and self.slots[i] == adapter:
                continue
            if not denoiser_part[0]:
                raise LoraError(f"LoRA {entry.name!r} changes only the text encoder; hot-swap mode needs UNet or "
                                "transformer weights")
            if i < len(self.slots) and self.slots[i] is not None:
                try:
                    self._load(pipe, arch, model_name, entry, slot, hotswap=True, tensors=denoiser_part)
                    self.stats["hotswaps"] += 1
                except LoraError as exc:  # e.g. the new LoRA touches layers the slot does not have
                    log.warning("hot-swapping %s failed (%s); loading it anew, which recompiles", entry.name, exc)
                    self._drop(pipe, [slot])
                    self._load(pipe, arch, model_name, entry, slot, hotswap=False, tensors=denoiser_part)
            else:
                self._load(pipe, arch, model_name, entry, slot, hotswap=False, tensors=denoiser_part)
            self._record_base_scaling(pipe, slot)
            if i < len(self.slots):
                self.slots[i] = adapter
            else:
                self.slots.append(adapter)
        unused_text = [name for name in self.text_loaded if name not in text_wanted]
        if unused_text:
            self._drop(pipe, unused_text)
            for name in unused_text:
                self.text_loaded.pop(name)
        present = self._present(pipe)
        # Unused slots stay loaded at weight 0, so the compiled graph does not change.
        slot_weights = {name: active[i][2] if i < len(active) else 0.0
                        for i, name in enumerate(self._slot_names()) if name in present}
        self._set_weights_in_place(pipe, slot_weights, text_wanted)
        if options.compile and not self.compiled and slot_weights:
            _, denoiser = _denoiser(pipe)
            denoiser.compile()
            self.compiled = True

    def _record_base_scaling(self, pipe: Any, slot: str) -> None:
        """Remember each layer's scaling for the LoRA just put in `slot` (its alpha / rank), before any weight."""
        for layer in lora_layers(pipe):
            if slot in getattr(layer, "scaling", {}):
                self.base_scaling[(id(layer), slot)] = float(layer.scaling[slot])

    def _set_weights_in_place(self, pipe: Any, slot_weights: dict[str, float], text_weights: dict[str, float]
                              ) -> None:
        """Activate slots and text adapters and set their weights without replacing any object a compiled graph
        guards on: slot scalings are tensors after `enable_lora_hotswap`, so they are filled in place.
        (`set_adapters` would write Python floats, and recompute them from the first LoRA's rank and alpha.)"""
        for layer in lora_layers(pipe):
            names = [n for n in [*slot_weights, *text_weights] if n in layer.lora_A]
            if not names:
                continue
            if list(layer.active_adapters) != names:
                layer.set_adapter(names)
            for name in names:
                if name in text_weights:
                    layer.set_scale(name, text_weights[name])
                    continue
                value = self.base_scaling.get((id(layer), name), 1.0) * slot_weights[name]
                current = layer.scaling[name]
                if isinstance(current, torch.Tensor):
                    current.fill_(value)
                else:
                    layer.scaling[name] = value

    def _slot_names(self) -> list[str]:
        return [f"slot_{i}" for i in range(len(self.slots))]

    @staticmethod
    def _present(pipe: Any) -> set[str]:
        try:
            listed = pipe.get_list_adapters()
        except (ValueError, AttributeError):
            return set()
        return {name for names in listed.values() for name in names}

    def _load(self, pipe: Any, arch: Arch, model_name: str, entry: LoraEntry, adapter: str, hotswap: bool,
              tensors: LoraTensors | None = None) -> None:
        state, metadata = tensors if tensors is not None else load_lora_state_dict(entry.path)
        state = normalize_state_dict(state, metadata, pipe, arch)
        before = self._present(pipe)
        try:
            pipe.load_lora_weights(state, adapter_name=adapter, hotswap=hotswap)
        except (ValueError, RuntimeError, KeyError, TypeError, IndexError, AssertionError) as exc:
            if not hotswap and adapter in self._present(pipe) and adapter not in before:
                self._drop(pipe, [adapter])
            raise LoraError(f"LoRA {entry.name!r} ({entry.arch_label}, {entry.format} layout) does not fit "
                            f"{model_name} ({ARCH_LABELS.get(arch, arch.value)}): {_first_line(exc)}") from exc
        if adapter not in self._present(pipe):
            raise LoraError(f"LoRA {entry.name!r} ({entry.arch_label}) changed no layer of {model_name} "
                            f"({ARCH_LABELS.get(arch, arch.value)}): none of its keys name a layer of this model")
        self.stats["loads"] += 1
        log.info("LoRA %s loaded as adapter %s", entry.name, adapter)

    def _drop(self, pipe: Any, adapters: list[str]) -> None:
        if adapters:
            pipe.delete_adapters(adapters)
            self.stats["deletes"] += len(adapters)

    # ----------------------------------------------------------------------------------------------
    def fuse(self, pipe: Any, key: tuple[tuple[str, float], ...]) -> None:
        """Fold the active adapters (at their set weights) into the base weights, keeping a CPU copy of each."""
        adapters = [adapter for adapter, _ in key]
        backups: dict[int, tuple[torch.nn.Module, torch.Tensor]] = {}
        for layer in lora_layers(pipe):
            names = [a for a in adapters
                     if a in getattr(layer, "lora_A", {}) or a in getattr(layer, "lora_embedding_A", {})]
            if not names:
                continue
            base = layer.get_base_layer()
            backups[id(base)] = (base, base.weight.detach().to("cpu", copy=True))
            layer.merge(adapter_names=names)
        self.fused = _Fused(key, backups)
        self.stats["fuses"] += 1

    def unfuse(self, pipe: Any) -> None:
        """Take the fused set out again: unmerge, then put back the exact weights saved before fusing."""
        if self.fused is None:
            return
        for layer in lora_layers(pipe):
            if getattr(layer, "merged", False):
                layer.unmerge()
        with torch.no_grad():
            for base, saved in self.fused.backups.values():
                base.weight.copy_(saved.to(base.weight.device))
        self.fused = None
        self.stats["unfuses"] += 1

    def clear(self, pipe: Any) -> None:
        """Remove every LoRA (back to the base model)."""
        self.unfuse(pipe)
        present = self._present(pipe)
        self._drop(pipe, [name for name in [*self.loaded, *self.text_loaded, *self._slot_names()] if name in present])
        self.loaded, self.text_loaded, self.slots, self.last_key = {}, {}, [], ()


def _weights_materialized(pipe: Any) -> bool:
    return all(layer.get_base_layer().weight.device.type != "meta" for layer in lora_layers(pipe))


def check_compatible(entry: LoraEntry, arch: Arch, model_name: str) -> None:
    """Refuse a LoRA made for another family, naming both."""
    if entry.arch in (Arch.UNKNOWN,) or arch == Arch.UNKNOWN or entry.arch == arch:
        return
    raise LoraError(f"LoRA {entry.name!r} is for {entry.arch_label} but the loaded model {model_name} is "
                    f"{ARCH_LABELS.get(arch, arch.value)}; pick a LoRA made for {ARCH_LABELS.get(arch, arch.value)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__

