"""The Extensions tab over a real Easel: statuses and errors of good and broken extensions, enable/disable
persisted and applied at the next start, installing from a local folder or a git URL, refused while Easel
listens beyond localhost unless --enable-insecure-extension-access."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from webui.extensions import API_VERSION
from webui.settings import Settings
from webui.ui.tabs.extensions import (
    TRUST_TITLE,
    TRUST_WARNING,
    apply_enabled,
    enabled_choices,
    extension_rows,
    install,
    install_status,
    schedule_restart,
)

GOOD = """
    def setup(api):
        api.add_tab("Good tab", lambda: None)
        api.before_generate(lambda request: request.replace(prompt=request.prompt + ", good"))
"""
BAD_TAB = """
    def setup(api):
        def build():
            raise RuntimeError("tab exploded")

        api.add_tab("Bad tab", build)
"""


def write_extension(root: Path, folder: str, code: str, manifest: dict | None = None) -> Path:
    path = root / folder
    path.mkdir(parents=True)
    (path / "extension.py").write_text(textwrap.dedent(code))
    if manifest is not None:
        (path / "extension.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """make_easel's data folder, with its extensions folder filled before Easel starts."""
    root = tmp_path / "data" / "extensions"
    write_extension(root, "good", GOOD, {"name": "good", "version": "2.1", "description": "adds a word",
                                         "api_version": API_VERSION})
    write_extension(root, "broken", "raise ImportError('needs a missing package')\n")
    write_extension(root, "badtab", BAD_TAB)
    write_extension(root, "future", "def setup(api):\n    pass\n", {"api_version": API_VERSION + 1})
    return tmp_path / "data"


def rows_by_name(easel) -> dict[str, dict[str, str]]:
    from webui.ui.tabs.extensions import HEADERS

    return {row[0]: dict(zip(HEADERS, row)) for row in extension_rows(easel)}


def restart(make_easel, data_dir: Path, **flags):
    """A new Easel over the same data folder, reading config.json as a start does."""
    settings = Settings(data_dir=data_dir)
    settings.load_user_settings()
    return make_easel(user=settings.user, **flags)


def test_statuses_and_errors_and_a_broken_extension_stops_nothing(make_easel, data_dir):
    from webui.engine.worker import JobState
    from webui.requests import Txt2ImgRequest
    from webui.ui.app import build_ui

    easel = make_easel()
    rows = rows_by_name(easel)
    assert rows["good"]["Status"] == "loaded" and rows["good"]["Version"] == "2.1"
    assert rows["good"]["Description"] == "adds a word" and rows["good"]["Error"] == ""
    assert rows["broken"]["Status"] == "failed" and "ImportError: needs a missing package" in rows["broken"]["Error"]
    assert rows["future"]["Status"] == "failed" and f"needs extension API version {API_VERSION + 1}" in \
        rows["future"]["Error"]
    assert rows["badtab"]["Status"] == "loaded"

    blocks, _ = build_ui(easel)  # the bad tab shows its error; the rest of the UI is built
    try:
        texts = [str(getattr(b, "value", "")) for b in blocks.blocks.values()]
        assert any("failed to build this tab" in t and "tab exploded" in t for t in texts)
        assert any(TRUST_TITLE in t and TRUST_WARNING[:40] in t for t in texts)
        ids = {getattr(b, "elem_id", None) for b in blocks.blocks.values()}
        assert {"tab_extensions", "extensions_table", "extensions_install_button", "tab_ext_good"} <= ids
    finally:
        blocks.close()
    job = easel.engine.generate(Txt2ImgRequest(prompt="a cat", width=64, height=64, steps=2, checkpoint="tiny-sd1"),
                                timeout=120)
    assert job.state == JobState.DONE and "a cat, good" in job.result.infotexts[0]


def test_disable_is_persisted_and_applied_at_the_next_start(make_easel, data_dir):
    easel = make_easel()
    names, enabled = enabled_choices(easel)
    assert {"good", "broken", "badtab", "future"} <= set(names) and "good" in enabled
    message = apply_enabled(easel, [n for n in enabled if n not in ("good", "broken")])
    assert "disabled: broken, good" in message and "restart" in message.lower()
    assert json.loads(easel.settings.config_path.read_text())["disabled_extensions"] == ["broken", "good"]
    assert rows_by_name(easel)["good"]["Status"] == "loaded"  # still running until the restart
    assert rows_by_name(easel)["good"]["Loads at next start"] == "no"
    with pytest.raises(ValueError, match="no extension named 'ghost'"):
        apply_enabled(easel, ["ghost"])

    again = restart(make_easel, data_dir)
    rows = rows_by_name(again)
    assert rows["good"]["Status"] == "disabled" and rows["broken"]["Status"] == "disabled"
    assert not again.registry.tabs or all(t.extension != "good" for t in again.registry.tabs)
    assert all("good" not in h.__qualname__ for h in again.registry.before_generate)

    apply_enabled(again, enabled_choices(again)[0])  # enable everything again
    assert json.loads(again.settings.config_path.read_text())["disabled_extensions"] == []
    assert rows_by_name(restart(make_easel, data_dir))["good"]["Status"] == "loaded"


