"""The CPU execution path (webui.engine.cpu_path) on the tiny SD 1.x model: each faster backend gives the plain
path's image within the stated tolerance, a converted model is reused (and read back from disk after a restart),
LoRA changes still apply, an unavailable backend falls back with a message, and the tiny VAE decodes and previews.

Tolerance (docs/CPU.md): fp32 backends differ from PyTorch by float rounding only; on 8-bit pixels the largest
difference allowed is TOLERANCE levels (the tiny random models amplify rounding more than real ones do).
"""
from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch

from tests.lora.lora_files import kohya_layout, random_lora, save
from webui.engine.worker import JobState
from webui.requests import Txt2ImgRequest

SMALL = dict(width=64, height=64, steps=2, checkpoint="tiny-sd1", sampler="Euler", seed=11, cfg_scale=7)
TOLERANCE = 2  # 8-bit levels


def use(easel, **settings) -> None:
    easel.settings.user = dataclasses.replace(easel.settings.user, **settings)


def image(easel, prompt: str = "a red circle", timeout: float = 300, **changes) -> np.ndarray:
    job = easel.engine.generate(Txt2ImgRequest(prompt=prompt, **{**SMALL, **changes}), timeout=timeout)
    assert job.state == JobState.DONE, job.error
    return np.asarray(job.result.images[0].convert("RGB")).astype(int)


def test_openvino_matches_plain_and_reuses_its_conversion(make_easel):
    pytest.importorskip("openvino")
    easel = make_easel()
    use(easel, cpu_backend="plain")
    plain = image(easel)
    assert easel.engine.cpu_path.status()["backend"] == "plain"
    use(easel, cpu_backend="openvino")
    fast = image(easel)
    status = easel.engine.cpu_path.status()
    assert status["backend"] == "openvino", status
    assert np.abs(fast - plain).max() <= TOLERANCE
    stats = status["stats"]["openvino"]
    assert stats["conversions"] == 2  # the UNet and the VAE decoder, once each
    assert np.abs(image(easel) - fast).max() == 0  # the same request again: same bytes, nothing converted again
    assert easel.engine.cpu_path.status()["stats"]["openvino"]["conversions"] == 2
    cached = list((easel.manager.cache_dir / "openvino").iterdir())
    assert len(cached) == 2 and all((folder / "model.xml").is_file() for folder in cached)

    restarted = make_easel()  # the same data folder: a restart reads the converted models back from disk
    use(restarted, cpu_backend="openvino")
    assert np.abs(image(restarted) - fast).max() == 0
    stats = restarted.engine.cpu_path.status()["stats"]["openvino"]
    assert stats["conversions"] == 0 and stats["disk_reads"] == 2


def test_auto_keeps_tiny_models_plain_and_says_why(make_easel):
    easel = make_easel()
    image(easel)
    status = easel.engine.cpu_path.status()
    assert status["setting"] == "auto" and status["backend"] == "plain"
    assert "small UNet" in status["reason"] or "unavailable" in status["reason"]
    assert status["native_bf16"] is False or status["native_bf16"] is True  # read from the CPU flags


def test_missing_package_falls_back_to_plain_with_a_message(make_easel, monkeypatch, caplog):
    easel = make_easel()
    use(easel, cpu_backend="plain")
    plain = image(easel)
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError, as when not installed
    use(easel, cpu_backend="openvino")
    with caplog.at_level("INFO", logger="webui.engine.cpu_path"):
        fallback = image(easel)
    assert np.array_equal(fallback, plain)
    status = easel.engine.cpu_path.status()
    assert status["backend"] == "plain"
    assert "openvino unavailable" in status["reason"] and "not installed" in status["reason"]
    assert "openvino unavailable" in caplog.text


@pytest.mark.slow
def test_conversion_error_falls_back_and_the_request_succeeds(make_easel):
    pytest.importorskip("openvino")
    easel = make_easel()
    use(easel, cpu_backend="plain")
    plain = image(easel)
    use(easel, cpu_backend="openvino")
    # A cache folder the converter cannot write into: the model runs from memory, the request still succeeds.
    (easel.manager.cache_dir).mkdir(parents=True, exist_ok=True)
    (easel.manager.cache_dir / "openvino").write_text("not a folder")
    fast = image(easel)
    assert np.abs(fast - plain).max() <= TOLERANCE
    assert easel.engine.cpu_path.status()["backend"] == "openvino"


def write_lora(easel, tiny_sd1_dir, name: str, seed: int):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_sd1_dir / "unet")
    pairs = random_lora(unet, r"attn[12]\.to_(q|k|v|out\.0)$", rank=4, seed=seed)
    save(easel.settings.models_dir / "Lora" / f"{name}.safetensors", kohya_layout(pairs, "lora_unet", alpha=4.0))
    easel.manager.refresh_loras()


