"""Turn an identified checkpoint into a diffusers pipeline, offline: folders, single files, hub ids, VAEs, modes.

* Diffusers folders load with `from_pretrained(local_files_only=True)`; the built-in model with its own
  `EaselPipeline` class (imported only when needed).
* SD 1.x / 2.x / XL single files load with `from_single_file(config=...)`, where the config is a folder of
  diffusers configs shipped under `configs/` (sd1, sd2 = 768 v-prediction, sd2-base = 512 epsilon, sdxl). CLIP
  tokenizers are passed in, built from the BPE list in `open_clip` (see clip_tokenizer.py). A folder named
  `<file stem>.config/` beside the checkpoint ("custom config", like AUTOMATIC1111's `<name>.yaml`) replaces
  the shipped config; when it has tokenizer files, those are used too.
* SD3 / Flux.1 / Z-Image / Qwen-Image single files usually hold only the transformer. It is loaded from the
  file (original key names through diffusers' converters, diffusers key names directly) with the transformer
  config of a companion: the `<stem>.config/` folder, else a diffusers folder of the same family among the
  scanned ones, else the official hub repository (only when online). The text encoders and VAE come from the
  same companion; without one, the file is assembled from separate text encoder and VAE files with the
  shipped family config (`configs/flux`, `sd3`, `zimage`, `qwenimage`; assemble.py). SD3's sizes (medium,
  large, 3.5 medium's dual attention) are read from the file. GGUF files keep their quantized blocks and fp8 files their fp8 weights
  (formats.py); Flux files in the original key layout convert at any width (flux_keys.py). An SD/SDXL UNet alone
  (models/unet) takes its text encoders and VAE from a companion the same way, or is assembled with
  `configs/sdxl` (`sd1`, `sd2`) from CLIP text encoder files and a VAE file.
* Hub ids ("org/repo") load with `from_pretrained` and need a connection the first time; Easel fetches
  anything from the hub (a hub id, a transformer file's companion) only when started with
  `--allow-hub-downloads` (`LoadContext.allow_hub`).
* No weights are unpickled: folders and hub repositories load with `use_safetensors=True`, and a diffusers
  folder whose weights are only pickle `.bin` files is refused with a message offering the converter.
* Modes share weights: the txt2img / img2img / inpaint pipelines are made with `AutoPipelineFor*.from_pipe`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from webui.model_manager import families
from webui.model_manager.assemble import assemble, assembly_config
from webui.model_manager.errors import ModelLoadError
from webui.model_manager.flux_keys import flux_to_diffusers, is_original_flux
from webui.model_manager.formats import (load_gguf_denoiser, pipeline_quantization, storage_dtype,
                                         upcast_layerwise)
from webui.model_manager.gguf_files import GGUF_SUFFIXES, gguf_shapes
from webui.model_manager.identify import (ARCH_LABELS, Arch, Identification, header_shapes, identify_file,
                                          identify_folder)
from webui.model_manager.weights import pickle_folder_reason, pickle_weights_in, pipeline_components

log = logging.getLogger(__name__)

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
MODES = ("txt2img", "img2img", "inpaint", "edit")
GENERATION_MODES = ("txt2img", "img2img", "inpaint")


@dataclass(frozen=True)
class TransformerFamily:
    """What loading a transformer-only single file of one family needs."""

    transformer_class: str
    hub_repos: dict[str, str]  # variant ("" = default) -> official diffusers repository
    layer_overrides: Callable[[dict[str, tuple[int, ...]]], dict[str, Any]] = lambda keys: {}

    def hub_repo(self, variant: str) -> str:
        return self.hub_repos.get(variant, self.hub_repos[""])


def _count(keys: dict[str, tuple[int, ...]], prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".")[0]) for k in keys
               if k.startswith(prefix) and k[len(prefix):].split(".")[0].isdigit()}
    return max(indices) + 1 if indices else 0


def _flux_overrides(keys: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    if any(k.startswith("double_blocks.") for k in keys):  # original layout
        return {"num_layers": _count(keys, "double_blocks."), "num_single_layers": _count(keys, "single_blocks."),
                "guidance_embeds": any(k.startswith("guidance_in.") for k in keys)}
    return {"num_layers": _count(keys, "transformer_blocks."),
            "num_single_layers": _count(keys, "single_transformer_blocks."),
            "guidance_embeds": any(k.startswith("time_text_embed.guidance_embedder.") for k in keys)}


def _sd3_overrides(keys: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """SD3 / SD3.5 medium / SD3.5 large differ in depth, width, qk-norm, dual attention and position table: all
    read from the file, in either layout (one shipped config serves them all)."""
    original = any(k.startswith("joint_blocks.") for k in keys)
    blocks, attn2 = ("joint_blocks.", ".x_block.attn2.") if original else ("transformer_blocks.", ".attn2.")
    layers = _count(keys, blocks)
    if not layers:
        return {}
    names = {"patch": "x_embedder.proj.weight" if original else "pos_embed.proj.weight",
             "pos": "pos_embed" if original else "pos_embed.pos_embed",
             "pooled": "y_embedder.mlp.0.weight" if original else "time_text_embed.text_embedder.linear_1.weight",
             "out": "final_layer.linear.weight" if original else "proj_out.weight",
             "ln_q": "joint_blocks.0.x_block.attn.ln_q.weight" if original else "transformer_blocks.0.attn.norm_q.weight"}
    overrides: dict[str, Any] = {"num_layers": layers, "dual_attention_layers": tuple(sorted(
        {int(k[len(blocks):].split(".")[0]) for k in keys if k.startswith(blocks) and attn2 in k}))}
    width, joint = keys.get("context_embedder.weight", (0, 0))[:2]
    if width:
        overrides.update(caption_projection_dim=width, joint_attention_dim=joint)
    patch = keys.get(names["patch"])
    if patch is not None and len(patch) == 4:
        overrides.update(in_channels=patch[1], patch_size=patch[2])
        out = keys.get(names["out"])
        if out is not None:
            overrides["out_channels"] = out[0] // (patch[2] * patch[2])
    if names["pos"] in keys:
        overrides["pos_embed_max_size"] = round(keys[names["pos"]][-2] ** 0.5)
    if names["pooled"] in keys:
        overrides["pooled_projection_dim"] = keys[names["pooled"]][1]
    head = keys.get(names["ln_q"], (0,))[0]
    overrides["qk_norm"] = "rms_norm" if head else None
    head = head or 64  # every published SD3 model has 64-wide heads
    if width and width % head == 0:
        overrides.update(attention_head_dim=head, num_attention_heads=width // head)
    return overrides


def _zimage_overrides(keys: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    layers = _count(keys, "layers.")
    return {"n_layers": layers} if layers else {}


def _qwen_overrides(keys: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    layers = _count(keys, "transformer_blocks.")
    return {"num_layers": layers} if layers else {}


TRANSFORMER_FAMILIES: dict[Arch, TransformerFamily] = {
    Arch.SD3: TransformerFamily("SD3Transformer2DModel", {
        "": "stabilityai/stable-diffusion-3-medium-diffusers", "3.5 large": "stabilityai/stable-diffusion-3.5-large",
        "3.5 medium": "stabilityai/stable-diffusion-3.5-medium"}, _sd3_overrides),
    Arch.FLUX: TransformerFamily("FluxTransformer2DModel", {
        "": "black-forest-labs/FLUX.1-dev", "schnell": "black-forest-labs/FLUX.1-schnell"}, _flux_overrides),
    Arch.ZIMAGE: TransformerFamily("ZImageTransformer2DModel", {"": "Tongyi-MAI/Z-Image-Turbo"}, _zimage_overrides),
    Arch.QWEN: TransformerFamily("QwenImageTransformer2DModel", {"": "Qwen/Qwen-Image"}, _qwen_overrides),
}
_TRANSFORMER_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")


@dataclass
class LoadContext:
    """What loaders need from the manager: precision, offline tokenizers, and the scanned diffusers folders."""

    dtype: torch.dtype
    clip_tokenizer: Callable[[str], Any]  # pad token -> CLIPTokenizer
    family_folders: Callable[[Arch], list[Path]]  # supported diffusers folders of a family, in preference order
    hub_offline: Callable[[], bool] = field(default=lambda: _hub_offline())
    allow_hub: bool = False  # --allow-hub-downloads: hub ids and companions may be fetched (when online)
    storage: str = ""  # --precision fp8 / nf4 / int8 (webui.model_manager.formats)
    components: Callable[[], list[Any]] = field(default=lambda: [])  # separate text encoder files on disk
    vae_files: Callable[[], list[Path]] = field(default=lambda: [])  # VAE files (models/VAE)
    text_encoder_dirs: list[Path] = field(default_factory=list)  # where a T5 tokenizer folder may be


@dataclass
class Loaded:
    """A freshly loaded base pipeline and where its component configs came from (used to load VAE files)."""

    pipe: Any
    arch: Arch
    config_source: str | None


def dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """diffusers renamed `torch_dtype` to `dtype`; pass the name the installed version understands."""
    from diffusers.utils import deprecation_utils

    return {"dtype": dtype} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": dtype}


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return f"{type(exc).__name__}: {first[:400]}"


def sidecar_config(path: Path) -> Path | None:
    """`<stem>.config/` beside a checkpoint file: a diffusers config folder that overrides the shipped one."""
    folder = path.with_name(path.stem + ".config")
    return folder if (folder / "model_index.json").is_file() else None


# ------------------------------------------------------------------------------------------------ folders
def load_checkpoint(entry: Any, ctx: LoadContext) -> Loaded:
    """A catalogue's CheckpointEntry from the hub, its diffusers or built-in folder, or its single file."""
    if entry.kind == "hub":
        return load_hub(entry.name, ctx)
    if entry.arch == Arch.GAN:  # models/GAN: Easel's own StyleGAN networks
        return load_gan(entry.path, ctx)
    if entry.kind == "folder":
        if not (entry.path / "model_index.json").is_file():
            raise ModelLoadError(f"cannot load {entry.path}: the folder is gone or has no model_index.json")
        if entry.builtin or entry.arch == Arch.EASEL:
            return load_builtin(entry.path, ctx)
        return load_folder(entry.path, identify_folder(entry.path), ctx)
    return load_single_file(entry.path, identify_file(entry.path), ctx)


