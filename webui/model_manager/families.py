"""The diffusers families beyond latent diffusion and flow text-to-image: DiT, PixArt-α/Σ, Sana, aMUSEd, unCLIP /
Stable unCLIP and DeepFloyd IF, recognised from a folder's `model_index.json` and given their mode pipelines.

Each family is one row of `FAMILY_CLASSES`: the pipeline class names it covers, its `Arch`, the variant a class
means, and the components that must hold weights. Folders that are one stage of a cascade (DeepFloyd IF stage II,
the x4 upscaler) are listed but not loadable on their own: the reason names the stage I folder to pick instead.
For DeepFloyd IF, stage I loads the later stages from folders beside it (`stage_folders`): the three folders in
one parent folder, or side by side in the diffusers models folder.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webui.model_manager.identify import ARCH_LABELS, Arch, Identification, unknown
from webui.model_manager.weights import (PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, pickle_folder_reason,
                                         pickle_weights_in, pipeline_components)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FamilyClass:
    """One diffusers pipeline class of a family: its variant and the components that must hold weights."""

    arch: Arch
    variant: str
    weighted: tuple[str, ...]


FAMILY_CLASSES: dict[str, FamilyClass] = {
    "DiTPipeline": FamilyClass(Arch.DIT, "", ("transformer", "vae")),
    "PixArtAlphaPipeline": FamilyClass(Arch.PIXART, "alpha", ("transformer", "text_encoder", "vae")),
    "PixArtSigmaPipeline": FamilyClass(Arch.PIXART, "sigma", ("transformer", "text_encoder", "vae")),
    "SanaPipeline": FamilyClass(Arch.SANA, "", ("transformer", "text_encoder", "vae")),
    "AmusedPipeline": FamilyClass(Arch.AMUSED, "", ("transformer", "text_encoder", "vqvae")),
    "AmusedImg2ImgPipeline": FamilyClass(Arch.AMUSED, "", ("transformer", "text_encoder", "vqvae")),
    "AmusedInpaintPipeline": FamilyClass(Arch.AMUSED, "", ("transformer", "text_encoder", "vqvae")),
    "StableUnCLIPImg2ImgPipeline": FamilyClass(Arch.UNCLIP, "stable", ("unet", "image_encoder", "vae")),
    "UnCLIPPipeline": FamilyClass(Arch.UNCLIP, "karlo", ("prior", "decoder", "text_encoder")),
    "IFPipeline": FamilyClass(Arch.IF, "", ("unet", "text_encoder")),
}
# Stages of a cascade: listed, never loaded alone.
STAGE_CLASSES = {
    "IFSuperResolutionPipeline": "DeepFloyd IF stage II (64 → 256 px)",
    "StableDiffusionUpscalePipeline": "an x4 upscaler (DeepFloyd IF stage III)",
}
# StyleGAN generators (models/GAN, webui.gan) run by the families' rules too: their own runner, fields refused
FAMILY_ARCHS = frozenset({*(c.arch for c in FAMILY_CLASSES.values()), Arch.GAN})


def _has_weights(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES
                                   for p in folder.rglob("*"))


def identify_family_folder(path: Path, class_name: str, index: dict[str, Any]) -> Identification | None:
    """The identification of a folder of one of these families (None: not one of them)."""
    if class_name in STAGE_CLASSES:
        what = STAGE_CLASSES[class_name]
        return Identification(Arch.IF, f"{what}: a stage of a cascade, run from its DeepFloyd IF stage I folder "
                                       "(IFPipeline) placed beside it", "stage", False, "diffusers")
    family = FAMILY_CLASSES.get(class_name)
    if family is None:
        return None
    label = ARCH_LABELS[family.arch]
    missing = [name for name in family.weighted if name in index and not _has_weights(path / name)]
    if missing:
        return Identification(family.arch, f"{label} folder ({class_name}) without weights in "
                                           f"{', '.join(f'{m}/' for m in missing)}", family.variant, False,
                              "diffusers")
    components = [c for c in pipeline_components(path, index) if c not in ("safety_checker", "watermarker")]
    pickled = pickle_weights_in(path, components)
    if pickled:
        return Identification(family.arch, f"{label} diffusers folder ({class_name}): "
                                           f"{pickle_folder_reason(path, pickled)}", family.variant, False,
                              "diffusers")
    detail = f"{label} diffusers folder ({class_name})"
    if family.arch == Arch.IF:
        stages = stage_folders(path)
        found = [name for name, folder in stages.items() if folder is not None]
        detail += (f"; later stages found: {', '.join(found)}" if found
                   else "; no stage II folder beside it (stage I alone)")
    return Identification(family.arch, detail, family.variant, True, "diffusers")


def _class_of(folder: Path) -> str:
    try:
        data = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(data.get("_class_name", "")) if isinstance(data, dict) else ""


def stage_folders(stage_one: Path) -> dict[str, Path | None]:
    """DeepFloyd IF's later stages for a stage I folder: "stage II" (IFSuperResolutionPipeline) and "upscaler"
    (StableDiffusionUpscalePipeline), found among the folders beside it (first by name order); None when absent."""
    found: dict[str, Path | None] = {"stage II": None, "upscaler": None}
    wanted = {"IFSuperResolutionPipeline": "stage II", "StableDiffusionUpscalePipeline": "upscaler"}
    parent = stage_one.parent
    for folder in sorted(p for p in parent.iterdir() if p.is_dir() and p != stage_one):
        role = wanted.get(_class_of(folder))
        if role is not None and found[role] is None:
            found[role] = folder
    return found


# ------------------------------------------------------------------------------------------------ loading
def load_kwargs(index: dict[str, Any]) -> dict[str, Any]:
    """Extra `from_pretrained` arguments: DeepFloyd IF's watermarker is not loaded."""
    return {"watermarker": None} if "watermarker" in index else {}


