"""The training loop on the tiny built-in model: the file layout and metadata, resume (weights-only), cancel,
samples."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from tests.security.conftest import Payload
from webui.training.config import ConfigError, TrainConfig, config_from_dict
from webui.training.folders import TrainingFolders
from webui.training.trainer import TrainEvent, base_hash, train

STEPS = 4


def make_config(base: Path | str, dataset: Path, out: str, **changes) -> TrainConfig:
    """A config in the test's data folder (the dataset's grandparent: datasets live in its data/): the LoRA goes
    to models/Lora/<out>; the base model is named, looked up in its own folder (a model folder, as --ckpt-dir
    adds one) or, for a name, in the data folder's model folders and the built-in one."""
    name, model_dirs = (base.name, [base.parent]) if isinstance(base, Path) else (base, [])
    data = {"base_model": name, "dataset": str(dataset), "trigger": "zork", "output_dir": f"models/Lora/{out}",
            "output_name": "tiny", "steps": STEPS, "batch_size": 2, "rank": 4, "alpha": 2, "learning_rate": 1e-2,
            "caption_dropout": 0.0, **changes}
    return config_from_dict(data, folders=TrainingFolders.under(dataset.parent.parent, model_dirs=model_dirs))


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def test_builtin_lora_file_layout_and_metadata(tiny_easel_dir: Path, models: list[Path], dataset_dir: Path,
                                               tmp_path: Path) -> None:
    events: list[TrainEvent] = []
    config = make_config(tiny_easel_dir, dataset_dir, "out", sample_prompts=["a red [trigger]"],
                         sample_every=2, sample_steps=2)
    result = train(config, on_event=events.append, search_dirs=models)
    assert result.path == tmp_path / "models" / "Lora" / "out" / "tiny.safetensors" and result.path.is_file()
    assert result.step == STEPS and not result.cancelled and len(result.losses) == STEPS
    tensors, meta = read(result.path)
    from webui.builtin.pipeline import EaselPipeline

    transformer_modules = {n for n, _ in EaselPipeline.from_pretrained(str(tiny_easel_dir)).transformer.named_modules()}
    for key, value in tensors.items():
        assert key.startswith("transformer.") and key.endswith((".lora_A.weight", ".lora_B.weight")), key
        module = key.removeprefix("transformer.").rsplit(".lora_", 1)[0]
        assert module in transformer_modules
        assert value.shape[0 if ".lora_A." in key else 1] == 4
    assert any(".blocks.0.qkv." in k for k in tensors)
    assert any(float(v.abs().max()) > 0 for k, v in tensors.items() if ".lora_B." in k)  # it trained
    assert meta["easel_base_model"] == "tiny-easel"
    assert meta["easel_base_hash"] == base_hash(tiny_easel_dir) and len(meta["easel_base_hash"]) == 10
    assert meta["easel_trigger"] == "zork"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"], meta["ss_steps"], meta["ss_num_train_images"]) == \
        ("4", "2", str(STEPS), "3")
    assert meta["ss_base_model_version"] == "easel"
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("step") == STEPS
    samples = [p for e in events if e.kind == "sample" for p in e.samples]
    assert [p.name for p in samples] == ["step000002_0.png", "step000004_0.png"]
    assert all(p.is_file() for p in samples)
    assert config.state_path.is_file()