def load_folder(path: Path, ident: Identification, ctx: LoadContext) -> Loaded:
    from diffusers import DiffusionPipeline

    kwargs: dict[str, Any] = {**dtype_kwargs(ctx.dtype), "local_files_only": True, "use_safetensors": True}
    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    if "safety_checker" in index:  # Easel never runs the SD 1.x/2.x safety checker; skip its 1.2 GB
        kwargs.update(safety_checker=None, requires_safety_checker=False)
        if "feature_extractor" in index:
            kwargs["feature_extractor"] = None
    kwargs.update(families.load_kwargs(index))  # DeepFloyd IF: no watermarker
    quantization = pipeline_quantization(ctx.storage, ctx.dtype)  # --precision nf4 / int8 (CUDA only)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    pickled = pickle_weights_in(path, [c for c in pipeline_components(path, index) if c not in kwargs])
    if pickled:  # the folder changed since it was identified: still never unpickle
        raise ModelLoadError(f"cannot load {path.name}: {pickle_folder_reason(path, pickled)}")
    try:
        if index.get("_class_name") == "UnCLIPPipeline":  # its text projection class moved: built part by part
            pipe = families.load_unclip(path, index, dtype_kwargs(ctx.dtype))
        else:
            pipe = DiffusionPipeline.from_pretrained(str(path), **kwargs)
    except Exception as exc:  # diffusers raises many types (OSError, ValueError, KeyError, safetensors errors)
        raise ModelLoadError(f"could not load diffusers folder {path}: {_cause(exc)}") from exc
    if ident.arch == Arch.IF:  # the cascade's later stages, from the folders beside stage I
        try:
            pipe.easel_stages = families.load_stages(pipe, path, dtype_kwargs(ctx.dtype))
        except Exception as exc:  # a broken stage folder: the cascade cannot run as one generation
            raise ModelLoadError(f"could not load the DeepFloyd IF stages beside {path}: {_cause(exc)}") from exc
    return Loaded(pipe, ident.arch, str(path))


