"""The layer rule, checked on the source: ui/ never reaches torch or diffusers; engine/ and model_manager/ never
import gradio.

Imports are read with `ast` (also those inside functions; those under `if TYPE_CHECKING:` are only for type
hints and are skipped). A subprocess then imports the whole UI and checks that torch and diffusers stayed out
of `sys.modules`, which also covers imports made through other modules.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "open_clip")
UI_MAY_IMPORT = ("webui.requests", "webui.infotext", "webui.settings", "webui.ui")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, skipping `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def python_files(folder: str) -> list[tuple[Path, str]]:
    root = REPO / folder
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        package = ".".join(rel.parts[:-1]) if rel.name != "__init__" else ".".join(parts)
        files.append((path, package))
    return files


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_ui_imports_only_light_modules() -> None:
    problems = []
    files = python_files("webui/ui")
    assert files, "webui/ui has no Python files"
    for path, package in files:
        for line, module in imported_modules(path, package):
            top = module.split(".")[0]
            if top in HEAVY:
                problems.append(f"{path.relative_to(REPO)}:{line} imports {module}")
            elif top == "webui" and module != "webui" and not any(_under(module, ok) for ok in UI_MAY_IMPORT):
                problems.append(f"{path.relative_to(REPO)}:{line} imports {module} (ui/ may import only "
                                f"{', '.join(UI_MAY_IMPORT)})")
    assert not problems, "\n".join(problems)


def test_engine_and_model_manager_never_import_gradio() -> None:
    problems = []
    for folder in ("webui/engine", "webui/model_manager"):
        for path, package in python_files(folder):
            for line, module in imported_modules(path, package):
                if module.split(".")[0] in ("gradio", "gradio_client"):
                    problems.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert not problems, "\n".join(problems)


def test_importing_the_ui_loads_no_torch_or_diffusers() -> None:
    code = (
        "import sys\n"
        "import webui.ui.app, webui.ui.bridge, webui.ui.controls, webui.ui.generation, webui.ui.masks\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers'))\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"GRADIO_ANALYTICS_ENABLED": "False", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing webui.ui pulled in: {out.stdout.strip()}"


def test_the_checker_sees_violations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom ..engine import worker\nif TYPE_CHECKING:\n    import diffusers\n"
                   "def f():\n    from gradio import Blocks\n")
    modules = [m for _, m in imported_modules(bad, "webui.ui")]
    assert "torch" in modules
    assert "webui.engine" in modules and "webui.engine.worker" in modules
    assert "diffusers" not in modules  # type-checking only
    assert "gradio" in modules  # inside a function still counts