def test_trained_lora_changes_the_builtin_output(tiny_easel_dir: Path, models: list[Path], dataset_dir: Path,
                                                 tmp_path: Path) -> None:
    """Applied as PEFT adapters with alpha / rank folded in (what Easel's loader does), the LoRA changes images."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    from webui.builtin.pipeline import EaselPipeline

    result = train(make_config(tiny_easel_dir, dataset_dir, "out"), search_dirs=models)
    tensors, meta = read(result.path)
    scale = float(meta["ss_network_alpha"]) / int(meta["ss_network_dim"])
    inner = {k.removeprefix("transformer."): (v * scale if ".lora_B." in k else v) for k, v in tensors.items()}
    pipe = EaselPipeline.from_pretrained(str(tiny_easel_dir))
    pipe.set_progress_bar_config(disable=True)

    def image() -> torch.Tensor:
        return pipe("a red zork", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                    output_type="pt").images

    before = image()
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in inner})
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=modules), pipe.transformer)
    set_peft_model_state_dict(pipe.transformer, inner)
    after = image()
    assert (after - before).abs().max() > 1e-4


def test_resume_continues_from_the_saved_step(tiny_easel_dir: Path, models: list[Path], dataset_dir: Path,
                                              tmp_path: Path) -> None:
    straight = train(make_config(tiny_easel_dir, dataset_dir, "a"), search_dirs=models)
    first = train(make_config(tiny_easel_dir, dataset_dir, "b", steps=2), search_dirs=models)
    assert first.step == 2
    events: list[TrainEvent] = []
    resumed = train(make_config(tiny_easel_dir, dataset_dir, "b"), on_event=events.append, search_dirs=models)
    assert events[0].kind == "start" and events[0].step == 2 and "resuming at step 2" in events[0].message
    assert [e.step for e in events if e.kind == "step"] == [3, 4]
    assert resumed.step == STEPS and len(resumed.losses) == STEPS
    # the same per-step randomness and optimizer state: the resumed run ends where the straight one did
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-4, abs=1e-5)
    a, _ = read(straight.path)
    b, meta = read(resumed.path)
    assert meta["ss_steps"] == str(STEPS)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="different rank") as info:
        train(make_config(tiny_easel_dir, dataset_dir, "b", rank=8, steps=6), search_dirs=models)
    assert info.value.field == "output_name"


def test_a_resume_state_that_would_run_code_is_refused(tiny_easel_dir: Path, models: list[Path], dataset_dir: Path,
                                                        tmp_path: Path) -> None:
    """A resume state beside the LoRA that carries an object whose unpickling creates a file: training stops with
    an error on output_name naming the state, the file is never created and no LoRA is written."""
    config = make_config(tiny_easel_dir, dataset_dir, "refused")
    marker = tmp_path / "pwned.txt"
    config.output_dir.mkdir(parents=True)
    torch.save({"version": 1, "lora": {}, "optimizer": {}, "step": 1, "losses": [], "payload": Payload(marker)},
               config.state_path)
    with pytest.raises(ConfigError, match="was refused") as info:
        train(config, search_dirs=models)
    assert info.value.field == "output_name" and str(config.state_path) in str(info.value)
    assert "weights_only" not in str(info.value)  # no advice to turn the check off
    assert not marker.exists() and not config.output_path.exists()


def test_trigger_embedding_learns_a_vector_bundled_in_the_file(tiny_easel_dir: Path, models: list[Path],
                                                               dataset_dir: Path,
                                                               tmp_path: Path, monkeypatch) -> None:
    """`trigger_embedding: true` trains a vector for the trigger word with the LoRA (at `trigger_embedding_lr`),
    starting from what the word reads now (`<unk>`: the word is new to the model); the file bundles it under
    AUTOMATIC1111's key, the samples already read it, and a resumed run ends where a straight one does, vector
    included."""
    import webui.training.trainer as trainer
    from webui.builtin.pipeline import EaselPipeline
    from webui.builtin.text import UNK

    events: list[TrainEvent] = []
    optimizers: list[torch.optim.Optimizer] = []
    make_optimizer = trainer.make_optimizer
    monkeypatch.setattr(trainer, "make_optimizer", lambda *a: optimizers.append(make_optimizer(*a)) or optimizers[-1])
    config = make_config(tiny_easel_dir, dataset_dir, "a", trigger_embedding=True,
                         trigger_embedding_lr=3e-2, sample_prompts=["a red [trigger]"], sample_steps=2)
    straight = train(config, on_event=events.append, search_dirs=models)
    assert [group["lr"] for group in optimizers[0].param_groups] == pytest.approx([1e-2, 3e-2])
    assert "learned vector for 'zork'" in events[0].message
    tensors, meta = read(straight.path)
    key = "bundle_emb.zork.string_to_param.*"
    pipe = EaselPipeline.from_pretrained(str(tiny_easel_dir))
    encoder = pipe.text_encoder
    assert "zork" not in encoder.tokenizer.index
    start = encoder.embed.weight.detach()[UNK]
    assert tensors[key].shape == (1, encoder.embed.embedding_dim)
    assert 0 < float((tensors[key][0] - start).abs().max()) < 0.2  # trained: moved, by a few learning-rate steps
    assert all(k.startswith("transformer.") for k in tensors if k != key)
    assert meta["easel_trigger"] == "zork"
    # what the engine's loader reads back, and the word then stands for it
    assert torch.equal(pipe.bundled_words(straight.path)["zork"], tensors[key])
    # the final sample was drawn with the learned vector: the same LoRA without it draws another image
    sample = straight.samples[-1]
    scale = float(meta["ss_network_alpha"]) / int(meta["ss_network_dim"])
    scaled = {k: v * scale if ".lora_B." in k else v for k, v in tensors.items()}
    pipe.set_progress_bar_config(disable=True)

    def draw(state: dict[str, torch.Tensor]) -> np.ndarray:
        pipe.load_lora_weights(state, adapter_name="x")
        image = pipe("a red zork", height=64, width=64, num_inference_steps=2, guidance_scale=config.sample_guidance,
                     generator=torch.Generator("cpu").manual_seed(config.seed + 1000)).images[0]
        pipe.delete_adapters(["x"])
        return np.asarray(image).astype(int)

    saved = np.asarray(Image.open(sample).convert("RGB")).astype(int)
    assert np.abs(draw(scaled) - saved).max() <= 1
    assert np.abs(draw({k: v for k, v in scaled.items() if k != key}) - saved).max() > 1
    # resume: the vector and its optimizer state continue
    train(make_config(tiny_easel_dir, dataset_dir, "b", trigger_embedding=True, trigger_embedding_lr=3e-2,
                      steps=2), search_dirs=models)
    resumed = train(make_config(tiny_easel_dir, dataset_dir, "b", trigger_embedding=True,
                                trigger_embedding_lr=3e-2), search_dirs=models)
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-4, abs=1e-5)
    torch.testing.assert_close(read(resumed.path)[0][key], tensors[key], rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="different trigger_embedding"):
        train(make_config(tiny_easel_dir, dataset_dir, "b", steps=6), search_dirs=models)


def test_cancel_stops_within_a_step_and_saves(tiny_easel_dir: Path, models: list[Path], dataset_dir: Path,
                                              tmp_path: Path) -> None:
    cancel = threading.Event()
    steps_seen: list[int] = []

    def on_event(event: TrainEvent) -> None:
        if event.kind == "step":
            steps_seen.append(event.step)
            if event.step == 2:
                cancel.set()

    config = make_config(tiny_easel_dir, dataset_dir, "out", steps=50)
    result = train(config, on_event=on_event, cancel=cancel, search_dirs=models)
    assert result.cancelled and result.step == 2 and steps_seen == [1, 2]
    assert result.path.is_file() and config.state_path.is_file()
    _, meta = read(result.path)
    assert meta["ss_steps"] == "2"
    cancel.set()
    again = train(config, cancel=cancel, search_dirs=models)  # cancelled before its first step: no change
    assert again.cancelled and again.step == 2


def test_bad_dataset_or_base_model_fails_early(tiny_easel_dir: Path, models: list[Path], dataset_dir: Path,
                                               tmp_path: Path) -> None:
    from webui.training.dataset import DatasetError

    (tmp_path / "data" / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        train(make_config(tiny_easel_dir, tmp_path / "data" / "empty", "out"), search_dirs=models)
    # the base model is looked up by name in the model folders, when the config is read and again by the trainer
    with pytest.raises(ConfigError, match="must be the name of a model") as info:
        make_config("no-such-model", dataset_dir, "out")
    assert info.value.field == "base_model"
    with pytest.raises(ConfigError, match="must be the name of a model") as info:
        train(make_config(tiny_easel_dir, dataset_dir, "out"), search_dirs=[tmp_path / "models" / "diffusers"])
    assert info.value.field == "base_model"
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ConfigError) as info:
        train(make_config(checkpoints / "model", dataset_dir, "out"), search_dirs=[checkpoints])
    assert info.value.field == "base_model" and "model.safetensors" in str(info.value)
    assert not (tmp_path / "models" / "Lora").exists()  # refused before anything was written


def test_adapters_disabled_gives_the_base_prediction(tiny_easel_dir: Path, models: list[Path], dataset_dir: Path,
                                                     tmp_path: Path) -> None:
    """Inside `adapters_disabled` the LoRA-carrying transformer computes exactly the base model; outside, it doesn't."""
    from webui.builtin.pipeline import EaselPipeline
    from webui.training.trainer import adapters_disabled, add_lora, load_lora_state

    result = train(make_config(tiny_easel_dir, dataset_dir, "out"), search_dirs=models)
    tensors, _ = read(result.path)
    pipe = EaselPipeline.from_pretrained(str(tiny_easel_dir))
    config = make_config(tiny_easel_dir, dataset_dir, "out")
    gen = torch.Generator().manual_seed(0)
    x_t, t = torch.randn(2, 3, 64, 64, generator=gen), torch.tensor([0.3, 0.8])  # [2,3,64,64], [2]
    text, mask = pipe.text_encoder.encode(["a red circle", "make the circle blue"])
    source = torch.randn(2, 4, 64, 64, generator=gen)  # [2,4,64,64]
    with torch.no_grad():
        base = pipe.transformer(x_t, t, text, mask, source)
        add_lora(pipe.transformer, config, "easel")
        load_lora_state(pipe.transformer, {k.removeprefix("transformer."): v for k, v in tensors.items()})
        with adapters_disabled(pipe.transformer):
            off = pipe.transformer(x_t, t, text, mask, source)
        on = pipe.transformer(x_t, t, text, mask, source)
    assert torch.equal(off, base)
    assert (on - base).abs().max() > 1e-4


