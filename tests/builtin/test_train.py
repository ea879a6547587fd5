"""Training: deterministic batches, a few steps that export a loadable pipeline, resume from the state dir."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from webui.builtin import train

TINY = ["--hidden", "32", "--depth", "1", "--heads", "2", "--text-dim", "32", "--text-depth", "1",
        "--bottleneck", "8", "--batch-size", "4", "--threads", "1"]


def test_batches_are_a_function_of_seed_and_step() -> None:
    a, b = train.make_batch(0, 3, 6), train.make_batch(0, 3, 6)
    assert a.gen_prompts == b.gen_prompts and torch.equal(a.cond_source, b.cond_source)
    assert a.gen_target.shape == (3, 3, 64, 64) and a.cond_source.shape == (3, 4, 64, 64)
    assert train.make_batch(0, 4, 6).gen_prompts != a.gen_prompts


def test_train_exports_and_resumes(tmp_path: Path) -> None:
    from webui.builtin.pipeline import EaselPipeline

    out, state = tmp_path / "out", tmp_path / "state"
    assert train.main(["--out", str(out), "--state-dir", str(state), "--max-steps", "2", *TINY]) == 0
    assert json.loads((out / "training.json").read_text())["step"] == 2
    assert (state / "state.pt").exists() and (state / "loss.csv").exists()
    assert train.main(["--out", str(out), "--state-dir", str(state), "--max-steps", "3", *TINY]) == 0
    assert json.loads((out / "training.json").read_text())["step"] == 3
    pipe = EaselPipeline.from_pretrained(str(out))
    pipe.set_progress_bar_config(disable=True)
    assert pipe("a red circle", num_inference_steps=2).images[0].size == (64, 64)
    fresh = tmp_path / "fresh-state"
    assert train.main(["--out", str(tmp_path / "out2"), "--state-dir", str(fresh), "--max-steps", "4",
                       "--resume-from-weights", str(out), *TINY]) == 0
    assert json.loads((tmp_path / "out2" / "training.json").read_text())["step"] == 4


def test_resume_from_weights_without_a_pixel_decoder_adds_one(tmp_path: Path) -> None:
    """Weights trained without the decoder continue with one; the architecture comes from the weights' config."""
    from webui.builtin.pipeline import EaselPipeline

    old = tmp_path / "old"
    assert train.main(["--out", str(old), "--state-dir", str(tmp_path / "s1"), "--max-steps", "1",
                       "--pixel-decoder", "0", *TINY]) == 0
    assert EaselPipeline.from_pretrained(str(old)).transformer.decoder is None
    new = tmp_path / "new"
    assert train.main(["--out", str(new), "--state-dir", str(tmp_path / "s2"), "--max-steps", "2",
                       "--resume-from-weights", str(old), "--hidden", "64", "--pixel-decoder", "4",
                       *TINY[2:]]) == 0
    pipe = EaselPipeline.from_pretrained(str(new))
    assert pipe.transformer.config.hidden_size == 32 and pipe.transformer.config.pixel_decoder == 4
    hparams = json.loads((new / "training.json").read_text())["hparams"]
    assert hparams["hidden"] == 32 and hparams["pixel_decoder"] == 4