def load_builtin(path: Path, ctx: LoadContext) -> Loaded:
    try:
        from webui.builtin.pipeline import EaselPipeline
    except ImportError as exc:
        raise ModelLoadError(f"cannot load the built-in model {path}: webui.builtin.pipeline is unavailable "
                             f"({_cause(exc)})") from exc
    try:
        pipe = EaselPipeline.from_pretrained(str(path), **dtype_kwargs(ctx.dtype))
    except Exception as exc:  # any failure inside the built-in model's loader is a load failure of that folder
        raise ModelLoadError(f"could not load the built-in model {path}: {_cause(exc)}") from exc
    return Loaded(pipe, Arch.EASEL, str(path))


def load_gan(path: Path, ctx: LoadContext) -> Loaded:
    """A StyleGAN2/3 generator file, run by Easel's own networks (webui.gan) in float32 (they are small, and their
    clamps and filters were made for it)."""
    from webui.gan.build import GeneratorFileError, load_generator
    from webui.gan.pipeline import StyleGANPipeline

    try:
        return Loaded(StyleGANPipeline(load_generator(path)), Arch.GAN, None)
    except GeneratorFileError as exc:
        raise ModelLoadError(f"cannot load {path.name}: {exc}") from None


def load_hub(repo_id: str, ctx: LoadContext) -> Loaded:
    from diffusers import DiffusionPipeline

    from webui.model_manager.identify import arch_from_class_name

    if not ctx.allow_hub:
        raise ModelLoadError(f"{repo_id} looks like a Hugging Face repository id, but Easel downloads from the hub "
                             "only when started with --allow-hub-downloads, and has no local checkpoint of that name")
    if ctx.hub_offline():
        raise ModelLoadError(f"{repo_id} looks like a Hugging Face repository id, but Easel is offline "
                             "(HF_HUB_OFFLINE=1) and has no local checkpoint of that name")
    try:
        pipe = DiffusionPipeline.from_pretrained(repo_id, **dtype_kwargs(ctx.dtype), use_safetensors=True)
    except Exception as exc:  # network, auth and format errors all mean "could not load this repo"
        raise ModelLoadError(f"could not load hub repository {repo_id}: {_cause(exc)}") from exc
    text_config = getattr(getattr(pipe, "text_encoder", None), "config", None)
    unet_config = getattr(getattr(pipe, "unet", None), "config", None)
    arch = arch_from_class_name(type(pipe).__name__, text_config.to_dict() if text_config is not None else {},
                                dict(unet_config) if unet_config is not None else {})
    return Loaded(pipe, arch, repo_id)