def test_prior_preservation_keeps_the_base_tasks(tiny_easel_dir: Path, models: list[Path], dataset_dir: Path,
                                                 tmp_path: Path) -> None:
    """The preservation term is zero for a fresh LoRA (lora_B = 0), and training with it keeps the LoRA's change
    to the base model's own tasks (text-to-image, edits, inpainting) smaller than training without it."""
    from webui.builtin.pipeline import EaselPipeline
    from webui.training.trainer import EaselObjective, add_lora, load_lora_state

    def preservation_error(path: Path | None) -> float:
        pipe = EaselPipeline.from_pretrained(str(tiny_easel_dir))
        objective = EaselObjective(pipe, torch.device("cpu"))
        add_lora(pipe.transformer, make_config(tiny_easel_dir, dataset_dir, "x"), "easel")
        if path is not None:
            tensors, _ = read(path)
            load_lora_state(pipe.transformer, {k.removeprefix("transformer."): v for k, v in tensors.items()})
        with torch.no_grad():
            return float(objective.preservation_loss(8, torch.Generator().manual_seed(123)))

    assert preservation_error(None) == 0.0
    changes = {"steps": 8, "learning_rate": 3e-2}
    plain = train(make_config(tiny_easel_dir, dataset_dir, "plain", **changes), search_dirs=models)
    kept = train(make_config(tiny_easel_dir, dataset_dir, "kept", prior_preservation=20.0, **changes),
                 search_dirs=models)
    assert kept.losses[0] == plain.losses[0]  # step 1: the term is zero, so the loss is the concept's alone
    error_plain, error_kept = preservation_error(plain.path), preservation_error(kept.path)
    assert error_plain > 0
    assert error_kept < 0.5 * error_plain


