"""Family folders identified from model_index.json alone: the family and variant, folders without weights or with
only pickle weights refused with a reason, cascade stages listed but not loadable alone, and which request fields
each family's UI hides."""
from __future__ import annotations

import json
from pathlib import Path

from webui.model_manager.families import hidden_fields
from webui.model_manager.identify import Arch, identify_folder


def folder(root: Path, name: str, class_name: str, parts: dict[str, str]) -> Path:
    path = root / name
    index = {"_class_name": class_name}
    for part, weights in parts.items():
        (path / part).mkdir(parents=True)
        index[part] = ["diffusers", "Model"]
        if weights:
            (path / part / weights).write_bytes(b"\0" * 16)
    (path / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    return path


def test_families_and_variants_from_the_class_name(tmp_path):
    cases = {"DiTPipeline": (Arch.DIT, ""), "PixArtSigmaPipeline": (Arch.PIXART, "sigma"),
             "PixArtAlphaPipeline": (Arch.PIXART, "alpha"), "SanaPipeline": (Arch.SANA, ""),
             "AmusedInpaintPipeline": (Arch.AMUSED, ""), "StableUnCLIPImg2ImgPipeline": (Arch.UNCLIP, "stable"),
             "UnCLIPPipeline": (Arch.UNCLIP, "karlo"), "IFPipeline": (Arch.IF, "")}
    for index, (class_name, (arch, variant)) in enumerate(cases.items()):
        parts = {"transformer": "model.safetensors", "vae": "model.safetensors", "unet": "model.safetensors",
                 "prior": "model.safetensors", "decoder": "model.safetensors", "text_encoder": "model.safetensors"}
        found = identify_folder(folder(tmp_path, f"m{index}", class_name, parts))
        assert (found.arch, found.variant, found.supported) == (arch, variant, True), class_name


def test_missing_or_pickle_weights_and_lone_stages_are_refused_with_a_reason(tmp_path):
    empty = identify_folder(folder(tmp_path, "empty", "SanaPipeline", {"transformer": "", "vae": "x.safetensors"}))
    assert not empty.supported and "without weights in transformer/" in empty.reason
    pickled = identify_folder(folder(tmp_path, "pickled", "DiTPipeline",
                                     {"transformer": "diffusion_pytorch_model.bin", "vae": "x.safetensors"}))
    assert not pickled.supported and "pickle" in pickled.reason and "convert" in pickled.reason
    stage = identify_folder(folder(tmp_path, "stage2", "IFSuperResolutionPipeline", {"unet": "x.safetensors"}))
    assert stage.arch == Arch.IF and not stage.supported and "stage I" in stage.reason
    alone = identify_folder(folder(tmp_path, "IF-I", "IFPipeline", {"unet": "x.safetensors",
                                                                      "text_encoder": "x.safetensors"}))
    assert alone.supported and "stage II" in alone.reason  # found beside it: the stage2 folder above


def test_hidden_fields_per_family():
    assert hidden_fields(Arch.SD1) == {"noise_level", "stage2_steps", "stage3_steps", "truncation_psi", "class_label"}
    gan = hidden_fields(Arch.GAN, "stylegan2:256:0")  # no steps, CFG, sampler or negative prompt; ψ shown
    assert {"steps", "cfg_scale", "sampler", "negative_prompt", "class_label"} <= gan and "truncation_psi" not in gan
    assert "class_label" not in hidden_fields(Arch.GAN, "stylegan3-t:256:10")  # a conditional generator's class
    assert "negative_prompt" in hidden_fields(Arch.DIT) and "clip_skip" in hidden_fields(Arch.DIT)
    assert "negative_prompt" not in hidden_fields(Arch.PIXART)
    assert "noise_level" not in hidden_fields(Arch.UNCLIP, "stable")
    assert "denoising_strength" in hidden_fields(Arch.UNCLIP, "stable")  # sent as its default, which it accepts
    assert "denoising_strength" not in hidden_fields(Arch.AMUSED) | hidden_fields(Arch.SD1)
    assert "negative_prompt" in hidden_fields(Arch.UNCLIP, "karlo")
    assert not {"stage2_steps", "stage3_steps"} & hidden_fields(Arch.IF)
