"""LoRA training reads and writes only inside its folders, and every size it accepts has a limit.

A config's `dataset` must be a folder inside the data folder's `data/`, its `output_dir` inside `models/Lora`,
its `base_model` the name of a model in the model folders. Absolute paths leading elsewhere, `..`, `~` and links
out of those folders are refused, through the config parser and through the Train tab's Start handler (the
function Gradio calls), with an error naming the field; an audit hook records every file opened and folder
listed meanwhile, and shows that nothing outside was read, and nothing outside is written or replaced. A path
outside the folders gets the same answer whether it exists or not. Sizes beyond their limits are refused when
the config is read, before any image is opened; the dataset's image count and pixel budgets are checked from
the files' headers before a pixel is decoded; a second Start while a LoRA trains is refused before its dataset
is looked at.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from tests.training.conftest import make_dataset
from webui.security import PathRefused, resolve_in_roots
from webui.training.config import ConfigError, config_from_dict, config_from_yaml
from webui.training.folders import TrainingFolders

def under(paths: list[str], folder: Path) -> list[str]:
    root = str(folder.resolve())
    return [p for p in paths if os.path.realpath(p).startswith(root)]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.builtin.conftest import make_tiny_pipeline

    folder = tmp_path_factory.mktemp("builtin") / "tiny-easel"
    make_tiny_pipeline().save_pretrained(str(folder))
    return folder


@dataclass
class World:
    easel: object
    blocks: gr.Blocks
    data: Path  # Easel's data folder
    outside: Path  # a folder beside it: a dataset, a model and a LoRA folder no config may touch
    checkpoint: Path  # a user's checkpoint, models/Stable-diffusion/fake.safetensors

    @property
    def folders(self) -> TrainingFolders:
        return TrainingFolders.of_settings(self.easel.settings)

    def start(self, text: str):
        found = [f for f in self.blocks.fns.values() if f.name == "on_start" and any(
            getattr(c, "elem_id", None) == "train_progress" for c in f.outputs)]
        assert len(found) == 1
        return found[0].fn(text)

    @property
    def service(self):
        return self.easel.extras["training"]


@pytest.fixture
def world(make_easel, tiny_model: Path, tmp_path: Path):
    """An Easel (UI built) whose built-in model is the tiny one, a dataset in data/ds, a user's checkpoint, and
    outside its data folder a dataset, a model and a LoRA folder, with links to them from inside."""
    from webui.ui.app import build_ui

    easel = make_easel(install_sd1=False, builtin_dir=tiny_model.parent)
    blocks, _ = build_ui(easel)
    data = easel.settings.data_dir
    outside = tmp_path / "outside"
    make_dataset(outside / "ds")
    shutil.copytree(tiny_model, outside / "model")
    (outside / "loras").mkdir()
    make_dataset(data / "data" / "ds")
    checkpoint = data / "models" / "Stable-diffusion" / "fake.safetensors"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"the user's own checkpoint")
    (data / "models" / "Lora").mkdir(parents=True, exist_ok=True)
    (data / "models" / "diffusers").mkdir(parents=True, exist_ok=True)
    os.symlink(outside / "ds", data / "data" / "link")
    os.symlink(outside / "loras", data / "models" / "Lora" / "link")
    os.symlink(outside / "model", data / "models" / "diffusers" / "linked")
    yield World(easel, blocks, data, outside, checkpoint)
    easel.extras["training"].cancel()
    easel.extras["training"].wait(60)
    blocks.close()


def config(changes: dict | None = None, **more) -> dict:
    return {"base_model": "tiny-easel", "dataset": "data/ds", "trigger": "zork", "output_name": "fake",
            "steps": 2, "batch_size": 2, "rank": 4, **(changes or {}), **more}


def as_yaml(data: dict) -> str:
    return "".join(f"{key}: {json.dumps(value)}\n" for key, value in data.items())  # JSON values are YAML


def escapes(w: World) -> list[tuple[str, str]]:
    """(field, value): absolute paths, `..`, `~` and links leading out of each field's folders."""
    return [
        ("dataset", str(w.outside / "ds")), ("dataset", "../outside/ds"), ("dataset", "data/../../outside/ds"),
        ("dataset", "~/ds"), ("dataset", "~root"), ("dataset", "data/link"), ("dataset", "/root"),
        ("dataset", "models/Lora"),
        ("output_dir", str(w.outside / "loras")), ("output_dir", "../outside/loras"),
        ("output_dir", "models/Lora/../Stable-diffusion"), ("output_dir", "models/Stable-diffusion"),
        ("output_dir", str(w.checkpoint.parent)), ("output_dir", "~/loras"), ("output_dir", "models/Lora/link"),
        ("base_model", str(w.outside / "model")), ("base_model", "../../../outside/model"),
        ("base_model", "~/model"), ("base_model", "linked"), ("base_model", "/etc/passwd"),
        ("base_model", "../Stable-diffusion/fake"),
    ]


