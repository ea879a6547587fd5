"""Offloading: the memory policy's choice from byte budgets (runs everywhere, no GPU needed), the flags and the
setting that ask for a mode, what the manager reports on a CPU machine, and each mode's enabling code path on a
tiny real SD 1.x pipeline where diffusers allows it without CUDA (the same image as without offloading)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from webui.model_manager.cache import disable_offload, enable_offload
from webui.model_manager.memory import GIB, MIB, MIN_ACTIVATION_BYTES, OffloadChoice, choose_offload
from webui.settings import SettingError, Settings, UserSettings, build_parser, settings_from_args

SDXL = 7 * GIB  # weights of a whole fp16 SDXL pipeline (made-up round numbers)
SDXL_UNET = 5 * GIB


def test_no_gpu_means_no_offload_whatever_is_asked() -> None:
    for asked in ("auto", "model", "group"):
        assert choose_offload(asked, None, SDXL, SDXL_UNET).describe() == "none (no GPU)"


def test_auto_picks_from_the_free_memory_and_the_models_size() -> None:
    room = max(MIN_ACTIVATION_BYTES, SDXL_UNET // 4)  # 1.25 GiB for activations
    assert choose_offload("auto", SDXL + room, SDXL, SDXL_UNET).mode == "none"  # everything fits, just
    assert choose_offload("auto", SDXL + room - 1, SDXL, SDXL_UNET).mode == "model"  # one byte short
    assert choose_offload("auto", SDXL_UNET + room, SDXL, SDXL_UNET).mode == "model"  # the UNet alone fits
    short = choose_offload("auto", SDXL_UNET + room - 1, SDXL, SDXL_UNET)
    assert short.mode == "group" and "CUDA streams" in short.reason
    assert choose_offload("auto", 2 * GIB, SDXL, SDXL_UNET, streams=False).mode == "sequential"
    small = choose_offload("auto", 24 * GIB, 2 * GIB, 1700 * MIB)  # SD 1.5 on a 24 GB card
    assert small == OffloadChoice("none", "2.0 GiB of weights and 1.0 GiB for activations fit 24.0 GiB free")


def test_a_mode_asked_for_is_used_as_set_and_an_unknown_one_is_refused() -> None:
    for mode in ("none", "model", "sequential", "group"):
        assert choose_offload(mode, 80 * GIB, SDXL, SDXL_UNET) == OffloadChoice(mode, "as set")
    with pytest.raises(ValueError, match="offload must be one of auto, none, model, sequential, group"):
        choose_offload("lots", 80 * GIB, SDXL, SDXL_UNET)


def test_flags_override_the_setting(tmp_path) -> None:
    def offload(*flags: str) -> str:
        return settings_from_args(build_parser().parse_args(["--data-dir", str(tmp_path), *flags])).offload()

    assert offload() == "auto"
    assert offload("--medvram") == "model" and offload("--lowvram") == "sequential"
    assert offload("--offload", "group") == "group" and offload("--lowvram", "--offload", "group") == "sequential"
    assert Settings(user=UserSettings(offload_mode="none")).offload() == "none"
    with pytest.raises(SettingError, match="offload_mode: must be one of auto, none, model, sequential, group"):
        UserSettings(offload_mode="medvram").validate()


def test_the_manager_says_none_no_gpu_on_a_cpu_machine(world, tiny) -> None:
    world.install_folder(tiny["sd1"], "a")
    manager = world.manager(offload="group")
    assert manager.offload_choice("a") is None  # not loaded
    manager.get("a", "txt2img")
    report = manager.memory_report()
    assert report["offload"] == "none" and report["offload_active"] == "none (no GPU)"
    assert report["loaded"][0]["offload"] == "none (no GPU)"


def image(pipe) -> np.ndarray:
    return pipe(prompt="a red cube", num_inference_steps=2, height=32, width=32, output_type="np",
                generator=torch.Generator("cpu").manual_seed(0)).images[0]


@pytest.fixture
def sd1_pipe(tiny):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny["sd1"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("mode", ["model", "group"])
def test_model_and_group_offload_run_and_give_the_same_image(sd1_pipe, mode) -> None:
    """diffusers runs model offload and group offload (without streams) with the CPU as the "device"."""
    plain = image(sd1_pipe)
    enable_offload(sd1_pipe, mode, "cpu")
    if mode == "group":
        from diffusers.hooks.group_offloading import _is_group_offload_enabled

        assert _is_group_offload_enabled(sd1_pipe.unet)
    else:
        assert hasattr(sd1_pipe.unet, "_hf_hook")
    assert np.array_equal(image(sd1_pipe), plain)
    disable_offload(sd1_pipe)
    assert not hasattr(sd1_pipe.unet, "_hf_hook")
    if mode == "group":
        from diffusers.hooks.group_offloading import _is_group_offload_enabled

        assert not _is_group_offload_enabled(sd1_pipe.unet)
    assert np.array_equal(image(sd1_pipe), plain)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="diffusers' sequential CPU offload needs a CUDA device "
                                                          "(on the CPU it fails inside accelerate)")
def test_sequential_offload_runs_on_cuda(sd1_pipe) -> None:
    plain = image(sd1_pipe)
    enable_offload(sd1_pipe, "sequential", "cuda")
    assert np.abs(image(sd1_pipe) - plain).max() < 1e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="group offload with CUDA streams needs a CUDA device")
def test_group_offload_with_streams_runs_on_cuda(sd1_pipe) -> None:
    plain = image(sd1_pipe)
    enable_offload(sd1_pipe, "group", "cuda")
    assert np.abs(image(sd1_pipe) - plain).max() < 1e-2
