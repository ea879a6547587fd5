"""EaselTransformer forward shapes and input checks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from webui.builtin.model import EaselTransformer, attention


def test_forward_shapes_with_and_without_source() -> None:
    m = EaselTransformer(patch_size=8, hidden_size=32, depth=2, num_heads=2, bottleneck=8, text_dim=16).eval()
    x = torch.randn(2, 3, 64, 64)
    t = torch.tensor([0.3, 0.9])
    text = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert m(x, t, text, mask).shape == (2, 3, 64, 64)
    assert m(x, t, text, mask, torch.randn(2, 4, 64, 64)).shape == (2, 3, 64, 64)
    assert m(torch.randn(1, 3, 32, 48), t[:1], text[:1], mask[:1]).shape == (1, 3, 32, 48)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        m(torch.randn(1, 3, 60, 64), t[:1], text[:1], mask[:1])


def test_patchify_round_trip() -> None:
    m = EaselTransformer(patch_size=8, hidden_size=32, depth=1, num_heads=2, bottleneck=8, text_dim=16)
    x = torch.randn(2, 3, 64, 32)
    assert torch.equal(m.unpatchify(m.patchify(x), 64, 32), x)


def test_source_residual_makes_an_untrained_edit_a_copy() -> None:
    """With the residual, a fresh model (zero-initialised head) returns the source unchanged when editing, and
    only then: without a source, or without the option, the prediction is the head's output alone."""
    kwargs = dict(patch_size=8, hidden_size=32, depth=1, num_heads=2, bottleneck=8, text_dim=16)
    m = EaselTransformer(source_residual=True, **kwargs).eval()
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([0.7])
    text, mask = torch.randn(1, 4, 16), torch.ones(1, 4, dtype=torch.bool)
    source = torch.rand(1, 4, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(m(x, t, text, mask, source), source[:, :3])
        assert torch.count_nonzero(m(x, t, text, mask)) == 0
        plain = EaselTransformer(**kwargs).eval()
        assert torch.count_nonzero(plain(x, t, text, mask, source)) == 0


def trained_and_extended(prefix: str, **option) -> tuple[EaselTransformer, EaselTransformer]:
    """A tiny "trained" transformer (non-zero head) and the same weights in one built with `option`, whose extra
    parameters (all named `prefix`...) the plain weights lack."""
    kwargs = dict(patch_size=8, hidden_size=32, depth=1, num_heads=2, bottleneck=8, text_dim=16)
    torch.manual_seed(0)
    plain = EaselTransformer(**kwargs).eval()
    with torch.no_grad():
        plain.head.weight.normal_(std=0.1)  # a "trained" head with a non-zero output
    extended = EaselTransformer(**option, **kwargs).eval()
    missing, unexpected = extended.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(prefix) for k in missing)
    return plain, extended


def test_pixel_decoder_starts_as_no_change_and_learns_a_correction() -> None:
    """A fresh pixel decoder returns the transformer's prediction exactly (so it can be added to trained
    weights); one optimiser step on an error makes it change the prediction."""
    plain, decoded = trained_and_extended("decoder.", pixel_decoder=8)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([0.2, 0.8])
    text, mask = torch.randn(2, 4, 16), torch.ones(2, 4, dtype=torch.bool)
    source = torch.rand(2, 4, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(decoded(x, t, text, mask), plain(x, t, text, mask))
        assert torch.equal(decoded(x, t, text, mask, source), plain(x, t, text, mask, source))
    opt = torch.optim.SGD(decoded.decoder.parameters(), lr=0.1)
    loss = (decoded(x, t, text, mask) - x).pow(2).mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        assert not torch.equal(decoded(x, t, text, mask), plain(x, t, text, mask))


def test_attention_matches_torch_sdpa_with_and_without_a_key_mask() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 30, 16, generator=g).unbind(0)  # [B,H,N,Dh] each
    keep = torch.rand(2, 1, 1, 30, generator=g) > 0.4  # [B,1,1,N]
    keep[..., :3] = True
    for mask in (None, keep):
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        assert torch.allclose(attention(q, k, v, mask), want, atol=1e-5)
    # a masked key changes nothing, whatever its value
    v2 = v.clone()
    v2[0, :, ~keep[0, 0, 0]] = 100.0
    assert torch.allclose(attention(q, k, v2, keep)[0], attention(q, k, v, keep)[0], atol=1e-5)


def test_self_conditioning_starts_as_no_change_and_then_reads_the_previous_prediction() -> None:
    """A fresh self-conditioned model predicts the same with and without x0_prev (its embedding starts at zero),
    so it can be added to trained weights; once that embedding is non-zero the prediction depends on x0_prev. A
    model without the option ignores x0_prev."""
    plain, selfcond = trained_and_extended("prev_in.", self_condition=True)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([0.2, 0.8])
    text, mask = torch.randn(2, 4, 16), torch.ones(2, 4, dtype=torch.bool)
    prev = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        base = plain(x, t, text, mask)
        assert torch.equal(selfcond(x, t, text, mask, None, prev), base)
        assert torch.equal(plain(x, t, text, mask, None, prev), base)
        selfcond.prev_in[1].weight.normal_(std=0.1)
        assert not torch.allclose(selfcond(x, t, text, mask, None, prev), selfcond(x, t, text, mask))
