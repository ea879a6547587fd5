"""ModelManager on real tiny models: scanning, names and hashes, loading every family in every mode, the RAM
cache, memory, errors, VAE overrides, transformer-only files, the built-in model and the shipped configs."""
from __future__ import annotations

import gc
import json
import shutil
import sys
import types
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from tests.tiny_models import (make_header_only_safetensors, save_sd1_single_file, save_sd2_single_file,
                               save_sdxl_single_file, save_vae_single_file, save_zimage_single_file)
from webui.model_manager.identify import PICKLE_REASON, Arch
from webui.model_manager.manager import ModelLoadError, ModelManager, ModelNotFoundError

SEQUENCE_ARCHS = {Arch.SD3, Arch.FLUX, Arch.ZIMAGE, Arch.QWEN}
IMAGE = Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype("uint8"))
MASK = Image.new("L", (32, 32), 0)
MASK.paste(255, (8, 8, 24, 24))


def generate(loaded, mode: str = "txt2img", seed: int = 0) -> np.ndarray:
    """Two denoising steps at 32x32; returns the image as floats in [0, 1]."""
    kwargs = {"prompt": "a red cube", "num_inference_steps": 2, "height": 32, "width": 32,
              "generator": torch.Generator("cpu").manual_seed(seed), "output_type": "np"}
    if loaded.arch in SEQUENCE_ARCHS:
        kwargs["max_sequence_length"] = 32
    if mode == "img2img":
        kwargs.update(image=IMAGE, strength=0.8)
    elif mode == "inpaint":
        kwargs.update(image=IMAGE, mask_image=MASK, strength=0.9)
    return np.asarray(loaded.pipe(**kwargs).images[0])


def denoiser(pipe):
    return getattr(pipe, "unet", None) or pipe.transformer


# ------------------------------------------------------------------------------------------------ scanning
def test_scan_lists_everything_with_reasons(world, tiny) -> None:
    world.install_folder(tiny["sd1"], "tiny-sd1")
    world.install_single_file(tiny["sd1"], "nested/file-sd1", save_sd1_single_file)
    (world.checkpoints / "old.ckpt").write_bytes(b"pickle")
    (world.checkpoints / "broken.safetensors").write_bytes(b"\x00" * 32)
    builtin = world.builtin / "easel-shapes"
    builtin.mkdir()
    (builtin / "model_index.json").write_text(json.dumps({"_class_name": "EaselPipeline"}))
    save_vae_single_file(tiny["sd1"], world.vae / "my-vae.safetensors")
    make_header_only_safetensors(world.lora / "style.safetensors", {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768)})

    manager = world.manager()
    entries = manager.checkpoints()
    names = [e.name for e in entries]
    assert names == ["easel-shapes", "broken", "nested/file-sd1", "old", "tiny-sd1"]
    by_name = {e.name: e for e in entries}
    assert by_name["easel-shapes"].builtin and by_name["easel-shapes"].arch == Arch.EASEL
    assert (by_name["tiny-sd1"].kind, by_name["tiny-sd1"].arch) == ("folder", Arch.SD1)
    assert (by_name["nested/file-sd1"].kind, by_name["nested/file-sd1"].arch) == ("file", Arch.SD1)
    assert not by_name["old"].supported and by_name["old"].reason == PICKLE_REASON
    assert not by_name["broken"].supported and "safetensors" in by_name["broken"].reason
    assert all(e.short_hash is None and e.title == e.name for e in entries)  # hashes come with loading
    assert [v.name for v in manager.vaes()] == ["my-vae"]
    assert [(lo.name, lo.arch) for lo in manager.loras()] == [("style", Arch.SD1)]


def test_refresh_rescans(world, tiny) -> None:
    manager = world.manager()
    assert manager.checkpoints() == []
    world.install_folder(tiny["sd1"], "late")
    assert manager.checkpoints() == []  # listings change only on refresh
    manager.refresh()
    assert [e.name for e in manager.checkpoints()] == ["late"]
    shutil.rmtree(world.diffusers / "late")
    manager.refresh()
    assert manager.checkpoints() == []


