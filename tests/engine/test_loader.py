"""The engine's one loader call on real tiny models: a `LoadSpec` (checkpoint, mode, VAE, LoRAs, embeddings, sampler,
adapters) comes back from `ModelManager.load` as a pipeline ready to run; the same spec twice loads, moves and
changes nothing the second time; each pipeline call of a job is one `load`; a LoRA or an embedding that does not fit
is an error on the field that names it; and what a job produced (the model that ran, the built-in model's planned
prompts) comes back in its result, not from the model manager's state afterwards."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
from safetensors.torch import save_file

from tests.lora.lora_files import kohya_layout, random_lora, save
from tests.tiny_models import save_vae_single_file
from webui.engine.samplers import Samplers
from webui.engine.worker import JobState
from webui.infotext import parse_infotext
from webui.model_manager.spec import AdapterSpec, LoadSpec, LoadSpecError
from webui.requests import RequestError, Txt2ImgRequest

make_scheduler = Samplers().make_scheduler  # the built-in samplers' scheduler factory
SMALL = {"width": 64, "height": 64, "steps": 2, "sampler": "Euler", "seed": 7}
UNET_ATTENTION = r"attn[12]\.to_(q|k|v|out\.0)$"


@pytest.fixture
def easel(make_easel, tmp_path: Path, tiny_sd1_dir: Path):
    """tiny-sd1 with a LoRA (zqlora), an embedding (zqemb), a VAE (zqvae) and a probe adapter kind, whose loader
    holds a small module in the memory cache and records each read from "disk"."""
    models = tmp_path / "data" / "models"
    unet = UNet2DConditionModel.from_pretrained(tiny_sd1_dir / "unet")
    save(models / "Lora" / "zqlora.safetensors",
         kohya_layout(random_lora(unet, UNET_ATTENTION, rank=4, seed=1), "lora_unet", alpha=2.0))
    (models / "embeddings").mkdir(parents=True)
    save_file({"emb_params": torch.randn(1, 32, generator=torch.Generator().manual_seed(2)) * 3},
              str(models / "embeddings" / "zqemb.safetensors"))
    (models / "VAE").mkdir(parents=True)
    save_vae_single_file(tiny_sd1_dir, models / "VAE" / "zqvae.safetensors")
    easel = make_easel()
    memory, reads = easel.manager.memory, []

    def load_probe(spec: AdapterSpec, loaded) -> torch.nn.Module:
        found = memory.get("probe", spec.name)
        if found is None:
            reads.append(spec.name)
            found = torch.nn.Linear(8, 8)
            memory.add("probe", spec.name, found, name=spec.name)
        return found

    easel.registry.adapter_loaders["probe"] = load_probe  # as `api.add_adapter` declares a kind
    easel.probe_reads = reads
    return easel


SPEC = LoadSpec("tiny-sd1", "txt2img", vae="zqvae", loras=(("zqlora", 0.8),), embeddings=("zqemb",),
                sampler="Euler", adapters=(AdapterSpec("probe", "p1"),))


def test_the_same_spec_twice_does_nothing_the_second_time(easel) -> None:
    manager = easel.manager
    first = manager.load(SPEC, make_scheduler, easel.registry.adapter_loaders)
    assert [(lo.name, lo.weight) for lo in first.loras] == [("zqlora", 0.8)]
    assert [e.name for e in first.embeddings] == ["zqemb"] and first.embeddings[0].tokens
    probe = first.adapters[AdapterSpec("probe", "p1")]
    assert isinstance(probe, torch.nn.Linear) and easel.probe_reads == ["p1"]
    assert isinstance(first.pipe.scheduler, EulerDiscreteScheduler)
    assert {h["kind"] for h in manager.memory_report()["held"]} == {"pipeline", "vae", "probe"}
    stack = manager.lora_stack(first)
    modules = (first.pipe.unet, first.pipe.vae, first.pipe.text_encoder)
    state = (dict(manager.stats), stack.stats["loads"], len(first.pipe.tokenizer), manager.memory_report()["held"])
    memory_stats = {k: v for k, v in manager.memory.stats.items() if k != "hits"}

    second = manager.load(SPEC, make_scheduler, easel.registry.adapter_loaders)
    assert second.pipe is first.pipe and (second.pipe.unet, second.pipe.vae, second.pipe.text_encoder) == modules
    after = (dict(manager.stats), stack.stats["loads"], len(second.pipe.tokenizer), manager.memory_report()["held"])
    assert after[0] == {**state[0], "cache_hits": state[0]["cache_hits"] + 1}  # no disk load, no VAE read
    assert after[1:] == state[1:]  # no LoRA loaded, no embedding token added, the same bytes held where they were
    assert {k: v for k, v in manager.memory.stats.items() if k != "hits"} == memory_stats  # nothing moved or left
    assert second.adapters[AdapterSpec("probe", "p1")] is probe and easel.probe_reads == ["p1"]
    assert second.loras == first.loras and second.embeddings == first.embeddings
    assert second.pipe.scheduler is not None  # each job gets a fresh scheduler (schedulers keep per-run state)


def test_a_job_makes_one_load_call_per_pipeline_call(easel) -> None:
    manager, specs = easel.manager, []
    load = manager.load

    def recorded(spec: LoadSpec, factory=None, loaders=None):
        specs.append(spec)
        return load(spec, factory, loaders)

    manager.load = recorded
    request = Txt2ImgRequest(prompt="a zqemb house <lora:zqlora:0.8>", negative_prompt="blurry", vae="zqvae",
                             checkpoint="tiny-sd1", enable_hr=True, hr_scale=1.5, hr_upscaler="Lanczos", **SMALL)
    job = easel.engine.generate(request, timeout=120)
    assert job.state == JobState.DONE, job.error
    assert [s.mode for s in specs] == ["txt2img", "img2img"]  # the first pass and the hires pass
    assert specs[0] == LoadSpec("tiny-sd1", "txt2img", vae="zqvae", loras=(("zqlora", 0.8),), embeddings=("zqemb",),
                                sampler="Euler")
    info = parse_infotext(job.result.infotexts[0])
    assert info["Lora hashes"].startswith("zqlora: ") and info["TI hashes"].startswith("zqemb: ")
    assert info["VAE"] == "zqvae" and info["Model"] == "tiny-sd1"
    disk_loads = manager.stats["disk_loads"]
    assert easel.engine.generate(request, timeout=120).state == JobState.DONE
    assert manager.stats["disk_loads"] == disk_loads == 1 and manager.stats["vae_loads"] == 1


def test_what_cannot_be_used_is_an_error_on_the_field_that_names_it(easel) -> None:
    wide = easel.settings.models_dir / "embeddings" / "zqwide.safetensors"
    save_file({"emb_params": torch.ones(1, 64)}, str(wide))  # the tiny SD 1.x text encoder is 32 wide
    easel.manager.refresh_embeddings()
    with pytest.raises(LoadSpecError) as caught:
        easel.manager.load(LoadSpec("tiny-sd1", embeddings=("zqwide",)))
    assert (caught.value.part, caught.value.name) == ("embeddings", "zqwide") and "zqwide" in str(caught.value)
    for prompt, negative, field, words in (("a <lora:nope:1> house", "", "prompt", "nope"),
                                           ("a house", "zqwide", "negative_prompt", "zqwide")):
        job = easel.engine.generate(Txt2ImgRequest(prompt=prompt, negative_prompt=negative, checkpoint="tiny-sd1",
                                                   **SMALL), timeout=120)
        assert job.state == JobState.FAILED and isinstance(job.exception, RequestError), job.error
        assert job.exception.field == field and words in str(job.exception)
    with pytest.raises(ValueError, match="sampler: 'Euler' asked for, but no scheduler factory"):
        easel.manager.load(LoadSpec("tiny-sd1", sampler="Euler"))
    with pytest.raises(ValueError, match="adapters: no loader for 'ip-adapter'"):
        easel.manager.load(LoadSpec("tiny-sd1", adapters=(AdapterSpec("ip-adapter", "x"),)))


def test_the_model_that_ran_and_the_planned_prompts_come_back_in_the_result(make_easel, tmp_path: Path) -> None:
    from tests.builtin.conftest import make_tiny_pipeline
    from webui.builtin.pipeline import EaselPipeline

    tiny = make_tiny_pipeline(seed=3)
    EaselPipeline(tiny.transformer, tiny.text_encoder, tiny.scheduler, plan_layout=True).save_pretrained(
        tmp_path / "builtin" / "easel-tiny")
    easel = make_easel(builtin_dir=tmp_path / "builtin")

    def switch_after(call, run):  # another checkpoint becomes the manager's current one while the job runs
        out = run(call)
        easel.manager.get("tiny-sd1", "txt2img")
        return out

    easel.engine.pipeline_wrappers.append(switch_after)
    request = Txt2ImgRequest(prompt="a red circle, a blue star above a green ring", checkpoint="easel-tiny",
                             batch_size=2, **{**SMALL, "steps": 3})
    job = easel.engine.generate(request, timeout=120)
    assert job.state == JobState.DONE, job.error
    assert easel.manager.current().name == "tiny-sd1"
    assert job.result.info["model"] == "easel-tiny" and job.result.info["model_hash"]
    infos = [parse_infotext(text) for text in job.result.infotexts]
    assert all(info["Model"] == "easel-tiny" for info in infos)
    planned = [info["Planned prompt"] for info in infos]
    assert len(planned) == 2 and all(text != request.prompt for text in planned)
    pipe = easel.manager.get("easel-tiny", "txt2img").pipe
    assert not hasattr(pipe, "planned_prompts")  # nothing of the job was left on the shared pipeline