def load_unclip(path: Path, index: dict[str, Any], dtype_kwargs: dict[str, Any]) -> Any:
    """An unCLIP (Karlo) pipeline built from its component folders: diffusers moved `UnCLIPTextProjModel` to its
    deprecated pipelines, and `from_pretrained` no longer finds the class model_index.json names."""
    import diffusers
    import transformers
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel

    parts: dict[str, Any] = {}
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        library, class_name = value
        if class_name == "UnCLIPTextProjModel":
            cls = UnCLIPTextProjModel
        else:
            cls = getattr(transformers if library == "transformers" else diffusers, class_name)
        if class_name.endswith("Scheduler"):
            parts[name] = cls.from_pretrained(str(path / name))
        elif class_name.endswith(("Tokenizer", "TokenizerFast")):
            parts[name] = cls.from_pretrained(str(path / name), local_files_only=True)
        else:
            parts[name] = cls.from_pretrained(str(path / name), **dtype_kwargs, local_files_only=True,
                                              use_safetensors=True)
    return diffusers.UnCLIPPipeline(**parts)


def load_stages(pipe: Any, path: Path, dtype_kwargs: dict[str, Any]) -> dict[str, Any]:
    """DeepFloyd IF's stage II and upscaler pipelines from the folders beside stage I (absent ones left out).
    Stage II shares stage I's T5 text encoder. Raises whatever diffusers raises (the caller names the folder)."""
    from diffusers import IFSuperResolutionPipeline, StableDiffusionUpscalePipeline

    stages: dict[str, Any] = {}
    folders = stage_folders(path)
    common = {**dtype_kwargs, "local_files_only": True, "use_safetensors": True}
    if folders["stage II"] is not None:
        stages["stage II"] = IFSuperResolutionPipeline.from_pretrained(
            str(folders["stage II"]), text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, safety_checker=None,
            feature_extractor=None, watermarker=None, requires_safety_checker=False, **common)
    if folders["upscaler"] is not None:
        stages["upscaler"] = StableDiffusionUpscalePipeline.from_pretrained(
            str(folders["upscaler"]), safety_checker=None, feature_extractor=None, watermarker=None, **common)
    for stage in stages.values():
        stage.set_progress_bar_config(disable=True)
    return stages


