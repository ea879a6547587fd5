"""Registries belong to one Easel: what an extension adds (samplers, hooks, ...) reaches only the Easel that loaded
it, and only when its setup succeeded. The built-in sampler tables stay as they are."""
from __future__ import annotations

import pytest

from tests.api.conftest import TINY, open_b64
from tests.conftest import api_client
from tests.engine.test_extensions import write_extension
from webui.engine.samplers import DIFFUSION_SAMPLERS, FLOW_SAMPLERS
from webui.engine.worker import JobState
from webui.extensions import load_extensions
from webui.infotext import parse_infotext
from webui.requests import RequestError, Txt2ImgRequest

# DDPM is a scheduler none of Easel's built-in samplers uses, so an image made with it shows it really ran.
ADDS_DDPM = """
    def setup(api):
        api.add_sampler("DDPM (ext)", "DDPMScheduler")
"""


def test_a_sampler_reaches_only_the_easel_that_loaded_its_extension(make_easel, tmp_path):
    root = tmp_path / "exts"
    write_extension(root, "ddpm", ADDS_DDPM, {"name": "ddpm"})
    with_ext, without = make_easel(), make_easel()
    loaded = load_extensions(with_ext, [root], set(), with_ext.registry)
    assert [(e.name, e.loaded, e.error) for e in loaded] == [("ddpm", True, None)]

    assert "DDPM (ext)" in with_ext.sampler_choices(None) and "DDPM (ext)" in with_ext.sampler_choices("tiny-sd1")
    assert "DDPM (ext)" not in without.sampler_choices(None) and "DDPM (ext)" not in without.sampler_choices("tiny-sd1")
    assert "DDPM (ext)" not in DIFFUSION_SAMPLERS  # the built-in table is nobody's to change
    with pytest.raises(TypeError):
        DIFFUSION_SAMPLERS["Mine"] = ("DDPMScheduler", {})  # type: ignore[index]

    body = {"prompt": "a cat", "seed": 5, **TINY, "sampler_name": "DDPM (ext)"}
    with api_client(with_ext) as client:
        assert "DDPM (ext)" in [s["name"] for s in client.get("/sdapi/v1/samplers").json()]
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        assert parse_infotext(open_b64(response.json()["images"][0]).info["parameters"])["Sampler"] == "DDPM (ext)"
    with api_client(without) as client:
        assert "DDPM (ext)" not in [s["name"] for s in client.get("/sdapi/v1/samplers").json()]
        refused = client.post("/sdapi/v1/txt2img", json=body)
        assert refused.status_code == 422 and refused.json()["field"] == "sampler_name"
        assert "'DDPM (ext)'" in refused.json()["detail"]

    # The engine's own request check (what the UI's Generate goes through) asks the same Easel's registry.
    request = Txt2ImgRequest(prompt="a cat", seed=5, sampler="DDPM (ext)", checkpoint="tiny-sd1", **TINY)
    with pytest.raises(RequestError, match="sampler_name: unknown sampler 'DDPM \\(ext\\)' for sd1 models") as error:
        without.engine.submit(request)
    assert error.value.field == "sampler_name" and without.engine.worker.queue_length() == 0
    job = with_ext.engine.generate(request, timeout=120)
    assert job.state == JobState.DONE, job.error


def test_an_extension_sampler_generates_through_the_engine(make_easel, tmp_path):
    root = tmp_path / "exts"
    write_extension(root, "ddpm", ADDS_DDPM, {"name": "ddpm"})
    easel = make_easel()
    load_extensions(easel, [root], set(), easel.registry)
    request = Txt2ImgRequest(prompt="a red ball", seed=9, sampler="DDPM (ext)", checkpoint="tiny-sd1", **TINY)

    job = easel.engine.generate(request, timeout=120)
    assert job.state == JobState.DONE, job.error
    assert parse_infotext(job.result.infotexts[0])["Sampler"] == "DDPM (ext)"
    assert type(easel.manager.get("tiny-sd1", "txt2img").pipe.scheduler).__name__ == "DDPMScheduler"
    again = easel.engine.generate(request, timeout=120)
    euler = easel.engine.generate(request.replace(sampler="Euler"), timeout=120)
    assert again.result.images[0].tobytes() == job.result.images[0].tobytes()  # the same seed, the same image
    assert euler.result.images[0].tobytes() != job.result.images[0].tobytes()  # another scheduler ran
    assert parse_infotext(euler.result.infotexts[0])["Sampler"] == "Euler"