def test_find_checkpoint_by_name_title_hash_and_file_name(world, tiny) -> None:
    path = world.install_single_file(tiny["sd1"], "sub/model", save_sd1_single_file)
    manager = world.manager()
    entry = manager.find_checkpoint("sub/model")
    assert entry.path == path and entry.title == "sub/model"
    assert manager.find_checkpoint("model.safetensors") == entry
    assert manager.find_checkpoint("sub/model.safetensors") == entry
    assert manager.find_checkpoint(str(path)) == entry

    hashed = manager.compute_hash("sub/model")
    short = hashed.short_hash
    assert short and len(short) == 10 and hashed.title == f"sub/model [{short}]"
    assert manager.find_checkpoint(short).name == "sub/model"
    assert manager.find_checkpoint(hashed.title).name == "sub/model"
    assert manager.find_checkpoint(f"sub/model.safetensors [{short}]").name == "sub/model"  # AUTOMATIC1111 title
    assert manager.checkpoints()[0].title == hashed.title

    with pytest.raises(ModelNotFoundError) as caught:
        manager.find_checkpoint("sub/modle")
    assert "sub/model" in str(caught.value)  # close names are listed
    with pytest.raises(ModelNotFoundError):
        manager.find_checkpoint("")


def test_hashes_are_computed_on_load_and_remembered(world, tiny) -> None:
    world.install_folder(tiny["sd1"], "a")
    manager = world.manager()
    assert manager.find_checkpoint("a").short_hash is None
    loaded = manager.get("a", "txt2img")
    short = loaded.entry.short_hash
    assert short and loaded.entry.title == f"a [{short}]" and manager.current().title == loaded.entry.title
    again = world.manager()  # a new session: the title has the hash without hashing anything
    assert again.find_checkpoint("a").title == f"a [{short}]"
    assert again.hashes.stats["computed"] == 0


# ------------------------------------------------------------------------------------------------ loading
@pytest.mark.parametrize("family, saver", [("sd1", save_sd1_single_file), ("sd2", save_sd2_single_file),
                                           ("sdxl", save_sdxl_single_file)])
def test_single_file_loads_like_the_folder(world, tiny, family: str, saver) -> None:
    world.install_folder(tiny[family], "folder")
    world.install_single_file(tiny[family], "single", saver)
    manager = world.manager()
    from_file = manager.get("single", "txt2img")
    assert from_file.arch == manager.find_checkpoint("folder").arch
    image = generate(from_file)
    assert image.shape == (32, 32, 3) and np.isfinite(image).all()
    np.testing.assert_array_equal(image, generate(manager.get("folder", "txt2img")))


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl", "sd3", "flux", "zimage", "qwenimage"])
def test_every_family_runs_every_mode(world, tiny, family: str) -> None:
    world.install_folder(tiny[family], family)
    manager = world.manager()
    pipes = {}
    for mode in ("txt2img", "img2img", "inpaint"):
        loaded = manager.get(family, mode)
        image = generate(loaded, mode)
        assert image.shape == (32, 32, 3) and np.isfinite(image).all(), mode
        pipes[mode] = loaded.pipe
    assert len({id(p) for p in pipes.values()}) == 3  # three pipelines ...
    assert len({id(denoiser(p)) for p in pipes.values()}) == 1  # ... one set of weights
    assert len({id(p.vae) for p in pipes.values()}) == 1
    assert manager.stats["disk_loads"] == 1


def test_same_request_twice_does_no_work(world, tiny) -> None:
    world.install_folder(tiny["sd1"], "a")
    manager = world.manager()
    first = manager.get("a", "txt2img")
    assert manager.get("a", "txt2img") is first
    assert manager.get(first.entry.title, "txt2img") is first
    img2img = manager.get("a", "img2img")
    assert img2img.pipe is not first.pipe and img2img.pipe.unet is first.pipe.unet
    assert manager.stats["disk_loads"] == 1 and manager.current().name == "a"
    with pytest.raises(ValueError):
        manager.get("a", "upscale")  # type: ignore[arg-type]


