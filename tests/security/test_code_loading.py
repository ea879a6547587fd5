"""Model files that would run code when loaded are refused everywhere a request can name them, before anything in
them is deserialized; tensors-only files of the same formats still load.

The malicious files are real: a TorchScript upscaler (`torch.jit.script` of a module whose `__setstate__` creates a
file, which `torch.jit.load` runs, as the first test shows on a copy) saved as `.pt` and hidden in a `.pth`, and
plain pickles whose unpickling creates the file (`builtins.open`). They are named through the API (Extras single
and batch, hires fix, ControlNet units and /controlnet/detect, model switches), the Extras tab's handler and the
model manager, on real servers on loopback ports: every answer is a 4xx naming the field and the file, and the
marker file is never created. Hub downloads are off unless Easel is started with `--allow-hub-downloads`.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.api.conftest import b64_png, gradient, open_b64
from tests.controlnet.conftest import shapes, tiny_sd1_controlnet  # noqa: F401 - the fixture, for this module
from tests.security.conftest import TINY, Payload, one_worker_thread
from tests.tiny_upscalers import make_tiny_esrgan
from webui.model_manager.convert import ConversionError
from webui.model_manager.errors import ModelLoadError, ModelNotFoundError


class CodeOnLoad(torch.nn.Module):
    """A 2x upscaler whose TorchScript `__setstate__` creates `marker` (torch.from_file with shared=True makes the
    file): what `torch.jit.load` runs while it opens the archive."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=2.0)

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.marker = state[0]
        created = torch.from_file(state[0], shared=True, size=4)
        self.training = state[1] and created.numel() > 0


