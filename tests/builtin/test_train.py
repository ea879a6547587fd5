"""Training: deterministic batches, a few steps that export a loadable pipeline, resume from the state dir (read
weights-only: a state file that would run code is refused)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from webui.builtin.objective import velocity_loss
from tests.security.conftest import Payload
from webui.builtin_lab import train

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
    assert pipe.scheduler.config.shift == train.SAMPLE_SHIFT
    assert pipe.guidance_window() == train.GUIDANCE_INTERVAL  # the exported model's default guidance window
    exported = sum(p.numel() for m in (pipe.transformer, pipe.text_encoder) for p in m.parameters())
    assert json.loads((out / "training.json").read_text())["params"] == exported  # training-only heads not counted
    pipe.set_progress_bar_config(disable=True)
    assert pipe("a red circle", num_inference_steps=2).images[0].size == (64, 64)
    fresh = tmp_path / "fresh-state"
    assert train.main(["--out", str(tmp_path / "out2"), "--state-dir", str(fresh), "--max-steps", "4",
                       "--resume-from-weights", str(out), *TINY]) == 0
    assert json.loads((tmp_path / "out2" / "training.json").read_text())["step"] == 4


def test_a_state_file_that_would_run_code_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A state.pt shaped like the trainer's but carrying an object whose unpickling creates a file: the run stops
    with an error naming the file and the object, the file is never created, nothing is trained or exported, and
    the state stays as it was."""
    out, state, marker = tmp_path / "out", tmp_path / "state", tmp_path / "pwned.txt"
    state.mkdir()
    torch.save({"net": {}, "ema": {}, "opt": {}, "step": 5, "elapsed_s": 1.0, "warm_from": 0, "hparams": {},
                "payload": Payload(marker)}, state / "state.pt")
    saved = (state / "state.pt").read_bytes()
    with caplog.at_level(logging.ERROR, logger=train.logger.name):
        assert train.main(["--out", str(out), "--state-dir", str(state), "--max-steps", "1", *TINY]) == 2
    assert not marker.exists()
    assert f"{state / 'state.pt'}: refused" in caplog.text and "(io.open)" in caplog.text
    assert "weights_only" not in caplog.text  # no advice to turn the check off
    assert not out.exists() and not (state / "loss.csv").exists()
    assert (state / "state.pt").read_bytes() == saved


def test_unreadable_or_foreign_state_files_are_errors_naming_the_file(tmp_path: Path) -> None:
    truncated, foreign = tmp_path / "truncated.pt", tmp_path / "foreign.pt"
    train.save_state(truncated, {"net": {"w": torch.zeros(64)}, "step": 1})
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(train.StateError, match="truncated.pt: not a readable training state"):
        train.load_state(truncated)
    train.save_state(foreign, {"net": {"w": torch.zeros(2)}, "step": 1})  # tensors and plain data, not all of it
    with pytest.raises(train.StateError, match=r"foreign.pt: not a training state of this trainer \(no ema, opt"):
        train.load_state(foreign)


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


def test_caption_labels_say_what_the_caption_names() -> None:
    """The auxiliary targets: the background's colour only when the caption names it, every object's colour and
    shape counted, nothing for a dropped prompt."""
    from webui.builtin import data as D

    named = unnamed = 0
    for i in range(60):
        ex = D.sample_example(D.example_rng(5, i), "txt2img")
        labels = train.caption_labels(ex, dropped=False)
        scene = ex.info["scene"]
        n_colors = len(D.COLORS)
        if int(labels[0]) == n_colors:
            unnamed += 1
            assert "background" not in ex.prompt
        else:
            named += 1
            assert D.COLORS[int(labels[0])] == scene.background
            assert any(w in ex.prompt for w in D.COLOR_WORDS[scene.background])
        assert labels[1:1 + n_colors].sum() == labels[1 + n_colors:].sum() == len(scene.objects)
        for o in scene.objects:
            assert labels[1 + D.COLORS.index(o.color)] >= 1 and labels[1 + n_colors + D.SHAPES.index(o.shape)] >= 1
    assert named > 20 and unnamed > 10
    assert train.caption_labels(ex, dropped=True)[0] == -1
    batch = train.make_batch(0, 0, 16)
    assert batch.gen_aux.shape == (8, train.N_AUX - len(D.COLORS))
    assert all((row[0] == -1) == (p == "") for row, p in zip(batch.gen_aux, batch.gen_prompts))