@pytest.mark.slow
def test_lora_changes_apply_under_openvino(make_easel, tiny_sd1_dir):
    pytest.importorskip("openvino")
    easel = make_easel()
    write_lora(easel, tiny_sd1_dir, "styleA", seed=1)
    use(easel, cpu_backend="plain")
    base_plain = image(easel)
    lora_plain = image(easel, prompt="a red circle <lora:styleA:1>")
    assert np.abs(lora_plain - base_plain).max() > 10  # the LoRA changes the image
    use(easel, cpu_backend="openvino")
    assert np.abs(image(easel, prompt="a red circle <lora:styleA:1>") - lora_plain).max() <= TOLERANCE
    assert np.abs(image(easel) - base_plain).max() <= TOLERANCE  # LoRA gone: the base model's image again
    stats = easel.engine.cpu_path.status()["stats"]["openvino"]
    assert stats["conversions"] == 3  # the VAE once, the UNet per LoRA state (with, without)


@pytest.mark.slow
def test_torch_compile_matches_plain(make_easel):
    easel = make_easel()
    use(easel, cpu_backend="plain")
    plain = image(easel)
    use(easel, cpu_backend="compile")
    fast = image(easel, timeout=1800)  # the first call compiles (C++ code generation: minutes on 2 busy cores)
    status = easel.engine.cpu_path.status()
    if status["backend"] != "compile":  # no C++ compiler here: the fallback is what must work
        assert "compile" in status["reason"]
    assert np.abs(fast - plain).max() <= TOLERANCE


def tiny_autoencoder(seed: int = 3, blocks: int = 4):
    """A TAESD-layout decoder; `blocks` 4 is TAESD's own (8x), 2 fits the tiny SD 1.x model's 2x VAE."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    if blocks == 4:
        return AutoencoderTiny(latent_channels=4).eval()
    return AutoencoderTiny(latent_channels=4, encoder_block_out_channels=(16,) * blocks,
                           decoder_block_out_channels=(16,) * blocks, num_encoder_blocks=(1,) * blocks,
                           num_decoder_blocks=(1,) * blocks).eval()


def raw_taesd_layout(model) -> dict[str, torch.Tensor]:
    """The decoder's weights as TAESD's own files name them (a Sequential whose index 0 is the clamp)."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("decoder.layers."):
            index, rest = key.removeprefix("decoder.layers.").split(".", 1)
            out[f"{int(index) + 1}.{rest}"] = value.contiguous()
    return out


def test_tiny_vae_file_layouts_load_the_same_decoder(tmp_path):
    from safetensors.torch import save_file

    from webui.engine.tiny_vae import TinyVaes, find_file

    model = tiny_autoencoder()
    folder = tmp_path / "VAE-approx"
    folder.mkdir()
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.decode(latents, return_dict=False)[0]
    layouts = {"taesd_decoder.safetensors": raw_taesd_layout(model),
               "taesd.safetensors": {k: v.contiguous() for k, v in model.state_dict().items()}}
    for name, tensors in layouts.items():
        for old in folder.iterdir():
            old.unlink()
        save_file(tensors, str(folder / name))
        assert find_file(folder, "sd1").name == name and find_file(folder, "flux") is None
        loaded = TinyVaes(folder).get("sd1")
        with torch.no_grad():
            assert torch.allclose(loaded.decode(latents, return_dict=False)[0], expected, atol=1e-6)
    (folder / "taesd.safetensors").write_bytes(b"not safetensors")
    assert TinyVaes(folder).get("sd1") is None  # a broken file is skipped (logged), never a failed request


def test_tiny_vae_decodes_and_draws_previews(make_easel):
    easel = make_easel()
    model = tiny_autoencoder(blocks=2)
    model.save_pretrained(easel.settings.models_dir / "VAE-approx" / "taesd")
    use(easel, cpu_backend="plain", tiny_vae_decode=False, tiny_vae_preview=True, live_preview_every=1)
    full = image(easel)
    use(easel, tiny_vae_decode=True)
    job = easel.engine.generate(Txt2ImgRequest(prompt="a red circle", **SMALL), timeout=300)
    assert job.state == JobState.DONE, job.error
    tiny = np.asarray(job.result.images[0].convert("RGB")).astype(int)
    assert tiny.shape == full.shape and not np.array_equal(tiny, full)  # another decoder drew it
    assert job.preview is not None and job.preview.size == (64, 64)  # the tiny VAE's preview: full size, not 32x32
    # inside a pipeline call the VAE slot decodes through the tiny VAE (latents x the full VAE's scaling factor)
    pipe = easel.manager.get("tiny-sd1", "txt2img").pipe
    real = pipe.vae
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with easel.engine.cpu_path.active(pipe, "sd1"), torch.no_grad():
        assert pipe.vae is not real
        decoded = pipe.vae.decode(z, return_dict=False)[0]
    assert pipe.vae is real  # put back after the call
    with torch.no_grad():
        expected = model.decode(z * real.config.scaling_factor, return_dict=False)[0]
    assert torch.allclose(decoded, expected, atol=1e-6)
    preview = easel.engine.cpu_path.previewer("sd1")
    assert preview is not None and preview(torch.zeros(1, 4, 8, 8)).size == (16, 16)  # the VAE's 2x, not 1x
    assert easel.engine.cpu_path.previewer("sdxl") is None  # no taesdxl file: the linear preview
    model8x = tiny_autoencoder(blocks=4)  # TAESD's own 8x decoder does not fit the tiny model's 2x VAE: not used
    model8x.save_pretrained(easel.settings.models_dir / "VAE-approx" / "taesd")
    assert np.array_equal(image(easel), full)