def mode_pipelines(base: Any, arch: Arch, variant: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Each mode's pipeline for one of these families, sharing the base pipeline's modules; and why a mode is not
    available."""
    import diffusers

    label = ARCH_LABELS[arch]
    pipes: dict[str, Any] = {}
    reasons: dict[str, str] = {"edit": f"{label} models do not edit by instruction"}
    if arch == Arch.GAN:
        for mode in ("img2img", "inpaint"):
            reasons[mode] = f"a StyleGAN generator draws from a seed only: use it in txt2img, not {mode}"
        return {"txt2img": base}, reasons
    if arch == Arch.AMUSED:
        pipes["txt2img"] = diffusers.AmusedPipeline.from_pipe(base)
        pipes["img2img"] = diffusers.AmusedImg2ImgPipeline.from_pipe(base)
        pipes["inpaint"] = diffusers.AmusedInpaintPipeline.from_pipe(base)
        return pipes, reasons
    if arch == Arch.UNCLIP and variant == "stable":
        pipes["img2img"] = base
        reasons["txt2img"] = ("Stable unCLIP makes variations of an image: use it in img2img (Image variations); "
                              "it has no prior for text → image")
        reasons["inpaint"] = "Stable unCLIP makes variations of an image; it does not inpaint"
        return pipes, reasons
    pipes["txt2img"] = base
    if arch == Arch.UNCLIP:
        reasons["img2img"] = ("this unCLIP model has no image encoder; image variations need a Stable unCLIP model "
                              "(StableUnCLIPImg2ImgPipeline)")
    else:
        reasons["img2img"] = f"{label} models run text → image only in Easel"
    reasons["inpaint"] = f"{label} models do not inpaint in Easel"
    return pipes, reasons


# ------------------------------------------------------------------------------------------------ controls
# Request fields that only some models use: the UI hides their controls and does not send them for others.
FAMILY_ONLY_FIELDS = ("noise_level", "stage2_steps", "stage3_steps", "truncation_psi", "class_label")
# what a StyleGAN generator does not use: it draws in one forward pass from a seed (and a class)
GAN_UNUSED = ("steps", "cfg_scale", "sampler", "negative_prompt", "vae", "denoising_strength")
UNUSED_BY_FAMILIES = ("clip_skip", "tiling", "scheduler")  # CLIP skip, seamless tiling, schedule types


def takes_vae(arch: Arch, variant: str = "") -> bool:
    """A VAE from the VAE folders can replace this model's own: it has a Stable Diffusion-style autoencoder (not
    aMUSEd's VQ-GAN, Sana's deep-compression autoencoder, or the pixel-space IF and Karlo)."""
    return arch not in (Arch.AMUSED, Arch.SANA, Arch.IF, Arch.GAN) and not (arch == Arch.UNCLIP and
                                                                             variant != "stable")


def hidden_fields(arch: Arch, variant: str = "") -> frozenset[str]:
    """The request fields a model of this family does not use: its UI controls are hidden and not sent."""
    from webui.requests import TILED_DIFFUSION_ARCHS

    # tiled diffusion: Stable Diffusion UNets only (the others attend across the whole image)
    untiled = () if arch.value in TILED_DIFFUSION_ARCHS else ("tiled_diffusion",)
    if arch not in FAMILY_ARCHS:
        return frozenset((*FAMILY_ONLY_FIELDS, *untiled))
    hidden = set(UNUSED_BY_FAMILIES) | set(FAMILY_ONLY_FIELDS)
    if arch == Arch.GAN:
        hidden = (hidden | set(GAN_UNUSED)) - {"truncation_psi"}
        if variant.rsplit(":", 1)[-1] not in ("", "0"):  # a class-conditional generator ("<gen>:<res>:<classes>")
            hidden.discard("class_label")
        return frozenset(hidden | set(untiled))
    if arch == Arch.DIT or (arch == Arch.UNCLIP and variant != "stable"):
        hidden.add("negative_prompt")  # class-conditional DiT and Karlo's prior take none
    if arch == Arch.UNCLIP and variant == "stable":
        hidden.discard("noise_level")
        hidden.add("denoising_strength")  # its variations start from noise: the noise level varies them instead
    if arch == Arch.IF:
        hidden -= {"stage2_steps", "stage3_steps"}
    if not takes_vae(arch, variant):
        hidden.add("vae")  # not sent: the request keeps "Automatic", the model's own
    return frozenset(hidden | set(untiled))
