"""IP-Adapter units: a reference image as a prompt, through the same `alwayson_scripts.controlnet.args` units.

A unit whose module is one of sd-webui-controlnet's `ip-adapter_*` names (`ip-adapter_clip_sd15`,
`ip-adapter_clip_sdxl`, `ip-adapter_clip_sdxl_plus_vith`, `ip-adapter-auto`; the older `ip-adapter_clip_h` and
`ip-adapter_clip_g` and Forge's names as aliases; `ip-adapter_clip_l` for Flux.1) names an IP-Adapter in
`models/ipadapter/`: a `.safetensors` file in the community layout (`image_proj.*` and `ip_adapter.*` keys, as
diffusers' `load_ip_adapter` reads them: plain, plus / plus-face and full-face adapters), or a Flux.1 adapter in
XLabs' layout (`ipadapter_flux.py`). Face ID adapters and modules are refused, naming the insightface model they
need. Its image encoder, a transformers `CLIPVisionModelWithProjection`, comes from `models/clip_vision/` (a folder
with `config.json`): the one whose width fits the adapter's image projection (image embeddings for the plain and
Flux adapters, the penultimate hidden states for the "plus" and "full face" ones), preferring the encoder the
module names (ViT-H for `_sd15` and `_plus_vith`, ViT-bigG for `_sdxl`, ViT-L for `_clip_l`).

`IPAdapterRunner` is a pipeline wrapper: for each SD 1.x / 2.x / SDXL call it encodes the units' reference images,
puts the adapters' cross-attention processors and image projection into the UNet (diffusers' own IP-Adapter
loader), hands the pipeline `ip_adapter_image_embeds`, sets each unit's scale step by step from its weight and
guidance window (through the step callback), and puts the UNet's own processors back afterwards; Flux.1 calls go
the same way through the transformer (`ipadapter_flux.run_flux`). Weights and encoders are held in Easel's one
memory cache (kinds `ipadapter` and `clip_vision`).
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from webui.extension_api import ModelFileError, PipelineCall, RequestError

from .ipadapter_flux import check_fits, flux_key, flux_shapes, is_flux_layout, run_flux, windowed_scales
from .preprocessors import ALIASES, MODULES, Module, _none
from .units import HIGH_RES_ONLY, LOW_RES_ONLY, ControlUnit

log = logging.getLogger("easel.extensions.controlnet")

FIELD = "alwayson_scripts.controlnet"
PREFIX = "ip-adapter"
# module -> the image encoder it names ("h": OpenCLIP ViT-H/14, "g": ViT-bigG/14, "": whichever fits)
# ("l": OpenAI CLIP ViT-L/14, the encoder of Flux.1 IP-Adapters)
ENCODER_HINTS = {"ip-adapter-auto": "", "ip-adapter_clip_sd15": "h", "ip-adapter_clip_sdxl": "g",
                 "ip-adapter_clip_sdxl_plus_vith": "h", "ip-adapter_clip_l": "l"}
HINT_WORDS = {"h": ("vit-h", "vith", "_h", "-h"), "g": ("bigg", "vit-g", "_g", "-g"),
              "l": ("vit-l", "vitl", "large", "_l", "-l")}
# Face ID adapters take an insightface face embedding instead of a CLIP one (see FACE_ID_MESSAGE)
FACE_ID_MODULES = ("ip-adapter_face_id", "ip-adapter_face_id_plus")
FACE_ID_MESSAGE = ("Face ID IP-Adapters take a face embedding made by insightface's ArcFace model (the insightface "
                   "and onnxruntime Python packages and the buffalo_l model files), which Easel does not run; use an "
                   "ip-adapter-plus-face or ip-adapter-full-face model with a face as the reference image instead")
WIDTH_FAMILIES = {768: "sd1", 1024: "sd2", 2048: "sdxl"}  # cross-attention width of to_k_ip -> family
FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "flux": "Flux.1"}
GROUPS = {"sd1", "sd2", "sdxl", "flux"}

for _name in (*ENCODER_HINTS, *FACE_ID_MODULES):  # the reference image goes to the image encoder as it is
    MODULES[_name] = Module(_name, _none, uses_resolution=False)
ALIASES.update({"ip-adapter_clip_h": "ip-adapter_clip_sd15", "ip-adapter_clip_g": "ip-adapter_clip_sdxl",
                "ip-adapter_flux": "ip-adapter_clip_l",
                # the names Forge's preprocessor list shows
                "clip-vit-h (ipadapter)": "ip-adapter_clip_sd15", "clip-vit-bigg (ipadapter)": "ip-adapter_clip_sdxl",
                "insightface+clip-h (ipadapter)": "ip-adapter_face_id_plus"})


def is_ip_adapter(module: str) -> bool:
    return module.startswith(PREFIX)


@dataclass(frozen=True)
class AdapterInfo:
    """What an IP-Adapter file needs: its cross-attention width, and the encoder output its projection takes."""

    cross_width: int  # the cross-attention width it was trained for (768 SD 1.x, 1024 SD 2.x, 2048 SDXL, Flux 4096)
    hidden_states: bool  # True: the encoder's penultimate hidden states ("plus", "full face"); False: image_embeds
    width: int  # the width of that encoder output
    flux_blocks: int = 0  # a Flux.1 adapter (XLabs layout): its number of double-stream blocks; 0 for UNet adapters


@dataclass(frozen=True)
class Entry:
    name: str  # path under the folder without the suffix, "/"-separated
    path: Path


def _scan(folders: list[Path], keep: Callable[[Path], bool]) -> dict[str, Entry]:
    found: dict[str, Entry] = {}
    for root in folders:
        if not root.is_dir():
            continue
        for child in sorted(root.rglob("*")):
            if any(part.startswith(".") for part in child.relative_to(root).parts) or not keep(child):
                continue
            relative = child.relative_to(root).as_posix()
            name = relative.removesuffix(child.suffix) if child.is_file() else relative
            found.setdefault(name, Entry(name, child))
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def _find(entries: dict[str, Entry], query: str) -> Entry | None:
    wanted = query.strip()
    if wanted.endswith("]") and " [" in wanted:
        wanted = wanted[: wanted.rindex(" [")].strip()
    for entry in entries.values():
        if wanted.lower() in {entry.name.lower(), entry.path.name.lower(), entry.path.stem.lower(),
                              entry.name.rsplit("/", 1)[-1].lower()}:
            return entry
    return None


def _holder(tensors: dict[str, Any]) -> Any:
    """An nn.Module holding `tensors` as buffers, so the memory cache can measure and move them."""
    import torch

    module = torch.nn.Module()
    for key, tensor in tensors.items():
        module.register_buffer(key.replace(".", "/"), tensor)
    return module


@dataclass
class IPAdapterModels:
    """The IP-Adapters in `models/ipadapter/` and the image encoders in `models/clip_vision/`."""

    folders: Callable[[], list[Path]]
    encoder_folders: Callable[[], list[Path]]
    file_hash: Callable[[Path], str]
    memory: Any
    _entries: dict[str, Entry] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # Adapters --------------------------------------------------------------------------------------------------
    def scan(self) -> list[Entry]:
        with self._lock:
            self._entries = _scan(self.folders(), lambda p: p.is_file() and p.suffix.lower() == ".safetensors")
            return list(self._entries.values())

    def find(self, query: str) -> Entry:
        """By name, title ("name [hash]"), file name or stem, in any case; LookupError lists the installed ones."""
        found = _find(self._entries, query) or _find({e.name: e for e in self.scan()}, query)
        if found is None:
            names = ", ".join(self._entries) or "none (put IP-Adapter .safetensors files in models/ipadapter)"
            raise LookupError(f"unknown IP-Adapter model {query!r}; installed: {names}")
        return found

    def title(self, entry: Entry) -> str:
        try:
            return f"{entry.name} [{self.file_hash(entry.path)[:8]}]"
        except OSError:
            return entry.name

    def info(self, entry: Entry) -> AdapterInfo:
        """The adapter's cross-attention width and encoder needs, read from its header; ModelFileError for anything else."""
        from safetensors import safe_open

        try:
            with safe_open(str(entry.path), framework="pt") as handle:
                shapes = {key: handle.get_slice(key).get_shape() for key in handle.keys()}
        except Exception as exc:  # safetensors raises its own error types for a damaged header
            raise ModelFileError(f"{entry.path.name} is not a safetensors file Easel can read ({exc})") from None
        if is_flux_layout(shapes):
            try:
                cross_width, embed_width, blocks = flux_shapes(shapes)
            except ValueError as exc:
                raise ModelFileError(f"{entry.path.name} is not a Flux.1 IP-Adapter Easel can read ({exc})") from None
            return AdapterInfo(cross_width, False, embed_width, blocks)
        if any(key.startswith("image_proj.perceiver_resampler.") for key in shapes) or (
                "image_proj.norm.weight" in shapes and "image_proj.proj.0.weight" in shapes):
            raise ModelFileError(f"{entry.path.name} is a Face ID IP-Adapter. {FACE_ID_MESSAGE}")
        to_k = shapes.get("ip_adapter.1.to_k_ip.weight")
        if to_k is None:
            raise ModelFileError(f"{entry.path.name} holds no IP-Adapter (no ip_adapter.1.to_k_ip.weight key)")
        cross_width = int(to_k[1])
        if "image_proj.proj.weight" in shapes:  # plain: image_embeds -> 4 tokens
            return AdapterInfo(cross_width, False, int(shapes["image_proj.proj.weight"][1]))
        if "image_proj.proj_in.weight" in shapes:  # plus: a resampler over the hidden states
            return AdapterInfo(cross_width, True, int(shapes["image_proj.proj_in.weight"][1]))
        if "image_proj.proj.0.weight" in shapes and "image_proj.proj.3.weight" in shapes:  # full face: an MLP
            return AdapterInfo(cross_width, True, int(shapes["image_proj.proj.0.weight"][1]))
        raise ModelFileError(f"{entry.path.name} is an IP-Adapter variant Easel does not run (its image_proj keys "
                             f"are neither plain, plus, full face nor Face ID)")

    def load(self, entry: Entry, device: Any, dtype: Any) -> dict[str, dict[str, Any]]:
        """The adapter's state dict (`{"image_proj": {...}, "ip_adapter": {...}}`) on `device` in `dtype`."""
        key = (str(entry.path), str(dtype), str(device))
        with self._lock:
            held = self.memory.get("ipadapter", key)
            if held is None:
                from safetensors.torch import load_file

                tensors = {}
                for key, value in load_file(str(entry.path)).items():
                    renamed = flux_key(key)  # XLabs' Flux names -> diffusers'; the UNet layout keeps its own
                    if renamed is not None:
                        tensors[".".join(renamed)] = value.to(device=device, dtype=dtype)
                held = _holder(tensors)
                self.memory.add("ipadapter", key, held, name=entry.name)
        state: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
        for name, tensor in held.named_buffers():
            part, _, rest = name.replace("/", ".").partition(".")
            state[part][rest] = tensor
        return state

    # Image encoders --------------------------------------------------------------------------------------------
    def encoders(self) -> list[Entry]:
        return list(_scan(self.encoder_folders(), lambda p: p.is_dir() and (p / "config.json").is_file()).values())

    def encoder_for(self, info: AdapterInfo, module: str) -> Entry | None:
        """The encoder whose output fits `info`, preferring the one `module` names (ViT-H or ViT-bigG)."""
        fitting = []
        for entry in self.encoders():
            config = json.loads((entry.path / "config.json").read_text(encoding="utf-8"))
            config = config.get("vision_config", config)
            width = config.get("hidden_size") if info.hidden_states else config.get("projection_dim")
            if width == info.width:
                fitting.append(entry)
        hint = ENCODER_HINTS.get(module, "")
        named = [e for e in fitting if hint and any(word in e.name.lower() for word in HINT_WORDS[hint])]
        return (named or fitting or [None])[0]

    def load_encoder(self, entry: Entry, device: Any, dtype: Any) -> Any:
        key = (str(entry.path), str(dtype), str(device))
        with self._lock:
            encoder = self.memory.get("clip_vision", key)
            if encoder is None:
                from transformers import CLIPVisionModelWithProjection

                log.info("loading image encoder %s", entry.name)
                encoder = CLIPVisionModelWithProjection.from_pretrained(
                    str(entry.path), torch_dtype=dtype, local_files_only=True, use_safetensors=True)
                encoder = encoder.to(device=device).eval().requires_grad_(False)
                self.memory.add("clip_vision", key, encoder, name=entry.name)
            return encoder


