"""The Train tab over a real Easel: start a run on the tiny built-in model, watch it finish (progress, loss curve,
samples), cancel, and mistakes shown as readable errors naming the field or the file."""
from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from tests.training.conftest import make_dataset


@pytest.fixture
def train_ui(make_easel, tiny_easel_dir: Path):
    """The UI of an Easel whose built-in model folder holds the tiny model (named `tiny-easel` in configs)."""
    from webui.ui.app import build_ui

    easel = make_easel(install_sd1=False, builtin_dir=tiny_easel_dir.parent)
    blocks, ui = build_ui(easel)
    yield blocks, ui
    ui.easel.extras["training"].cancel()
    ui.easel.extras["training"].wait(60)
    blocks.close()


def handler(blocks, name: str):
    found = [f for f in blocks.fns.values() if f.name == name and any(
        getattr(c, "elem_id", None) == "train_progress" for c in f.outputs)]
    assert len(found) == 1, name
    return found[0].fn


def config_text(dataset: str, steps: int = 3) -> str:
    """A config for the tiny model; `dataset` is a path inside the data folder's data/ (`data/ds`)."""
    return (f"base_model: tiny-easel\ndataset: {dataset}\ntrigger: zork\noutput_name: tab-lora\nsteps: {steps}\n"
            "batch_size: 2\nrank: 4\nresolution: [64]\nsample_prompts: [\"a [trigger]\"]\nsample_every: 2\n"
            "sample_steps: 2\n")


def test_start_runs_in_the_background_and_reports(train_ui) -> None:
    blocks, ui = train_ui
    service = ui.easel.extras["training"]
    make_dataset(ui.easel.settings.data_dir / "data" / "ds")
    handler(blocks, "on_start")(config_text("data/ds"))
    assert service.wait(300)
    progress, status, frame, samples, timer = handler(blocks, "on_tick")()
    assert "3 / 3 steps (100%)" in progress
    assert "finished at step 3/3" in status and "tab-lora.safetensors" in status
    assert sorted(set(frame["series"])) == ["loss", "mean of 20"] and list(frame["step"][:3]) == [1, 2, 3]
    assert [caption for _, caption in samples] == ["step 2: a zork", "step 3: a zork"]
    assert all(image.size == (64, 64) for image, _ in samples)
    assert (ui.easel.settings.models_dir / "Lora" / "tab-lora.safetensors").is_file()
    assert timer.active is False  # polling stops once the run is over
    # what Gradio sends to the browser: the plot's rows and the gallery's images (copied to Gradio's cache)
    components = {getattr(c, "elem_id", None): c for c in blocks.blocks.values()}
    assert len(components["train_loss"].postprocess(frame).data) == 6
    assert len(components["train_samples"].postprocess(samples).root) == 2


def test_cancel_stops_and_mistakes_are_readable(train_ui) -> None:
    blocks, ui = train_ui
    service = ui.easel.extras["training"]
    data = ui.easel.settings.data_dir / "data"
    (data / "empty").mkdir(parents=True)
    with pytest.raises(gr.Error, match="rank: must be at least 1"):
        handler(blocks, "on_start")("base_model: tiny-easel\ndataset: data/empty\nrank: 0\n")
    with pytest.raises(gr.Error, match="no images"):
        handler(blocks, "on_start")(config_text("data/empty"))
    dataset = make_dataset(data / "ds")
    (dataset / "img1.txt").unlink()
    with pytest.raises(gr.Error, match="img1.png: caption missing"):
        handler(blocks, "on_start")(config_text("data/ds"))
    (dataset / "img1.txt").write_text("a [trigger]")
    handler(blocks, "on_start")(config_text("data/ds", steps=500))
    with pytest.raises(gr.Error, match="already training"):
        handler(blocks, "on_start")(config_text("data/ds", steps=500))
    handler(blocks, "on_cancel")()
    assert service.wait(120)
    status = service.status()
    assert status.cancelled and not status.running and status.step < 500
    assert "cancelled at step" in handler(blocks, "on_tick")()[1]
