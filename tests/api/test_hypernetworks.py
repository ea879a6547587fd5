"""`<hypernet:name:weight>` on the tiny SD 1.x model through the API: strength 0 draws the plain image, a
strength changes it (more with more), the plain model comes back after; a pickle, an unknown name, a tag outside
the prompt and a model family without hypernetworks are 422s naming the field."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.api.conftest import TINY, b64_png, gradient, info_of, open_b64
from webui.engine.hypernetworks import HypernetAttnProcessor, load_hypernetwork

WIDTH = 32  # the tiny UNet's cross-attention (text) width


def write_hypernetwork(path, width: int = WIDTH, seed: int = 0, activation: str = "relu") -> None:
    """A hypernetwork in Easel's safetensors layout: per width, a key MLP (0) and a value MLP (1), width -> 2 x
    width -> width, with a layer norm after the first activation."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for side in (0, 1):
        prefix = f"{width}.{side}.linear"
        tensors[f"{prefix}.0.weight"] = torch.randn(2 * width, width, generator=generator)
        tensors[f"{prefix}.0.bias"] = torch.randn(2 * width, generator=generator)
        tensors[f"{prefix}.2.weight"] = 1 + 0.1 * torch.randn(2 * width, generator=generator)  # layer norm
        tensors[f"{prefix}.2.bias"] = 0.1 * torch.randn(2 * width, generator=generator)
        tensors[f"{prefix}.3.weight"] = torch.randn(width, 2 * width, generator=generator)
        tensors[f"{prefix}.3.bias"] = torch.randn(width, generator=generator)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"activation_func": activation})


def pixels(client, prompt: str, **extra) -> np.ndarray:
    response = client.post("/sdapi/v1/txt2img", json={"prompt": prompt, "seed": 7, **TINY, **extra})
    assert response.status_code == 200, response.text
    return np.asarray(open_b64(response.json()["images"][0]), dtype=np.int16)


def test_file_layout_is_read_into_two_mlps_per_width(tmp_path):
    path = tmp_path / "style.safetensors"
    write_hypernetwork(path)
    net = load_hypernetwork(path)
    mlp_k, mlp_v = net.pair(WIDTH)
    assert [type(m).__name__ for m in mlp_k] == ["Linear", "ReLU", "LayerNorm", "Linear"]
    assert mlp_v(torch.zeros(1, 3, WIDTH)).shape == (1, 3, WIDTH) and net.pair(768) is None


def test_hypernetwork_strength_changes_the_image_and_zero_is_plain(client, easel):
    write_hypernetwork(easel.settings.models_dir / "hypernetworks" / "style.safetensors")
    plain = pixels(client, "a red ball")
    assert np.array_equal(pixels(client, "a red ball <hypernet:style:0>"), plain)
    half = pixels(client, "a red ball <hypernet:style:0.5>")
    full = pixels(client, "a red ball <hypernet:style:1>")
    assert np.abs(half - plain).mean() > 0.5
    assert np.abs(full - plain).mean() > np.abs(half - plain).mean()
    assert np.array_equal(pixels(client, "a red ball"), plain), "the cross-attention's own processors are back"
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "a red ball <hypernet:style:1>", "seed": 7, **TINY})
    assert info_of(response.json())["prompt"] == "a red ball <hypernet:style:1>"  # the infotext keeps the tag
    unet = easel.manager.get("tiny-sd1", "txt2img", None).pipe.unet
    layers = [module for name, module in unet.named_modules() if name.endswith("attn2")]
    assert layers and not any(isinstance(layer.processor, HypernetAttnProcessor) for layer in layers)


@pytest.mark.parametrize("body, field, words", [
    ({"prompt": "a ball <hypernet:missing:1>"}, "prompt", "no hypernetwork named 'missing'"),
    ({"prompt": "a ball <hypernet:old:1>"}, "prompt", "only from .safetensors"),
    ({"prompt": "a ball <hypernet:style:x>"}, "prompt", "must be a number"),
    ({"prompt": "a ball", "negative_prompt": "<hypernet:style:1>"}, "negative_prompt", "prompt only"),
    ({"prompt": "a ball <hypernet:wide:1>"}, "prompt", "made for text widths [768]"),
])
def test_hypernetwork_mistakes_are_422s_naming_the_field(client, easel, body, field, words):
    folder = easel.settings.models_dir / "hypernetworks"
    write_hypernetwork(folder / "style.safetensors")
    write_hypernetwork(folder / "wide.safetensors", width=768)  # SD 1.x's real width, not the tiny model's
    (folder / "old.pt").write_bytes(b"\x80\x02}q\x00.")  # never unpickled
    response = client.post("/sdapi/v1/txt2img", json={"seed": 1, **TINY, **body})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and words in response.json()["detail"], response.text
    response = client.post("/sdapi/v1/img2img", json={"seed": 1, **TINY, **body, "init_images": [b64_png(gradient())]})
    assert response.status_code == 422 and response.json()["field"] == field, response.text


def test_a_hypernetwork_on_another_family_is_refused(client, easel):
    from tests.tiny_models import make_tiny_sd2

    write_hypernetwork(easel.settings.models_dir / "hypernetworks" / "style.safetensors")
    make_tiny_sd2(easel.settings.models_dir / "diffusers" / "tiny-sd2")
    client.post("/sdapi/v1/refresh-checkpoints")
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a ball <hypernet:style:1>", "seed": 1, **TINY,
        "override_settings": {"sd_model_checkpoint": "tiny-sd2"}})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "prompt" and "SD 1.x models only" in response.json()["detail"]