def test_escapes_are_refused_by_the_parser_and_the_train_tab(world: World, touched: list[str]) -> None:
    outside_before, checkpoint_before = snapshot(world.outside), world.checkpoint.read_bytes()
    lora_before = snapshot(world.data / "models" / "Lora")
    touched.clear()  # from here on, only what the parser and the tab do
    for field, value in escapes(world):
        with pytest.raises(ConfigError) as info:
            config_from_dict(config({field: value}), folders=world.folders)
        assert info.value.field == field and str(info.value).startswith(f"{field}: must be "), (field, value)
        with pytest.raises(gr.Error) as shown:
            world.start(as_yaml(config({field: value})))
        assert shown.value.message == str(info.value)  # the tab shows the parser's message, naming the field
        assert not world.service.status().running
    assert under(touched, world.outside) == []  # nothing outside was opened or listed
    assert snapshot(world.outside) == outside_before  # nor written or replaced
    assert world.checkpoint.read_bytes() == checkpoint_before
    assert snapshot(world.data / "models" / "Lora") == lora_before
    # the same folders, named the way they are allowed, are accepted
    accepted = config_from_dict(config(output_dir="models/Lora/sub", base_model="tiny-easel"), folders=world.folders)
    assert accepted.dataset == (world.data / "data" / "ds").resolve()
    assert accepted.output_dir == (world.data / "models" / "Lora" / "sub").resolve()
    absolute = config_from_dict(config(dataset=str(world.data / "data" / "ds")), folders=world.folders)
    assert absolute.dataset == accepted.dataset  # an absolute path is fine when it points inside


def test_outside_and_missing_folders_get_the_same_answer(world: World, touched: list[str]) -> None:
    values = ["/root", "/no/such/folder", str(world.outside / "ds"), str(world.outside / "missing"),
              "data/missing", "data/link", "../outside/ds", "../outside/missing"]
    parsed, shown = set(), set()
    for value in values:
        with pytest.raises(ConfigError) as info:
            config_from_dict(config(dataset=value), folders=world.folders)
        parsed.add(str(info.value).replace(repr(value), "<value>"))
        with pytest.raises(gr.Error) as tab:
            world.start(as_yaml(config(dataset=value)))
        shown.add(tab.value.message.replace(repr(value), "<value>"))
    assert parsed == {"dataset: must be a folder inside data/ (in Easel's data folder), got <value>"}
    assert shown == parsed
    assert under(touched, world.outside) == [] and under(touched, Path("/root")) == []
    names = ["/etc/passwd", "/no/such/model", str(world.outside / "model"), "no-such-model", "linked"]
    answers = set()
    for value in names:
        with pytest.raises(ConfigError) as info:
            config_from_dict(config(base_model=value), folders=world.folders)
        answers.add(str(info.value).replace(repr(value), "<value>"))
    assert len(answers) == 1 and answers.pop().startswith("base_model: must be the name of a model")


