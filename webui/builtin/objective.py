"""The built-in model's training objective, shared by its trainer (webui/builtin_lab/train.py) and the LoRA trainer.

Flow matching in pixel space: x_t = (1 - t) x0 + t eps (t = 1 is pure noise); the model predicts x0 and the loss is
on the velocity that prediction implies (`velocity_loss`), at noise levels drawn by `sample_t`. `task_batch` draws
one step's examples of the model's own tasks (half text-to-image, half edits and inpainting, from data.py) as a
pure function of (seed, step), prompts dropped for guidance at TEXT_DROP: the base trainer learns from them, the
LoRA trainer's prior preservation keeps them as the base model drew them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from webui.builtin import data as D

TEXT_DROP = 0.1  # share of prompts trained empty, so that classifier-free guidance has an unconditional branch
# t ~ logit-normal(mean, std) (t = 1 is pure noise). Scenes of flat colours are visible through a lot of noise: the
# mean of ~3000 background pixels names the background's colour up to t/(1-t) ~ 13-40 (t ~ 0.93-0.97), a medium
# object's ~200 pixels show it up to t/(1-t) ~ 3-10 (t ~ 0.75-0.9), and only an outline (which shape) needs
# t/(1-t) < ~2. So the prompt decides the picture at logit(t) ~ 1-3.5: weights trained with (0.5, 1), which puts 6% of
# draws above logit 2.6, predicted the same colours at t = 1 with the prompt as without it (x0 error 0.41 vs 0.42;
# naming the background alone would give 0.19). (1.5, 1.5) puts 23% there but left the mid range, where objects
# take shape, undertrained (no objects drawn after 3484 steps); the shipped weights use (0.8, 1.5): 12% above
# logit 2.6, 13% below t = 0.3, the rest between.
T_MEAN, T_STD = 0.8, 1.5
T_HIGH = 0.05  # share of t drawn from U(0.9, 1): sampling starts at pure noise, which the logit-normal rarely reaches
# The velocity loss is the x0 error over t^2, so nearly clean samples weigh most; both the predicted and the true
# velocity divide by max(t, MIN_T). (Weights trained up to step 10851 used eps - x0 as the target while dividing the
# prediction by the clamped t: below the clamp that target is off by (MIN_T - t) / MIN_T * (eps - x0), and a batch
# of t in [0.02, 0.1] gave a gradient 20-30 times that of a batch at mid-range t.) MIN_T = 0.45 bounds the weight at
# about 5 (like Min-SNR-5): nearly clean samples, whose error is tiny anyway, no longer outweigh the noise levels
# where objects take shape (lower object and background error at every t <= 0.85 after 1500 steps than with 0.1).
MIN_T = 0.45
SELF_COND_P = 0.5  # self-conditioned models: share of steps whose x0_prev is a detached prediction (else zeros)


@dataclass(frozen=True)
class TaskBatch:
    """Examples of one step split into plain generation (no source) and conditioned (edit/inpaint) groups."""

    gen_prompts: list[str]
    gen_target: torch.Tensor  # [Bg,3,H,W] in [-1,1]
    cond_prompts: list[str]
    cond_target: torch.Tensor  # [Bc,3,H,W]
    cond_source: torch.Tensor  # [Bc,4,H,W]: RGB (masked pixels 0) + inpainting-mask channel


def draw_examples(seed: int, step: int, batch_size: int, split: str = "train") -> list[tuple[D.Example, bool]]:
    """Examples step*batch_size ... (step+1)*batch_size-1 of the split, each with whether its prompt is dropped.
    The first half is text-to-image, the second half edits and inpainting (fixed, so tensor shapes stay constant
    per step)."""
    drawn = []
    for i in range(batch_size):
        rng = D.example_rng(seed, step * batch_size + i, split)
        task = "txt2img" if i < batch_size // 2 else rng.choices(D.EDIT_TASKS, weights=D.TASK_WEIGHTS[1:])[0]
        ex = D.sample_example(rng, task)
        drawn.append((ex, rng.random() < TEXT_DROP))
    return drawn


def stack(arrays: list[np.ndarray], channels: int) -> torch.Tensor:
    """[N,channels,SIZE,SIZE] from N arrays [channels,SIZE,SIZE]; an empty [0,...] tensor for none."""
    return torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros(0, channels, D.SIZE, D.SIZE)


def group_examples(drawn: list[tuple[D.Example, bool]]) -> TaskBatch:
    """Drawn examples as tensors, split into the generation and the conditioned group (in their order)."""
    gen_p, gen_t, cond_p, cond_t, cond_s = [], [], [], [], []
    for ex, dropped in drawn:
        prompt = "" if dropped else ex.prompt
        arrays = D.to_tensors(ex)
        if "source" in arrays:
            cond_p.append(prompt)
            cond_t.append(arrays["target"])
            cond_s.append(arrays["source"])
        else:
            gen_p.append(prompt)
            gen_t.append(arrays["target"])
    return TaskBatch(gen_p, stack(gen_t, 3), cond_p, stack(cond_t, 3), stack(cond_s, 4))


def task_batch(seed: int, step: int, batch_size: int, split: str = "train") -> TaskBatch:
    """The examples of `step` as tensors (`draw_examples`, then `group_examples`)."""
    return group_examples(draw_examples(seed, step, batch_size, split))


def sample_t(batch: int, gen: torch.Generator, t_mean: float = T_MEAN, t_std: float = T_STD) -> torch.Tensor:
    """Noise levels for one group: logit-normal, with a T_HIGH share from U(0.9, 1). [B] on the CPU."""
    t = torch.sigmoid(torch.randn(batch, generator=gen) * t_std + t_mean)  # [B]
    high = torch.rand(batch, generator=gen) < T_HIGH  # [B]
    return torch.where(high, 0.9 + 0.1 * torch.rand(batch, generator=gen), t)  # [B]


def velocity_loss(x0_hat: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, min_t: float = MIN_T,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error of the velocity implied by an x0 prediction, (x_t - x0_hat) / max(t, min_t), against the
    true one, (x_t - x0) / max(t, min_t) (= eps - x0 for t >= min_t). Dividing both by the same clamped t keeps the
    target unbiased below min_t: the loss is the x0 error times 1 / max(t, min_t)^2. Images [B,3,H,W]; t [B];
    weight [B,1,H,W] (per-pixel loss weights, e.g. the base trainer's object weighting) or None."""
    tb = t[:, None, None, None].clamp(min=min_t)  # [B,1,1,1]
    err = ((x0.float() - x0_hat.float()) / tb) ** 2  # [B,3,H,W]
    return (err * weight).mean() if weight is not None else err.mean()