def hello_source(tmp_path: Path) -> Path:
    return write_extension(tmp_path / "src", "greeter", "def setup(api):\n    api.add_tab('Greeter', lambda: None)\n",
                           {"name": "greeter", "version": "0.3", "api_version": API_VERSION})


def test_install_from_a_local_folder_then_load_at_restart(make_easel, data_dir, tmp_path):
    easel = make_easel()
    source = hello_source(tmp_path)
    assert install_status(easel) == ("", True)
    message = install(easel, str(source), "")
    assert "Restart Easel" in message and (data_dir / "extensions" / "greeter" / "extension.py").is_file()
    assert rows_by_name(easel)["greeter"]["Status"] == "not loaded"
    with pytest.raises(ValueError, match="already exists"):
        install(easel, str(source), None)
    with pytest.raises(ValueError, match="is neither a git URL .* nor an existing folder"):
        install(easel, str(tmp_path / "nowhere"), None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="not an Easel extension"):
        install(easel, str(empty), None)
    assert not (data_dir / "extensions" / "empty").exists()

    later = restart(make_easel, data_dir)
    assert rows_by_name(later)["greeter"]["Status"] == "loaded"
    assert [t.title for t in later.registry.tabs if t.extension == "greeter"] == ["Greeter"]


def test_install_from_a_git_url(make_easel, data_dir, tmp_path):
    source = hello_source(tmp_path)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for command in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-q", "-m", "greeter"]):
        subprocess.run(command, cwd=source, env=env, check=True, capture_output=True)
    easel = make_easel()
    install(easel, source.as_uri(), "greeter-git")
    installed = data_dir / "extensions" / "greeter-git"
    assert (installed / "extension.json").is_file() and (installed / ".git").is_dir()
    with pytest.raises(ValueError, match="git clone of file://.*failed"):
        install(easel, (tmp_path / "missing-repo").as_uri(), "x")


@pytest.mark.parametrize("flags", [{"listen": True}, {"share": True}], ids=["listen", "share"])
def test_install_is_refused_beyond_localhost_unless_allowed(make_easel, data_dir, tmp_path, flags):
    source = hello_source(tmp_path)
    easel = make_easel(**flags)
    note, allowed = install_status(easel)
    flag = "--listen" if "listen" in flags else "--share"
    assert not allowed and flag in note and "--enable-insecure-extension-access" in note
    with pytest.raises(ValueError, match=f"started with {flag}"):
        install(easel, str(source), None)
    assert not (data_dir / "extensions" / "greeter").exists()

    trusted = make_easel(enable_insecure_extension_access=True, **flags)
    assert install_status(trusted) == ("", True)
    install(trusted, str(source), None)
    assert (data_dir / "extensions" / "greeter").is_dir()


def test_apply_and_restart(make_easel, data_dir):
    from webui.requests import Txt2ImgRequest
    from webui.ui.app import build_ui

    easel = make_easel()
    with pytest.raises(ValueError, match="not started by launch.py"):
        schedule_restart(easel)
    restarted = threading.Event()
    easel.extras["restart"] = restarted.set
    blocks, _ = build_ui(easel)
    try:
        handler = next(f.fn for f in blocks.fns.values() if f.name == "on_apply_restart")
        names, enabled = enabled_choices(easel)
        with pytest.raises(Exception, match="token: this action must come from Easel's own page"):
            handler([n for n in enabled if n != "good"], "a forged token")
        assert not restarted.is_set() and "good" not in easel.settings.user.disabled_extensions
        *_, message = handler([n for n in enabled if n != "good"], easel.page_token())
        assert "Restarting" in message and restarted.wait(10)
        assert json.loads(easel.settings.config_path.read_text())["disabled_extensions"] == ["good"]
        assert any(f.js and "location.reload" in f.js for f in blocks.fns.values())
    finally:
        blocks.close()

    restarted.clear()
    job = easel.engine.submit(Txt2ImgRequest(prompt="long", width=64, height=64, steps=150, batch_count=20,
                                             checkpoint="tiny-sd1"))
    try:
        with pytest.raises(ValueError, match="a job is running or waiting"):
            schedule_restart(easel, delay=0.01)
    finally:
        easel.engine.worker.interrupt(job.id)
        job.wait(120)
    assert not restarted.is_set()


def test_restart_process_replaces_the_process_with_the_same_command(tmp_path):
    code = ("import os\n"
            "from webui.app import restart_process\n"
            "print('started', os.getpid(), os.environ.get('EASEL_TEST_RESTARTED', 'no'), flush=True)\n"
            "if 'EASEL_TEST_RESTARTED' not in os.environ:\n"
            "    os.environ['EASEL_TEST_RESTARTED'] = 'yes'\n"
            "    restart_process()\n")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("EASEL_TEST_RESTARTED", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr
    lines = [line.split() for line in out.stdout.splitlines() if line.startswith("started")]
    assert len(lines) == 2 and lines[0][1] == lines[1][1]  # the same process, run again
    assert [line[2] for line in lines] == ["no", "yes"]
