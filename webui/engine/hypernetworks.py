"""Hypernetworks (`<hypernet:name:weight>` in the prompt) on the SD 1.x UNet's cross-attention.

A hypernetwork holds, for each width of the text context it applies to (768 for SD 1.x), two small MLPs: one for
the context the cross-attention's keys are made from, one for its values. With strength w, the keys are made
from `context + w * mlp_k(context)` and the values from `context + w * mlp_v(context)`; several hypernetworks
apply one after the other. Easel installs an attention processor (diffusers' extension point) on every
cross-attention layer for the pipeline call and puts the layers' own processors back afterwards, so a request
without the tag runs the plain model.

Files are read as safetensors only, never unpickled (a `.pt` hypernetwork is listed but refused): each key is
`{width}.{0 for keys, 1 for values}.linear.{index}.{weight|bias}` (the layout of AUTOMATIC1111's hypernetwork
state dicts, flattened), Linear layers as 2-D weights and layer norms as 1-D ones; the file's metadata may name
the `activation_func` put after every Linear but the last (linear, relu, leakyrelu, elu, swish, tanh, sigmoid,
gelu, mish; linear by default).
"""
from __future__ import annotations

import logging
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from webui.model_manager.extra_files import hypernetwork_files
from webui.requests import RequestError

log = logging.getLogger(__name__)

HYPERNET_ARCHS = ("sd1",)
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "linear": nn.Identity, "relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "elu": nn.ELU, "swish": nn.SiLU,
    "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "mish": nn.Mish,
}
_KEY = re.compile(r"^(\d+)\.([01])\.linear\.(\d+)\.(weight|bias)$")
_TAG = re.compile(r"<hypernet:([^:>]*)(?::([^:>]*))?(?::[^>]*)?>", re.IGNORECASE)


class HypernetworkError(ValueError):
    """A hypernetwork file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class HypernetTag:
    name: str
    weight: float


def hypernet_tags(prompt: str) -> list[HypernetTag]:
    """The `<hypernet:name:weight>` tags of a prompt (weight 1 when left out); RequestError on `prompt` for a
    weight that is not a number."""
    tags = []
    for match in _TAG.finditer(prompt or ""):
        name, weight = match.group(1).strip(), (match.group(2) or "1").strip()
        try:
            value = float(weight)
        except ValueError:
            raise RequestError("prompt", f"<hypernet:{name}:{weight}>: the strength must be a number") from None
        tags.append(HypernetTag(name, value))
    return tags


class Hypernetwork(nn.Module):
    """The MLP pairs of one hypernetwork, by context width."""

    def __init__(self, name: str, pairs: dict[int, tuple[nn.Sequential, nn.Sequential]]) -> None:
        super().__init__()
        self.name = name
        self.widths = sorted(pairs)
        self.mlps = nn.ModuleDict({str(w): nn.ModuleList(pair) for w, pair in pairs.items()})

    def pair(self, width: int) -> tuple[nn.Module, nn.Module] | None:
        found = self.mlps[str(width)] if str(width) in self.mlps else None
        return (found[0], found[1]) if found is not None else None


def _mlp(layers: dict[int, dict[str, torch.Tensor]], activation: str, where: str) -> nn.Sequential:
    modules: list[nn.Module] = []
    linears = [i for i in sorted(layers) if layers[i]["weight"].dim() == 2]
    for index in sorted(layers):
        tensors = layers[index]
        weight, bias = tensors["weight"], tensors.get("bias")
        if weight.dim() == 2:  # (out, in)
            linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            linear.load_state_dict(dict(tensors))
            modules.append(linear)
            if index != linears[-1]:
                modules.append(ACTIVATIONS[activation]())
        elif weight.dim() == 1:  # a layer norm
            norm = nn.LayerNorm(weight.shape[0], elementwise_affine=True)
            norm.load_state_dict({"weight": weight, "bias": bias if bias is not None else torch.zeros_like(weight)})
            modules.append(norm)
        else:
            raise HypernetworkError(f"{where}: layer {index} has a {weight.dim()}-D weight")
    if not linears:
        raise HypernetworkError(f"{where}: no Linear layer")
    return nn.Sequential(*modules)


def load_hypernetwork(path: Path) -> Hypernetwork:
    """Read a `.safetensors` hypernetwork; HypernetworkError naming the file otherwise."""
    from safetensors import safe_open

    if path.suffix.lower() != ".safetensors":
        raise HypernetworkError(f"hypernetwork {path.name}: Easel loads hypernetworks only from .safetensors "
                                "files (pickles can run code); convert it")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (OSError, ValueError, RuntimeError) as exc:
        raise HypernetworkError(f"hypernetwork {path.name}: cannot be read ({exc})") from None
    activation = str(metadata.get("activation_func", "linear")).strip().lower()
    if activation not in ACTIVATIONS:
        raise HypernetworkError(f"hypernetwork {path.name}: activation {activation!r} is not one of "
                                f"{', '.join(ACTIVATIONS)}")
    grouped: dict[int, dict[int, dict[int, dict[str, torch.Tensor]]]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None:
            raise HypernetworkError(f"hypernetwork {path.name}: unexpected key {key!r} (expected "
                                    "'{width}.{0|1}.linear.{index}.weight')")
        width, side, index, kind = int(match.group(1)), int(match.group(2)), int(match.group(3)), match.group(4)
        grouped.setdefault(width, {}).setdefault(side, {}).setdefault(index, {})[kind] = tensor.float()
    if not grouped:
        raise HypernetworkError(f"hypernetwork {path.name}: the file holds no layers")
    pairs = {}
    for width, sides in grouped.items():
        if set(sides) != {0, 1}:
            raise HypernetworkError(f"hypernetwork {path.name}: width {width} needs both a key (0) and a value (1) MLP")
        pair = (_mlp(sides[0], activation, f"hypernetwork {path.name}, {width}.0"),
                _mlp(sides[1], activation, f"hypernetwork {path.name}, {width}.1"))
        for mlp, side in zip(pair, (0, 1)):
            with torch.no_grad():
                out = mlp(torch.zeros(1, width))
            if out.shape[-1] != width:
                raise HypernetworkError(f"hypernetwork {path.name}: the {width}.{side} MLP maps width {width} to "
                                        f"{out.shape[-1]}")
        pairs[width] = pair
    return Hypernetwork(path.stem, pairs).eval().requires_grad_(False)


class HypernetAttnProcessor:
    """Cross-attention whose keys and values come from the context changed by the hypernetworks (in order)."""

    def __init__(self, nets: list[tuple[Hypernetwork, float]]) -> None:
        self.nets = nets

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: Any = None, *args: Any, **kwargs: Any
                 ) -> torch.Tensor:
        batch = hidden_states.shape[0]  # hidden_states: (B, N, C)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states  # (B, T, D)
        if attn.norm_cross and encoder_hidden_states is not None:
            context = attn.norm_encoder_hidden_states(context)
        context_k, context_v = context, context
        for net, weight in self.nets:
            pair = net.pair(context.shape[-1])
            if pair is not None:
                follow(net, context)
                context_k = context_k + pair[0](context_k) * weight
                context_v = context_v + pair[1](context_v) * weight
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        query = attn.to_q(hidden_states)
        key, value = attn.to_k(context_k), attn.to_v(context_v)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, H, N, d)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, H, T, d)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, H, T, d)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                             is_causal=False)  # (B, H, N, d)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)  # (B, N, C)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def follow(net: nn.Module, like: torch.Tensor) -> None:
    """Move `net` to the device and dtype of `like` when it is elsewhere (with offloading, the UNet's layers move
    to the device only while they run)."""
    parameter = next(net.parameters())
    if parameter.device != like.device or parameter.dtype != like.dtype:
        net.to(device=like.device, dtype=like.dtype)


def cross_attentions(unet: Any) -> list[Any]:
    """The UNet's cross-attention layers (`attn2` of each transformer block)."""
    return [module for name, module in unet.named_modules() if name.endswith("attn2") and hasattr(module, "to_k")]


