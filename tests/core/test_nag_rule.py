"""core.nag.nag_combine (passes fused for speed) against the NAG rule as the paper states it
(tests/nag_reference.py), in float32 and bfloat16, returned or written into an output."""

import pytest
import torch
from nag_reference import _nag_rule

from zimage_nodes.core.nag import nag_combine


def _pair(seed, dtype=torch.float32, shape=(2, 33, 96)):
    g = torch.Generator().manual_seed(seed)
    z_pos, z_neg = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    z_pos[0, 0] = 0.0  # a token whose norms clamp at EPS
    z_neg[0, 0] = 0.0
    return z_pos.to(dtype), z_neg.to(dtype)


@pytest.mark.parametrize("scale, tau, alpha", [(5.0, 2.5, 0.25), (3.0, 100.0, 1.0), (0.0, 1.0, 0.5), (11.0, 1.0, 0.9)])
def test_float32_equals_the_rule(scale, tau, alpha):
    z_pos, z_neg = _pair(0)
    ref = _nag_rule(z_pos, z_neg, scale, tau, alpha)
    out = nag_combine(z_pos, z_neg, scale, tau, alpha)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    written = torch.full_like(z_pos, float("nan"))
    assert nag_combine(z_pos, z_neg, scale, tau, alpha, out=written) is written
    assert torch.equal(written, out)


def test_the_cap_acts_where_the_guided_output_grows_past_tau():
    z_pos, z_neg = _pair(1)
    capped = nag_combine(z_pos, -z_neg, 5.0, 1.5, 1.0)  # alpha 1: the capped g itself
    ratio = capped.abs().sum(-1) / z_pos.abs().sum(-1).clamp_min(1e-6)
    ratio = torch.cat([ratio[0, 1:], ratio[1]])  # token [0, 0] is zero
    assert ratio.max() <= 1.5 + 1e-5 and ratio.min() >= 1.5 - 1e-4


def test_bfloat16_inputs_are_combined_in_float32():
    z_pos, z_neg = _pair(2, torch.bfloat16)
    ref = _nag_rule(z_pos.float(), z_neg.float(), 5.0, 2.5, 0.25)
    out = nag_combine(z_pos, z_neg, 5.0, 2.5, 0.25)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() <= 1e-2 * ref.abs().max()
    written = torch.empty_like(z_pos)
    nag_combine(z_pos.float(), z_neg.float(), 5.0, 2.5, 0.25, out=written)  # float32 rule into a bf16 output
    assert (written.float() - ref).abs().max() <= 1e-2 * ref.abs().max()
