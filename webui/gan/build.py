"""StyleGAN generator files: find the generator's tensors, tell StyleGAN2 from StyleGAN3, infer the architecture from
the tensors' names and shapes, and build Easel's own network with them.

A file is a `.safetensors` (read with safetensors) or a pickle (`.pkl`, `.pt`, `.pth`), read only through
`webui.model_manager.weights.read_pickle`, PyTorch's weights-only unpickler: tensors, numbers, strings and plain
containers, never code. The tensors use the key layout NVlabs publishes generators in (`mapping.fc0.weight`,
`synthesis.b4.const` for StyleGAN2; `synthesis.input.freqs`, `synthesis.L0_36_512.weight` for StyleGAN3), either
bare or under `G_ema.` (the averaged generator, preferred) or `G.` (the training pickles' names as dicts). NVlabs'
own network pickles keep the networks' Python classes (their source code) beside the weights, so the weights-only
reader refuses them, as it refuses any pickle that would run code; the reason says how to export their tensors.

`describe` identifies a file cheaply (the safetensors header; a pickle is read once, the catalogue remembers the
result per file size and time); `load_generator` builds the network (`StyleGAN2` / `StyleGAN3`) and loads every
tensor by name, refusing a file whose tensors do not fit.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

GAN_SUFFIXES = (".safetensors", ".sft", ".pkl", ".pt", ".pth")
PREFIXES = ("G_ema.", "G.", "generator.", "")
NVLABS_PICKLE_HINT = ("NVlabs network pickles store the networks' Python code with their weights; export the "
                      "generator's tensors once, in the NVlabs repository's environment: "
                      "`G = legacy.load_network_pkl(open(PKL, 'rb'))['G_ema']; "
                      "safetensors.torch.save_file({k: v.contiguous() for k, v in G.state_dict().items()}, "
                      "'model.safetensors')`, and put that file in models/GAN")


class GeneratorFileError(ValueError):
    """The file is not a StyleGAN generator Easel can run; the message names it and says why."""


@dataclass(frozen=True)
class GeneratorInfo:
    """What a generator file holds: its generation ("stylegan2", "stylegan3-t", "stylegan3-r"), image size, number of
    classes (0 = unconditional), and the dims people see in the Models tab."""

    generation: str
    resolution: int
    c_dim: int
    z_dim: int
    w_dim: int
    img_channels: int

    @property
    def variant(self) -> str:
        """The catalogue's variant string: "<generation>:<resolution>:<classes>"."""
        return f"{self.generation}:{self.resolution}:{self.c_dim}"

    @property
    def label(self) -> str:
        kind = {"stylegan2": "StyleGAN2", "stylegan3-t": "StyleGAN3-T", "stylegan3-r": "StyleGAN3-R"}[self.generation]
        classes = f", {self.c_dim} classes" if self.c_dim else ", unconditional"
        return f"{kind} generator, {self.resolution}×{self.resolution}{classes} (z {self.z_dim}, w {self.w_dim})"


def parse_variant(variant: str) -> tuple[str, int, int]:
    """(generation, resolution, classes) from a catalogue variant string; ("", 0, 0) when it is not one."""
    parts = (variant or "").split(":")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return "", 0, 0
    return parts[0], int(parts[1]), int(parts[2])


# ------------------------------------------------------------------------------------------------ reading
def _generator_keys(keys: list[str], name: str) -> str:
    """The prefix under which the generator's tensors are (G_ema before G)."""
    for prefix in PREFIXES:
        if f"{prefix}mapping.fc0.weight" in keys:
            return prefix
    raise GeneratorFileError(f"{name}: no StyleGAN generator tensors (mapping.fc0.weight, alone or under G_ema. / "
                             "G.) in it")


