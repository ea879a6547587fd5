"""Fixtures for the built-in model's tests: a tiny random-weight EaselPipeline (built in-process, never downloaded)."""
from __future__ import annotations

import pytest
import torch


def make_tiny_pipeline(seed: int = 0, self_condition: bool = False):
    """An EaselPipeline with a tiny config and random (non-zero) weights, so outputs depend on every input
    (with `self_condition`, the previous prediction too)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from webui.builtin import data as D
    from webui.builtin.model import EaselTransformer
    from webui.builtin.pipeline import EaselPipeline
    from webui.builtin.text import EaselTextEncoder

    torch.manual_seed(seed)
    text_encoder = EaselTextEncoder(vocab=D.vocabulary(), max_length=40, dim=32, depth=1, num_heads=2)
    transformer = EaselTransformer(patch_size=8, hidden_size=32, depth=2, num_heads=2, bottleneck=8, text_dim=32,
                                   self_condition=self_condition)
    with torch.no_grad():  # zero-initialised gates and head would make the output ignore its inputs
        for name, p in transformer.named_parameters():
            if "ada" in name or "head" in name or "prev_in" in name:
                p.normal_(0.0, 0.05)
    pipe = EaselPipeline(transformer.eval(), text_encoder.eval(), FlowMatchEulerDiscreteScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def tiny_pipe():
    return make_tiny_pipeline()