def encode(encoder: Any, images: list[Image.Image], hidden_states: bool, guided: bool) -> Any:
    """The embeddings diffusers' `ip_adapter_image_embeds` takes for one adapter: [2, n, ...] (unconditional
    first) under classifier-free guidance, else [1, n, ...]; n reference images."""
    import torch
    from transformers import CLIPImageProcessor

    size = int(encoder.config.image_size)
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    param = next(encoder.parameters())
    pixels = processor(images=[im.convert("RGB") for im in images], return_tensors="pt").pixel_values
    pixels = pixels.to(device=param.device, dtype=param.dtype)  # [n, 3, size, size]
    with torch.no_grad():
        if hidden_states:
            positive = encoder(pixels, output_hidden_states=True).hidden_states[-2]  # [n, seq, hidden]
            negative = encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
        else:
            positive = encoder(pixels).image_embeds  # [n, proj]
            negative = torch.zeros_like(positive)
    return torch.stack([negative, positive]) if guided else positive[None]


def active(step: int, total: int, start: float, end: float) -> bool:
    """Whether a unit acts on `step` of `total` (the rule diffusers applies to ControlNet guidance windows)."""
    return not (step / total < start or (step + 1) / total > end)


class IPAdapterRunner:
    """The pipeline wrapper that runs a request's IP-Adapter units."""

    def __init__(self, models: IPAdapterModels, units: Callable[[Any], list[ControlUnit]]) -> None:
        self.models = models
        self.units = units

    def ip_units(self, call: PipelineCall) -> list[ControlUnit]:
        units = [u for u in self.units(call.request) if is_ip_adapter(u.module)]
        hires_pass = getattr(call.request, "mode", "") == "txt2img" and call.task == "img2img"
        hires_on = bool(getattr(call.request, "enable_hr", False))
        skipped = HIGH_RES_ONLY if hires_on and not hires_pass else LOW_RES_ONLY if hires_pass else None
        return [u for u in units if u.hr_option != skipped]

    def check(self, call: PipelineCall, units: list[ControlUnit]) -> list[tuple[ControlUnit, Entry, AdapterInfo,
                                                                                 Entry, Image.Image]]:
        from .apply import CHECKPOINT_LABELS, input_image

        if call.arch not in GROUPS:
            raise RequestError(FIELD, f"IP-Adapter units run with SD 1.x, SD 2.x, SDXL and Flux.1 checkpoints; "
                                      f"{call.checkpoint} is {CHECKPOINT_LABELS.get(call.arch, call.arch)}")
        checked = []
        for unit in units:
            at = f"{FIELD}.args[{unit.index}]"
            if unit.module in FACE_ID_MODULES:
                raise RequestError(f"{at}.module", f"{unit.module}: {FACE_ID_MESSAGE}")
            try:
                entry = self.models.find(unit.model)
                info = self.models.info(entry)
            except (LookupError, ModelFileError) as exc:
                raise RequestError(f"{at}.model", str(exc)) from None
            label = CHECKPOINT_LABELS.get(call.arch, call.arch)
            if (call.arch == "flux") != bool(info.flux_blocks):
                made_for = "Flux.1" if info.flux_blocks else "a UNet (SD 1.x, SD 2.x or SDXL)"
                raise RequestError(f"{at}.model", f"{entry.name} is an IP-Adapter for {made_for}, but the checkpoint "
                                                  f"{call.checkpoint} is {label}")
            if info.flux_blocks:
                unfit = check_fits(call.pipe.transformer, info.cross_width, info.flux_blocks)
                if unfit:
                    raise RequestError(f"{at}.model", f"{entry.name} does not fit the Flux.1 checkpoint "
                                                      f"{call.checkpoint}: {unfit}")
            width = info.cross_width if info.flux_blocks else int(call.pipe.unet.config.cross_attention_dim)
            if info.cross_width != width:
                made_for = FAMILY_LABELS.get(WIDTH_FAMILIES.get(info.cross_width, ""),
                                             f"a UNet with {info.cross_width}-wide cross-attention")
                raise RequestError(f"{at}.model", f"{entry.name} is an IP-Adapter for {made_for}, but the checkpoint "
                                                  f"{call.checkpoint} is {CHECKPOINT_LABELS.get(call.arch, call.arch)} "
                                                  f"({width}-wide cross-attention)")
            encoder = self.models.encoder_for(info, unit.module)
            if encoder is None:
                output = "hidden states" if info.hidden_states else "image embeddings"
                raise RequestError(f"{at}.model", f"{entry.name} needs an image encoder (CLIPVisionModelWithProjection"
                                                  f" folder) with {info.width}-wide {output} in models/clip_vision; "
                                                  f"none there fits")
            image = unit.image if unit.image is not None else input_image(call)
            if image is None:
                raise RequestError(f"{at}.image", "an IP-Adapter unit needs a reference image")
            checked.append((unit, entry, info, encoder, image))
        return checked

    def __call__(self, call: PipelineCall, run: Callable[[PipelineCall], Any]) -> Any:
        units = self.ip_units(call)
        if not units:
            return run(call)
        checked = self.check(call, units)
        pipe = call.pipe
        if call.arch == "flux":
            return self.run_flux(call, run, checked)
        unet = pipe.unet
        device, dtype = pipe._execution_device, unet.dtype
        guided = float(call.kwargs.get("guidance_scale", 7.5)) > 1.0 and unet.config.time_cond_proj_dim is None
        state_dicts, embeds = [], []
        for unit, entry, info, encoder_entry, image in checked:
            state_dicts.append(self.models.load(entry, device, dtype))
            encoder = self.models.load_encoder(encoder_entry, device, dtype)
            images = list(unit.references) or [image]  # several images: their tokens side by side
            embeds.append(encode(encoder, images, info.hidden_states, guided).to(device=device, dtype=dtype))

        kwargs = dict(call.kwargs)
        # each unit's weight inside its guidance window, else 0, set again at every step's end
        processors, set_scales, estimate = windowed_scales(kwargs, [u for u, *_ in checked], active)
        kwargs["ip_adapter_image_embeds"] = embeds
        saved = (dict(unet.attn_processors), unet.encoder_hid_proj, unet.config.encoder_hid_dim_type)
        custom = sorted({type(p).__name__ for name, p in saved[0].items() if name.endswith("attn2.processor")
                         and type(p).__name__ not in ("AttnProcessor2_0", "AttnProcessor", "XFormersAttnProcessor")})
        if custom:  # a hypernetwork (or another extension) already set the cross-attention; it would be lost
            raise RequestError(FIELD, f"IP-Adapter units replace the UNet's cross-attention processors, which this "
                                      f"request already changes ({', '.join(custom)}, e.g. a hypernetwork); "
                                      f"run them in separate generations")
        try:
            # diffusers' IP-Adapter loader for a UNet: new cross-attention processors + the image projection
            unet._load_ip_adapter_weights(state_dicts, low_cpu_mem_usage=False)
            processors.extend(p for p in unet.attn_processors.values() if isinstance(getattr(p, "scale", None), list))
            set_scales(0, estimate)
            return run(call.replace(kwargs=kwargs))
        finally:
            # the projection first: a "plus" resampler has attention layers of its own, which the UNet would count
            unet.encoder_hid_proj = saved[1]
            unet.config.encoder_hid_dim_type = saved[2]
            unet.set_attn_processor(saved[0])

    def run_flux(self, call: PipelineCall, run: Callable[[PipelineCall], Any], checked: list[Any]) -> Any:
        """Flux.1: units of weight 0 are left out (none left: the plain call); the rest go into the transformer."""
        checked = [item for item in checked if item[0].weight > 0.0]
        if not checked:
            return run(call)
        transformer = call.pipe.transformer
        device, dtype = call.pipe._execution_device, transformer.dtype
        state_dicts, embeds = [], []
        for unit, entry, info, encoder_entry, image in checked:
            state_dicts.append(self.models.load(entry, device, dtype))
            encoder = self.models.load_encoder(encoder_entry, device, dtype)
            images = list(unit.references) or [image]
            embeds.append(encode(encoder, images, False, True))  # [2, n, dim]: zeros, then the references
        return run_flux(call, run, [item[0] for item in checked], state_dicts, embeds, active)