def test_aux_loss_is_zero_only_for_the_right_answer_and_skips_dropped_prompts() -> None:
    from webui.builtin import data as D

    n_bg = len(D.COLORS) + 1
    head = torch.nn.Linear(4, train.N_AUX, bias=True)
    torch.nn.init.zeros_(head.weight)
    labels = torch.zeros(2, 1 + len(D.COLORS) + len(D.SHAPES))
    star = 1 + len(D.COLORS) + D.SHAPES.index("star")
    labels[0, 0], labels[0, 1 + D.COLORS.index("red")], labels[0, star] = 4, 1, 1  # one red star on class 4
    labels[1, 0] = -1  # dropped: ignored whatever the head says
    text, mask = torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool)
    with torch.no_grad():
        head.bias.zero_()
        head.bias[4] = 50.0  # background class 4, almost surely
        head.bias[n_bg:] = labels[0, 1:]
    assert float(train.aux_loss(head, text, mask, labels).detach()) < 1e-6
    with torch.no_grad():
        head.bias[n_bg - 1 + star] = 0.0  # outputs: classes, then the same counts as labels[1:]
    assert abs(float(train.aux_loss(head, text, mask, labels)) - 1 / (train.N_AUX - n_bg)) < 1e-5
    labels[0, 0] = -1
    assert float(train.aux_loss(head, text, mask, labels)) == 0.0


def test_label_map_marks_each_object_cell_with_its_shape_and_colour() -> None:
    from webui.builtin import data as D

    circle = D.Obj("red", "circle", "large", "center", 32.0, 32.0, 12.0)
    star = D.Obj("white", "star", "small", "top left", 16.0, 16.0, 5.5)
    scene = D.Scene("blue", (circle, star))
    image, masks = D.render(scene)
    ex = D.Example("txt2img", "", image, info={"scene": scene, "masks": masks})
    shape, color = train.label_map(ex)  # [16,16] each, cells of 4x4 pixels
    assert shape.shape == (16, 16)
    assert shape[8, 8] == 1 + D.SHAPES.index("circle") and color[8, 8] == D.COLORS.index("red")
    assert shape[4, 4] == 1 + D.SHAPES.index("star") and color[4, 4] == D.COLORS.index("white")
    assert shape[15, 15] == 0 and color[15, 15] == D.COLORS.index("blue")
    # the circle covers pi * 12^2 pixels: about that many 4x4 cells' centres fall inside it
    assert abs(int((shape == 1).sum()) - 3.14159 * 144 / 16) <= 3
    assert ((shape > 0) == (color != D.COLORS.index("blue"))).all()
    batch = train.make_batch(0, 0, 8)
    assert batch.gen_map.shape == (4, 2, 16, 16) and batch.gen_map.dtype == torch.int64


def test_map_loss_reads_each_cell_from_its_own_token() -> None:
    """Features that spell out the right classes of every cell, in the head's order (token row-major, then cell
    row-major inside the token, then classes), give a loss near zero; the same features with two tokens swapped
    do not."""
    from webui.builtin.model import EaselTransformer

    n_cls = sum(train.MAP_CLASSES)
    k = 8 // train.MAP_CELL
    hidden = k * k * n_cls
    transformer = EaselTransformer(patch_size=8, hidden_size=hidden, depth=2, num_heads=1, bottleneck=8, text_dim=8)
    net = train.Net(transformer, torch.nn.Identity(), None, map_block=1)
    with torch.no_grad():
        net.map_head.weight.copy_(torch.eye(hidden) * 30.0)
        net.map_head.bias.zero_()
    labels = train.make_batch(0, 0, 4).gen_map[:1]  # [1,2,16,16]
    G, g = labels.shape[-1], labels.shape[-1] // k
    onehot = torch.cat([torch.nn.functional.one_hot(labels[:, 0], train.MAP_CLASSES[0]),
                        torch.nn.functional.one_hot(labels[:, 1], train.MAP_CLASSES[1])], -1).float()  # [1,G,G,C]
    tokens = onehot.view(1, g, k, g, k, n_cls).permute(0, 1, 3, 2, 4, 5).reshape(1, g * g, hidden)  # [1,N,hidden]
    n_text = 3
    net.features = torch.cat([torch.zeros(1, n_text, hidden), tokens], dim=1)
    assert float(train.map_loss(net, n_text, labels)) < 1e-3
    shape = labels[0, 0]
    a = int(torch.nonzero(shape.view(g, k, g, k).permute(0, 2, 1, 3).reshape(g * g, -1).max(-1).values)[0])
    b = 0 if a else 1  # an object token and another one
    swapped = tokens.clone()
    swapped[:, [a, b]] = tokens[:, [b, a]]
    net.features = torch.cat([torch.zeros(1, n_text, hidden), swapped], dim=1)
    assert float(train.map_loss(net, n_text, labels)) > 0.1