def test_preservation_batch_size_sets_the_term_batch(tiny_easel_dir: Path, models: list[Path], dataset_dir: Path,
                                                     tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from webui.training.trainer import EaselObjective

    sizes: list[int] = []
    original = EaselObjective.preservation_loss
    monkeypatch.setattr(EaselObjective, "preservation_loss",
                        lambda self, batch_size, gen: (sizes.append(batch_size), original(self, batch_size, gen))[1])
    train(make_config(tiny_easel_dir, dataset_dir, "a", steps=2, prior_preservation=1.0), search_dirs=models)
    train(make_config(tiny_easel_dir, dataset_dir, "b", steps=2, prior_preservation=1.0,
                      preservation_batch_size=3), search_dirs=models)
    assert sizes == [2, 2, 3, 3]  # batch_size 2 by default, then the key's value


def test_differential_preservation_swaps_the_trigger(dataset_dir: Path, tmp_path: Path) -> None:
    """The differential term runs the captions that hold the trigger with the trigger swapped for a preservation
    word, on their own training images noised, and pulls the LoRA's prediction towards the base model's (LoRA off)
    for them; captions without the trigger are left out, and a fresh LoRA (lora_B = 0) gives zero."""
    from tests.builtin.conftest import make_tiny_pipeline
    from webui.training.trainer import EaselObjective, add_lora

    pipe = make_tiny_pipeline(self_condition=True)
    objective = EaselObjective(pipe, torch.device("cpu"))
    add_lora(pipe.transformer, make_config("easel-shapes", dataset_dir, "x"), "easel")
    pixels = torch.rand(3, 3, 64, 64) * 2 - 1  # [3,3,64,64]
    prompts = ["a red zork on a blue background", "a green square", "a zork in the top left"]
    words = ("circle", "plus sign")
    assert float(objective.differential_loss(pixels, prompts, "zork", words, torch.Generator()).detach()) == 0
    assert float(objective.differential_loss(pixels, ["a green square", ""], "zork", words, torch.Generator())) == 0
    with torch.no_grad():  # a LoRA that acts
        for name, p in pipe.transformer.named_parameters():
            if ".lora_B." in name:
                p.normal_(0.0, 0.5)
    encoded: list[list[str]] = []
    encode = objective.encode_text
    objective.encode_text = lambda texts: (encoded.append(list(texts)), encode(texts))[1]
    noised_x0: list[torch.Tensor] = []
    noised = objective.noised
    objective.noised = lambda x0, gen: (noised_x0.append(x0), noised(x0, gen))[1]
    inputs: list[tuple] = []
    pipe.transformer.register_forward_hook(
        lambda module, args, kwargs, output: inputs.append((args[0], torch.is_grad_enabled(), output)),
        with_kwargs=True)
    seen = set()
    for seed in range(6):
        encoded.clear()
        inputs.clear()
        noised_x0.clear()
        loss = objective.differential_loss(pixels, prompts, "zork", words, torch.Generator().manual_seed(seed))
        assert float(loss.detach()) > 0
        [texts] = encoded
        assert len(texts) == 2 and all("zork" not in text for text in texts)
        assert texts[0] in {f"a red {w} on a blue background" for w in words}
        assert texts[1] in {f"a {w} in the top left" for w in words}
        seen.update(texts)
        (x_t, base_grad, base), *_, (x_lora, lora_grad, _) = inputs
        assert x_t.shape[0] == 2 and x_lora is x_t and not base_grad and lora_grad
        assert len(noised_x0) == 1 and torch.equal(noised_x0[0], pixels[[0, 2]])  # the swapped captions' images
    assert len(seen) > 2  # both words are drawn
    loss.backward()
    assert all(p.grad is not None for name, p in pipe.transformer.named_parameters() if ".lora_" in name)


def test_differential_preservation_keeps_the_swapped_prompts(tiny_easel_dir: Path, models: list[Path],
                                                             dataset_dir: Path,
                                                             tmp_path: Path) -> None:
    """Trained with the differential term, the LoRA changes the base model's prediction for the captions with the
    trigger swapped out less than trained without it."""
    from webui.builtin.pipeline import EaselPipeline
    from webui.training.dataset import load_dataset
    from webui.training.trainer import EaselObjective, add_lora, load_lora_state

    config = make_config(tiny_easel_dir, dataset_dir, "x")
    prompts, pixels = load_dataset(config.dataset, config.resolution, config.trigger).batch(
        torch.Generator().manual_seed(5), 3)
    words = ("circle", "square")

    def swapped_error(path: Path) -> float:
        pipe = EaselPipeline.from_pretrained(str(tiny_easel_dir))
        objective = EaselObjective(pipe, torch.device("cpu"))
        add_lora(pipe.transformer, config, "easel")
        tensors, _ = read(path)
        load_lora_state(pipe.transformer, {k.removeprefix("transformer."): v for k, v in tensors.items()})
        with torch.no_grad():
            return float(objective.differential_loss(pixels, prompts, "zork", words, torch.Generator().manual_seed(9)))

    changes = {"steps": 8, "learning_rate": 3e-2, "preservation_words": list(words)}
    plain = train(make_config(tiny_easel_dir, dataset_dir, "plain", **changes), search_dirs=models)
    kept = train(make_config(tiny_easel_dir, dataset_dir, "kept", differential_preservation=20.0,
                             **changes), search_dirs=models)
    assert kept.losses[0] == plain.losses[0]  # step 1: the term is zero, so the loss is the concept's alone
    error_plain, error_kept = swapped_error(plain.path), swapped_error(kept.path)
    assert error_plain > 0
    assert error_kept < 0.5 * error_plain


def test_prior_preservation_self_conditioned_reads_the_base_prediction(dataset_dir: Path, tmp_path: Path) -> None:
    """For a self-conditioned model, some preservation groups are run as the sampler runs the model after its
    first step: the base model's own first prediction as x0_prev, given to both the base and the LoRA pass."""
    from tests.builtin.conftest import make_tiny_pipeline
    from webui.training.trainer import EaselObjective, add_lora

    pipe = make_tiny_pipeline(self_condition=True)
    objective = EaselObjective(pipe, torch.device("cpu"))
    add_lora(pipe.transformer, make_config("easel-shapes", dataset_dir, "x"), "easel")
    with torch.no_grad():  # a LoRA that acts (lora_B is zero when fresh)
        for name, p in pipe.transformer.named_parameters():
            if ".lora_B." in name:
                p.normal_(0.0, 0.5)
    calls: list[torch.Tensor | None] = []
    pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(args[5] if len(args) > 5 else kwargs.get("x0_prev")),
        with_kwargs=True)
    patterns = set()
    for seed in range(8):
        calls.clear()
        loss = objective.preservation_loss(4, torch.Generator().manual_seed(seed))
        assert float(loss.detach()) > 0
        i = 0
        while i < len(calls):  # per group: base, [base reading x0_prev,] LoRA
            assert calls[i] is None
            if calls[i + 1] is None:
                patterns.add("plain")
                i += 2
            else:
                assert calls[i + 2] is calls[i + 1]  # the LoRA pass reads the same x0_prev as the base pass
                patterns.add("self-conditioned")
                i += 3
    assert patterns == {"plain", "self-conditioned"}
    loss.backward()
    grads = [p.grad for name, p in pipe.transformer.named_parameters() if ".lora_" in name]
    assert grads and all(g is not None for g in grads)


