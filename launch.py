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


def omp_wait_policy(load: float | None = None, cores: int | None = None) -> str | None:
    """OMP_WAIT_POLICY for a training command: "PASSIVE" (idle OpenMP threads sleep) when other work already keeps
    half the cores busy (1-minute load average), else None (OpenMP's default, threads spin briefly between
    kernels). On a busy CPU spinning threads burn the training's time waiting for each other (several times
    slower steps); on an idle one sleeping threads make each step wait for them to wake up (see
    benchmarks/train_builtin_step.py)."""
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average (Windows): keep the default
            return None
    cores = cores or os.cpu_count() or 1
    return "PASSIVE" if load >= max(1.0, 0.5 * cores) else None


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
    if command in ("train-builtin", "train") and "OMP_WAIT_POLICY" not in os.environ:
        policy = omp_wait_policy()
        if policy:
            os.environ["OMP_WAIT_POLICY"] = policy
            print(f"other work keeps this CPU busy: OMP_WAIT_POLICY={policy} (set it yourself to choose)", flush=True)
    if command == "train-builtin":
        from webui.builtin_lab.train import main as train_builtin

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
