"""LoRA files in the layouts people download, on tiny real models of every family the manager loads.

Each case writes a random LoRA for the tiny model's own layers, applies it through the manager and checks that it
changes the image, and that dropping it gives the base image back exactly. A LoRA for another family is refused
with a message naming both families.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.lora.conftest import TEXT_ATTENTION, UNET_ATTENTION
from tests.lora.lora_files import comfy_layout, kohya_layout, peft_layout, random_lora, save
from webui.model_manager.identify import Arch
from webui.model_manager.manager import LoraError, ModelManager

SEQUENCE_ARCHS = {Arch.SD3, Arch.FLUX, Arch.ZIMAGE, Arch.QWEN}


def generate(loaded, seed: int = 0, prompt: str = "a red cube") -> np.ndarray:
    kwargs = {"prompt": prompt, "num_inference_steps": 2, "height": 32, "width": 32,
              "generator": torch.Generator("cpu").manual_seed(seed), "output_type": "np"}
    if loaded.arch in SEQUENCE_ARCHS:
        kwargs["max_sequence_length"] = 32
    if loaded.arch == Arch.EASEL:
        kwargs["guidance_scale"] = 2.0
    return np.asarray(loaded.pipe(**kwargs).images[0])


def manager_for(tmp_path: Path, folder: Path, name: str, builtin: bool = False) -> ModelManager:
    models = tmp_path / ("builtin" if builtin else "diffusers")
    shutil.copytree(folder, models / name)
    return ModelManager(checkpoint_dirs=[], diffusers_dirs=[] if builtin else [models], vae_dirs=[],
                        lora_dirs=[tmp_path / "Lora"], builtin_dirs=[models] if builtin else [],
                        hash_cache_path=tmp_path / "hashes.json", cache_dir=tmp_path / "cache")


def components(folder: Path, *names: str) -> list[torch.nn.Module]:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(folder))
    return [getattr(pipe, n) for n in names]


def text_model_paths(pairs: dict, encoder: torch.nn.Module) -> dict:
    """Name CLIP layers as files do (transformers 4's `text_model.` prefix)."""
    if hasattr(encoder, "text_model"):
        return pairs
    return {f"text_model.{path}": pair for path, pair in pairs.items()}


# -------------------------------------------------------------------------------------------- makers
def sd1_files(folder: Path, lora_dir: Path) -> dict[str, Path]:
    unet, te = components(folder, "unet", "text_encoder")
    unet_pairs = random_lora(unet, UNET_ATTENTION, seed=1)
    te_pairs = text_model_paths(random_lora(te, TEXT_ATTENTION, seed=2), te)
    conv_pairs = random_lora(unet, r"resnets\.0\.conv[12]$", seed=3, conv=True)
    meta = {"ss_base_model_version": "sd_v1"}
    return {
        "kohya": save(lora_dir / "kohya.safetensors",
                      {**kohya_layout(unet_pairs, "lora_unet", 2.0), **kohya_layout(te_pairs, "lora_te")}, meta),
        "peft": save(lora_dir / "peft.safetensors",
                     {**peft_layout(unet_pairs, "unet"), **peft_layout(te_pairs, "text_encoder")}, meta),
        "locon": save(lora_dir / "locon.safetensors",
                      {**kohya_layout(unet_pairs, "lora_unet"), **kohya_layout(conv_pairs, "lora_unet", 2.0)}, meta),
    }


def sdxl_files(folder: Path, lora_dir: Path) -> dict[str, Path]:
    unet, te, te2 = components(folder, "unet", "text_encoder", "text_encoder_2")
    unet_pairs = random_lora(unet, UNET_ATTENTION, seed=1)
    te_pairs = text_model_paths(random_lora(te, TEXT_ATTENTION, seed=2), te)
    te2_pairs = text_model_paths(random_lora(te2, TEXT_ATTENTION, seed=3), te2)
    return {
        "kohya": save(lora_dir / "kohya.safetensors", {**kohya_layout(unet_pairs, "lora_unet"),
                                                       **kohya_layout(te_pairs, "lora_te1"),
                                                       **kohya_layout(te2_pairs, "lora_te2", 1.0)}),
        "peft": save(lora_dir / "peft.safetensors", {**peft_layout(unet_pairs, "unet"),
                                                     **peft_layout(te_pairs, "text_encoder"),
                                                     **peft_layout(te2_pairs, "text_encoder_2")}),
    }


def transformer_files(folder: Path, lora_dir: Path, match: str, meta: dict[str, str]) -> dict[str, Path]:
    (transformer,) = components(folder, "transformer")
    pairs = random_lora(transformer, match, seed=1)
    return {"peft": save(lora_dir / "peft.safetensors", peft_layout(pairs, "transformer"), meta),
            "comfyui": save(lora_dir / "comfyui.safetensors", comfy_layout(pairs), meta)}


def sd3_files(folder: Path, lora_dir: Path) -> dict[str, Path]:
    return transformer_files(folder, lora_dir, r"transformer_blocks\.\d+\.attn\.(to_q|to_k|to_v|add_q_proj)$",
                             {"modelspec.architecture": "stable-diffusion-v3-medium/lora"})


def flux_files(folder: Path, lora_dir: Path) -> dict[str, Path]:
    files = transformer_files(folder, lora_dir, r"transformer_blocks\.\d+\.attn\.(to_q|to_k|to_v)$",
                              {"ss_base_model_version": "flux1"})
    # BFL module names (what kohya's sd-scripts and ComfyUI save): fused qkv, single-block linear2. (diffusers
    # splits single-block linear1 at full-size Flux widths, which a tiny model does not have.)
    gen = torch.Generator().manual_seed(5)
    dim, mlp, r = 32, 128, 4
    shapes = {"double_blocks_0_img_attn_qkv": (dim, 3 * dim), "double_blocks_0_img_attn_proj": (dim, dim),
              "double_blocks_0_txt_attn_qkv": (dim, 3 * dim), "single_blocks_0_linear2": (dim + mlp, dim)}
    pairs = {name: (torch.randn(r, i, generator=gen) * 0.3, torch.randn(o, r, generator=gen) * 0.3)
             for name, (i, o) in shapes.items()}
    kohya = {}
    comfy = {}
    for name, (down, up) in pairs.items():
        kohya.update({f"lora_unet_{name}.lora_down.weight": down, f"lora_unet_{name}.lora_up.weight": up,
                      f"lora_unet_{name}.alpha": torch.tensor(2.0)})
        dotted = name.replace("_blocks_", "_blocks.").replace("blocks.0_", "blocks.0.").replace("_attn_", "_attn.")
        comfy.update({f"diffusion_model.{dotted}.lora_A.weight": down, f"diffusion_model.{dotted}.lora_B.weight": up})
    files["kohya"] = save(lora_dir / "kohya.safetensors", kohya)
    files["comfyui"] = save(lora_dir / "comfyui.safetensors", comfy)
    return files


def zimage_files(folder: Path, lora_dir: Path) -> dict[str, Path]:
    files = transformer_files(folder, lora_dir, r"layers\.\d+\.attention\.(to_q|to_k|to_v)$", {})
    (transformer,) = components(folder, "transformer")
    pairs = random_lora(transformer, r"layers\.\d+\.attention\.(to_q|to_k|to_v)$", seed=2)
    files["kohya"] = save(lora_dir / "kohya.safetensors", kohya_layout(pairs, "lora_unet", 2.0))
    return files


def easel_files(folder: Path, lora_dir: Path) -> dict[str, Path]:
    from webui.builtin.model import EaselTransformer

    transformer = EaselTransformer.from_pretrained(str(folder / "transformer"))
    pairs = random_lora(transformer, r"blocks\.\d+\.(qkv|proj)$", seed=1)
    meta = {"easel_base_model": "tiny", "ss_network_dim": "4", "ss_network_alpha": "2"}
    return {"easel": save(lora_dir / "easel.safetensors", peft_layout(pairs, "transformer"), meta),
            "kohya": save(lora_dir / "kohya.safetensors", kohya_layout(pairs, "lora_unet", 2.0)),
            "comfyui": save(lora_dir / "comfyui.safetensors", comfy_layout(pairs), meta)}


@pytest.fixture(scope="module")
def easel_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.builtin.conftest import make_tiny_pipeline

    folder = tmp_path_factory.mktemp("easel") / "tiny-easel"
    make_tiny_pipeline().save_pretrained(str(folder))
    return folder


CASES = [("sd1", sd1_files, ["kohya", "peft", "locon"]), ("sdxl", sdxl_files, ["kohya", "peft"]),
         ("sd3", sd3_files, ["peft", "comfyui"]), ("flux", flux_files, ["peft", "kohya", "comfyui"]),
         ("zimage", zimage_files, ["peft", "comfyui", "kohya"])]


@pytest.mark.parametrize("family,make,layouts", CASES, ids=[c[0] for c in CASES])
def test_layouts_change_the_image_and_unload_exactly(tmp_path, tiny_family, family, make, layouts) -> None:
    folder = tiny_family(family)
    manager = manager_for(tmp_path, folder, "tiny")
    files = make(folder, tmp_path / "Lora")
    loaded = manager.get("tiny", "txt2img")
    base = generate(loaded)
    images = {}
    for layout in layouts:
        manager.refresh_loras()
        applied = manager.apply_loras(loaded, [(layout, 1.0)])
        assert applied[0].name == layout and len(applied[0].short_hash) == 12
        images[layout] = generate(loaded)
        assert not np.array_equal(images[layout], base), f"{family} {layout}: the LoRA changed nothing"
        manager.apply_loras(loaded, [])
        assert np.array_equal(generate(loaded), base), f"{family} {layout}: unloading did not restore the base"
    assert files


def test_builtin_model_layouts(tmp_path, easel_folder) -> None:
    manager = manager_for(tmp_path, easel_folder, "tiny-easel", builtin=True)
    easel_files(easel_folder, tmp_path / "Lora")
    by_name = {e.name: e for e in manager.loras()}
    assert by_name["easel"].arch == Arch.EASEL and by_name["easel"].format == "easel"
    assert by_name["kohya"].arch == Arch.EASEL
    loaded = manager.get("tiny-easel", "txt2img")
    base = generate(loaded)
    images = {}
    for name in ("easel", "kohya", "comfyui"):
        manager.apply_loras(loaded, [(name, 1.0)])
        images[name] = generate(loaded)
        assert not np.array_equal(images[name], base)
    # The same weights and alpha in three layouts: the same model change.
    assert np.abs(images["easel"] - images["kohya"]).max() < 1e-5
    assert np.abs(images["easel"] - images["comfyui"]).max() < 1e-5
    manager.apply_loras(loaded, [])
    assert np.array_equal(generate(loaded), base)
    for mode in ("img2img", "inpaint"):  # every mode shares the transformer, so the LoRA reaches them too
        assert manager.get("tiny-easel", mode).pipe.transformer is loaded.pipe.transformer


def test_builtin_lora_bundled_trigger_vector(tmp_path, easel_folder) -> None:
    """A LoRA with a learned vector for its trigger word (`bundle_emb.<word>.string_to_param.*`): while it is
    active the word reads that vector, so only prompts with the word change; weight 0, another LoRA or none
    give exactly what they gave without it; fusing and in-place hot-swapping carry the vector too."""
    from webui.builtin.model import EaselTransformer
    from webui.model_manager.manager import LoraOptions

    transformer = EaselTransformer.from_pretrained(str(easel_folder / "transformer"))
    pairs = random_lora(transformer, r"blocks\.\d+\.(qkv|proj)$", seed=1)
    meta = {"easel_base_model": "tiny", "ss_network_dim": "4", "ss_network_alpha": "2", "easel_trigger": "zqx"}
    width = transformer.config.text_dim
    vector = torch.randn(1, width, generator=torch.Generator().manual_seed(3)) * 3
    save(tmp_path / "Lora" / "plain.safetensors", peft_layout(pairs, "transformer"), meta)
    save(tmp_path / "Lora" / "bundled.safetensors",
         {**peft_layout(pairs, "transformer"), "bundle_emb.zqx.string_to_param.*": vector}, meta)
    save(tmp_path / "Lora" / "too-wide.safetensors",
         {**peft_layout(pairs, "transformer"), "bundle_emb.zqx.string_to_param.*": torch.zeros(1, width + 1)}, meta)

    manager = manager_for(tmp_path, easel_folder, "tiny-easel", builtin=True)
    loaded = manager.get("tiny-easel", "txt2img")
    base = {p: generate(loaded, prompt=p) for p in ("a red zqx", "a red cube")}
    manager.apply_loras(loaded, [("plain", 1.0)])
    plain = {p: generate(loaded, prompt=p) for p in base}
    manager.apply_loras(loaded, [("bundled", 1.0)])
    bundled = {p: generate(loaded, prompt=p) for p in base}
    assert np.abs(bundled["a red zqx"] - plain["a red zqx"]).max() > 1e-3  # the word reads the learned vector
    assert np.array_equal(bundled["a red cube"], plain["a red cube"])  # prompts without the word: unchanged
    inpaint = manager.get("tiny-easel", "inpaint")
    assert "zqx" in inpaint.pipe.active_words()  # every mode of the checkpoint shares the LoRA's words
    manager.apply_loras(loaded, [("bundled", 0.0)])
    assert loaded.pipe.active_words() == {}
    # weight 0 = no LoRA, the word included
    assert np.array_equal(generate(loaded, prompt="a red zqx"), base["a red zqx"])
    manager.apply_loras(loaded, [("plain", 1.0)])
    assert np.array_equal(generate(loaded, prompt="a red zqx"), plain["a red zqx"])
    manager.apply_loras(loaded, [])
    assert np.array_equal(generate(loaded, prompt="a red zqx"), base["a red zqx"])
    with pytest.raises(LoraError, match=r"too-wide.*\[1, %d\].*\[n, %d\]" % (width + 1, width)):
        manager.apply_loras(loaded, [("too-wide", 1.0)])
    assert np.array_equal(generate(loaded, prompt="a red zqx"), base["a red zqx"])

    manager.lora_options = lambda: LoraOptions(fuse=True)  # the same set twice in a row: folded into the weights
    for _ in range(2):
        manager.apply_loras(loaded, [("bundled", 1.0)])
    assert manager.lora_stack(loaded).fused is not None
    # the word still reads the vector
    assert np.abs(generate(loaded, prompt="a red zqx") - bundled["a red zqx"]).max() < 1e-4
    manager.apply_loras(loaded, [])
    assert np.array_equal(generate(loaded, prompt="a red zqx"), base["a red zqx"])

    swapping = manager_for(tmp_path / "swap", easel_folder, "tiny-easel", builtin=True)
    swapping.lora_dirs = [tmp_path / "Lora"]
    swapping.lora_options = lambda: LoraOptions(hotswap=True, max_rank=8)
    hot = swapping.get("tiny-easel", "txt2img")
    for name in ("bundled", "plain", "bundled"):
        swapping.apply_loras(hot, [(name, 1.0)])
        wanted = (bundled if name == "bundled" else plain)["a red zqx"]
        assert np.abs(generate(hot, prompt="a red zqx") - wanted).max() < 1e-4
    swapping.apply_loras(hot, [])
    assert np.array_equal(generate(hot, prompt="a red zqx"), base["a red zqx"])


def test_lora_for_another_family_is_refused_naming_both(tmp_path, tiny_family) -> None:
    folder = tiny_family("sdxl")
    manager = manager_for(tmp_path, folder, "tiny-xl")
    unet = components(tiny_family("sd1"), "unet")[0]
    save(tmp_path / "Lora" / "sd1-style.safetensors", kohya_layout(random_lora(unet, UNET_ATTENTION), "lora_unet"),
         {"ss_base_model_version": "sd_v1"})
    loaded = manager.get("tiny-xl", "txt2img")
    with pytest.raises(LoraError, match=r"SD 1\.x.*tiny-xl.*SDXL"):
        manager.apply_loras(loaded, [("sd1-style", 1.0)])
    assert loaded.pipe.get_list_adapters() in ({}, {"unet": [], "text_encoder": [], "text_encoder_2": []}) or not any(
        loaded.pipe.get_list_adapters().values())


def test_lora_that_names_no_layer_is_refused(tmp_path, tiny_family) -> None:
    manager = manager_for(tmp_path, tiny_family("sd1"), "tiny")
    gen = torch.Generator().manual_seed(0)
    save(tmp_path / "Lora" / "stray.safetensors",
         {"unet.no_such_block.to_q.lora_A.weight": torch.randn(4, 32, generator=gen),
          "unet.no_such_block.to_q.lora_B.weight": torch.randn(32, 4, generator=gen)})
    loaded = manager.get("tiny", "txt2img")
    base = generate(loaded)
    with pytest.raises(LoraError, match="stray"):
        manager.apply_loras(loaded, [("stray", 1.0)])
    manager.apply_loras(loaded, [])
    assert np.array_equal(generate(loaded), base)


def test_big_files_are_hashed_when_first_used(tmp_path, tiny_family, monkeypatch) -> None:
    import webui.model_manager.catalogue as catalogue_module

    monkeypatch.setattr(catalogue_module, "HASH_AT_SCAN_LIMIT", 0)  # every file counts as big
    manager = manager_for(tmp_path, tiny_family("sd1"), "tiny")
    sd1_files(tiny_family("sd1"), tmp_path / "Lora")
    assert {e.name: e.short_hash for e in manager.loras()}["peft"] is None
    applied = manager.apply_loras(manager.get("tiny", "txt2img"), [("peft", 0.5)])
    listed = {e.name: e for e in manager.loras()}
    assert listed["peft"].short_hash == applied[0].short_hash and len(applied[0].short_hash) == 12
    assert listed["kohya"].short_hash is None


def test_trainer_round_trip_for_the_builtin_model(tmp_path, easel_folder) -> None:
    """What the trainer writes (PEFT adapter, lora_alpha != rank) loads back as the same model change."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    from webui.builtin.pipeline import EaselPipeline
    from webui.model_manager.lora_writer import LoraMetadata, lora_file_tensors, write_lora

    trained = EaselPipeline.from_pretrained(str(easel_folder))
    trained.set_progress_bar_config(disable=True)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=["qkv", "proj", "mlp.0", "mlp.2"]),
                            trained.transformer, adapter_name="concept")
    with torch.no_grad():
        for name, param in trained.transformer.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(len(name)))
    wanted = trained(prompt="a red cube", num_inference_steps=2, height=32, width=32, guidance_scale=2.0,
                     generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    state = lora_file_tensors(get_peft_model_state_dict(trained.transformer, adapter_name="concept"), "transformer")
    assert all(k.startswith("transformer.blocks.") and (".lora_A.weight" in k or ".lora_B.weight" in k) for k in state)
    write_lora(tmp_path / "Lora" / "concept.safetensors", state,
               LoraMetadata(Arch.EASEL, "concept", rank=4, alpha=8, base_model="tiny-easel", base_hash="0123456789",
                            trigger="zqx", steps=10, num_train_images=3))

    manager = manager_for(tmp_path, easel_folder, "tiny-easel", builtin=True)
    (entry,) = manager.loras()
    assert entry.arch == Arch.EASEL and entry.trigger_words == ("zqx",) and entry.metadata["ss_network_alpha"] == "8"
    loaded = manager.get("tiny-easel", "txt2img")
    manager.apply_loras(loaded, [("concept", 1.0)])
    assert np.abs(generate(loaded) - wanted).max() < 1e-4


def test_hotswap_keeps_the_compiled_builtin_model_compiled(tmp_path, easel_folder) -> None:
    """LoRAs of different ranks swap into a torch.compile'd transformer with no recompilation, and give the
    same images as the named-adapter path."""
    import torch._dynamo

    from webui.builtin.model import EaselTransformer
    from webui.model_manager.manager import LoraOptions

    transformer = EaselTransformer.from_pretrained(str(easel_folder / "transformer"))
    for name, seed, rank in (("a", 1, 4), ("b", 2, 8)):
        pairs = random_lora(transformer, r"blocks\.\d+\.(qkv|proj)$", rank=rank, seed=seed)
        save(tmp_path / "Lora" / f"{name}.safetensors", peft_layout(pairs, "transformer"),
             {"easel_base_model": "tiny", "ss_network_alpha": str(rank / 2)})
    reference = manager_for(tmp_path / "named", easel_folder, "tiny-easel", builtin=True)
    reference.lora_dirs = [tmp_path / "Lora"]
    named = reference.get("tiny-easel", "txt2img")
    expected = {}
    for name in ("a", "b"):
        reference.apply_loras(named, [(name, 0.7)])
        expected[name] = generate(named)
    reference.apply_loras(named, [])
    base = generate(named)

    manager = manager_for(tmp_path / "swap", easel_folder, "tiny-easel", builtin=True)
    manager.lora_dirs = [tmp_path / "Lora"]
    manager.lora_options = lambda: LoraOptions(hotswap=True, compile=True, max_rank=8)
    loaded = manager.get("tiny-easel", "txt2img")
    torch._dynamo.reset()
    try:
        manager.apply_loras(loaded, [("a", 0.7)])
        first = generate(loaded)  # compiles
        with torch._dynamo.config.patch(error_on_recompile=True):
            for name in ("b", "a", "b"):
                manager.apply_loras(loaded, [(name, 0.7)])
                assert np.abs(generate(loaded) - expected[name]).max() < 1e-4
            manager.apply_loras(loaded, [])  # the slot stays, at weight 0
            assert np.abs(generate(loaded) - base).max() < 1e-5
        assert np.abs(first - expected["a"]).max() < 1e-4
        stack = manager.lora_stack(loaded)
        assert stack.compiled and stack.stats["hotswaps"] == 3 and stack.slots == [stack.slots[0]]
    finally:
        torch._dynamo.reset()
