"""LoRAs through the engine on the tiny SD 1.x model: prompt tags, hot-swap invariants (bit for bit), infotext,
PNG Info, fusing and in-place hot-swapping."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.lora.lora_files import save
from webui.engine.worker import JobState
from webui.infotext import lora_hashes, parse_infotext, read_png_parameters, relink_loras, request_updates
from webui.model_manager.loras import adapter_name_for, lora_layers
from webui.model_manager.manager import LoraOptions
from webui.requests import RequestError, Txt2ImgRequest

SMALL = dict(width=64, height=64, steps=2, checkpoint="tiny-sd1", sampler="Euler", seed=7)


def run(easel, prompt: str, **changes):
    job = easel.engine.generate(Txt2ImgRequest(prompt=prompt, **{**SMALL, **changes}), timeout=120)
    assert job.state == JobState.DONE, job.error
    return job.result


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB")).astype(int)


@pytest.fixture
def easel_with_loras(make_easel, sd1_lora):
    easel = make_easel()
    folder = easel.settings.models_dir / "Lora"
    sd1_lora(folder, "styleA", seed=1, metadata={"ss_base_model_version": "sd_v1", "easel_trigger": "zqx style"})
    sd1_lora(folder, "StyleB", seed=2, layout="peft")
    easel.manager.refresh_loras()
    return easel


def test_hot_swap_invariants_bit_for_bit(easel_with_loras) -> None:
    easel = easel_with_loras
    base = pixels(run(easel, "a red cube"))
    a = pixels(run(easel, "a red cube <lora:styleA:0.8>"))
    assert not np.array_equal(a, base)
    assert np.array_equal(pixels(run(easel, "a red cube")), base)  # base -> A -> none
    b = pixels(run(easel, "a red cube <lora:StyleB:0.8>"))
    assert not np.array_equal(b, a)
    assert np.array_equal(pixels(run(easel, "a red cube <lora:styleA:0.8>")), a)  # A -> B -> A
    assert np.array_equal(pixels(run(easel, "a red cube <lora:styleA:0>")), base)  # weight 0 = no LoRA
    assert np.array_equal(pixels(run(easel, "a red cube <lora:styleA:0.8>")), a)
    assert easel.manager.stats["disk_loads"] == 1  # the base model was never reloaded
    loaded = easel.manager.get("tiny-sd1", "txt2img")
    stack = easel.manager.lora_stack(loaded)
    # B stays loaded but inactive (switching back to it loads nothing); only A's layers compute.
    assert stack is not None and list(stack.loaded.values()) == ["StyleB", "styleA"]  # least recently used first
    loads = stack.stats["loads"]
    assert np.array_equal(pixels(run(easel, "a red cube <lora:StyleB:0.8>")), b)
    assert stack.stats["loads"] == loads
    layers = lora_layers(loaded.pipe)
    assert layers and all(layer.active_adapters == [adapter_name_for(entries_hash(easel, "StyleB"))]
                          for layer in layers if layer.lora_A)
    # With no unused LoRA kept, switching drops the previous one.
    easel.manager.lora_options = lambda: LoraOptions(keep_loaded=0)
    assert np.array_equal(pixels(run(easel, "a red cube <lora:styleA:0.8>")), a)
    assert list(stack.loaded.values()) == ["styleA"]
    assert np.array_equal(pixels(run(easel, "a red cube")), base)
    assert stack.loaded == {}


def entries_hash(easel, name: str) -> str:
    return next(e.short_hash for e in easel.manager.loras() if e.name == name)


def test_several_tags_negative_weights_and_infotext(easel_with_loras) -> None:
    easel = easel_with_loras
    plain = pixels(run(easel, "a red cube <lora:styleA:0.5>"))
    both = run(easel, "a red cube <lora:styleA:0.5>, <lora:StyleB:-0.7>")
    assert not np.array_equal(pixels(both), plain)
    default_weight = pixels(run(easel, "a red cube <lora:styleA>"))
    assert np.array_equal(default_weight, pixels(run(easel, "a red cube <lora:styleA:1>")))
    params = parse_infotext(both.infotexts[0])
    assert params["Prompt"] == "a red cube <lora:styleA:0.5>, <lora:StyleB:-0.7>"  # the tags stay in the prompt
    hashes = lora_hashes(params)
    entries = {e.name: e for e in easel.manager.loras()}
    assert hashes == {"styleA": entries["styleA"].short_hash, "StyleB": entries["StyleB"].short_hash}
    assert all(len(h) == 12 for h in hashes.values())
    saved = read_png_parameters(Image.open(both.paths[0]))
    assert 'Lora hashes: "styleA: ' in saved
    # PNG Info: the restored request carries the tags, so generating again gives the same image.
    updates = request_updates(parse_infotext(saved), Txt2ImgRequest)
    again = run(easel, updates["prompt"])
    assert np.array_equal(pixels(again), pixels(both))
    assert "Lora hashes" not in parse_infotext(run(easel, "a red cube").infotexts[0])


def test_png_info_relinks_a_renamed_lora_by_hash() -> None:
    params = {"Prompt": "cat <lora:old-name:0.6> <lora:kept:1>", "Lora hashes": "old-name: 0123456789ab, kept: ffff"}
    assert lora_hashes(params) == {"old-name": "0123456789ab", "kept": "ffff"}
    prompt = relink_loras(params["Prompt"], lora_hashes(params), {"0123456789ab": "new-name", "eeee": "kept"})
    assert prompt == "cat <lora:new-name:0.6> <lora:kept:1>"
    assert request_updates(params, Txt2ImgRequest, {"0123456789ab": "new-name"})["prompt"].startswith(
        "cat <lora:new-name:0.6>")


def test_unknown_or_foreign_lora_fails_naming_the_prompt(easel_with_loras) -> None:
    easel = easel_with_loras
    job = easel.engine.generate(Txt2ImgRequest(prompt="x <lora:stylea-typo:1>", **SMALL), timeout=120)
    assert job.state == JobState.FAILED
    assert isinstance(job.exception, RequestError) and job.exception.field == "prompt"
    assert "not found" in str(job.exception) and "styleA" in str(job.exception)
    save(easel.settings.models_dir / "Lora" / "xl-only.safetensors",
         {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 32),
          "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(32, 4)},
         {"ss_base_model_version": "sdxl_base_v1-0"})
    easel.manager.refresh_loras()
    job = easel.engine.generate(Txt2ImgRequest(prompt="x <lora:xl-only:1>", **SMALL), timeout=120)
    assert job.state == JobState.FAILED and job.exception.field == "prompt"
    assert "SDXL" in str(job.exception) and "SD 1.x" in str(job.exception)
    assert np.array_equal(pixels(run(easel, "a red cube")), pixels(run(easel, "a red cube <lora:styleA:0>")))


def test_listing_reads_header_metadata_and_preview(easel_with_loras) -> None:
    easel = easel_with_loras
    folder = easel.settings.models_dir / "Lora"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(folder / "styleA.preview.png")
    easel.manager.refresh_loras()
    by_name = {e.name: e for e in easel.manager.loras()}
    a = by_name["styleA"]
    assert a.format == "kohya" and a.rank == 4 and a.trigger_words == ("zqx style",)
    assert a.preview == folder / "styleA.preview.png" and len(a.short_hash) == 12
    assert easel.manager.lora_preview("styleA").getpixel((0, 0)) == (255, 0, 0)
    assert by_name["StyleB"].format == "peft" and by_name["StyleB"].preview is None
    assert easel.manager.find_lora("styleb").name == "StyleB"  # any case finds it; the listed case is the name


def test_fuse_when_the_set_repeats_and_unfuse_exactly(easel_with_loras) -> None:
    easel = easel_with_loras
    base = pixels(run(easel, "a red cube"))
    unfused = pixels(run(easel, "a red cube <lora:styleA:0.8>"))
    easel.manager.lora_options = lambda: LoraOptions(fuse=True)
    fused = pixels(run(easel, "a red cube <lora:styleA:0.8>"))  # the same set a second time in a row: fused
    stack = easel.manager.lora_stack(easel.manager.get("tiny-sd1", "txt2img"))
    assert stack.fused is not None and stack.stats["fuses"] == 1
    assert np.array_equal(pixels(run(easel, "a red cube <lora:styleA:0.8>")), fused)  # stays fused
    assert stack.stats["fuses"] == 1
    assert np.abs(fused - unfused).max() <= 2  # folded weights round differently, by a level at most
    assert np.array_equal(pixels(run(easel, "a red cube")), base)  # unfused exactly, then dropped
    assert stack.fused is None and stack.stats["unfuses"] == 1


def test_hotswap_in_place_keeps_adapters_and_matches(easel_with_loras) -> None:
    easel = easel_with_loras
    base = pixels(run(easel, "a red cube"))
    normal_a = pixels(run(easel, "a red cube <lora:styleA:0.8>"))
    normal_b = pixels(run(easel, "a red cube <lora:StyleB:0.8>"))
    run(easel, "a red cube")
    easel.engine.load("tiny-sd1")
    easel.manager.unload()  # hot-swap needs a model with no LoRA layers yet
    easel.manager.lora_options = lambda: LoraOptions(hotswap=True, max_rank=8)
    a = pixels(run(easel, "a red cube <lora:styleA:0.8>"))
    b = pixels(run(easel, "a red cube <lora:StyleB:0.8>"))
    a_again = pixels(run(easel, "a red cube <lora:styleA:0.8>"))
    none = pixels(run(easel, "a red cube"))
    stack = easel.manager.lora_stack(easel.manager.get("tiny-sd1", "txt2img"))
    assert len(stack.slots) == 1 and stack.stats["hotswaps"] == 2  # B, then A again, into the same slot
    assert list(stack.text_loaded) == []  # text-encoder parts are ordinary adapters, dropped when unused
    assert np.array_equal(a, a_again) and np.array_equal(none, base)
    assert np.abs(a - normal_a).max() <= 1 and np.abs(b - normal_b).max() <= 1


def test_img2img_applies_prompt_loras(easel_with_loras) -> None:
    from webui.requests import Img2ImgRequest

    easel = easel_with_loras
    source = Image.new("RGB", (64, 64), (200, 40, 40))

    def img2img(prompt: str):
        request = Img2ImgRequest(prompt=prompt, init_image=source, denoising_strength=0.8, **SMALL)
        job = easel.engine.generate(request, timeout=120)
        assert job.state == JobState.DONE, job.error
        return job.result

    base = img2img("a red cube")
    styled = img2img("a red cube <lora:styleA:1>")
    assert not np.array_equal(pixels(base), pixels(styled))
    assert "Lora hashes" in parse_infotext(styled.infotexts[0])
    assert np.array_equal(pixels(img2img("a red cube")), pixels(base))
