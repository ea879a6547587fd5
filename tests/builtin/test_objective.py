"""The built-in model's training objective (webui/builtin/objective.py), shared by its trainer and the LoRA trainer:
the velocity loss, the noise levels, and the task batches both draw."""
from __future__ import annotations

import torch

from webui.builtin import objective as O
from webui.builtin_lab import train


def test_velocity_loss_is_the_x0_error_over_the_clamped_t() -> None:
    """Predicted and true velocity divide by the same max(t, min_t): an exact x0 costs nothing at any t, and
    below min_t an x0 error weighs 1 / min_t^2, not 1 / t^2."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1, torch.randn(1, 3, 8, 8, generator=g)
    for t in (1e-4, 0.05, 0.5):
        tt = torch.tensor([t])
        x_t = (1 - t) * x0 + t * eps
        assert float(O.velocity_loss(x0.clone(), x0, tt, min_t=0.1)) == 0.0
        if t >= 0.1:  # above the clamp it is the usual velocity error against eps - x0
            v_hat = (x_t - (x0 + 0.01)) / t
            expected = float(((v_hat - (eps - x0)) ** 2).mean())
        else:
            expected = (0.01 / 0.1) ** 2
        assert abs(float(O.velocity_loss(x0 + 0.01, x0, tt, min_t=0.1)) - expected) < 1e-6 * max(1, expected)
    samples = O.sample_t(20_000, torch.Generator().manual_seed(1))
    assert 0 < float(samples.min()) and float(samples.max()) < 1
    # T_MEAN 0.8, T_STD 1.5 (plus 5% from U(0.9, 1)): about 13% below 0.3 and 15% above 0.93
    assert 0.10 < float((samples < 0.3).float().mean()) < 0.16
    assert 0.11 < float((samples > 0.93).float().mean()) < 0.18


def test_task_batches_are_the_base_trainers_batches() -> None:
    """The LoRA trainer's preservation batch (task_batch) is the base trainer's batch of the same seed and step, the
    same prompts (dropped ones empty) and images in both groups, and a function of (seed, step)."""
    for seed, step, size in ((0, 0, 16), (3, 7, 8), (5, 2, 5)):
        tasks, full = O.task_batch(seed, step, size), train.make_batch(seed, step, size)
        assert tasks.gen_prompts == full.gen_prompts and tasks.cond_prompts == full.cond_prompts
        for name in ("gen_target", "cond_target", "cond_source"):
            assert torch.equal(getattr(tasks, name), getattr(full, name)), name
        assert len(tasks.gen_prompts) == size // 2 and tasks.cond_source.shape == (size - size // 2, 4, 64, 64)
    a, b = O.task_batch(1, 2, 8), O.task_batch(1, 3, 8)
    assert a.gen_prompts != b.gen_prompts and not torch.equal(a.gen_target, b.gen_target)
    drawn = O.draw_examples(0, 0, 100)
    dropped = [d for ex, d in drawn if ex.source is None]
    assert [p == "" for p in O.group_examples(drawn).gen_prompts] == dropped  # dropped prompts, and only they, empty
    assert 3 <= sum(d for _, d in drawn) <= 20  # TEXT_DROP = 0.1 of 100
