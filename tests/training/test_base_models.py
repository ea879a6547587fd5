"""The trainer finds its base model in the catalogue and loads it with the model manager's loaders: the models the
app refuses to load are refused here with the same reason, and the objective is chosen by architecture (another
architecture, an inpainting or image-to-image pipeline: a config error on base_model, before anything loads)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.security.conftest import Payload
from tests.training.conftest import make_dataset
from webui.model_manager.identify import ARCH_LABELS, Arch
from webui.training.config import ConfigError, config_from_dict
from webui.training.folders import TrainingFolders
from webui.training.objectives import OBJECTIVES, objective_class
from webui.training.trainer import train


def config_for(data_dir: Path, base_model: str):
    make_dataset(data_dir / "data" / "ds", n=1, size=(32, 32))
    return config_from_dict({"base_model": base_model, "dataset": "data/ds", "trigger": "zork", "steps": 1,
                             "output_dir": "models/Lora/out", "resolution": [32]}, base_dir=data_dir)


def refusal(data_dir: Path, base_model: str) -> ConfigError:
    """What train() raises for this base model; it wrote nothing."""
    with pytest.raises(ConfigError) as info:
        train(config_for(data_dir, base_model), search_dirs=list(TrainingFolders.under(data_dir).models))
    assert info.value.field == "base_model"
    assert not (data_dir / "models" / "Lora").exists()
    return info.value


def fake_folder(folder: Path, class_name: str, denoiser: str = "unet", **components: list[str]) -> Path:
    """A diffusers folder that identifies as `class_name`, whose weights are zeros in a file too small to load:
    refusing it must happen before anything is loaded."""
    index = {"_class_name": class_name, denoiser: ["diffusers", "X"], **components}
    (folder / denoiser).mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    (folder / denoiser / "diffusion_pytorch_model.safetensors").write_bytes(b"\x02\0\0\0\0\0\0\0{}")
    return folder


def to_pickle(component: Path, marker: Path) -> None:
    """The component's safetensors weights replaced by a pickle `.bin` that creates `marker` when unpickled."""
    [weights] = list(component.glob("*.safetensors"))
    name = "pytorch_model.bin" if weights.name == "model.safetensors" else "diffusion_pytorch_model.bin"
    torch.save({**load_file(str(weights)), "payload": Payload(marker)}, str(component / name))
    weights.unlink()


def test_a_pickle_only_base_folder_is_refused_with_the_loaders_message(tmp_path: Path, tiny_sd1_dir: Path) -> None:
    from webui.model_manager.catalogue import Catalogue
    from webui.model_manager.errors import ModelLoadError
    from webui.model_manager.identify import identify_folder
    from webui.model_manager.loading import LoadContext, load_folder

    diffusers = tmp_path / "models" / "diffusers"
    folder = Path(shutil.copytree(tiny_sd1_dir, diffusers / "pickled"))
    marker = tmp_path / "pwned.txt"
    to_pickle(folder / "unet", marker)
    to_pickle(folder / "text_encoder", marker)

    message = str(refusal(tmp_path, "pickled"))
    assert message.startswith("base_model: cannot load pickled: ")
    assert "unet/diffusion_pytorch_model.bin" in message and "text_encoder/pytorch_model.bin" in message
    assert "pickle" in message and "Convert to safetensors" in message and str(tmp_path) not in message
    # the app's model list gives the same reason, and the loader itself refuses the folder with it
    app_entry = Catalogue(diffusers_dirs=[diffusers]).find_checkpoint("pickled")
    assert not app_entry.supported and message == f"base_model: cannot load pickled: {app_entry.reason}"
    context = LoadContext(dtype=torch.float32, clip_tokenizer=lambda pad: None, family_folders=lambda arch: [])
    with pytest.raises(ModelLoadError) as loader:
        load_folder(folder, identify_folder(folder), context)
    assert str(loader.value).startswith("cannot load pickled: its weights (")
    assert str(loader.value).removeprefix("cannot load pickled: ") in message
    assert not marker.exists()  # nothing was unpickled


def test_objectives_are_keyed_by_architecture() -> None:
    assert set(OBJECTIVES) == {Arch.EASEL, Arch.SD1, Arch.SD2, Arch.SDXL, Arch.SD3, Arch.FLUX, Arch.ZIMAGE}
    assert OBJECTIVES[Arch.SD1] is OBJECTIVES[Arch.SD2] is OBJECTIVES[Arch.SDXL]
    assert OBJECTIVES[Arch.EASEL].has_preservation and not OBJECTIVES[Arch.FLUX].has_preservation
    assert OBJECTIVES[Arch.SDXL].denoiser_name == "unet" and OBJECTIVES[Arch.SD3].denoiser_name == "transformer"
    for arch in (Arch.QWEN, Arch.UNKNOWN):
        with pytest.raises(ConfigError) as info:
            objective_class(arch, "", "some-model")
        assert info.value.field == "base_model" and "some-model" in str(info.value)


def test_an_unsupported_architecture_is_refused_naming_base_model(tmp_path: Path) -> None:
    fake_folder(tmp_path / "models" / "diffusers" / "qwen", "QwenImagePipeline", "transformer")
    message = str(refusal(tmp_path, "qwen"))
    assert message.startswith("base_model: qwen is a Qwen-Image model; LoRA training supports ")
    assert all(ARCH_LABELS[arch] in message for arch in OBJECTIVES)


@pytest.mark.parametrize(("class_name", "expected"), [
    ("StableDiffusionInpaintPipeline", "base is an inpainting model (SD 1.x); LoRA training needs a text-to-image"),
    ("StableDiffusionXLImg2ImgPipeline", "base is a StableDiffusionXLImg2ImgPipeline pipeline; LoRA training of this "
                                         "architecture needs StableDiffusionPipeline or StableDiffusionXLPipeline"),
])
def test_pipelines_the_objective_cannot_train_are_refused_before_loading(class_name: str, expected: str,
                                                                          tmp_path: Path) -> None:
    fake_folder(tmp_path / "models" / "diffusers" / "base", class_name)
    assert expected in str(refusal(tmp_path, "base"))
