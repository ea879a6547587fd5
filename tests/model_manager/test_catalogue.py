"""The catalogue on its own: it lists and finds models without importing torch, finds a checkpoint by name,
title and hash, changes its listings only on a rescan, names the kind of model in its not-found errors, lists
ControlNet and upscaler folders as their loaders do, and is what the model manager lists from.

The files here are real safetensors files with tiny zero tensors, written with the standard library (an 8-byte
header length, the JSON header, the tensor bytes), so the subprocess test needs nothing heavy to make them.
"""
from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from webui.model_manager.catalogue import Catalogue, ModelNotFoundError
from webui.model_manager.hashes import HashCache
from webui.model_manager.identify import Arch

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "diffusers", "transformers", "gradio", "safetensors", "peft", "accelerate")
SD1_KEYS = {"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 1, 1),
            "cond_stage_model.transformer.text_model.final_layer_norm.weight": (8,),
            "first_stage_model.decoder.conv_out.weight": (3, 8, 1, 1)}
LORA_KEYS = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768)}


def write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None
                      ) -> Path:
    """A valid .safetensors file of float16 zeros with these tensor names and shapes."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, shape in shapes.items():
        size = 2
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x00" * offset)
    return path


def lay_out(root: Path) -> dict[str, Path]:
    """Model folders the way a user has them: checkpoints (one nested), a built-in model, a VAE, a LoRA."""
    dirs = {kind: root / kind for kind in ("Stable-diffusion", "diffusers", "VAE", "Lora", "builtin", "embeddings")}
    write_safetensors(dirs["Stable-diffusion"] / "model.safetensors", SD1_KEYS)
    write_safetensors(dirs["Stable-diffusion"] / "sub" / "Other.safetensors", SD1_KEYS)
    (dirs["Stable-diffusion"] / "old.ckpt").write_bytes(b"pickle")
    (dirs["builtin"] / "easel").mkdir(parents=True)
    (dirs["builtin"] / "easel" / "model_index.json").write_text(json.dumps({"_class_name": "EaselPipeline"}))
    write_safetensors(dirs["VAE"] / "my-vae.safetensors", {"decoder.conv_out.weight": (3, 8, 1, 1)})
    write_safetensors(dirs["Lora"] / "style.safetensors", LORA_KEYS, {"ss_output_name": "style-v2"})
    return dirs


def catalogue_over(dirs: dict[str, Path], hash_file: Path | None = None) -> Catalogue:
    return Catalogue(checkpoint_dirs=[dirs["Stable-diffusion"]], diffusers_dirs=[dirs["diffusers"]],
                     vae_dirs=[dirs["VAE"]], lora_dirs=[dirs["Lora"]], builtin_dirs=[dirs["builtin"]],
                     embedding_dirs=[dirs["embeddings"]], hashes=HashCache(hash_file))


def test_listing_and_lookup_import_nothing_heavy(tmp_path: Path) -> None:
    lay_out(tmp_path)
    code = f"""
import json, sys
from pathlib import Path
from webui.model_manager.catalogue import Catalogue
root = Path(sys.argv[1])
catalogue = Catalogue(checkpoint_dirs=[root / "Stable-diffusion"], lora_dirs=[root / "Lora"], vae_dirs=[root / "VAE"],
                      builtin_dirs=[root / "builtin"])