def test_self_conditioning_is_trained_and_kept_on_resume(tmp_path: Path) -> None:
    """--self-cond trains the previous-prediction embedding (it leaves zero), exports a self-conditioned
    pipeline, and a resumed run keeps the option from its state even when the command line omits it."""
    from webui.builtin.pipeline import EaselPipeline

    out, state = tmp_path / "out", tmp_path / "state"
    assert train.main(["--out", str(out), "--state-dir", str(state), "--max-steps", "6", "--self-cond",
                       "--warmup", "1", *TINY]) == 0
    pipe = EaselPipeline.from_pretrained(str(out))
    assert pipe.transformer.config.self_condition
    assert float(pipe.transformer.prev_in[1].weight.detach().abs().sum()) > 0
    assert train.main(["--out", str(out), "--state-dir", str(state), "--max-steps", "7", *TINY]) == 0
    assert json.loads((out / "training.json").read_text())["hparams"]["self_cond"] is True
    assert EaselPipeline.from_pretrained(str(out)).transformer.config.self_condition


def test_object_weight_map_counts_objects_and_their_outline_more() -> None:
    """An object (and 2 pixels around it) weighs 1 + k times the background; every image's weights average 1; an
    image without objects is weighted uniformly."""
    fg = torch.zeros(2, 1, 16, 16)
    fg[0, 0, 6:10, 6:10] = 1.0
    w = train.object_weight_map(fg, 4.0, grow=2)
    assert torch.allclose(w.mean(dim=(1, 2, 3)), torch.ones(2))
    assert abs(float(w[0, 0, 8, 8] / w[0, 0, 0, 0]) - 5.0) < 1e-5
    assert abs(float(w[0, 0, 4, 8] / w[0, 0, 0, 0]) - 5.0) < 1e-5  # 2 px outside the object: grown into
    assert float(w[0, 0, 3, 8]) == float(w[0, 0, 0, 0])  # 3 px outside: background
    assert torch.equal(w[1], torch.ones(1, 16, 16))
    x0, t = torch.zeros(2, 3, 16, 16), torch.full((2,), 0.5)
    miss_object, miss_background = x0.clone(), x0.clone()
    miss_object[0, :, 8, 8] = 1.0
    miss_background[0, :, 0, 0] = 1.0
    assert float(velocity_loss(miss_object, x0, t, weight=w)) > \
        4.9 * float(velocity_loss(miss_background, x0, t, weight=w))


def test_edit_foreground_is_what_the_edit_changes() -> None:
    """For a recolour, the changed pixels are the recoloured object; for inpainting, the mask."""
    from webui.builtin import data as D

    rng = D.example_rng(0, 5)
    ex = D.sample_example(rng, "recolor")
    arrays = D.to_tensors(ex)
    fg = train.edit_foreground(torch.from_numpy(arrays["target"])[None], torch.from_numpy(arrays["source"])[None])
    obj_mask = D.render(ex.info["scene"])[1][ex.info["index"]] > 0.02  # every pixel the object touches
    inter = float((fg[0, 0].bool() & torch.from_numpy(obj_mask)).sum())
    union = float((fg[0, 0].bool() | torch.from_numpy(obj_mask)).sum())
    assert inter / union > 0.97
    ex = D.sample_example(D.example_rng(0, 7), "inpaint")
    arrays = D.to_tensors(ex)
    fg = train.edit_foreground(torch.from_numpy(arrays["target"])[None], torch.from_numpy(arrays["source"])[None])
    assert torch.equal(fg[0, 0].bool(), torch.from_numpy(ex.mask > 0))


def test_batches_carry_object_coverage_and_train_with_object_weight(tmp_path: Path) -> None:
    b = train.make_batch(0, 3, 6)
    assert b.gen_fg.shape == (3, 1, 64, 64) and 0 < float(b.gen_fg.mean()) < 0.5
    assert train.main(["--out", str(tmp_path / "out"), "--state-dir", str(tmp_path / "s"), "--max-steps", "2",
                       "--object-weight", "4", *TINY]) == 0


