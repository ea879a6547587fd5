"""benchmarks/gpu.py: its CPU smoke run measures both models and a LoRA hot-swap under torch.compile with no
recompilation; without CUDA it says so and exits cleanly; its recompile count does see a recompilation."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.py"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def test_cpu_smoke_measures_eager_compiled_and_a_hotswap_without_recompiling(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--models", "sd15", "--backend", "eager",
                           "--steps", "3", "--json", str(out)], env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "card: CPU" in done.stdout and "recompiles 0" in done.stdout and "54.5 / 66.0 / 104.6" in done.stdout
    results = json.loads(out.read_text())["results"]["sd15"]
    assert results["eager"] > 0 and results["compiled"] > 0
    assert results["lora"]["recompiles"] == 0 and results["lora"]["it_s_after_swap"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the benchmark would run")
def test_without_cuda_it_says_so_and_exits_cleanly() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT)], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "has none" in done.stdout and "--cpu-smoke" in done.stdout


def test_recompile_count_sees_a_lora_loaded_without_hotswap() -> None:
    """The counter the benchmark trusts: loading a LoRA of another rank the ordinary way recompiles."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch._dynamo

    import gpu

    case = gpu.smoke_cases(["sd15"])[0]
    torch._dynamo.reset()
    pipe = gpu.build_pipeline(case, "cpu", torch.float32)
    inputs = gpu.embeddings(case, "cpu", torch.float32)
    pipe.load_lora_weights(gpu.random_lora(pipe.unet, 8, 1), adapter_name="a")
    gpu.compile_unet(pipe, "default", "eager", fuse=False)
    gpu.run_once(pipe, case, inputs, 2, "cpu")
    graphs = gpu.graphs_compiled()
    pipe.load_lora_weights(gpu.random_lora(pipe.unet, 16, 2), adapter_name="b")
    gpu.run_once(pipe, case, inputs, 2, "cpu")
    assert gpu.graphs_compiled() > graphs