def test_cpu_backend_setting_is_validated_naming_it():
    from webui.settings import SettingError, UserSettings

    UserSettings(cpu_backend="openvino").validate()
    with pytest.raises(SettingError, match="cpu_backend: must be one of auto, plain, openvino, compile"):
        UserSettings(cpu_backend="gpu").validate()


def test_bf16_is_native_only_with_avx512_bf16_or_amx():
    from webui.engine.cpu_path import native_bf16

    assert not native_bf16({"avx2", "fma", "avx512f"})  # AVX-512 without BF16 would emulate it
    assert native_bf16({"avx512f", "avx512_bf16"}) and native_bf16({"amx_bf16", "amx_tile"})


def test_fingerprint_follows_the_weights(tiny_sd1_dir):
    from diffusers import UNet2DConditionModel

    from webui.engine.cpu_path import fingerprint

    unet = UNet2DConditionModel.from_pretrained(tiny_sd1_dir / "unet")
    first = fingerprint(unet)
    assert fingerprint(unet) == first  # stable: the same weights, the same key (and disk-cache folder)
    weight = unet.conv_in.weight
    with torch.no_grad():
        weight.add_(0.01)  # changed in place, as fusing a LoRA does
    assert fingerprint(unet) != first


def test_stand_in_runs_the_real_unet_for_what_its_graph_lacks(tiny_sd1_dir, tmp_path):
    from diffusers import UNet2DConditionModel

    from webui.engine.cpu_path import CpuPath, UNetStandIn

    unet = UNet2DConditionModel.from_pretrained(tiny_sd1_dir / "unet").eval()
    graph_calls = []

    def graph(sample, timestep, text):  # what a backend would run: records its inputs, answers zeros
        graph_calls.append((tuple(sample.shape), timestep.tolist(), tuple(text.shape)))
        return torch.zeros_like(sample)

    stand_in = UNetStandIn(unet, graph, CpuPath("cpu", tmp_path))
    sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(999.0)
    out = stand_in(sample, t, encoder_hidden_states=text, timestep_cond=None, cross_attention_kwargs=None,
                   added_cond_kwargs={}, return_dict=False)[0]
    assert graph_calls == [((2, 4, 8, 8), [999.0], (2, 77, unet.config.cross_attention_dim))]
    assert torch.count_nonzero(out) == 0
    with torch.no_grad():
        expected = unet(sample, t, encoder_hidden_states=text, cross_attention_kwargs={"scale": 0.5}).sample
        got = stand_in(sample, t, encoder_hidden_states=text, cross_attention_kwargs={"scale": 0.5}).sample
    assert len(graph_calls) == 1 and torch.equal(got, expected)  # cross-attention arguments: the real UNet ran
    assert stand_in.config.in_channels == unet.config.in_channels  # everything else is the real UNet's


def test_cpu_backend_through_api_options_and_memory_report(make_easel):
    from tests.conftest import api_client

    easel = make_easel()
    with api_client(easel) as client:
        assert client.get("/sdapi/v1/options").json()["cpu_backend"] == "auto"
        bad = client.post("/sdapi/v1/options", json={"cpu_backend": "gpu"})
        assert bad.status_code == 422 and "cpu_backend" in bad.text
        assert client.post("/sdapi/v1/options", json={"cpu_backend": "plain"}).status_code == 200
        body = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler", "seed": 3}
        assert client.post("/sdapi/v1/txt2img", json=body).status_code == 200
        report = client.get("/sdapi/v1/memory").json()["easel"]["cpu_path"]
    assert report["backend"] == "plain" and report["reason"] == "chosen in Settings" and report["setting"] == "plain"
    assert report["threads"] >= 1