hashed = catalogue.compute_hash("model")
print(json.dumps({{"names": [e.name for e in catalogue.checkpoints()], "arch": hashed.arch.value,
                  "by_hash": catalogue.find_checkpoint(hashed.short_hash).name,
                  "loras": [(e.name, e.arch.value, e.short_hash) for e in catalogue.loras()],
                  "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          check=True)
    result = json.loads(done.stdout)
    assert result["heavy"] == []
    assert result["names"] == ["easel", "model", "old", "sub/Other"]
    assert (result["arch"], result["by_hash"]) == ("sd1", "model")
    assert [tuple(lo[:2]) for lo in result["loras"]] == [("style", "sd1")] and len(result["loras"][0][2]) == 12


def test_importing_the_catalogue_imports_nothing_heavy() -> None:
    code = f"import sys, webui.model_manager.catalogue; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_find_checkpoint_by_name_title_and_short_hash(tmp_path: Path) -> None:
    dirs = lay_out(tmp_path)
    catalogue = catalogue_over(dirs, tmp_path / "hashes.json")
    entries = {e.name: e for e in catalogue.checkpoints()}
    assert entries["easel"].builtin and entries["easel"].arch == Arch.EASEL
    assert entries["model"].title == "model" and entries["model"].short_hash is None  # not hashed while listing
    assert not entries["old"].supported and "pickle" in entries["old"].reason
    path = dirs["Stable-diffusion"] / "model.safetensors"
    for query in ("model", "MODEL", "model.safetensors", str(path), "  model  "):
        assert catalogue.find_checkpoint(query).path == path, query
    assert catalogue.find_checkpoint("sub/other").name == "sub/Other"  # any case

    hashed = catalogue.compute_hash("model")
    full = hashlib.sha256(path.read_bytes()).hexdigest()
    assert hashed.short_hash == full[:10] and hashed.title == f"model [{full[:10]}]"
    for query in (hashed.title, full[:10], full[:8], full, f"model.safetensors [{full[:10]}]"):
        assert catalogue.find_checkpoint(query).name == "model", query
    assert {e.name: e.title for e in catalogue.checkpoints()}["model"] == hashed.title

    again = catalogue_over(dirs, tmp_path / "hashes.json")  # a new session remembers the hash, computing nothing
    assert again.find_checkpoint(full[:10]).title == hashed.title and again.hashes.stats["computed"] == 0


def test_listings_change_only_on_a_rescan(tmp_path: Path) -> None:
    dirs = lay_out(tmp_path)
    catalogue = catalogue_over(dirs)
    assert [e.name for e in catalogue.checkpoints()] == ["easel", "model", "old", "sub/Other"]
    write_safetensors(dirs["Stable-diffusion"] / "added.safetensors", SD1_KEYS)
    write_safetensors(dirs["Lora"] / "another.safetensors", LORA_KEYS)
    assert "added" not in [e.name for e in catalogue.checkpoints()]
    with pytest.raises(ModelNotFoundError):
        catalogue.find_checkpoint("added")

    catalogue.refresh()
    assert [e.name for e in catalogue.checkpoints()] == ["easel", "added", "model", "old", "sub/Other"]
    assert catalogue.find_checkpoint("added").arch == Arch.SD1
    assert [e.name for e in catalogue.loras()] == ["another", "style"]

    write_safetensors(dirs["Stable-diffusion"] / "added.safetensors", LORA_KEYS)  # the same name, now a LoRA
    (dirs["Lora"] / "another.safetensors").unlink()
    catalogue.refresh()
    added = catalogue.find_checkpoint("added")
    assert not added.supported and added.reason == "this is a LoRA; put it in models/Lora"
    assert [e.name for e in catalogue.refresh_loras()] == ["style"]


def test_unknown_names_raise_errors_naming_the_field(tmp_path: Path) -> None:
    dirs = lay_out(tmp_path)
    catalogue = catalogue_over(dirs)
    with pytest.raises(ModelNotFoundError, match=r"^checkpoint 'modle' not found; close names: model"):
        catalogue.find_checkpoint("modle")
    with pytest.raises(ModelNotFoundError, match=r"^checkpoint: no name given$"):
        catalogue.find_checkpoint(" ")
    with pytest.raises(ModelNotFoundError, match=r"^VAE 'my-vea' not found; close names: my-vae$"):
        catalogue.find_vae("my-vea")
    with pytest.raises(ModelNotFoundError, match=r"^LoRA 'nothing-like-it' not found; available: style$"):
        catalogue.find_lora("nothing-like-it")
    assert catalogue.find_lora("style-v2").name == "style"  # the training run's name is an alias
    assert catalogue.find_segmenter("clipseg") is None

    empty = Catalogue()
    with pytest.raises(ModelNotFoundError, match=r"^checkpoint 'x' not found; no checkpoints are installed$"):
        empty.find_checkpoint("x")
    with pytest.raises(ModelNotFoundError, match=r"the LoRA folders \(models/Lora\) are empty$"):
        empty.find_lora("x")
    with pytest.raises(ModelNotFoundError, match="--allow-hub-downloads"):  # hub ids only with the flag
        empty.find_checkpoint("some-org/some-model")
    empty.allow_hub = True
    hub = empty.find_checkpoint("some-org/some-model")  # an id that matches nothing local: a Hub repository
    assert (hub.kind, hub.name, hub.supported) == ("hub", "some-org/some-model", True)


def test_controlnet_and_upscaler_folders_list_as_their_loaders_do(tmp_path: Path) -> None:
    from tests.controlnet.test_units import extension_module
    from webui.engine.upscalers import Upscalers

    controlnet, esrgan = tmp_path / "ControlNet", tmp_path / "ESRGAN"
    for name in ("canny.safetensors", "sub/depth.pth", "B-pose.bin", "annotators/hed.pth", ".hidden.pth",
                 "notes.txt", "tile/diffusion_pytorch_model.safetensors"):
        write_safetensors(controlnet / name, {"w": (1,)})
    (controlnet / "tile" / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel"}))
    for name in ("4x-UltraSharp.pth", "sub/RealESRGAN_x2plus.safetensors", ".cache/x.pth", "readme.txt",
                 "a-first.ckpt"):
        write_safetensors(esrgan / name, {"w": (1,)})
    catalogue = Catalogue(controlnet_dirs=[controlnet], upscaler_dirs=[esrgan])

    listed = [(e.name, e.path.relative_to(controlnet).as_posix(), e.folder) for e in catalogue.controlnets()]
    assert listed == [("B-pose", "B-pose.bin", False), ("canny", "canny.safetensors", False),
                      ("sub/depth", "sub/depth.pth", False), ("tile", "tile", True)]
    models = extension_module("models").ControlNetModels(folders=lambda: [controlnet], file_hash=lambda p: "0" * 64)
    assert [(e.name, e.path, e.folder) for e in models.scan()] == [(e.name, e.path, e.folder)
                                                                    for e in catalogue.controlnets()]

    assert [e.name for e in catalogue.upscalers()] == ["4x-UltraSharp", "a-first", "sub/RealESRGAN_x2plus"]
    engine_models = [(e.name, e.path) for e in Upscalers([esrgan]).entries() if e.kind == "model"]
    assert engine_models == [(e.name, e.path) for e in catalogue.upscalers()]


def test_the_manager_lists_from_its_catalogue(world) -> None:
    write_safetensors(world.checkpoints / "model.safetensors", SD1_KEYS)
    manager = world.manager()
    assert isinstance(manager.catalogue, Catalogue) and manager.hashes is manager.catalogue.hashes
    assert manager.checkpoints() == manager.catalogue.checkpoints()
    assert manager.find_checkpoint("model").arch == Arch.SD1
    other = world.root / "other-loras"
    write_safetensors(other / "late.safetensors", LORA_KEYS)
    manager.lora_dirs = [other]  # the folders are the catalogue's, settable through the manager
    assert manager.catalogue.lora_dirs == [other]
    assert [e.name for e in manager.refresh_loras()] == ["late"] and manager.find_lora("late").arch == Arch.SD1
