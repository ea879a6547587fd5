"""`--workers` / `--ray-address`: parsed into the settings, checked, and without them Ray is never imported."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from webui.settings import build_parser, settings_from_args

REPO = Path(__file__).resolve().parents[2]


def test_flags_reach_the_settings(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--data-dir", str(tmp_path), "--workers", "3", "--ray-address", "10.0.0.2:6379"])
    settings = settings_from_args(args)
    assert (settings.workers, settings.ray_address) == (3, "10.0.0.2:6379")
    plain = settings_from_args(build_parser().parse_args(["--data-dir", str(tmp_path)]))
    assert (plain.workers, plain.ray_address) == (0, None)


def test_min_workers_reach_the_settings_and_are_checked(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--data-dir", str(tmp_path), "--workers", "4", "--min-workers", "1"])
    assert settings_from_args(args).min_workers == 1
    above = build_parser().parse_args(["--data-dir", str(tmp_path), "--workers", "2", "--min-workers", "3"])
    with pytest.raises(ValueError, match=r"--min-workers \(3\) must be at most --workers \(2\)"):
        settings_from_args(above)
    negative = build_parser().parse_args(["--data-dir", str(tmp_path), "--workers", "2", "--min-workers", "-1"])
    with pytest.raises(ValueError, match="--min-workers must be 0 or more, got -1"):
        settings_from_args(negative)


def test_negative_workers_named_in_the_error(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--data-dir", str(tmp_path), "--workers", "-1"])
    with pytest.raises(ValueError, match="--workers must be 0 or more, got -1"):
        settings_from_args(args)


SCRIPT = """
import json, sys
from fastapi import FastAPI
from fastapi.testclient import TestClient
from webui.app import build
from webui.api.routes import create_api
from webui.requests import Txt2ImgRequest
from webui.settings import build_parser, settings_from_args

settings = settings_from_args(build_parser().parse_args(["--data-dir", sys.argv[1], "--device", "cpu"]))
easel = build(settings, with_extensions=False)
easel.engine.start()
app = FastAPI()
create_api(app, easel)
with TestClient(app) as client:
    cluster = client.get("/easel/v1/cluster").json()
easel.engine.stop()
print(json.dumps({"ray": sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")),
                  "cluster": cluster, "worker": type(easel.engine.worker).__name__}))
"""


def test_without_the_flags_ray_is_not_imported(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["ray"] == [] and answer["worker"] == "Worker"
    [local] = answer["cluster"]["replicas"]  # the in-process worker, reported the same way
    assert local["id"] == "local" and local["alive"] is True and local["busy"] is False


def test_cluster_route_asks_for_the_api_login(make_easel) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api.routes import create_api

    easel = make_easel(api_auth="bob:pw")
    app = FastAPI()
    create_api(app, easel)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/easel/v1/cluster").status_code == 401
        assert client.get("/easel/v1/cluster", auth=("bob", "wrong")).status_code == 401
        ok = client.get("/easel/v1/cluster", auth=("bob", "pw"))
    assert ok.status_code == 200
    assert [r["id"] for r in ok.json()["replicas"]] == ["local"]
