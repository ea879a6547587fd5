"""Extensions: loaded through the one API, a failing one never stops the others, hooks change generation."""
import json
import textwrap

from webui.engine.worker import JobState
from webui.extensions import API_VERSION, Registry, load_extensions
from webui.infotext import parse_infotext
from webui.requests import Txt2ImgRequest


def write_extension(root, name, code, manifest=None):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "extension.py").write_text(textwrap.dedent(code))
    if manifest is not None:
        (folder / "extension.json").write_text(json.dumps(manifest))
    return folder


GOOD = """
    from webui.extensions import ExtensionAPI

    def setup(api: ExtensionAPI) -> None:
        def add_style(request):
            return request.replace(prompt=request.prompt + ", watercolor")

        def stamp(request, generated):
            for item in generated:
                item.extra["Stamped"] = "yes"
            return generated

        api.before_generate(add_style)
        api.after_generate(stamp)
        api.add_tab("Hello", lambda: None)
        api.add_route("/extensions/good/ping", lambda: {"pong": True})
"""


def test_good_bad_and_wrong_version_extensions(make_easel, tmp_path):
    root = tmp_path / "exts"
    write_extension(root, "good", GOOD, {"name": "good", "version": "1.0", "api_version": API_VERSION})
    write_extension(root, "broken", "raise RuntimeError('boom at import')\n")
    write_extension(root, "future", "def setup(api):\n    pass\n", {"name": "future", "api_version": API_VERSION + 1})
    write_extension(root, "off", "def setup(api):\n    raise AssertionError('must not run')\n")
    easel = make_easel()
    registry = Registry()
    loaded = {e.name: e for e in load_extensions(easel, [root], {"off"}, registry)}
    assert loaded["good"].loaded and loaded["good"].error is None
    assert not loaded["broken"].loaded and "boom at import" in loaded["broken"].error
    assert not loaded["future"].loaded and "API version" in loaded["future"].error
    assert not loaded["off"].enabled and loaded["off"].error is None
    assert [t.title for t in registry.tabs] == ["Hello"] and registry.routes[0].path == "/extensions/good/ping"

    job = easel.engine.generate(Txt2ImgRequest(prompt="a cat", width=64, height=64, steps=2, checkpoint="tiny-sd1"),
                                timeout=120)
    assert job.state == JobState.DONE, job.error
    params = parse_infotext(job.result.infotexts[0])
    assert params["Prompt"] == "a cat, watercolor" and params["Stamped"] == "yes"
