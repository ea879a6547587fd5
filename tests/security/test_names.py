"""Names from the UI and the API resolve only inside their folders.

Checkpoint, VAE, LoRA, upscaler, script and extension names such as `../../etc/passwd`, absolute paths and
encoded traversal are refused (4xx naming the field, or a ValueError for the UI) and no file outside Easel's
folders is opened: a Python audit hook records every `open` while the requests run. `resolve_inside`, the
helper for code that must turn a user-supplied name into a path, is checked on its own.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.security.conftest import TINY
from webui.security import resolve_inside



def hostile_names(outside: Path, data: Path) -> list[str]:
    secret = outside / "secret.safetensors"
    depth = "../" * (len(data.parts) + 3)
    return ["../../etc/passwd", "../../../../../../etc/passwd", str(secret), depth + str(secret).lstrip("/"),
            "Stable-diffusion/../../../outside/secret", "..%2f..%2foutside%2fsecret", "....//....//etc/passwd",
            "..\\..\\outside\\secret", "/etc/passwd", "~/secret", "secret\x00.safetensors", "outside/secret",
            str(outside), "file://" + str(secret)]


@pytest.fixture
def world(api_client, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.safetensors").write_bytes(b"not for Easel")
    (outside / "secret.pt").write_bytes(b"not for Easel")
    easel, client = api_client(api=True)
    return easel, client, outside


def outside_opens(opened: list[str], outside: Path) -> list[str]:
    root = str(outside.resolve())
    return [path for path in opened if os.path.realpath(path).startswith(root) or path.startswith("/etc/")]


def test_api_names_stay_inside_their_folders(world, opened) -> None:
    easel, client, outside = world
    names = hostile_names(outside, easel.settings.data_dir)
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "warm up", **TINY}).status_code == 200
    for name in names:
        answers = {
            "sd_model_checkpoint": client.post("/sdapi/v1/options", json={"sd_model_checkpoint": name}),
            "sd_vae": client.post("/sdapi/v1/options", json={"sd_vae": name}),
            "override": client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "override_settings": {
                "sd_model_checkpoint": name}}),
            "override_vae": client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "override_settings": {
                "sd_vae": name}}),
            "lora": client.post("/sdapi/v1/txt2img", json={"prompt": f"x <lora:{name}:1>", **TINY, "steps": 1}),
            "hr_upscaler": client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "enable_hr": True,
                                                                   "hr_upscaler": name}),
            "script_name": client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "script_name": name}),
            "sampler_name": client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "sampler_name": name}),
        }
        for what, response in answers.items():
            assert 400 <= response.status_code < 500, (name, what, response.status_code, response.text[:300])
            assert response.json()["field"], (name, what, response.json())
    assert not outside_opens(opened, outside)
    assert easel.manager.current().name == "tiny-sd1"
    assert all(str(outside) not in str(e.path) for e in easel.manager.checkpoints())


def test_manager_lookups_stay_inside_their_folders(world, opened) -> None:
    from webui.model_manager.errors import ModelNotFoundError

    easel, _, outside = world
    manager = easel.manager
    for name in hostile_names(outside, easel.settings.data_dir):
        with pytest.raises((ModelNotFoundError, LookupError)):
            manager.find_vae(name)
        try:
            entry = manager.find_checkpoint(name)
        except LookupError:
            continue
        # "outside/secret" looks like a Hugging Face id: it is one, never a path, and offline it cannot load.
        assert entry.kind == "hub" and not Path(entry.name).is_absolute(), (name, entry)
        with pytest.raises(Exception) as caught:
            manager.get(name, "txt2img")
        assert "offline" in str(caught.value) or "not found" in str(caught.value)
    assert all(outside.name not in str(lora.path) for lora in manager.loras())
    assert not outside_opens(opened, outside)


def test_extension_names_stay_inside_the_extensions_folder(world, tmp_path) -> None:
    from webui.extension_installer import check_name, install_from_folder

    easel, _, outside = world
    source = tmp_path / "good-extension"
    source.mkdir()
    (source / "extension.py").write_text("def setup(api):\n    pass\n", encoding="utf-8")
    for name in ["../../etc", "..", ".", "/tmp/evil", "a/b", "a\\b", "", "x" * 200, "-rf", "ok\x00"]:
        with pytest.raises(ValueError, match="name"):
            check_name(name)
        if name:  # an empty name means "the folder's own name"
            with pytest.raises(ValueError):
                install_from_folder(easel.settings, source, name=name)
    assert not (easel.settings.data_dir / "etc").exists() and not Path("/tmp/evil").exists()
    installed = install_from_folder(easel.settings, source, name="good-extension")
    assert installed.resolve().parent == (easel.settings.data_dir / "extensions").resolve()


def test_resolve_inside(tmp_path) -> None:
    root = tmp_path / "models"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.safetensors").write_bytes(b"x")
    outside = tmp_path / "outside.txt"
    outside.write_text("secret", encoding="utf-8")
    os.symlink(outside, root / "link.txt")
    os.symlink(root / "sub" / "a.safetensors", root / "inner-link.safetensors")
    assert resolve_inside(root, "sub/a.safetensors") == (root / "sub" / "a.safetensors").resolve()
    assert resolve_inside(root, "sub\\a.safetensors") == (root / "sub" / "a.safetensors").resolve()
    assert resolve_inside(root, "inner-link.safetensors") == (root / "sub" / "a.safetensors").resolve()
    assert resolve_inside(root, "sub/../sub/a.safetensors") == (root / "sub" / "a.safetensors").resolve()
    for name, words in [("../outside.txt", "points outside"), ("sub/../../outside.txt", "points outside"),
                        (str(outside), "absolute path"), ("/etc/passwd", "absolute path"),
                        ("C:\\Windows\\win.ini", "absolute path"), ("link.txt", "points outside"),
                        ("a\x00b", "NUL byte"), ("", "a name is required"), ("  ", "a name is required")]:
        with pytest.raises(ValueError, match=words):
            resolve_inside(root, name, "lora")
    assert resolve_inside(root, "link.txt", follow_symlinks=False) == root / "link.txt"  # the link itself
    with pytest.raises(ValueError, match="^vae: "):
        resolve_inside(root, "../x", "vae")