BOMBS = [
    ({"resolution": 1048576}, "resolution", "2048"),
    ({"resolution": [[64, 1048576]]}, "resolution", "2048"),
    ({"resolution": list(range(8, 8 * 40, 8))}, "resolution", "32"),
    ({"batch_size": 100000}, "batch_size", "64"),
    ({"preservation_batch_size": 100000}, "preservation_batch_size", "64"),
    ({"rank": 100000000}, "rank", "1024"),
    ({"alpha": 1e9}, "alpha", "1024"),
    ({"steps": 1000000000}, "steps", "100000"),
    ({"sample_every": 1000000000}, "sample_every", "100000"),
    ({"save_every": 1000000000}, "save_every", "100000"),
    ({"learning_rate": 1e9}, "learning_rate", "10"),
    ({"trigger_embedding_lr": 1e9}, "trigger_embedding_lr", "10"),
    ({"weight_decay": 1e9}, "weight_decay", "1"),
    ({"sample_steps": 100000}, "sample_steps", "150"),
    ({"sample_guidance": 1e9}, "sample_guidance", "30"),
    ({"sample_prompts": ["a [trigger]"] * 1000}, "sample_prompts", "16"),
    ({"sample_prompts": ["x" * 100000]}, "sample_prompts", "1000"),
    ({"target_modules": ["qkv"] * 1000}, "target_modules", "64"),
    ({"preservation_words": ["cross"] * 1000}, "preservation_words", "64"),
    ({"prior_preservation": 1e9}, "prior_preservation", "100"),
    ({"threads": 100000}, "threads", "256"),
    ({"seed": 2**64}, "seed", "4294967295"),
    ({"trigger": "x" * 100000}, "trigger", "200"),
    ({"learning_rate": float("nan")}, "learning_rate", "10"),
]


@pytest.mark.parametrize("changes, field, limit", BOMBS, ids=[b[1] + str(i) for i, b in enumerate(BOMBS)])
def test_size_bombs_are_refused_when_the_config_is_read(changes: dict, field: str, limit: str, tmp_path: Path,
                                                        touched: list[str]) -> None:
    dataset = make_dataset(tmp_path / "data" / "ds")
    touched.clear()
    with pytest.raises(ConfigError) as info:
        config_from_dict(config(changes, base_model="easel-shapes"), base_dir=tmp_path)
    assert info.value.field == field and str(info.value).startswith(f"{field}: ")
    assert limit in str(info.value), str(info.value)
    assert under(touched, dataset) == []  # refused before any image was opened
    assert len(str(info.value)) < 400  # the message does not echo a huge value back


def test_a_huge_config_text_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config: .* the limit is 100,000"):
        config_from_yaml("trigger: " + "x" * 200_000 + "\n", base_dir=tmp_path)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds no pixels: its size is read from the header alone."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def headers_only(folder: Path, n: int, width: int, height: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"big{i}.png").write_bytes(png_header(width, height))
        (folder / f"big{i}.txt").write_text("a [trigger]")
    return folder


def test_dataset_limits_are_checked_before_a_pixel_is_decoded(world: World, touched: list[str], monkeypatch) -> None:
    from PIL import Image

    from webui.training.dataset import MAX_IMAGES, DatasetError, load_dataset

    # The app ties Pillow's decoding limit to its settings (a 8192x8192 image is then refused on its own); here
    # Pillow refuses only what is over the training limit, so each of the limits below is reached.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 8192 * 8192 // 2)

    data = world.data / "data"
    many = data / "many"
    many.mkdir()
    for i in range(MAX_IMAGES + 1):
        (many / f"{i}.png").touch()
    touched.clear()
    with pytest.raises(gr.Error, match="dataset: many holds more than 10,000 images; the limit is 10,000"):
        world.start(as_yaml(config(dataset="data/many")))
    assert [p for p in under(touched, many) if os.path.realpath(p) != str(many.resolve())] == []  # listed only
    headers_only(data / "huge", 1, 9000, 9000)
    over = r"big0.png: (9000x9000|81,000,000 pixels) is over the limit of 67,108,864 pixels per image"
    with pytest.raises(gr.Error, match=over):
        world.start(as_yaml(config(dataset="data/huge")))
    headers_only(data / "heavy", 65, 8192, 8192)  # each at the per-image limit, 65 of them over the total
    with pytest.raises(gr.Error, match=r"dataset: heavy: the images hold more than 4,294,967,296 pixels"):
        world.start(as_yaml(config(dataset="data/heavy")))
    wide = data / "wide"  # 129 small images, each kept in memory at its bucket, 2048x2048
    wide.mkdir()
    for i in range(129):
        Image.new("RGB", (16, 16), (i, 0, 0)).save(wide / f"{i}.png")
        (wide / f"{i}.txt").write_text("a [trigger]")
    with pytest.raises(gr.Error, match=r"dataset: wide: the images resized to their buckets hold more than "
                                       r"536,870,912 pixels"):
        world.start(as_yaml(config(dataset="data/wide", resolution=2048)))
    with pytest.raises(DatasetError, match="pixels per image"):
        load_dataset(data / "huge", ((64, 64),), "zork")  # the trainer's own reading checks the same
    assert not world.service.status().running


