"""The shipped example LoRA on the shipped built-in model, as a new user meets it: trained on these very weights,
listed with its trigger word, and `<lora:easel-example-heart:1>` in a prompt draws hearts that the same prompt
without the tag does not."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from webui.engine.worker import JobState
from webui.requests import Txt2ImgRequest
from webui.training.evaluate_example import concept_prompts
from webui.training.example_dataset import detect_heart
from webui.training.trainer import base_hash, read_metadata

SHIPPED = REPO / "models" / "builtin" / "easel-shapes"
LORA = REPO / "models" / "Lora" / "easel-example-heart.safetensors"

pytestmark = pytest.mark.skipif(not (SHIPPED / "model_index.json").is_file() or not LORA.is_file(),
                                reason="the built-in model or the example LoRA is not in models/")


def test_trained_on_the_shipped_weights(tmp_path: Path) -> None:
    from safetensors import safe_open

    from webui.training.config import load_config

    meta = read_metadata(LORA)
    assert meta["easel_trigger"] == "heart"
    assert meta["easel_base_hash"] == base_hash(SHIPPED), "retrain the example LoRA on the current built-in model"
    (tmp_path / "data" / "lora-example-heart").mkdir(parents=True)  # the config's dataset folder must exist
    config = load_config(REPO / "docs" / "examples" / "lora-builtin.yaml", base_dir=tmp_path)
    assert meta["ss_steps"] == str(config.steps), "retrain the example LoRA with its config"
    with safe_open(str(LORA), "pt") as f:  # the config learns a vector for the trigger; the file carries it
        assert ("bundle_emb.heart.string_to_param.*" in f.keys()) == config.trigger_embedding


def test_the_tag_draws_hearts_out_of_the_box(make_easel, tmp_path: Path) -> None:
    builtin = tmp_path / "builtin"
    shutil.copytree(SHIPPED, builtin / "easel-shapes")
    easel = make_easel(builtin_dir=builtin, install_sd1=False)
    folder = easel.settings.models_dir / "Lora"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(LORA, folder / LORA.name)
    easel.manager.refresh_loras()
    entry = next(e for e in easel.manager.loras() if e.name == "easel-example-heart")
    assert entry.trigger_words == ("heart",)

    def hearts(prompt: str, seed: int) -> tuple[bool, str]:
        request = Txt2ImgRequest(prompt=prompt, checkpoint="easel-shapes", steps=20, width=64, height=64,
                                 cfg_scale=4.0, sampler="Euler", seed=seed)
        job = easel.engine.generate(request, timeout=300)
        assert job.state == JobState.DONE, job.error
        return detect_heart(np.asarray(job.result.images[0].convert("RGB"))), job.result.infotexts[0]

    prompts = concept_prompts(6, 0, "heart")
    with_tag = [hearts(f"<lora:easel-example-heart:1> {p}", 100 + i) for i, p in enumerate(prompts)]
    assert sum(found for found, _ in with_tag) >= 3, [p for p, (found, _) in zip(prompts, with_tag) if not found]
    assert 'Lora hashes: "easel-example-heart: ' in with_tag[0][1]
    # the base model alone has no heart to draw: the same prompts and seeds without the tag show none
    assert not any(hearts(p, 100 + i)[0] for i, p in enumerate(prompts))