def test_blurred_inputs_only_at_high_noise_and_the_blur_keeps_flat_areas() -> None:
    """blur_inputs leaves low-noise examples (and everything at p = 0) crisp; at high noise it blurs edges but
    keeps flat colour and the image's mean."""
    from webui.builtin import data as D

    x0 = torch.from_numpy(D.to_tensors(D.sample_example(D.example_rng(0, 3), "txt2img"))["target"])[None]
    x0 = x0.repeat(8, 1, 1, 1)  # [8,3,64,64]
    t = torch.tensor([0.2, 0.5, 0.59, 0.6, 0.7, 0.9, 0.95, 1.0])
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(train.blur_inputs(x0, t, gen, p=0.0), x0)
    out = train.blur_inputs(x0, t, torch.Generator().manual_seed(0), p=1.0)
    assert torch.equal(out[:3], x0[:3])  # t < 0.6: never blurred
    assert all(not torch.equal(out[i], x0[i]) for i in range(3, 8))
    flat = torch.full((1, 3, 32, 32), 0.3)
    assert torch.allclose(train.gaussian_blur(flat, 3.0), flat, atol=1e-6)
    edge = torch.zeros(1, 1, 32, 32)
    edge[..., 16:] = 1.0
    blurred = train.gaussian_blur(edge, 2.0)
    assert 0.45 < float(blurred[0, 0, 5, 16] + blurred[0, 0, 5, 15]) / 2 < 0.55 and float(blurred[0, 0, 5, 0]) < 1e-3
    assert abs(float(blurred.mean() - edge.mean())) < 1e-3


def test_training_with_blurred_inputs_and_source_object_weights_runs(tmp_path: Path) -> None:
    assert train.main(["--out", str(tmp_path / "out"), "--state-dir", str(tmp_path / "s"), "--max-steps", "2",
                       "--blur-p", "0.5", "--object-weight", "4", "--weight-source-objects", *TINY]) == 0
    hparams = json.loads((tmp_path / "out" / "training.json").read_text())["hparams"]
    assert hparams["blur_p"] == 0.5 and hparams["weight_source_objects"] is True


def test_source_objects_weigh_in_edits_that_change_nothing() -> None:
    """A query for an absent object changes no pixel: plain edit_foreground is empty, with source_objects it is
    every object of the source scene (IoU > 0.95 with the rendered masks), never its background."""
    from webui.builtin import data as D

    ex = D.sample_example(D.example_rng(0, 11), "absent")
    arrays = D.to_tensors(ex)
    target, source = torch.from_numpy(arrays["target"])[None], torch.from_numpy(arrays["source"])[None]
    assert float(train.edit_foreground(target, source).sum()) == 0.0
    fg = train.edit_foreground(target, source, source_objects=True)[0, 0].bool()
    objects = torch.from_numpy(sum(m for m in D.render(ex.info["scene"])[1]) > 0.02)
    assert float((fg & objects).sum()) / float((fg | objects).sum()) > 0.95
    assert 0 < float(fg.float().mean()) < 0.5


@pytest.mark.slow
def test_compiled_blocks_train_like_eager_ones(tmp_path: Path) -> None:
    """`--compile` compiles the blocks in place: one training step gives the eager loss and gradients (to float
    rounding), and the saved state and exported weights keep their parameter names, so a compiled run's state
    resumes without it."""
    import copy

    from webui.builtin.pipeline import EaselPipeline

    args = train.parse_args(["--no-bf16", *TINY])
    torch.manual_seed(0)
    eager = train.build_net(args)
    compiled = copy.deepcopy(eager)
    train.compile_blocks(compiled)
    batch, grads, losses = train.make_batch(0, 0, 4), [], []
    for net in (eager, compiled):
        opt = torch.optim.SGD(net.parameters(), lr=0.0)  # keeps the weights; the gradients stay in .grad
        losses.append(float(train.train_step(net, opt, batch, torch.Generator().manual_seed(1), torch.device("cpu"),
                                             args)))
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    assert abs(losses[0] - losses[1]) < 1e-5 * losses[0]
    assert grads[0].keys() == grads[1].keys() and any(n.startswith("transformer.blocks.") for n in grads[0])
    for name, g in grads[0].items():
        assert (g - grads[1][name]).abs().max() <= 1e-4 * g.abs().max() + 1e-8, name
    assert compiled.state_dict().keys() == eager.state_dict().keys()

    out, state = tmp_path / "out", tmp_path / "state"
    assert train.main(["--out", str(out), "--state-dir", str(state), "--max-steps", "2", "--compile",
                       "--no-bf16", *TINY]) == 0
    assert train.main(["--out", str(out), "--state-dir", str(state), "--max-steps", "3", "--no-bf16", *TINY]) == 0
    assert json.loads((out / "training.json").read_text())["step"] == 3
    pipe = EaselPipeline.from_pretrained(str(out))
    pipe.set_progress_bar_config(disable=True)
    assert pipe("a red circle", num_inference_steps=2).images[0].size == (64, 64)