# ------------------------------------------------------------------------------------------------ SD single files
def shipped_config(arch: Arch, variant: str) -> Path:
    """The shipped diffusers config folder for an SD-family single file."""
    if arch == Arch.SD1:
        return CONFIGS_DIR / "sd1"
    if arch == Arch.SD2:  # v-prediction 768 unless it is the (epsilon, 512) inpainting model
        return CONFIGS_DIR / ("sd2-base" if variant == "inpaint" else "sd2")
    if arch == Arch.SDXL:
        return CONFIGS_DIR / ("sdxl-refiner" if variant == "refiner" else "sdxl")
    raise ValueError(f"no shipped config for {arch.value}")


def _tokenizer_kwargs(config: Path, ctx: LoadContext) -> dict[str, Any]:
    """Tokenizers the config folder cannot provide itself (it has no vocab files): built from open_clip's list."""
    index = json.loads((config / "model_index.json").read_text(encoding="utf-8"))
    kwargs: dict[str, Any] = {}
    for name in ("tokenizer", "tokenizer_2"):
        if not str((index.get(name) or [None, None])[1] or "").startswith("CLIP"):
            continue  # T5 and Qwen tokenizers are found on disk (assemble.py)
        if (config / name / "vocab.json").is_file() or (config / name / "tokenizer.json").is_file():
            continue
        settings_path = config / name / "tokenizer_config.json"
        settings = json.loads(settings_path.read_text(encoding="utf-8")) if settings_path.is_file() else {}
        pad = settings.get("pad_token", "<|endoftext|>")
        kwargs[name] = ctx.clip_tokenizer(pad if isinstance(pad, str) else pad.get("content", "<|endoftext|>"))
    return kwargs


