"""The InvokeAI benchmark peer's client side: clear errors before anything starts, and the graph it sends.

These run without InvokeAI installed; the peer itself is exercised by `benchmarks/peers/invokeai_peer.py bench`.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "peers" / "invokeai_peer.py"
_spec = importlib.util.spec_from_file_location("invokeai_peer", _PATH)
peer_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(peer_mod)

MODEL = {"key": "k1", "hash": "random:1", "name": "sd15", "base": "sd-1", "type": "main", "path": "/m"}


def _diffusers_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder


def test_start_without_venv_names_the_missing_server_and_the_setup_command(tmp_path):
    peer = peer_mod.InvokeAIPeer(_diffusers_folder(tmp_path), root=tmp_path / "root", venv=tmp_path / "no-venv")
    with pytest.raises(peer_mod.InvokeAIError) as err:
        peer.start(timeout=5)
    assert str(tmp_path / "no-venv" / "bin" / "invokeai-web") in str(err.value)
    assert "invokeai_peer.py setup" in str(err.value)
    assert not (tmp_path / "root").exists() and peer.proc is None


def test_start_refuses_a_folder_that_is_not_a_diffusers_pipeline(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "invokeai-web").write_text("#!/bin/sh\nexit 3\n")
    (tmp_path / "weights").mkdir()
    peer = peer_mod.InvokeAIPeer(tmp_path / "weights", venv=venv)
    with pytest.raises(peer_mod.InvokeAIError, match="not a diffusers folder"):
        peer.start(timeout=5)
    assert peer.proc is None


def test_a_server_that_exits_at_once_is_reported_with_its_log(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    server = venv / "bin" / "invokeai-web"
    server.write_text("#!/bin/sh\necho 'no CUDA, no luck' >&2\nexit 3\n")
    server.chmod(0o755)
    root = tmp_path / "root"
    peer = peer_mod.InvokeAIPeer(_diffusers_folder(tmp_path), root=root, venv=venv)
    with pytest.raises(peer_mod.InvokeAIError) as err:
        peer.start(timeout=30)
    assert "exited with 3" in str(err.value) and "no CUDA, no luck" in str(err.value)
    config = (root / "invokeai.yaml").read_text()
    assert "device: cpu" in config and "precision: float32" in config and "host: 127.0.0.1" in config


def test_generate_before_start_is_refused(tmp_path):
    peer = peer_mod.InvokeAIPeer(_diffusers_folder(tmp_path))
    with pytest.raises(peer_mod.InvokeAIError, match="start"):
        peer.generate("a cat", seed=1, width=64, height=64, steps=2, cfg=7.0)


def test_graph_carries_the_request_into_the_right_nodes(tmp_path):
    peer = peer_mod.InvokeAIPeer(_diffusers_folder(tmp_path))
    peer.model = MODEL
    graph = peer.graph("a red fox", seed=42, width=320, height=256, steps=10, cfg=7.5, negative="blurry")
    nodes = graph["nodes"]
    assert nodes["model"]["model"] == {k: MODEL[k] for k in ("key", "hash", "name", "base", "type")}
    assert nodes["pos"]["prompt"] == "a red fox" and nodes["neg"]["prompt"] == "blurry"
    assert (nodes["noise"]["seed"], nodes["noise"]["width"], nodes["noise"]["height"]) == (42, 320, 256)
    denoise = nodes["denoise"]
    assert (denoise["steps"], denoise["cfg_scale"], denoise["scheduler"]) == (10, 7.5, "euler")
    assert all(node["id"] == node_id and node["use_cache"] is False for node_id, node in nodes.items())
    assert [n for n, node in nodes.items() if not node["is_intermediate"]] == ["l2i"]
    wired = {(e["source"]["node_id"], e["destination"]["node_id"], e["destination"]["field"]) for e in graph["edges"]}
    assert {("pos", "denoise", "positive_conditioning"), ("neg", "denoise", "negative_conditioning"),
            ("noise", "denoise", "noise"), ("denoise", "l2i", "latents"), ("model", "l2i", "vae")} <= wired
    assert all(src in nodes and dst in nodes for src, dst, _ in wired)


def test_graph_rejects_sizes_that_are_not_multiples_of_8(tmp_path):
    peer = peer_mod.InvokeAIPeer(_diffusers_folder(tmp_path))
    peer.model = MODEL
    with pytest.raises(ValueError, match="width and height must be multiples of 8, got 250x256"):
        peer.graph("x", seed=1, width=250, height=256, steps=2, cfg=7.0)
