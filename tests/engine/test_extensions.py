"""Extensions: loaded through the one API, a failing one never stops the others, hooks change generation; the
example extension of docs/EXTENSIONS.md works as the guide says."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from webui.engine.worker import JobState
from webui.extensions import API_VERSION, load_extensions
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
    registry = easel.registry
    loaded = {e.name: e for e in load_extensions(easel, [root], {"off"}, registry)}
    assert loaded["good"].loaded and loaded["good"].error is None
    assert not loaded["broken"].loaded and "boom at import" in loaded["broken"].error
    assert not loaded["future"].loaded and "API version" in loaded["future"].error
    assert not loaded["off"].enabled and loaded["off"].error is None
    assert [t.title for t in registry.tabs if t.extension == "good"] == ["Hello"]
    assert [r.path for r in registry.routes if r.extension == "good"] == ["/extensions/good/ping"]

    job = easel.engine.generate(Txt2ImgRequest(prompt="a cat", width=64, height=64, steps=2, checkpoint="tiny-sd1"),
                                timeout=120)
    assert job.state == JobState.DONE, job.error
    params = parse_infotext(job.result.infotexts[0])
    assert params["Prompt"] == "a cat, watercolor" and params["Stamped"] == "yes"


def test_a_crashing_hook_is_recorded_and_the_job_goes_on(make_easel, tmp_path):
    root = tmp_path / "exts"
    write_extension(root, "crashy", """
        def setup(api):
            def before(request):
                raise KeyError("no such style")

            def after(request, generated):
                raise ZeroDivisionError("after went wrong")

            api.before_generate(before)
            api.after_generate(after)
    """)
    write_extension(root, "picky", """
        def setup(api):
            def before(request):
                if "forbidden" in request.prompt:
                    raise ValueError("prompt: the picky extension refuses 'forbidden'")
                return request.replace(prompt=request.prompt + ", picked")

            api.before_generate(before)
    """)
    easel = make_easel()
    easel.extensions = load_extensions(easel, [root], set(), easel.registry)
    loaded = {e.name: e for e in easel.extensions}
    assert loaded["crashy"].loaded and loaded["picky"].loaded
    request = Txt2ImgRequest(prompt="a dog", width=64, height=64, steps=2, checkpoint="tiny-sd1")
    job = easel.engine.generate(request, timeout=120)
    assert job.state == JobState.DONE, job.error
    assert parse_infotext(job.result.infotexts[0])["Prompt"] == "a dog, picked"  # the other extension still ran
    errors = easel.registry.runtime_errors
    assert "after_generate hook after failed: ZeroDivisionError" in errors["crashy"]
    status = {s.name: s for s in easel.extension_statuses()}["crashy"]
    assert status.status == "loaded, a hook failed" and "ZeroDivisionError" in status.error

    refused = easel.engine.generate(request.replace(prompt="forbidden"), timeout=120)  # a ValueError fails the job
    assert refused.state == JobState.FAILED and "refuses 'forbidden'" in refused.error


def test_manifest_problems_are_clear_load_errors(make_easel, tmp_path):
    root = tmp_path / "exts"
    write_extension(root, "badjson", "def setup(api):\n    pass\n")
    (root / "badjson" / "extension.json").write_text("{not json")
    write_extension(root, "badversion", "def setup(api):\n    pass\n", {"api_version": "one"})
    write_extension(root, "escape", "def setup(api):\n    pass\n", {"entry": "../badjson/extension.py"})
    write_extension(root, "nosetup", "x = 1\n")
    write_extension(root, "old", "def setup(api):\n    pass\n", {"name": "old", "api_version": 0})
    write_extension(root, "good", "def setup(api):\n    api.add_preprocessor('same', lambda image: image)\n")
    easel = make_easel()
    loaded = {e.folder.name: e for e in load_extensions(easel, [root], set(), easel.registry)}
    assert "JSONDecodeError" in loaded["badjson"].error
    assert "api_version must be a whole number" in loaded["badversion"].error
    assert "entry module ../badjson/extension.py not found" in loaded["escape"].error
    assert "no setup(api) function" in loaded["nosetup"].error
    assert loaded["old"].error == (f"RuntimeError: needs extension API version 0; this Easel provides {API_VERSION}")
    assert loaded["good"].loaded and "same" in easel.registry.preprocessors


def test_a_setup_that_fails_halfway_leaves_nothing_behind(make_easel, tmp_path):
    root = tmp_path / "exts"
    write_extension(root, "halfway", """
        def setup(api):
            api.add_tab("Half", lambda: None)
            api.add_accordion("txt2img", "Half", lambda: None)
            api.before_generate(lambda request: request.replace(prompt="hijacked"))
            api.after_generate(lambda request, generated: generated)
            api.wrap_pipeline(lambda call, run: run(call))
            api.add_route("/extensions/halfway/x", lambda: {})
            api.add_preprocessor("half", lambda image: image)
            api.add_request_args(lambda raw: raw)
            api.add_script("half", lambda request, args: request)
            api.add_sampler("Euler (half)", "EulerDiscreteScheduler")
            raise RuntimeError("setup gave up")
    """)
    write_extension(root, "twin-a", "def setup(api):\n    api.add_preprocessor('twin', lambda image: image)\n",
                    {"name": "twin"})
    write_extension(root, "twin-b", "def setup(api):\n    pass\n", {"name": "twin"})
    easel = make_easel()
    registry = easel.registry
    before = (len(registry.tabs), len(registry.accordions), len(registry.routes), dict(registry.preprocessors),
              dict(registry.scripts), dict(registry.request_args), list(registry.before_generate),
              list(registry.after_generate), list(registry.pipeline_wrappers), registry.samplers.all_names())
    loaded = {e.folder.name: e for e in load_extensions(easel, [root], set(), registry)}
    assert "setup gave up" in loaded["halfway"].error
    assert loaded["twin-a"].loaded and "already loaded from" in loaded["twin-b"].error
    registry.preprocessors.pop("twin")
    after = (len(registry.tabs), len(registry.accordions), len(registry.routes), dict(registry.preprocessors),
             dict(registry.scripts), dict(registry.request_args), list(registry.before_generate),
             list(registry.after_generate), list(registry.pipeline_wrappers), registry.samplers.all_names())
    assert after == before and "Euler (half)" not in registry.samplers.all_names()
    job = easel.engine.generate(Txt2ImgRequest(prompt="mine", width=64, height=64, steps=2, checkpoint="tiny-sd1"),
                                timeout=120)
    assert parse_infotext(job.result.infotexts[0])["Prompt"] == "mine"


def test_api_checks_what_extensions_register(make_easel, tmp_path):
    from webui.extensions import ExtensionAPI, Registry

    easel = make_easel()
    api = ExtensionAPI(easel, easel.registry, "checks", tmp_path)
    other = ExtensionAPI(easel, easel.registry, "other", tmp_path, staged=Registry())  # as during its setup
    api.add_sampler("Euler (checks)", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"})
    api.add_sampler("Euler (checks)", "EulerDiscreteScheduler")  # its own name again: replaced
    api.add_script("sweep", lambda r, a: r)
    for call, message in ((lambda: other.add_sampler("Euler (checks)", "EulerDiscreteScheduler"), "checks"),
                          (lambda: other.add_script("Sweep", lambda r, a: r), "already registered by checks"),
                          (lambda: api.add_sampler("DDIM", "DDIMScheduler"), "already exists"),
                          (lambda: api.add_sampler(" ", "DDIMScheduler"), "name: a sampler needs a name"),
                          (lambda: api.add_sampler("Mine", "NoSuchScheduler"), "scheduler_class"),
                          (lambda: api.add_accordion("extras", "x", lambda: None), "mode"),
                          (lambda: api.add_route("/sdapi/v1/mine", lambda: {}), "path"),
                          (lambda: api.add_script("s", lambda r, a: r, modes=("inpaint",)), "modes")):
        with pytest.raises(ValueError, match=message):
            call()
    assert "Euler (checks)" in easel.sampler_choices(None)
    assert easel.registry.samplers.added() == {"Euler (checks)": ("checks", "EulerDiscreteScheduler", {})}
    assert api.setting("save_images") is easel.settings.user.save_images
    with pytest.raises(KeyError, match="unknown setting 'nope'.*save_images"):
        api.setting("nope")


# The example extension of docs/EXTENSIONS.md -----------------------------------------------------------
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "hello"


@pytest.fixture
def hello(make_easel):
    """An Easel with exactly the guide's example extension loaded from docs/examples/hello."""
    easel = make_easel()
    easel.extensions = load_extensions(easel, [EXAMPLE.parent], set(), easel.registry)
    return easel


