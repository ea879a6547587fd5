"""server-restart, server-kill and server-stop on a real Easel process started as launch.py starts it
(`webui.app.main`) on a loopback port: restart brings a fresh Easel back on the same port, kill and stop end the
process with status 0, and stop closes the UI's server too."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.security.conftest import free_port, wait_until_up

ROOT = Path(__file__).resolve().parents[2]
START = "import sys; from webui.app import main; main(sys.argv[1:])"
BOOT_SECONDS = 240  # a busy 2-core machine imports torch, diffusers and Gradio slowly


def start_easel(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = tmp_path / "easel.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1")
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-c", START, "--port", str(port), "--data-dir",
                                    str(tmp_path / "data"), "--device", "cpu", "--precision", "full", *flags],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}", log


def wait_for_line(log: Path, text: str, process: subprocess.Popen, timeout: float = BOOT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not logged; log:\n{log.read_text(errors='replace')[-3000:]}")


def exit_status(process: subprocess.Popen, log: Path, timeout: float = 60) -> int:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"Easel did not exit; log:\n{log.read_text(errors='replace')[-3000:]}") from None


def test_api_only_server_restarts_then_is_killed(tmp_path):
    process, url, log = start_easel(tmp_path, "--nowebui", "--api-server-stop")
    try:
        wait_until_up(url, timeout=BOOT_SECONDS)
        response = httpx.post(f"{url}/sdapi/v1/server-restart", timeout=30)
        assert response.status_code == 200 and response.json() == {"detail": "Restarting."}
        wait_for_line(log, "restarting Easel", process)
        wait_until_up(url, timeout=BOOT_SECONDS)  # the fresh process (same pid, exec'd) answers on the same port
        assert process.poll() is None
        assert httpx.post(f"{url}/sdapi/v1/server-kill", timeout=30).status_code == 200
        assert exit_status(process, log) == 0
        assert "server kill requested" in log.read_text(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()


def test_ui_server_stops_gracefully_behind_the_api_login(tmp_path):
    process, url, log = start_easel(tmp_path, "--api", "--api-server-stop", "--api-auth", "admin:s3cret")
    try:
        wait_until_up(url, timeout=BOOT_SECONDS, auth=("admin", "s3cret"))
        assert httpx.post(f"{url}/sdapi/v1/server-stop", timeout=30).status_code == 401
        assert process.poll() is None
        response = httpx.post(f"{url}/sdapi/v1/server-stop", auth=("admin", "s3cret"), timeout=30)
        assert response.status_code == 200 and response.json() == {"detail": "Stopping."}
        assert exit_status(process, log) == 0
        assert "stopped as asked through the API" in log.read_text(errors="replace")
        try:
            httpx.get(f"{url}/sdapi/v1/sd-models", timeout=5)
            raise AssertionError("the port still answers after server-stop")
        except httpx.TransportError:
            pass
    finally:
        if process.poll() is None:
            process.kill()