def load_sd_single_file(path: Path, ident: Identification, ctx: LoadContext) -> Loaded:
    from diffusers import (StableDiffusionInpaintPipeline, StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline,
                           StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline)

    config = sidecar_config(path) or shipped_config(ident.arch, ident.variant)
    inpaint = ident.variant == "inpaint"
    if ident.arch == Arch.SDXL and ident.variant == "refiner":  # no first text encoder: an img2img pipeline
        cls = StableDiffusionXLImg2ImgPipeline
    elif ident.arch == Arch.SDXL:
        cls = StableDiffusionXLInpaintPipeline if inpaint else StableDiffusionXLPipeline
    else:
        cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    kwargs: dict[str, Any] = {"config": str(config), "local_files_only": True, **dtype_kwargs(ctx.dtype),
                              **_tokenizer_kwargs(config, ctx)}
    if inpaint:
        kwargs["num_in_channels"] = 9  # only the UNet takes this (diffusers' single-file legacy argument)
    if "safety_checker" in json.loads((config / "model_index.json").read_text(encoding="utf-8")):
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    log.info("loading %s with config %s", path, config)
    try:
        pipe = cls.from_single_file(str(path), **kwargs)
    except Exception as exc:  # corrupt data, wrong layout, config mismatch: all are load failures of this file
        raise ModelLoadError(f"could not load {path} as {ARCH_LABELS[ident.arch]} (config {config}): "
                             f"{_cause(exc)}") from exc
    return Loaded(pipe, ident.arch, str(config))


# ------------------------------------------------------------------------------------------------ transformer files
SD_HUB_REPOS = {Arch.SD1: "stable-diffusion-v1-5/stable-diffusion-v1-5", Arch.SD2: "stabilityai/stable-diffusion-2-1",
                Arch.SDXL: "stabilityai/stable-diffusion-xl-base-1.0"}


def _companion(path: Path, ident: Identification, ctx: LoadContext) -> tuple[str, bool]:
    """(source, local) for the denoiser config, text encoders and VAE of a transformer-only or UNet-only file."""
    family = TRANSFORMER_FAMILIES.get(ident.arch)
    sidecar = sidecar_config(path)
    if sidecar is not None:
        return str(sidecar), True
    folders = ctx.family_folders(ident.arch)
    if folders:
        return str(folders[0]), True
    repo = family.hub_repo(ident.variant) if family is not None else SD_HUB_REPOS[ident.arch]
    if ctx.hub_offline() or not ctx.allow_hub:
        how = "go online so Easel can fetch" if ctx.allow_hub else "start Easel with --allow-hub-downloads (and " \
            "online) so it can fetch"
        raise ModelLoadError(
            f"{path.name} holds only the {ARCH_LABELS[ident.arch]} {'transformer' if family else 'UNet'}; its text "
            f"encoders and VAE come from "
            f"a diffusers folder of the same family. Put one (e.g. a download of {repo}) in a diffusers models "
            f"folder, or a '{path.stem}.config' folder beside the file, or {how} {repo}")
    return repo, False


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _TRANSFORMER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}
    return state


