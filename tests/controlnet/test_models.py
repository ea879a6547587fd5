"""Finding ControlNet models: folders and single files, extra folders from --controlnet-dir, names and titles, and
each file's family read from its header."""
from __future__ import annotations

import json

import pytest

from tests.controlnet.test_units import extension_module
from tests.tiny_models import make_header_only_safetensors

models = extension_module("models")


def make_models(*folders):
    return models.ControlNetModels(folders=lambda: list(folders), file_hash=lambda path: "0123456789abcdef")


def write_folder(path, config):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    return path


@pytest.mark.parametrize("keys, family", [
    ({"down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (320, 768)}, "sd1"),
    ({"input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024)}, "sd2"),
    ({"control_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (640, 2048)}, "sdxl"),
    ({"controlnet_x_embedder.weight": (3072, 64), "controlnet_single_blocks.0.weight": (8, 8)}, "flux"),
    ({"control_layers.0.attention.to_q.weight": (8, 8)}, "zimage"),
    ({"something.else.weight": (4, 4)}, "unknown"),
])
def test_single_file_family_from_its_header(tmp_path, keys, family):
    path = make_header_only_safetensors(tmp_path / "model.safetensors", keys)
    assert models.file_family(path) == family


def test_folders_files_names_and_families(tmp_path):
    root, extra = tmp_path / "ControlNet", tmp_path / "extra"
    write_folder(root / "sd15-canny", {"_class_name": "ControlNetModel", "cross_attention_dim": 768})
    write_folder(root / "xl" / "depth", {"_class_name": "ControlNetModel", "addition_embed_type": "text_time"})
    write_folder(root / "flux-union", {"_class_name": "FluxControlNetModel"})
    write_folder(root / "z-union", {"_class_name": "ZImageControlNetModel"})
    write_folder(root / "sd21-pose", {"_class_name": "ControlNetModel", "cross_attention_dim": 1024})
    write_folder(root / "t2i", {"_class_name": "T2IAdapter"})
    write_folder(root / "t2i-xl", {"_class_name": "T2IAdapter", "adapter_type": "full_adapter_xl"})
    write_folder(root / "sparse", {"_class_name": "SparseControlNetModel"})
    (root / "annotators").mkdir()
    (root / "annotators" / "body_pose_model.pth").write_bytes(b"")
    make_header_only_safetensors(extra / "control_v11p_sd15_lineart.safetensors",
                                 {"input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)})
    found = make_models(root, extra, tmp_path / "missing")
    names = [entry.name for entry in found.scan()]
    assert names == ["control_v11p_sd15_lineart", "flux-union", "sd15-canny", "sd21-pose", "sparse", "t2i",
                     "t2i-xl", "xl/depth", "z-union"]
    families = {entry.name: found.family(entry) for entry in found.entries()}
    assert families == {"control_v11p_sd15_lineart": "sd1", "flux-union": "flux", "sd15-canny": "sd1",
                        "sd21-pose": "sd2", "sparse": "unknown", "t2i": "sd1", "t2i-xl": "sdxl", "xl/depth": "sdxl",
                        "z-union": "zimage"}
    assert found.find("control_v11p_sd15_lineart [01234567]").path.parent == extra
    assert found.find("DEPTH").name == "xl/depth" and found.find("control_v11p_sd15_lineart.safetensors").folder is False
    assert found.title(found.find("sd15-canny")) == "sd15-canny [01234567]"
    with pytest.raises(LookupError, match="unknown ControlNet model 'nope'; installed: control_v11p_sd15_lineart, "):
        found.find("nope")
    with pytest.raises(ValueError, match="model: sparse is a SparseControlNetModel; Easel runs ControlNetModel"):
        found.load(found.find("sparse"), "cpu", None)


def test_a_single_file_of_no_known_family_asks_for_its_config(tmp_path):
    make_header_only_safetensors(tmp_path / "odd.safetensors", {"down_blocks.0.attn2.to_k.weight": (8, 96)})
    found = make_models(tmp_path)
    with pytest.raises(ValueError, match=r"cannot tell which model family odd.safetensors is for; put its \.yaml "
                                         r"config beside it \(odd\.yaml\)"):
        found.load(found.find("odd"), "cpu", None)
    make_header_only_safetensors(tmp_path / "flux-one.safetensors", {"controlnet_x_embedder.weight": (8, 8)})
    with pytest.raises(ValueError, match="flux-one is a Flux.1 ControlNet in one file; Easel loads those from a "
                                         "diffusers folder"):
        found.load(found.find("flux-one"), "cpu", None)


def test_controlnet_dir_flag_adds_a_folder(make_easel, tmp_path):
    extra = tmp_path / "elsewhere"
    write_folder(extra / "far-canny", {"_class_name": "ControlNetModel", "cross_attention_dim": 768})
    easel = make_easel(controlnet_dirs=[extra])
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api.routes import create_api

    app = FastAPI()
    create_api(app, easel)
    with TestClient(app) as client:
        listed = client.get("/controlnet/model_list").json()["model_list"]
    assert [title.split(" [")[0] for title in listed] == ["far-canny"]


def test_setting_up_the_extension_loads_no_preprocessor_or_model(tmp_path):
    """Easel starts with the extension loaded but without controlnet-aux, and without reading any ControlNet."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from webui.app import build\n"
        "from webui.settings import Settings\n"
        f"easel = build(Settings(data_dir=Path({str(tmp_path / 'data')!r}), device='cpu', precision='full',\n"
        f"                       builtin_dir=Path({str(tmp_path / 'none')!r})))\n"
        "[item] = [e for e in easel.extensions if e.name == 'controlnet']\n"
        "assert item.loaded, item.error\n"
        "print(sorted(m for m in ('controlnet_aux', 'timm') if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