@contextmanager
def hypernetworks_applied(unet: Any, nets: list[tuple[Hypernetwork, float]]) -> Iterator[None]:
    """Run the UNet with `nets` on its cross-attention layers; their own processors are put back afterwards."""
    layers = cross_attentions(unet)
    saved = [layer.processor for layer in layers]
    processor = HypernetAttnProcessor(nets)
    try:
        for layer in layers:
            layer.set_processor(processor)
        yield
    finally:
        for layer, own in zip(layers, saved):
            layer.set_processor(own)


class Hypernetworks:
    """The hypernetworks in models/hypernetworks, loaded on first use (the last few kept, keyed by file and
    modification time) and applied around each pipeline call whose prompt names them (`wrapper`)."""

    KEEP = 4

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)
        self._lock = threading.Lock()
        self._loaded: dict[tuple[str, int], Hypernetwork] = {}

    def find(self, name: str) -> Hypernetwork:
        files = hypernetwork_files(self.models_dir)
        path = files.get(name) or next((p for n, p in files.items() if n.lower() == name.lower()), None)
        if path is None:
            known = ", ".join(files) or "none"
            raise RequestError("prompt", f"<hypernet:{name}>: no hypernetwork named {name!r} in models/hypernetworks "
                                         f"(installed: {known})")
        key = (str(path), path.stat().st_mtime_ns)
        with self._lock:
            net = self._loaded.get(key)
        if net is None:
            try:
                net = load_hypernetwork(path)
            except HypernetworkError as exc:
                raise RequestError("prompt", str(exc)) from None
            with self._lock:
                self._loaded[key] = net
                while len(self._loaded) > self.KEEP:
                    self._loaded.pop(next(iter(self._loaded)))
        return net

    def wrapper(self, call: Any, run: Callable[[Any], Any]) -> Any:
        """A pipeline wrapper: the request's `<hypernet:…>` tags applied to this call's UNet."""
        tags = hypernet_tags(getattr(call.request, "prompt", "") or "")
        if not tags:
            return run(call)
        if call.arch not in HYPERNET_ARCHS:
            raise RequestError("prompt", f"<hypernet:{tags[0].name}:…>: hypernetworks apply to SD 1.x models only; "
                                         f"{call.checkpoint} is {call.arch}")
        unet = getattr(call.pipe, "unet", None)
        if unet is None:
            raise RequestError("prompt", f"<hypernet:{tags[0].name}:…>: {call.checkpoint} has no UNet")
        nets = [(self.find(tag.name), tag.weight) for tag in tags]
        widths = {int(getattr(unet.config, "cross_attention_dim", 0) or 0)}
        for net, _ in nets:
            if not widths & set(net.widths):
                raise RequestError("prompt", f"<hypernet:{net.name}:…>: made for text widths {net.widths}, but "
                                             f"{call.checkpoint} uses {sorted(widths)}")
        with hypernetworks_applied(unet, nets):
            return run(call)


__all__ = ["Hypernetworks", "HypernetworkError", "HypernetTag", "hypernet_tags", "load_hypernetwork",
           "hypernetworks_applied"]