def test_lru_cache_rereads_disk_only_on_misses(world, tiny) -> None:
    for name in "abc":
        world.install_folder(tiny["sd1"], name)
    manager = world.manager(ram_cache_size=2)
    expected = [("a", 1, 0, 0), ("b", 2, 0, 0), ("a", 2, 1, 0), ("b", 2, 2, 0), ("c", 3, 2, 1),
                ("b", 3, 3, 1), ("a", 4, 3, 2), ("c", 5, 3, 3), ("c", 5, 4, 3)]
    for name, disk_loads, hits, evictions in expected:
        manager.get(name, "txt2img")
        stats = manager.stats
        assert (stats["disk_loads"], stats["cache_hits"], stats["evictions"]) == (disk_loads, hits, evictions), name
        assert manager.current().name == name
    assert manager.loaded_names() == ["a", "c"]
    report = manager.memory_report()
    assert [m["name"] for m in report["loaded"]] == ["a", "c"] and report["ram_bytes"] > 0
    assert [m["active"] for m in report["loaded"]] == [False, True] and report["device_bytes"] == 0
    manager.unload("a")
    assert manager.loaded_names() == ["c"]
    manager.unload()
    assert manager.loaded_names() == [] and manager.current() is None


def _live_tensor_bytes() -> int:
    gc.collect()
    seen, total = set(), 0
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
            try:
                storage = obj.untyped_storage()
                pointer = storage.data_ptr()
            except RuntimeError:  # fake tensors a compiled model's tracing left behind hold no memory
                continue
            except NotImplementedError:  # oneDNN's opaque tensors (a frozen compiled model's): not this manager's
                continue
            if pointer not in seen:
                seen.add(pointer)
                total += storage.nbytes()
    return total


def test_memory_does_not_grow_over_20_switches(world, tiny) -> None:
    for name in "abc":
        world.install_folder(tiny["sd1"], name)
    manager = world.manager(ram_cache_size=2)
    for name in "abc":  # warm up: every code path has run once
        manager.get(name, "txt2img")
    baseline = _live_tensor_bytes()
    model_bytes = manager.memory_report()["loaded"][0]["ram_bytes"]
    evicted = []
    for step in range(20):
        name = "abc"[step % 3]
        evicted.append(weakref.ref(manager.get(name, "txt2img").pipe.unet))
    assert manager.stats["evictions"] >= 20
    grown = _live_tensor_bytes() - baseline
    assert grown < model_bytes / 2, f"{grown} bytes more live tensors after 20 switches"
    gc.collect()
    alive = sum(ref() is not None for ref in evicted)
    assert alive <= 2, f"{alive} evicted UNets are still referenced"  # only the two cached ones