def test_a_second_start_is_refused_before_its_dataset_is_read(world: World, touched: list[str]) -> None:
    other = make_dataset(world.data / "data" / "other")
    world.start(as_yaml(config(steps=500, output_name="long")))
    assert world.service.status().running
    touched.clear()
    for text in (as_yaml(config(dataset="data/other", output_name="second")),
                 as_yaml(config(dataset="data/other", rank=100000000))):  # busy comes first, whatever else
        with pytest.raises(gr.Error, match="a LoRA is already training"):
            world.start(text)
    assert under(touched, other) == []
    assert world.service.cancel() and world.service.wait(120)
    assert not (world.data / "models" / "Lora" / "second.safetensors").exists()


def test_images_are_decoded_on_the_training_thread(world: World) -> None:
    """Start checks the files and their headers; decoding and resizing happen in the background, so an image
    whose pixels are broken fails the run (shown in the tab), not the request."""
    import numpy as np

    broken = make_dataset(world.data / "data" / "broken", n=2)
    noise = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(broken / "img1.png")
    data = (broken / "img1.png").read_bytes()
    (broken / "img1.png").write_bytes(data[: len(data) // 2])  # header intact, pixel data cut
    world.start(as_yaml(config(dataset="data/broken")))
    assert world.service.wait(120)
    status = world.service.status()
    assert not status.running and "img1.png: unreadable image" in (status.error or "")


def test_an_existing_lora_that_is_not_the_runs_own_is_kept(world: World) -> None:
    loras = world.data / "models" / "Lora"
    (loras / "fake.safetensors").write_bytes(b"a LoRA the user downloaded")
    shown = world.start(as_yaml(config()))[1]  # the status line right after Start
    assert "saving as fake-1: fake.safetensors already exists" in shown
    assert world.service.wait(120) and world.service.status().error is None
    assert (loras / "fake.safetensors").read_bytes() == b"a LoRA the user downloaded"
    assert world.service.status().config.output_name == "fake-1"
    assert world.service.status().output == (loras / "fake-1.safetensors").resolve()
    world.start(as_yaml(config(steps=3)))  # the same config again resumes its own fake-1
    assert world.service.wait(120) and world.service.status().error is None
    assert world.service.status().output == (loras / "fake-1.safetensors").resolve()
    assert not (loras / "fake-2.safetensors").exists()
    assert world.checkpoint.read_bytes() == b"the user's own checkpoint"


def test_resolve_in_roots(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "x").mkdir(parents=True)
    b.mkdir()
    (tmp_path / "secret").mkdir()
    os.symlink(tmp_path / "secret", a / "out")
    os.symlink(b, a / "to-b")
    os.symlink(a / "loop", a / "loop")
    assert resolve_in_roots([a, b], "x", "f") == (a / "x").resolve()
    assert resolve_in_roots([a, b], str(b), "f") == b.resolve()  # absolute, inside a root
    assert resolve_in_roots([a, b], "to-b", "f") == b.resolve()  # a link to another allowed folder
    assert resolve_in_roots([a, b], "new/folder", "f") == (a / "new" / "folder").resolve()
    messages = set()
    for value in ["out", "../secret", "x/../x", "~", "~/x", "/etc", "C:\\x", "a\x00b", "", "loop", "missing"]:
        with pytest.raises(PathRefused) as info:
            resolve_in_roots([a, b], value, "f", folder=True, where="the allowed folders")
        assert info.value.field == "f"
        messages.add(info.value.message.replace(repr(value), "<value>"))
    assert messages == {"must be a path inside the allowed folders, got <value>"}
