#!/usr/bin/env python3
"""Start Easel: set up `.venv` if needed, install Easel into it, then run the web UI.

    python3 launch.py                 set up (first run) and start the UI at http://127.0.0.1:7860
    python3 launch.py --exit          set up and exit
    python3 launch.py --skip-install  start without touching .venv
    python3 launch.py test [args]     set up with test dependencies and run the whole test suite
    python3 launch.py train-builtin   train Easel's built-in model

Only the standard library is used here; everything else runs inside `.venv`.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def install_fingerprint() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def marker(extras: str) -> Path:
    return VENV / f".easel-installed-{extras or 'base'}"


def up_to_date(extras: str) -> bool:
    """True when this pyproject.toml was installed with these extras (the test extras include the base)."""
    names = [extras] if extras else ["", "test"]
    return any(marker(n).exists() and marker(n).read_text().strip() == install_fingerprint() for n in names)


def ensure_installed(extras: str = "") -> None:
    """Create .venv if absent and install Easel (editable) when pyproject.toml changed since last time."""
    if not venv_python().exists():
        print(f"Creating virtual environment in {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if up_to_date(extras):
        return
    target = f".[{extras}]" if extras else "."
    print(f"Installing Easel {target} into .venv (first run downloads PyTorch and friends) ...", flush=True)
    pip = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=False, cwd=ROOT)
    subprocess.run([*pip, "-e", target], check=True, cwd=ROOT)
    marker(extras).write_text(install_fingerprint())


def reexec_in_venv(args: list[str]) -> None:
    env = dict(os.environ, EASEL_IN_VENV="1")
    result = subprocess.run([str(venv_python()), str(ROOT / "launch.py"), *args], cwd=os.getcwd(), env=env)
    sys.exit(result.returncode)


def run_tests(args: list[str]) -> int:
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=ROOT, env=env).returncode


def main() -> None:
    args = sys.argv[1:]
    command = args[0] if args and not args[0].startswith("-") else None
    skip_install = "--skip-install" in args
    inside = in_venv() or os.environ.get("EASEL_IN_VENV") == "1"
    if not inside and not skip_install:
        ensure_installed("test" if command == "test" else "")
        reexec_in_venv(args)
    if not inside and skip_install and venv_python().exists() and not in_venv():
        reexec_in_venv(args)
    sys.path.insert(0, str(ROOT))
    if command == "test":
        sys.exit(run_tests(args[1:]))
    if command in ("train-builtin", "train"):
        # Idle OpenMP threads sleep instead of spinning: on a CPU shared with other work, spinning threads burn
        # the training's time budget while waiting for each other (several times slower steps).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if command == "train-builtin":
        from webui.builtin.train import main as train_builtin

        sys.exit(train_builtin(args[1:]))
    if command == "train":
        from webui.training.cli import main as train_lora

        sys.exit(train_lora(args[1:]))
    if command is not None:
        sys.exit(f"launch.py: unknown command {command!r}; use test, train-builtin or train (see --help)")
    if "--exit" in args:
        print("Easel is installed; exiting as asked (--exit).")
        return
    from webui.app import main as app_main

    app_main([a for a in args if a not in ("--skip-install",)])


if __name__ == "__main__":
    main()
