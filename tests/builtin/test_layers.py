"""Runtime and research apart: the app never imports the built-in model's research tools.

webui/builtin_lab/ (training, evaluation, probes) imports the runtime model in webui/builtin/, never the other way.
Checked twice: on the source (every import in webui/ outside the lab, also those inside functions, read with
`ast`), and in a subprocess that imports `webui.app` and then every other runtime module, after which no research
module may be in `sys.modules`. The example LoRA's two commands in webui/training/ (they build its dataset and
measure it with the lab's detector) are research too: they may import the lab, and the app never imports them.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.ui.test_layers import imported_modules, python_files

REPO = Path(__file__).resolve().parents[2]
LAB = "webui.builtin_lab"
RESEARCH_COMMANDS = ("webui.training.evaluate_example", "webui.training.example_dataset")


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def is_research(module: str) -> bool:
    return module == LAB or module.startswith(LAB + ".") or module in RESEARCH_COMMANDS


def runtime_modules() -> list[str]:
    return [module_name(path) for path, _ in python_files("webui") if not is_research(module_name(path))]


def test_the_lab_holds_the_research_tools_and_the_runtime_none() -> None:
    lab = {module_name(path) for path, _ in python_files("webui/builtin_lab")}
    for tool in ("train", "evaluate", "evaluate_segmentation", "probe"):
        assert f"{LAB}.{tool}" in lab
        assert not (REPO / "webui" / "builtin" / f"{tool}.py").exists()
    assert {"webui.builtin.model", "webui.builtin.pipeline", "webui.builtin.objective"} <= set(runtime_modules())


def test_runtime_code_never_imports_research_code() -> None:
    problems = []
    for path, package in python_files("webui"):
        if is_research(module_name(path)):
            continue
        for line, module in imported_modules(path, package):
            if is_research(module):
                problems.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert not problems, "\n".join(problems)


def test_the_app_and_every_runtime_module_load_no_research_module() -> None:
    code = (
        "import importlib, sys\n"
        f"LAB, COMMANDS = {LAB!r}, {RESEARCH_COMMANDS!r}\n"
        "def research():\n"
        "    return sorted(m for m in sys.modules if m == LAB or m.startswith(LAB + '.') or m in COMMANDS)\n"
        "import webui.app\n"
        "print('app:', ','.join(research()))\n"
        f"for name in {runtime_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "print('runtime:', ','.join(research()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                              "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == ["app: ", "runtime: "], out.stdout


def test_the_checks_see_a_research_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def run():\n    from webui.builtin_lab.train import main\n"
                   "from ..training import evaluate_example\n")
    modules = [m for _, m in imported_modules(bad, "webui.engine")]
    assert {"webui.builtin_lab.train", "webui.training.evaluate_example"} <= {m for m in modules if is_research(m)}
    assert not is_research("webui.builtin.train") and not is_research("webui.builtin_labels")