def read_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, Any] | None]:
    """(the generator's tensor shapes by NVlabs name, the tensors themselves when they had to be read: pickles).
    Raises GeneratorFileError naming the file."""
    from webui.model_manager.identify import HeaderError, header_shapes
    from webui.model_manager.weights import ModelFileError, read_pickle, tensors_of

    path = Path(path)
    tensors: dict[str, Any] | None = None
    if path.suffix.lower() in (".safetensors", ".sft"):
        try:
            shapes = header_shapes(path)
        except (HeaderError, OSError) as exc:
            raise GeneratorFileError(f"{path.name}: not a readable safetensors file ({exc})") from None
    else:
        try:
            tensors = tensors_of(read_pickle(path, "GAN"), path, "GAN")
        except ModelFileError as exc:
            text = str(exc)
            if "refused" in text and "Python objects" in text:
                text += f". {NVLABS_PICKLE_HINT}"
            raise GeneratorFileError(text) from None
        shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    prefix = _generator_keys(list(shapes), path.name)
    shapes = _under(shapes, prefix)
    return shapes, _under(tensors, prefix) if tensors is not None else None


def _under(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The generator's entries (mapping.* and synthesis.*) under `prefix`, named without it: a discriminator or an
    augmentation pipeline beside it is left out."""
    return {k[len(prefix):]: v for k, v in values.items()
            if k.startswith(prefix) and k[len(prefix):].startswith(("mapping.", "synthesis."))}


def config_of(shapes: dict[str, tuple[int, ...]], name: str) -> Any:
    """The StyleGAN2 or StyleGAN3 config the shapes describe (GeneratorFileError naming the file otherwise)."""
    from webui.gan import stylegan2, stylegan3

    try:
        if "synthesis.b4.const" in shapes:
            return stylegan2.config_from_shapes(shapes)
        if "synthesis.input.freqs" in shapes:
            return stylegan3.config_from_shapes(shapes)
    except (ValueError, KeyError, IndexError) as exc:
        raise GeneratorFileError(f"{name}: the generator's tensors do not fit together ({exc})") from None
    raise GeneratorFileError(f"{name}: a mapping network but no synthesis network Easel knows (StyleGAN2's "
                             "synthesis.b4.const or StyleGAN3's synthesis.input.freqs)")


def info_of(config: Any) -> GeneratorInfo:
    from webui.gan.stylegan3 import SG3Config

    generation = f"stylegan3-{config.variant.lower()}" if isinstance(config, SG3Config) else "stylegan2"
    return GeneratorInfo(generation, config.resolution, config.c_dim, config.z_dim, config.w_dim,
                         config.img_channels)


def describe(path: Path) -> GeneratorInfo:
    """What generator `path` holds, from its header (safetensors) or its tensors (pickles). GeneratorFileError
    otherwise."""
    shapes, _ = read_shapes(path)
    return info_of(config_of(shapes, Path(path).name))


# ------------------------------------------------------------------------------------------------ building
OPTIONAL_BUFFERS = ("resample_filter",)  # StyleGAN2's [1, 3, 3, 1] filters: the default when a file leaves them out


def build(tensors: dict[str, Any], name: str) -> Any:
    """Easel's network for these tensors (NVlabs names, no prefix), every tensor loaded by name, in float32, eval."""
    import torch

    from webui.gan.stylegan2 import SG2Config, StyleGAN2
    from webui.gan.stylegan3 import StyleGAN3

    config = config_of({k: tuple(v.shape) for k, v in tensors.items()}, name)
    model = StyleGAN2(config) if isinstance(config, SG2Config) else StyleGAN3(config)
    own = model.state_dict()
    unexpected = sorted(k for k in tensors if k not in own)
    missing = sorted(k for k in own if k not in tensors and not k.endswith(OPTIONAL_BUFFERS))
    wrong = sorted(k for k in own if k in tensors and tuple(tensors[k].shape) != tuple(own[k].shape))
    for problem, keys in (("unexpected tensors", unexpected), ("missing tensors", missing),
                          ("tensors of the wrong shape", wrong)):
        if keys:
            more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
            raise GeneratorFileError(f"{name}: {problem} for a {info_of(config).label}: {', '.join(keys[:4])}{more}")
    model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=False)
    return model.eval().requires_grad_(False)


def load_generator(path: Path) -> Any:
    """The generator in `path`, built and loaded (GeneratorFileError naming the file when it cannot be)."""
    from webui.model_manager.weights import ModelFileError, read_state_dict

    path = Path(path)
    shapes, tensors = read_shapes(path)
    if tensors is None:
        try:
            everything = read_state_dict(path, "GAN")
        except ModelFileError as exc:
            raise GeneratorFileError(str(exc)) from None
        tensors = _under(everything, _generator_keys(list(everything), path.name))
    return build(tensors, path.name)