def test_corrupt_file_fails_cleanly_and_the_previous_model_keeps_working(world, tiny) -> None:
    world.install_folder(tiny["sd1"], "good")
    good_file = world.install_single_file(tiny["sd1"], "later-truncated", save_sd1_single_file)
    truncated = world.checkpoints / "truncated.safetensors"
    truncated.write_bytes(good_file.read_bytes()[: good_file.stat().st_size // 2])
    mismatched = world.install_single_file(tiny["sd1"], "mismatched", save_sd1_single_file, with_config=False)
    shutil.copytree(tiny["sdxl"], world.checkpoints / "mismatched.config",
                    ignore=shutil.ignore_patterns("*.safetensors"))  # wrong layout for these weights
    manager = world.manager()
    before = generate(manager.get("good", "txt2img"))

    assert not manager.find_checkpoint("truncated").supported
    with pytest.raises(ModelLoadError) as caught:
        manager.get("truncated", "txt2img")
    assert str(truncated) in str(caught.value) and "truncated" in str(caught.value)

    with pytest.raises(ModelLoadError) as caught:
        manager.get("mismatched", "txt2img")
    assert str(mismatched) in str(caught.value)

    good_file.write_bytes(good_file.read_bytes()[:1000])  # damaged after the scan listed it as fine
    with pytest.raises(ModelLoadError) as caught:
        manager.get("later-truncated", "txt2img")
    assert str(good_file) in str(caught.value)

    assert manager.current().name == "good"
    np.testing.assert_array_equal(generate(manager.get("good", "txt2img")), before)
    assert manager.stats["disk_loads"] == 1


def test_unsupported_and_unknown_requests(world, tiny) -> None:
    (world.checkpoints / "old.ckpt").write_bytes(b"pickle")
    manager = world.manager()
    with pytest.raises(ModelLoadError, match="pickle"):
        manager.get("old", "txt2img")
    with pytest.raises(ModelNotFoundError):
        manager.get("nothing-like-this", "txt2img")
    # A hub id is only a hub id with --allow-hub-downloads; without it, it is a name like any other.
    with pytest.raises(ModelNotFoundError, match="--allow-hub-downloads"):
        manager.get("some-org/some-repo", "txt2img")
    hub = world.manager(allow_hub=True)
    with pytest.raises(ModelLoadError, match="offline"):
        hub.get("some-org/some-repo", "txt2img")  # tests run with HF_HUB_OFFLINE=1
    assert hub.find_checkpoint("some-org/some-repo").kind == "hub"


def test_vae_override_and_restore(world, tiny) -> None:
    world.install_folder(tiny["sd1"], "model")
    other = tiny("sd1", seed=7)
    save_vae_single_file(other, world.vae / "other-ldm.safetensors")  # original (LDM) key layout
    save_file(load_file(str(other / "vae" / "diffusion_pytorch_model.safetensors")),
              str(world.vae / "other-diffusers.safetensors"))  # diffusers key layout
    shutil.copytree(other / "vae", world.vae / "other-folder")
    save_vae_single_file(tiny["sd3"], world.vae / "wrong-shape.safetensors")  # 16 latent channels
    reference = load_file(str(other / "vae" / "diffusion_pytorch_model.safetensors"))
    manager = world.manager()
    assert [v.name for v in manager.vaes()] == ["other-diffusers", "other-folder", "other-ldm", "wrong-shape"]

    own = manager.get("model", "txt2img")
    own_vae = own.pipe.vae
    before = generate(own)
    for name in ("other-ldm", "other-diffusers", "other-folder"):
        loaded = manager.get("model", "txt2img", vae=name)
        state = loaded.pipe.vae.state_dict()
        assert all(torch.equal(state[k], reference[k]) for k in reference), name
        assert manager.get("model", "img2img", vae=name).pipe.vae is loaded.pipe.vae  # all modes agree
        assert not np.array_equal(generate(loaded), before)
    assert manager.memory_report()["loaded"][0]["vae"] == "other-folder"

    restored = manager.get("model", "txt2img", vae="Automatic")
    assert restored.pipe.vae is own_vae
    np.testing.assert_array_equal(generate(restored), before)

    with pytest.raises(ModelLoadError) as caught:
        manager.get("model", "txt2img", vae="wrong-shape")
    assert "wrong-shape.safetensors" in str(caught.value)
    assert manager.get("model", "txt2img").pipe.vae is own_vae
    with pytest.raises(ModelNotFoundError):
        manager.get("model", "txt2img", vae="missing")
    assert manager.stats["disk_loads"] == 1


# ------------------------------------------------------------------------------------------------ transformer files
def test_transformer_file_takes_the_rest_from_a_family_folder(world, tiny) -> None:
    world.install_folder(tiny["zimage"], "z-image-base")
    source = tiny("zimage", seed=3)
    path = save_zimage_single_file(source, world.checkpoints / "z-finetune.safetensors")
    manager = world.manager()
    entry = manager.find_checkpoint("z-finetune")
    assert (entry.kind, entry.arch, entry.supported) == ("file", Arch.ZIMAGE, True)
    loaded = manager.get("z-finetune", "txt2img")
    expected = load_file(str(source / "transformer" / "diffusion_pytorch_model.safetensors"))
    state = loaded.pipe.transformer.state_dict()
    assert all(torch.equal(state[k], expected[k]) for k in expected)  # the file's transformer ...
    folder_text = load_file(str(tiny["zimage"] / "text_encoder" / "model.safetensors"))
    text_state = loaded.pipe.text_encoder.state_dict()
    assert all(torch.equal(text_state[k], v) for k, v in folder_text.items())  # ... the folder's text encoder
    assert generate(loaded).shape == (32, 32, 3)
    assert path.exists()


def test_diffusers_layout_transformer_file(world, tiny) -> None:
    world.install_folder(tiny["qwenimage"], "qwen-base")
    source = tiny("qwenimage", seed=5)
    state = load_file(str(source / "transformer" / "diffusion_pytorch_model.safetensors"))
    save_file({"model.diffusion_model." + k: v for k, v in state.items()}, str(world.checkpoints / "q.safetensors"))
    loaded = world.manager().get("q", "inpaint")
    loaded_state = loaded.pipe.transformer.state_dict()
    assert all(torch.equal(loaded_state[k], v) for k, v in state.items())
    assert generate(loaded, "inpaint").shape == (32, 32, 3)


def test_transformer_file_without_companion_says_what_is_needed(world, tiny) -> None:
    state = load_file(str(tiny["flux"] / "transformer" / "diffusion_pytorch_model.safetensors"))
    save_file(state, str(world.checkpoints / "flux-finetune.safetensors"))
    manager = world.manager()
    with pytest.raises(ModelLoadError) as caught:
        manager.get("flux-finetune", "txt2img")
    message = str(caught.value)
    assert "flux-finetune.safetensors" in message and "black-forest-labs/FLUX.1-dev" in message
    assert "diffusers" in message and "flux-finetune.config" in message


# ------------------------------------------------------------------------------------------------ built-in
class _StubEaselPipeline:
    """Stands in for webui.builtin.pipeline.EaselPipeline (written separately): one tiny module."""

    loads = 0

    def __init__(self) -> None:
        self.net = torch.nn.Linear(4, 4)

    @property
    def components(self) -> dict:
        return {"net": self.net}

    @classmethod
    def from_pretrained(cls, path: str, **kwargs) -> "_StubEaselPipeline":
        cls.loads += 1
        assert (Path(path) / "model_index.json").is_file()
        return cls()


def test_builtin_model_is_first_and_serves_every_mode(world, tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("webui.builtin.pipeline")
    module.EaselPipeline = _StubEaselPipeline
    monkeypatch.setitem(sys.modules, "webui.builtin.pipeline", module)
    world.install_folder(tiny["sd1"], "aaa-first-by-name")
    (world.builtin / "model_index.json").write_text(json.dumps({"_class_name": "EaselPipeline"}))
    manager = world.manager()
    entries = manager.checkpoints()
    assert entries[0].name == "builtin" and entries[0].builtin and entries[0].arch == Arch.EASEL
    pipes = {mode: manager.get("builtin", mode).pipe for mode in ("txt2img", "img2img", "inpaint", "edit")}
    assert len({id(p) for p in pipes.values()}) == 1 and _StubEaselPipeline.loads == 1
    assert manager.get("builtin", "edit").arch == Arch.EASEL


# ------------------------------------------------------------------------------------------------ configs, options
def test_shipped_configs_describe_the_real_models() -> None:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from webui.model_manager.loading import CONFIGS_DIR

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    # Parameter counts of the released SD 1.5, SD 2.x and SDXL base components.
    expected = {"sd1": (859_520_964, 123_060_480), "sd2": (865_910_724, 340_387_840),
                "sd2-base": (865_910_724, 340_387_840), "sdxl": (2_567_463_684, 123_060_480)}
    with init_empty_weights():
        for family, (unet_params, text_params) in expected.items():
            folder = CONFIGS_DIR / family
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
            text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
            assert (count(unet), count(vae), count(text)) == (unet_params, 83_653_863, text_params), family
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(CONFIGS_DIR / "sdxl" / "text_encoder_2"))
        assert count(text_2) == 694_659_840
    v_pred = json.loads((CONFIGS_DIR / "sd2" / "scheduler" / "scheduler_config.json").read_text())
    assert v_pred["prediction_type"] == "v_prediction"


def test_shipped_config_tokenizers_are_built_offline(tmp_path: Path) -> None:
    from webui.model_manager.clip_tokenizer import load_clip_tokenizer
    from webui.model_manager.loading import CONFIGS_DIR, LoadContext, _tokenizer_kwargs

    context = LoadContext(dtype=torch.float32, clip_tokenizer=lambda pad: load_clip_tokenizer(tmp_path, pad),
                          family_folders=lambda arch: [])
    sdxl = _tokenizer_kwargs(CONFIGS_DIR / "sdxl", context)
    assert sdxl["tokenizer"].pad_token == "<|endoftext|>" and sdxl["tokenizer_2"].pad_token == "!"
    assert len(sdxl["tokenizer"]) == 49408
    assert _tokenizer_kwargs(CONFIGS_DIR / "sd2", context)["tokenizer"].pad_token == "!"


def test_single_file_with_shipped_config_fails_with_the_config_named(world, tiny) -> None:
    path = world.install_single_file(tiny["sd1"], "no-sidecar", save_sd1_single_file, with_config=False)
    with pytest.raises(ModelLoadError) as caught:  # tiny weights do not fit the real SD 1.5 shapes
        world.manager().get("no-sidecar", "txt2img")
    assert str(path) in str(caught.value) and "configs/sd1" in str(caught.value)


def test_offload_is_ignored_on_cpu(world) -> None:
    manager = world.manager(offload="model")
    assert manager.memory_report()["offload"] == "none"
    with pytest.raises(ValueError):
        world.manager(offload="everything")
    with pytest.raises(ValueError):
        world.manager(ram_cache_size=0)


def test_manager_imports_no_gradio() -> None:
    import subprocess

    code = "import sys, webui.model_manager.manager; sys.exit('gradio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2]).returncode == 0


def test_construction_does_no_work(world, tiny) -> None:
    world.install_folder(tiny["sd1"], "a")
    manager = ModelManager(checkpoint_dirs=[world.checkpoints], diffusers_dirs=[world.diffusers], vae_dirs=[],
                           lora_dirs=[], builtin_dirs=[], hash_cache_path=world.root / "h.json")
    assert manager.loaded_names() == [] and not (world.root / "h.json").exists()


def test_the_shipped_builtin_model_loads(world) -> None:
    repo_builtin = Path(__file__).resolve().parents[2] / "models" / "builtin"
    if not any(repo_builtin.glob("*/model_index.json")):
        pytest.skip("no built-in model exported in models/builtin")
    pytest.importorskip("webui.builtin.pipeline")
    manager = ModelManager(checkpoint_dirs=[], diffusers_dirs=[], vae_dirs=[], lora_dirs=[],
                           builtin_dirs=[repo_builtin], cache_dir=world.root / "cache")
    entry = manager.checkpoints()[0]
    assert entry.builtin and entry.arch == Arch.EASEL and entry.supported
    loaded = manager.get(entry.name, "txt2img")
    assert type(loaded.pipe).__name__ == "EaselPipeline"
    assert all(manager.get(entry.name, mode).pipe is loaded.pipe for mode in ("img2img", "inpaint", "edit"))
    assert manager.stats["disk_loads"] == 1