def test_a_setup_that_raises_after_adding_a_sampler_and_a_hook_registers_neither(make_easel, tmp_path):
    data = tmp_path / "data"
    write_extension(data / "extensions", "quitter", """
        def setup(api):
            api.add_sampler("Euler (quitter)", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"})
            api.before_generate(lambda request: request.replace(prompt="hijacked"))
            api.add_adapter("quitter", lambda request: [], lambda spec, loaded: None)
            raise RuntimeError("quitter gave up")
    """, {"name": "quitter", "version": "0.1"})
    write_extension(data / "extensions", "stayer", """
        def setup(api):
            api.add_sampler("Euler (stayer)", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"})
    """, {"name": "stayer"})

    easel = make_easel()  # build() loads both: the app starts although one setup raised
    status = {s.name: s for s in easel.extension_statuses()}
    assert status["quitter"].status == "failed" and "RuntimeError: quitter gave up" in status["quitter"].error
    assert status["stayer"].status == "loaded"
    assert "Euler (quitter)" not in easel.sampler_choices(None) and "Euler (stayer)" in easel.sampler_choices(None)
    assert all("quitter" not in hook.__qualname__ for hook in easel.registry.before_generate)
    assert set(easel.registry.samplers.added()) == {"Euler (stayer)"}
    assert "quitter" not in easel.registry.adapter_loaders
    assert len(easel.registry.adapter_sources) == len(easel.registry.adapter_loaders)  # no stray `wanted`

    with api_client(easel) as client:
        listed = {e["name"]: e for e in client.get("/sdapi/v1/extensions").json()}
        assert listed["quitter"]["status"] == "failed" and "quitter gave up" in listed["quitter"]["error"]
        names = [s["name"] for s in client.get("/sdapi/v1/samplers").json()]
        assert "Euler (stayer)" in names and "Euler (quitter)" not in names
        response = client.post("/sdapi/v1/txt2img", json={"prompt": "mine", "seed": 1, **TINY,
                                                          "sampler_name": "Euler (quitter)"})
        assert response.status_code == 422 and response.json()["field"] == "sampler_name"
        response = client.post("/sdapi/v1/txt2img", json={"prompt": "mine", "seed": 1, **TINY})
        assert response.status_code == 200, response.text
        assert parse_infotext(open_b64(response.json()["images"][0]).info["parameters"])["Prompt"] == "mine"


ADDS_PROBE = """
    import torch
    from webui.extension_api import AdapterSpec

    def setup(api):
        api.loads = []

        def wanted(request):
            return [AdapterSpec("probe", "p1")] if "probe" in request.prompt else []

        def load(spec, loaded):
            found = api.memory.get("probe", spec.name)
            if found is None:
                api.loads.append((spec.name, loaded.arch.value))
                found = torch.nn.Linear(4, 4)
                api.memory.add("probe", spec.name, found, name=spec.name)
            return found

        api.add_adapter("probe", wanted, load)
        LOADED.append(api)

    LOADED = []
"""


def test_an_adapter_kind_reaches_only_its_easel_and_a_second_declaration_is_refused(make_easel, tmp_path):
    import sys

    root = tmp_path / "exts"
    write_extension(root, "probe", ADDS_PROBE, {"name": "probe"})
    write_extension(root, "probe-again", """
        def setup(api):
            api.add_adapter("probe", lambda request: [], lambda spec, loaded: None)
    """, {"name": "probe-again"})
    with_ext, without = make_easel(), make_easel()
    loaded = {e.name: e for e in load_extensions(with_ext, [root], set(), with_ext.registry)}
    assert loaded["probe"].loaded and not loaded["probe-again"].loaded
    assert "kind: 'probe' adapters are already declared" in loaded["probe-again"].error
    assert "probe" in with_ext.registry.adapter_loaders and "probe" not in without.registry.adapter_loaders
    api = sys.modules["easel_extension_probe"].LOADED[-1]

    request = Txt2ImgRequest(prompt="a probe house", seed=2, checkpoint="tiny-sd1", **TINY)
    for _ in range(2):  # loaded once in the job's one load call, held in the shared memory cache after
        job = with_ext.engine.generate(request, timeout=120)
        assert job.state == JobState.DONE, job.error
    assert api.loads == [("p1", "sd1")]
    assert [h["name"] for h in with_ext.manager.memory_report()["held"] if h["kind"] == "probe"] == ["p1"]
    job = without.engine.generate(request, timeout=120)
    assert job.state == JobState.DONE, job.error
    assert not [h for h in without.manager.memory_report()["held"] if h["kind"] == "probe"]


def test_flow_models_keep_their_own_list_and_schedule_suffixes(make_easel, tmp_path):
    """An added sampler is for the SD family; a flow model still takes another tool's "... Karras" name."""
    from webui.model_manager.identify import Arch

    root = tmp_path / "exts"
    write_extension(root, "ddpm", ADDS_DDPM, {"name": "ddpm"})
    easel = make_easel()
    load_extensions(easel, [root], set(), easel.registry)
    samplers = easel.registry.samplers
    assert samplers.names(Arch.FLUX) == ["Euler", "Euler a", "DPM++ 2M", "UniPC"]
    assert samplers.names(Arch.SD3) == list(FLOW_SAMPLERS)
    assert samplers.resolve("Euler a Karras", Arch.SD3) == "Euler a" and samplers.resolve("DPM++ 2M", Arch.FLUX) == "DPM++ 2M"
    with pytest.raises(RequestError, match="unknown sampler 'DDPM \\(ext\\)' for flux models; choose one of Euler"):
        samplers.resolve("DDPM (ext)", Arch.FLUX)
