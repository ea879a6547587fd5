"""launch.py's choices that do not need a fresh virtual environment to check."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_launch():
    spec = importlib.util.spec_from_file_location("easel_launch", ROOT / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_threads_sleep_only_when_other_work_keeps_the_cpu_busy() -> None:
    policy = load_launch().omp_wait_policy
    assert policy(load=0.1, cores=2) is None  # idle 2-core machine: OpenMP's default (spinning) is faster
    assert policy(load=0.9, cores=2) is None
    assert policy(load=1.0, cores=2) == "PASSIVE"  # one core of other work on two: spinning threads stall
    assert policy(load=6.0, cores=2) == "PASSIVE"
    assert policy(load=3.0, cores=16) is None  # a browser and a UI on a desktop CPU
    assert policy(load=8.0, cores=16) == "PASSIVE"