def test_the_guide_shows_the_tested_example_verbatim():
    guide = (REPO / "docs" / "EXTENSIONS.md").read_text(encoding="utf-8")
    for name in ("extension.json", "extension.py"):
        source = (EXAMPLE / name).read_text(encoding="utf-8").strip()
        assert source in guide, f"docs/EXTENSIONS.md does not show {name} as it is in docs/examples/hello"


def test_the_guide_example_extension_uses_every_hook(hello):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from tests.api.conftest import b64_png, gradient, open_b64
    from webui.api.routes import create_api
    from webui.model_manager.identify import Arch

    easel = hello
    status = {s.name: s for s in easel.extension_statuses()}["hello"]
    assert (status.status, status.version, status.error) == ("loaded", "1.0.0", None)
    frame = (255, 128, 0)

    app = FastAPI()
    create_api(app, easel)
    with TestClient(app, raise_server_exceptions=False) as client:
        # A per-request argument changes the prompt; the new sampler runs; images come back framed.
        body = {"prompt": "a cat", "seed": 3, "width": 64, "height": 64, "steps": 2,
                "sampler_name": "Euler (trailing)", "alwayson_scripts": {"Hello": {"args": ["watercolor"]}}}
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        image = open_b64(response.json()["images"][0])
        params = parse_infotext(image.info["parameters"])
        assert (params["Prompt"], params["Sampler"], params["Hello"]) == ("a cat, watercolor", "Euler (trailing)",
                                                                          "framed")
        assert image.convert("RGB").getpixel((0, 0)) == frame and image.convert("RGB").getpixel((63, 30)) == frame
        assert image.convert("RGB").getpixel((30, 30)) != frame
        # The route, reading a user setting.
        assert client.get("/extensions/hello/stats").json() == {"images": 1, "save_images": True}
        easel.settings.user.save_images = False
        assert client.get("/extensions/hello/stats").json()["save_images"] is False
        # The API script: one image per style.
        swept = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "seed": 3, "width": 64, "height": 64,
                                                       "steps": 2, "script_name": "style sweep",
                                                       "script_args": [["red", "blue"]]})
        assert swept.status_code == 200, swept.text
        prompts = [parse_infotext(open_b64(i).info["parameters"])["Prompt"] for i in swept.json()["images"]]
        assert prompts == ["a cat, red", "a cat, blue"]
        assert client.get("/extensions/hello/stats").json()["images"] == 3
        assert client.get("/sdapi/v1/scripts").json()["txt2img"][3] == "style sweep"  # after the 3 built-in ones
        # Bad arguments are the client's mistake, named.
        bad = client.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {"hello": {"args": [1]}}})
        assert bad.status_code == 422 and bad.json()["field"] == "alwayson_scripts.hello"
        assert "one style text" in bad.json()["detail"]
        bad_script = client.post("/sdapi/v1/txt2img", json={**body, "script_name": "style sweep", "script_args": []})
        assert bad_script.status_code == 422 and bad_script.json()["field"] == "script_args"

    # The sampler is the scheduler it names, with its settings; the preprocessor inverts.
    config = easel.manager.get("tiny-sd1", "txt2img").pipe.scheduler.config
    scheduler = easel.registry.samplers.make_scheduler("Euler (trailing)", Arch.SD1, config)
    assert type(scheduler).__name__ == "EulerDiscreteScheduler" and scheduler.config.timestep_spacing == "trailing"
    source = gradient(8, 8)
    inverted = easel.registry.preprocessors["hello_invert"](source, resolution=512)
    assert inverted.getpixel((3, 5)) == tuple(255 - v for v in source.getpixel((3, 5)))

    # The UI: its tab and its accordion in txt2img, whose textbox feeds the Generate button.
    from webui.ui.app import build_ui

    blocks, ui = build_ui(easel)
    try:
        by_id = {getattr(b, "elem_id", None): b for b in blocks.blocks.values()}
        assert "tab_ext_hello" in by_id and "hello_count" in by_id and "hello_style" in by_id
        choices = ui.generation["txt2img"].controls["sampler"].choices
        assert any("Euler (trailing)" in choice for choice in choices)
        style = by_id["hello_style"]
        generate = [f for f in blocks.fns.values() if style in f.inputs]
        assert len(generate) == 1 and generate[0].name == "on_generate"
    finally:
        blocks.close()