def denoiser_keys(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a transformer/UNet file (safetensors or GGUF), without a model prefix."""
    if path.suffix.lower() in GGUF_SUFFIXES:
        keys = gguf_shapes(path)[0]
    else:
        keys = header_shapes(path)
    for prefix in _TRANSFORMER_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return {k[len(prefix):]: v for k, v in keys.items()}
    return keys


def _load_transformer(path: Path, ident: Identification, source: str, local: bool, dtype: torch.dtype) -> Any:
    import diffusers
    from accelerate import init_empty_weights
    from safetensors.torch import load_file

    family = TRANSFORMER_FAMILIES[ident.arch]
    cls = getattr(diffusers, family.transformer_class)
    overrides = family.layer_overrides(denoiser_keys(path))
    if ident.storage.startswith("GGUF"):
        return load_gguf_denoiser(path, cls, source, "transformer", local, dtype, dtype_kwargs(dtype), overrides)
    if ident.layout == "original" and ident.arch != Arch.FLUX:
        model = cls.from_single_file(str(path), config=source, subfolder="transformer", **dtype_kwargs(dtype),
                                     local_files_only=local, **overrides)
        return _stored(model, ident, dtype)
    config = dict(cls.load_config(source, subfolder="transformer", local_files_only=local))
    config.update(overrides)
    with init_empty_weights():  # parameters on "meta": the file's tensors are assigned below, no random init
        model = cls.from_config(config)
    state = _strip_prefix(load_file(str(path)))
    if is_original_flux(state):  # Easel's converter: any width (diffusers' assumes 3072)
        state = flux_to_diffusers(state)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"the weights do not fit the {family.transformer_class} config from {source}: "
                         f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:3]})")
    model.load_state_dict(state, strict=True, assign=True)
    return _stored(model.to(dtype).eval(), ident, dtype)


def _stored(model: Any, ident: Identification, dtype: torch.dtype) -> Any:
    """An fp8 file's model keeps fp8 weights, computed layer by layer in `dtype`."""
    wanted = storage_dtype(ident.storage)
    return upcast_layerwise(model, wanted, dtype) if wanted is not None else model


def _assembly(path: Path, ident: Identification, ctx: LoadContext) -> Path | None:
    """The config folder to assemble `path` from separate files with, when no companion folder has weights."""
    sidecar = sidecar_config(path)
    if sidecar is not None and any(sidecar.glob("text_encoder*/*.safetensors")):
        return None  # a complete companion beside the file
    if ctx.family_folders(ident.arch):
        return None
    return assembly_config(path, ident.arch, CONFIGS_DIR, ident.variant)


def _assemble(path: Path, ident: Identification, config: Path, ctx: LoadContext) -> Loaded:
    def denoiser(source: str) -> Any:
        if ident.arch in TRANSFORMER_FAMILIES:
            return _load_transformer(path, ident, source, True, ctx.dtype)
        return _load_unet(path, ident, source, True, ctx.dtype)

    def vae(file: Path, template: Any, source: str) -> Any:
        return load_vae(file, template, source, ctx.dtype)

    try:
        pipe = assemble(path, ident, config, dtype=ctx.dtype, components=ctx.components(),
                        vae_files=ctx.vae_files(), text_encoder_dirs=ctx.text_encoder_dirs,
                        tokenizer_kwargs=_tokenizer_kwargs(config, ctx), load_denoiser=denoiser, load_vae=vae)
    except ModelLoadError as exc:
        family = TRANSFORMER_FAMILIES.get(ident.arch)
        repo = family.hub_repo(ident.variant) if family is not None else SD_HUB_REPOS[ident.arch]
        raise ModelLoadError(f"{exc}. Or put a diffusers folder of the same family (e.g. a download of {repo}) in "
                             f"models/diffusers, or a '{path.stem}.config' diffusers folder beside the file") from None
    except Exception as exc:  # any failure here means these files do not make this model
        raise ModelLoadError(f"could not assemble {path} as {ARCH_LABELS[ident.arch]} from separate files "
                             f"(configs from {config}): {_cause(exc)}") from exc
    return Loaded(pipe, ident.arch, str(config))


def load_transformer_single_file(path: Path, ident: Identification, ctx: LoadContext) -> Loaded:
    return _load_denoiser_file(path, ident, ctx, "transformer", _load_transformer)


def _load_unet(path: Path, ident: Identification, source: str, local: bool, dtype: torch.dtype) -> Any:
    """An SD/SDXL UNet from a UNet-only file (safetensors, fp8 or GGUF; with or without the
    model.diffusion_model. prefix), its config from `source`'s unet folder."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    if ident.storage.startswith("GGUF"):
        return load_gguf_denoiser(path, UNet2DConditionModel, source, "unet", local, dtype, dtype_kwargs(dtype), {})
    state = load_file(str(path))
    if not all(k.startswith("model.diffusion_model.") for k in state):
        state = {"model.diffusion_model." + k: v for k, v in state.items()}
    unet = UNet2DConditionModel.from_single_file(state, config=source, subfolder="unet", local_files_only=local,
                                                 **dtype_kwargs(dtype))
    return _stored(unet.eval(), ident, dtype)


def load_unet_single_file(path: Path, ident: Identification, ctx: LoadContext) -> Loaded:
    """An SD/SDXL UNet alone, the rest of the pipeline from its companion or assembled from separate files."""
    return _load_denoiser_file(path, ident, ctx, "unet", _load_unet)


def _load_denoiser_file(path: Path, ident: Identification, ctx: LoadContext, part: str,
                        load_part: Callable[..., Any]) -> Loaded:
    """A transformer- or UNet-only file (`part`, read by `load_part`): assembled from separate files with a shipped
    config where that applies, else the rest of the pipeline from its companion diffusers folder."""
    from diffusers import DiffusionPipeline

    config = _assembly(path, ident, ctx)
    if config is not None and not (ctx.allow_hub and not ctx.hub_offline() and not ctx.components()):
        return _assemble(path, ident, config, ctx)
    source, local = _companion(path, ident, ctx)
    what = "UNet" if part == "unet" else part
    log.info("loading %s %s from %s, other components from %s", ARCH_LABELS[ident.arch], what, path, source)
    try:
        denoiser = load_part(path, ident, source, local, ctx.dtype)
        pipe = DiffusionPipeline.from_pretrained(source, **{part: denoiser}, **dtype_kwargs(ctx.dtype),
                                                 local_files_only=local, use_safetensors=True)
    except ModelLoadError:
        raise
    except Exception as exc:  # any failure here means this file (with that companion) does not load
        raise ModelLoadError(f"could not load {path} as a {ARCH_LABELS[ident.arch]} {what} (other components from "
                             f"{source}): {_cause(exc)}") from exc
    return Loaded(pipe, ident.arch, source)


def load_single_file(path: Path, ident: Identification, ctx: LoadContext) -> Loaded:
    if ident.arch in (Arch.SD1, Arch.SD2, Arch.SDXL):
        if ident.denoiser_only:
            return load_unet_single_file(path, ident, ctx)
        return load_sd_single_file(path, ident, ctx)
    if ident.arch in TRANSFORMER_FAMILIES:
        return load_transformer_single_file(path, ident, ctx)
    raise ModelLoadError(f"{path}: {ident.reason}")


# ------------------------------------------------------------------------------------------------ VAEs
def load_vae(path: Path, current_vae: Any, config_source: str | None, dtype: torch.dtype) -> Any:
    """A VAE from `path` (diffusers folder, diffusers-keyed file, or original-layout file) shaped like the
    checkpoint's own VAE. Raises ModelLoadError naming the file."""
    from safetensors.torch import load_file

    cls = type(current_vae)
    try:
        if path.is_dir():
            return cls.from_pretrained(str(path), **dtype_kwargs(dtype), local_files_only=True,
                                       use_safetensors=True).eval()
        keys = header_shapes(path)
        state_prefix = next((p for p in ("first_stage_model.", "vae.") if all(k.startswith(p) for k in keys)), "")
        diffusers_layout = any(k[len(state_prefix):].startswith("encoder.down_blocks.") for k in keys)
        if diffusers_layout:
            model = cls.from_config(current_vae.config)
            state = {k[len(state_prefix):]: v for k, v in load_file(str(path)).items()}
            model.load_state_dict(state, strict=True)
            return model.to(dtype).eval()
        if config_source is None:
            raise ValueError("the checkpoint has no config folder to shape an original-layout VAE")
        model = cls.from_single_file(str(path), config=config_source, subfolder="vae", **dtype_kwargs(dtype),
                                     local_files_only=Path(config_source).is_dir())
        missing = set(current_vae.state_dict()) - set(model.state_dict())
        if missing:
            raise ValueError(f"{len(missing)} weights missing")
        return model.eval()
    except Exception as exc:  # shape mismatch, corrupt file, wrong kind of file: this VAE does not fit
        raise ModelLoadError(f"could not load VAE {path}: {_cause(exc)}") from exc


# ------------------------------------------------------------------------------------------------ modes
def mode_pipelines(base: Any, arch: Arch, variant: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Pipelines for each mode, sharing the base pipeline's modules; and why a mode is unavailable."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

    if arch in families.FAMILY_ARCHS:  # DiT, PixArt, Sana, aMUSEd, unCLIP, DeepFloyd IF: their own classes
        pipes, reasons = families.mode_pipelines(base, arch, variant)
        pipes.update({f"stage:{name}": stage for name, stage in getattr(base, "easel_stages", {}).items()})
        return pipes, reasons
    pipes: dict[str, Any] = {"edit": base}  # the engine checks whether a pipeline class can edit
    reasons: dict[str, str] = {}
    if arch == Arch.EASEL:
        return {mode: base for mode in MODES}, reasons
    factories = {"txt2img": AutoPipelineForText2Image, "img2img": AutoPipelineForImage2Image,
                 "inpaint": AutoPipelineForInpainting}
    if arch == Arch.FLUX and variant in FLUX_TOOL_PIPELINES:
        return flux_tool_pipelines(base, variant)
    for mode, factory in factories.items():
        if variant == "edit":
            reasons[mode] = f"{type(base).__name__} is an editing model: use it in the Edit or Segment tab"
            continue
        if variant == "refiner" and mode != "img2img":
            reasons[mode] = ("an SDXL refiner only refines: pick it as the refiner of an SDXL model (or use it in "
                             "img2img)")
            continue
        if variant == "inpaint" and mode != "inpaint":
            reasons[mode] = "an inpainting checkpoint only works in inpaint mode"
            continue
        try:
            pipes[mode] = factory.from_pipe(base)
        except ValueError as exc:
            reasons[mode] = f"{type(base).__name__} has no {mode} pipeline ({_cause(exc)})"
    return pipes, reasons



# Flux.1 Fill takes inpainting only; Flux.1 Depth/Canny every mode, each with a control image.
FLUX_TOOL_PIPELINES: dict[str, dict[str, str]] = {
    "fill": {"inpaint": "FluxFillPipeline"},
    "control": {"txt2img": "FluxControlPipeline", "img2img": "FluxControlImg2ImgPipeline",
                "inpaint": "FluxControlInpaintPipeline"},
}


def flux_tool_pipelines(base: Any, variant: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The mode pipelines of a Flux.1 Fill or Depth/Canny checkpoint, sharing `base`'s modules."""
    import diffusers

    pipes: dict[str, Any] = {"edit": base}
    reasons: dict[str, str] = {}
    wanted = FLUX_TOOL_PIPELINES[variant]
    for mode in ("txt2img", "img2img", "inpaint"):
        if mode not in wanted:
            reasons[mode] = "a Flux.1 Fill checkpoint only inpaints: use it in the Inpaint tab (or img2img with a mask)"
            continue
        cls = getattr(diffusers, wanted[mode])
        pipes[mode] = base if type(base) is cls else cls.from_pipe(base)
    return pipes, reasons