def test_concept_loss_self_conditioned_reads_the_previous_step(dataset_dir: Path, tmp_path: Path) -> None:
    """For a self-conditioned model, the concept loss runs most steps as the sampler runs the model after its first
    step: x0_prev is the LoRA-carrying model's own prediction of the same image and noise one step noisier
    (t + SELF_COND_LAG), detached; the other steps run without x0_prev."""
    from tests.builtin.conftest import make_tiny_pipeline
    from webui.training.trainer import EaselObjective, add_lora

    pipe = make_tiny_pipeline(self_condition=True)
    objective = EaselObjective(pipe, torch.device("cpu"))
    add_lora(pipe.transformer, make_config("easel-shapes", dataset_dir, "x"), "easel")
    calls: list[tuple] = []

    def record(module, args, kwargs, output):
        prev = args[5] if len(args) > 5 else kwargs.get("x0_prev")
        calls.append((args[0].detach().clone(), args[1].detach().clone(), prev, output, torch.is_grad_enabled()))

    pipe.transformer.register_forward_hook(record, with_kwargs=True)
    pixels = torch.rand(3, 3, 64, 64) * 2 - 1  # [3,3,64,64]
    patterns = set()
    for seed in range(40):
        calls.clear()
        loss = objective.loss(pixels, ["a red zork", "a blue zork", "a zork"], torch.Generator().manual_seed(seed))
        if len(calls) == 1:
            assert calls[0][2] is None and calls[0][4]
            patterns.add("plain")
            continue
        (x_before, t_before, prev_in, prev_out, grad_before), (x_t, t, prev, _, grad) = calls
        assert prev_in is None and not grad_before and grad  # the earlier step is detached, the trained one is not
        assert prev is prev_out  # the trained pass reads the earlier step's prediction
        assert torch.allclose(t_before, (t + EaselObjective.SELF_COND_LAG).clamp(max=1.0))
        tb, tb_before = t[:, None, None, None], t_before[:, None, None, None]  # [3,1,1,1] each
        eps = (x_t - (1 - tb) * pixels) / tb  # the noise of the trained pass, [3,3,64,64]
        assert torch.allclose(x_before, (1 - tb_before) * pixels + tb_before * eps, atol=1e-3)  # same image, noise
        patterns.add("self-conditioned")
    assert patterns == {"plain", "self-conditioned"}
    loss.backward()
    assert all(p.grad is not None for name, p in pipe.transformer.named_parameters() if ".lora_" in name)