def write_torchscript(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(CodeOnLoad(str(marker))).save(str(path))
    assert not marker.exists()
    return path


def write_pickle(path: Path, marker: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """Real tensors, and beside them an object whose unpickling creates `marker`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": tensors, "payload": Payload(marker)}, str(path))
    assert not marker.exists()
    return path


def assert_refused(response: httpx.Response, field: str, file_name: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field, body
    assert file_name in body["detail"] and "refused" in body["detail"], body


def extras_handler(blocks: Any) -> Any:
    found = [f for f in blocks.fns.values() if f.name == "on_upscale" and any(
        getattr(c, "elem_id", None) == "extras_image" for c in f.inputs)]
    assert len(found) == 1
    return found[0].fn


def test_the_payloads_are_real(tmp_path) -> None:
    """Loaded the unsafe way, each file creates its marker: what the refusals below prevent."""
    scripted = write_torchscript(tmp_path / "probe.pt", tmp_path / "scripted.txt")
    torch.jit.load(str(scripted))
    assert (tmp_path / "scripted.txt").exists()
    pickled = write_pickle(tmp_path / "probe.pth", tmp_path / "pickled.txt", {"w": torch.zeros(2)})
    torch.load(str(pickled), weights_only=False)
    assert (tmp_path / "pickled.txt").exists()


@pytest.fixture
def upscaler_server(serve, tmp_path):
    """A page + API server whose ESRGAN folder holds code-running upscalers and a tensors-only `.pth` one."""
    easel, url = serve(api=True)
    one_worker_thread(easel)
    marker = tmp_path / "pwned.txt"
    folder = easel.settings.models_dir / "ESRGAN"
    folder.mkdir(parents=True, exist_ok=True)
    good = make_tiny_esrgan(tmp_path / "tiny.safetensors", scale=2)
    torch.save({"params_ema": load_file(str(good))}, str(folder / "2x-tensors.pth"))
    evil = {"4x-script": write_torchscript(folder / "4x-script.pt", marker),
            "4x-hidden": write_torchscript(folder / "4x-hidden.pth", marker),
            "4x-pickle": write_pickle(folder / "4x-pickle.pth", marker, load_file(str(good)))}
    easel.engine.upscalers.refresh()
    return easel, url, marker, evil


def test_code_running_upscalers_are_refused_everywhere(upscaler_server) -> None:
    easel, url, marker, evil = upscaler_server
    api = f"{url}/sdapi/v1"
    image = b64_png(gradient(16, 16))
    for name, path in evil.items():
        single = httpx.post(f"{api}/extra-single-image", json={"image": image, "upscaler_1": name,
                                                                "upscaling_resize": 2}, timeout=120)
        assert_refused(single, "upscaler_1", path.name)
        second = httpx.post(f"{api}/extra-single-image", json={
            "image": image, "upscaler_1": "Lanczos", "upscaler_2": name, "extras_upscaler_2_visibility": 0.5},
            timeout=120)
        assert_refused(second, "upscaler_2", path.name)
        batch = httpx.post(f"{api}/extra-batch-images", json={
            "imageList": [{"data": image, "name": "a.png"}, {"data": image, "name": "b.png"}], "upscaler_1": name},
            timeout=120)
        assert_refused(batch, "upscaler_1", path.name)
        hires = httpx.post(f"{api}/txt2img", json={"prompt": "a cat", **TINY, "enable_hr": True, "hr_scale": 2,
                                                    "hr_upscaler": name, "hr_second_pass_steps": 1}, timeout=300)
        assert_refused(hires, "hr_upscaler", path.name)
        with pytest.raises(gr.Error) as caught:  # the Extras tab's Upscale button
            extras_handler(easel.extras["blocks"])(gradient(16, 16), name, "Scale by", 2, None, None, True, "None", 0)
        assert path.name in str(caught.value) and "refused" in str(caught.value)
    detail = httpx.post(f"{api}/extra-single-image", json={"image": image, "upscaler_1": "4x-hidden"},
                        timeout=120).json()["detail"]
    assert "TorchScript" in detail and str(easel.settings.data_dir) not in detail
    assert "unsupported object" in httpx.post(f"{api}/extra-single-image", json={
        "image": image, "upscaler_1": "4x-pickle"}, timeout=120).json()["detail"]
    assert not marker.exists()

    # A tensors-only .pth upscaler still loads, upscales, and serves hires fix; the worker is fine.
    done = httpx.post(f"{api}/extra-single-image", json={"image": image, "upscaler_1": "2x-tensors",
                                                          "upscaling_resize": 2}, timeout=120)
    assert done.status_code == 200, done.text
    upscaled = open_b64(done.json()["image"])
    assert upscaled.size == (32, 32)
    assert upscaled.tobytes() != gradient(16, 16).resize((32, 32), Image.LANCZOS).tobytes()  # the model ran
    hires = httpx.post(f"{api}/txt2img", json={"prompt": "a cat", **TINY, "enable_hr": True, "hr_scale": 2,
                                               "hr_upscaler": "2x-tensors", "hr_second_pass_steps": 1}, timeout=300)
    assert hires.status_code == 200, hires.text
    assert open_b64(hires.json()["images"][0]).size == (128, 128)
    assert not marker.exists()


def replace_with_pickle(component: Path, marker: Path | None) -> None:
    """A diffusers component whose safetensors weights become a pickle `.bin` (with a payload when `marker`)."""
    [weights] = list(component.glob("*.safetensors"))
    tensors = load_file(str(weights))
    name = "pytorch_model.bin" if weights.name == "model.safetensors" else "diffusion_pytorch_model.bin"
    torch.save({**tensors, "payload": Payload(marker)} if marker else tensors, str(component / name))
    weights.unlink()


def test_a_diffusers_folder_with_only_pickle_weights_is_refused_then_converts(api_client, tiny_sd1_dir,
                                                                             tmp_path) -> None:
    from webui.model_manager.loading import LoadContext, load_folder

    easel, client = api_client(api=True)
    marker = tmp_path / "pwned.txt"
    diffusers = easel.settings.models_dir / "diffusers"
    evil = Path(shutil.copytree(tiny_sd1_dir, diffusers / "pickled"))
    replace_with_pickle(evil / "unet", marker)
    replace_with_pickle(evil / "text_encoder", marker)
    legacy = Path(shutil.copytree(tiny_sd1_dir, diffusers / "legacy"))
    replace_with_pickle(legacy / "unet", None)
    replace_with_pickle(legacy / "text_encoder", None)
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200

    entry = easel.manager.find_checkpoint("pickled")
    assert not entry.supported and "unet/diffusion_pytorch_model.bin" in entry.reason
    assert "pickled" not in [m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()]
    for response in (client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "pickled"}),
                     client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "override_settings": {
                         "sd_model_checkpoint": "pickled"}})):
        assert response.status_code == 422 and response.json()["field"] in ("sd_model_checkpoint", "override_settings.sd_model_checkpoint"), response.text
        detail = response.json()["detail"]
        assert "unet/diffusion_pytorch_model.bin" in detail and "text_encoder/pytorch_model.bin" in detail
        assert "pickle" in detail and "Convert to safetensors" in detail and str(tmp_path) not in detail
    with pytest.raises(ModelLoadError, match="pickle"):
        easel.manager.get("pickled", "txt2img")
    job = easel.engine.load("pickled", None, source="ui")  # the Models tab's Load button
    assert job.error and "pickle" in job.error
    # The loader itself refuses, even when handed the folder without the manager's check.
    context = LoadContext(dtype=torch.float32, clip_tokenizer=lambda pad: None, family_folders=lambda arch: [])
    with pytest.raises(ModelLoadError, match="unet/diffusion_pytorch_model.bin"):
        load_folder(evil, easel.manager.find_checkpoint("tiny-sd1"), context)
    # The converter (Models tab) refuses the payload and writes nothing.
    before = sorted(evil.rglob("*"))
    with pytest.raises(ConversionError, match="refused.*unsupported object io.open"):
        easel.convert_checkpoint("pickled")
    assert sorted(evil.rglob("*")) == before
    assert not marker.exists()

    # A tensors-only .bin folder converts to the files diffusers reads and generates what the original does.
    assert easel.convert_checkpoint("legacy") == legacy
    assert (legacy / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (legacy / "text_encoder" / "model.safetensors").is_file()
    images = []
    for name in ("tiny-sd1", "legacy"):
        response = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "seed": 5, **TINY,
                                                          "override_settings": {"sd_model_checkpoint": name}})
        assert response.status_code == 200, response.text
        images.append(np.asarray(open_b64(response.json()["images"][0])))
    assert np.array_equal(images[0], images[1])
    assert not marker.exists()


def unit(**changes: Any) -> dict[str, Any]:
    return {"enabled": True, "image": b64_png(shapes()), "module": "none", "model": "tiny-canny", "weight": 1.0,
            "guidance_start": 0.0, "guidance_end": 1.0, "control_mode": "Balanced", "resize_mode": "Crop and Resize",
            "processor_res": 64, "pixel_perfect": False, **changes}


def test_controlnet_models_and_annotators_with_code_are_refused(serve, tiny_sd1_controlnet, tmp_path,
                                                               monkeypatch) -> None:
    import sys

    from tests.tiny_models import controlnet_to_original

    marker = tmp_path / "pwned.txt"
    models = tmp_path / "data" / "models" / "ControlNet"
    shutil.copytree(tiny_sd1_controlnet, models / "tiny-canny")
    config = json.loads((tiny_sd1_controlnet / "config.json").read_text())
    original = controlnet_to_original(load_file(str(tiny_sd1_controlnet / "diffusion_pytorch_model.safetensors")),
                                      config)
    torch.save({"state_dict": original}, str(models / "tiny-tensors.pth"))  # tensors only: loads
    write_pickle(models / "evil-pickle.pth", marker, original)
    write_torchscript(models / "evil-script.pth", marker)
    pickled = Path(shutil.copytree(tiny_sd1_controlnet, models / "evil-folder"))
    replace_with_pickle(pickled, marker)
    annotators = models / "annotators"
    write_torchscript(annotators / "netG.pth", marker)  # lineart_anime's weights
    write_pickle(annotators / "mlsd_large_512_fp32.pth", marker, {"w": torch.zeros(2)})
    easel, url = serve(api=True)
    one_worker_thread(easel)
    api = f"{url}/sdapi/v1"
    # the tiny ControlNet's cross-attention is 32 wide: map that width to SD 1.x and its tiny config (as
    # tests/controlnet/test_generation.py does), so the tensors-only file below is recognised and loads
    extension = sys.modules["easel_extension_controlnet.models"]
    monkeypatch.setitem(extension.CROSS_ATTENTION_FAMILIES, 32, "sd1")
    monkeypatch.setitem(extension.SINGLE_FILE_CONFIGS, "sd1", tiny_sd1_controlnet)

    def txt2img(**changes: Any) -> httpx.Response:
        return httpx.post(f"{api}/txt2img", json={"prompt": "a house", "seed": 3, **TINY, "alwayson_scripts": {
            "controlnet": {"args": [unit(**changes)]}}}, timeout=300)

    for name, file_name in (("evil-pickle", "evil-pickle.pth"), ("evil-script", "evil-script.pth"),
                            ("evil-folder", "diffusion_pytorch_model.bin")):
        response = txt2img(model=name)
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["field"] == "alwayson_scripts.controlnet.args[0].model", body
        assert file_name in body["detail"] and ("refused" in body["detail"] or "pickle" in body["detail"]), body
    for module, file_name in (("lineart_anime", "netG.pth"), ("mlsd", "mlsd_large_512_fp32.pth")):
        detected = httpx.post(f"{url}/controlnet/detect", json={"controlnet_module": module,
                                                                 "controlnet_input_images": [b64_png(shapes())]},
                              timeout=120)
        assert_refused(detected, "controlnet_module", file_name)
        assert_refused(txt2img(module=module), "alwayson_scripts.controlnet.args[0].module", file_name)
    assert not marker.exists()

    # The tensors-only .pth ControlNet steers the image exactly as the same weights in their folder do.
    from_folder, from_pth = txt2img(), txt2img(model="tiny-tensors")
    assert from_folder.status_code == 200 and from_pth.status_code == 200, (from_folder.text, from_pth.text)
    assert np.array_equal(np.asarray(open_b64(from_folder.json()["images"][0])),
                          np.asarray(open_b64(from_pth.json()["images"][0])))
    assert not marker.exists()


def test_hub_ids_need_allow_hub_downloads(api_client, monkeypatch) -> None:
    from webui.security import launch_warnings
    from webui.settings import Settings, build_parser, settings_from_args

    easel, client = api_client(api=True)
    assert client.get("/sdapi/v1/cmd-flags").json()["allow_hub_downloads"] is False
    for response in (client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "some-org/some-repo"}),
                     client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "override_settings": {
                         "sd_model_checkpoint": "some-org/some-repo"}})):
        assert response.status_code == 404 and response.json()["field"] in ("sd_model_checkpoint", "override_settings.sd_model_checkpoint"), response.text
        assert "--allow-hub-downloads" in response.json()["detail"]
    with pytest.raises(ModelNotFoundError, match="--allow-hub-downloads"):
        easel.manager.find_checkpoint("some-org/some-repo")
    # Even online, a missing annotator is not fetched without the flag: the message says where to put it.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    missing = client.post("/controlnet/detect", json={"controlnet_module": "mlsd",
                                                      "controlnet_input_images": [b64_png(shapes())]})
    assert missing.status_code == 404 and missing.json()["field"] == "controlnet_module"
    assert "--allow-hub-downloads" in missing.json()["detail"]
    assert not list((easel.settings.models_dir / "ControlNet").rglob("*.pth"))

    # With the flag a hub id is a hub id again (offline here, so it is a 404 that says so).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    allowed, allowed_client = api_client(api=True, allow_hub_downloads=True)
    assert allowed.manager.find_checkpoint("some-org/some-repo").kind == "hub"
    response = allowed_client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "some-org/some-repo"})
    assert response.status_code == 404 and "offline" in response.json()["detail"]
    parsed = settings_from_args(build_parser().parse_args(["--allow-hub-downloads", "--data-dir",
                                                           str(easel.settings.data_dir)]))
    assert parsed.allow_hub_downloads and not settings_from_args(build_parser().parse_args(
        ["--data-dir", str(easel.settings.data_dir)])).allow_hub_downloads
    warned = launch_warnings(Settings(data_dir=easel.settings.data_dir, listen=True, gradio_auth="a:b",
                                      allow_hub_downloads=True))
    assert any("--allow-hub-downloads" in line for line in warned)
