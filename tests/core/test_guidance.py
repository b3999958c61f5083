import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers_layout import cfg_to_guidance, guidance_to_cfg
from hypothesis import given, settings
from hypothesis import strategies as st

from zimage_nodes.core import guidance
from zimage_nodes.core.guidance import cfg_blend, effective_cfg
from zimage_nodes.core.schedule import zimage_sigmas


def _pair(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype), torch.randn(shape, generator=g).to(dtype)


def _reference(pos, neg, g, normalization):
    """The per-sample loop of diffusers' ZImagePipeline (guidance g = cfg - 1), fp32."""
    out = []
    for j in range(pos.shape[0]):
        p, n = pos[j].float(), neg[j].float()
        pred = p + g * (p - n)
        if normalization and float(normalization) > 0.0:
            ori_pos_norm = torch.linalg.vector_norm(p)
            new_pos_norm = torch.linalg.vector_norm(pred)
            max_new_norm = ori_pos_norm * float(normalization)
            if new_pos_norm > max_new_norm:
                pred = pred * (max_new_norm / new_pos_norm)
        out.append(pred)
    return torch.stack(out)


# ---- the blend ---------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple),
    cfg=st.floats(-3.0, 12.0, allow_nan=False),
    seed=st.integers(0, 2**16),
)
def test_blend_is_textbook_cfg(shape, cfg, seed):
    pos, neg = _pair(shape, seed)
    out = cfg_blend(pos, neg, cfg)
    assert out.shape == pos.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, neg + cfg * (pos - neg), rtol=1e-5, atol=1e-5)


def test_blend_equals_reference_form_with_guidance():
    pos, neg = _pair((2, 16, 8, 8))
    for g in (0.5, 3.0, 4.0, 7.5):
        # lerp is fused (may use an FMA), so agreement is to float32 rounding, not bit for bit.
        out = cfg_blend(pos, neg, guidance_to_cfg(g))
        torch.testing.assert_close(out, pos + g * (pos - neg), rtol=2.5e-7, atol=1e-7)


def test_cfg_one_returns_positive_untouched():
    pos, neg = _pair((2, 4, 3))
    assert cfg_blend(pos, neg, 1.0) is pos
    # Guidance off means no normalization either, as in the pipeline (it only normalizes when g > 0).
    assert cfg_blend(pos, neg, 1.0, normalization=0.5) is pos


def _mixed_batch():
    """4 samples: two whose guided prediction is longer than pos (clamped at r = 1), two shorter."""
    pos, neg = _pair((4, 16, 1, 6, 6), seed=3)
    neg[1] = pos[1] * 1.5  # pred = pos - g * 0.5 pos: shorter than pos for g = 1.5 -> not clamped
    neg[3] = pos[3] * 1.2  # 1 - 0.2 g = 0.7 -> not clamped
    return pos, neg


@pytest.mark.parametrize("normalization", [1.0, True, 0.8, 2.0])
def test_normalization_equals_reference_loop(normalization):
    pos, neg = _mixed_batch()
    g = 1.5
    ours = cfg_blend(pos, neg, guidance_to_cfg(g), normalization=normalization)
    ref = _reference(pos, neg, g, normalization)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    # Single-sample batches too (the pipeline's everyday case).
    for j in range(4):
        one = cfg_blend(pos[j : j + 1], neg[j : j + 1], guidance_to_cfg(g), normalization=normalization)
        ref_one = _reference(pos[j : j + 1], neg[j : j + 1], g, normalization)
        torch.testing.assert_close(one, ref_one, rtol=0, atol=1e-6)


def test_normalization_clamps_only_the_long_samples():
    pos, neg = _mixed_batch()
    plain = cfg_blend(pos, neg, 2.5)
    normed = cfg_blend(pos, neg, 2.5, normalization=1.0)
    norms = lambda t: torch.linalg.vector_norm(t.reshape(4, -1), dim=1)  # noqa: E731
    clamped = norms(plain) > norms(pos)
    assert clamped.tolist() == [True, False, True, False]
    torch.testing.assert_close(norms(normed)[clamped], norms(pos)[clamped], rtol=1e-6, atol=0)
    assert torch.equal(normed[~clamped], plain[~clamped])
    # The clamp rescales, it does not change direction.
    cos = torch.nn.functional.cosine_similarity(normed.reshape(4, -1), plain.reshape(4, -1), dim=1)
    torch.testing.assert_close(cos, torch.ones(4), rtol=0, atol=1e-6)


def test_normalization_zero_is_off():
    pos, neg = _pair((2, 3, 4, 4))
    assert torch.equal(cfg_blend(pos, neg, 6.0, normalization=0.0), cfg_blend(pos, neg, 6.0))
    assert torch.equal(cfg_blend(pos, neg, 6.0, normalization=False), cfg_blend(pos, neg, 6.0))


def test_normalization_handles_zero_prediction():
    # pos == neg == 0: pred norm 0 is never "too long"; the result must stay finite.
    z = torch.zeros(2, 3, 4)
    out = cfg_blend(z, z.clone(), 5.0, normalization=1.0)
    assert torch.equal(out, z)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("normalization", [0.0, 1.0])
def test_dtype_and_device_preserved(dtype, normalization):
    pos, neg = _pair((2, 16, 8, 8), dtype=dtype)
    out = cfg_blend(pos, neg, 4.0, normalization=normalization)
    assert out.dtype == dtype and out.device == pos.device and out.shape == pos.shape
    ref = _reference(pos, neg, 3.0, normalization).to(dtype)
    tol = {torch.float16: 2e-2, torch.bfloat16: 1.5e-1}.get(dtype, 1e-5)
    torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol)


def test_normalization_of_low_precision_inputs_uses_fp32_norms():
    # fp16 squares overflow at 256: a norm computed in fp16 would be inf and never clamp.
    pos, neg = _pair((1, 16, 32, 32), dtype=torch.float16)
    pos, neg = pos * 60, neg * 60
    out = cfg_blend(pos, neg, 4.0, normalization=1.0)
    assert torch.isfinite(out).all()
    n_out = torch.linalg.vector_norm(out.float())
    n_pos = torch.linalg.vector_norm(pos.float())
    assert abs(n_out / n_pos - 1) < 2e-3


# ---- no host synchronisation --------------------------------------------------------------------


class _Forbidden(Exception):
    pass


def _forbid(*_a, **_k):
    raise _Forbidden("cfg_blend read a tensor value back to the host")


@pytest.mark.parametrize("normalization", [0.0, 1.0])
def test_blend_never_reads_tensor_values_to_host(monkeypatch, normalization):
    pos, neg = _mixed_batch()
    expected = _reference(pos, neg, 3.0, normalization)
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, _forbid)
    with pytest.raises(_Forbidden):  # the trap works
        bool(pos.sum() > 0)
    out = cfg_blend(pos, neg, 4.0, normalization=normalization)
    monkeypatch.undo()
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_blend_dispatches_no_scalar_reads():
    """At the dispatcher level (catches C++-side reads too): no aten._local_scalar_dense, no copy to CPU
    tensors other than inputs already there, i.e. nothing that would block on a GPU."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    pos, neg = _mixed_batch()
    with Record():
        cfg_blend(pos, neg, 4.0, normalization=1.0)
    assert seen, "dispatch mode recorded nothing"
    assert not [op for op in seen if "_local_scalar_dense" in op or "item" in op], seen
    assert any("lerp" in op for op in seen)


# ---- validation ----------------------------------------------------------------------------------


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(1, 16, 4, 4\).*\(2, 16, 4, 4\)"):
        cfg_blend(torch.zeros(1, 16, 4, 4), torch.zeros(2, 16, 4, 4), 4.0)


@pytest.mark.parametrize("cfg", [math.nan, math.inf, -math.inf])
def test_non_finite_cfg_rejected(cfg):
    with pytest.raises(ValueError, match="cfg must be finite"):
        cfg_blend(torch.zeros(1, 2), torch.zeros(1, 2), cfg)


def test_negative_normalization_rejected():
    with pytest.raises(ValueError, match="normalization must be >= 0"):
        cfg_blend(torch.zeros(1, 2), torch.zeros(1, 2), 4.0, normalization=-0.5)


def test_tensor_cfg_rejected():
    # float(tensor) would be a hidden device sync; the API takes host floats.
    with pytest.raises(ValueError, match="cfg must be a Python number"):
        cfg_blend(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor(4.0))


def test_dtype_mismatch_rejected():
    with pytest.raises(ValueError, match="dtype"):
        cfg_blend(torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.float16), 4.0)


# ---- truncation ----------------------------------------------------------------------------------

# The 8-step shift-3 grid (without the terminal 0) as float32 values.
TURBO8 = [
    1.0,
    0.9545454382896423,
    0.8999999761581421,
    0.8333333134651184,
    0.75,
    0.6428571343421936,
    0.5,
    0.30000001192092896,
]


@pytest.mark.parametrize(
    "sigma, cfg, truncation, expected",
    [
        (1.0, 5.0, 0.5, 5.0),  # t_norm 0: full noise, guided
        (0.75, 5.0, 0.5, 5.0),
        (0.5, 5.0, 0.5, 5.0),  # t_norm == truncation: not strictly greater, still guided
        (0.30000001192092896, 5.0, 0.5, 1.0),  # t_norm 0.7 > 0.5: truncated
        (0.1, 5.0, 0.0, 1.0),
        (1.0, 5.0, 0.0, 5.0),  # t_norm 0 is not > 0
        (0.01, 5.0, 1.0, 5.0),  # 1.0 never truncates
        (0.01, 5.0, 0.99, 1.0),
        (0.01, 5.0, 3.0, 5.0),  # > 1 never truncates either
        (0.3, 1.0, 0.5, 1.0),
        (0.9, 2.0, 0.2, 2.0),
    ],
)
def test_effective_cfg_table(sigma, cfg, truncation, expected):
    assert effective_cfg(sigma, cfg, truncation) == expected


def test_truncation_one_never_truncates_any_grid():
    for steps, shift in ((8, 3.0), (28, 6.0), (50, 6.0), (9, 1.0)):
        for sigma in zimage_sigmas(steps, shift)[:-1].tolist():
            assert effective_cfg(sigma, 5.0, 1.0) == 5.0


@pytest.mark.parametrize(
    "truncation, n_guided",
    [
        (0.0, 1),  # only sigma 1 (t_norm 0) is guided
        (0.05, 2),
        # The pipeline's float32 t_norm at sigma 0.9 is 0.10000000149 > 0.1: that step is already
        # truncated, although 1 - 0.9 "equals" 0.1.
        (0.1, 2),
        (0.25, 5),  # t_norm at sigma 0.75 is exactly 0.25: not strictly greater, still guided
        (0.5, 7),
        (0.7, 8),  # float32 t_norm at sigma 0.3 is 0.69999999 < 0.7: every step guided
        (1.0, 8),
    ],
)
def test_turbo_grid_boundaries(truncation, n_guided):
    sig = zimage_sigmas(8, 3.0)[:-1].tolist()
    assert sig == TURBO8
    guided = [effective_cfg(s, 5.0, truncation) != 1.0 for s in sig]
    assert guided == [True] * n_guided + [False] * (8 - n_guided), guided
    ref, _ = _pipeline_truncated(8, 3.0, truncation)
    assert [not r for r in ref] == guided


def _pipeline_truncated(steps, shift, truncation):
    """Which steps the pipeline runs without guidance, computed its way (timesteps tensor, float32)."""
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift, use_dynamic_shifting=False)
    sched.set_timesteps(sigmas=torch.linspace(1.0, 1 / steps, steps).tolist(), mu=0.0)
    t_norms = ((1000 - sched.timesteps.float()) / 1000).tolist()
    return [tn > truncation for tn in t_norms], sched.sigmas[:-1].tolist()


@pytest.mark.parametrize("steps, shift", [(8, 3.0), (9, 3.0), (10, 6.0), (28, 6.0), (50, 6.0)])
def test_truncation_decisions_match_pipeline_at_boundaries(steps, shift):
    """Truncation values placed exactly on, and one float32 ulp around, every grid point's t_norm,
    plus the naive double 1 - sigma: these are where 1 - sigma and the pipeline's float32
    (1000 - 1000 sigma) / 1000 can disagree."""
    sigmas = zimage_sigmas(steps, shift)[:-1].tolist()
    candidates = set()
    for s in sigmas:
        tn = guidance._pipeline_t_norm(s)
        t = torch.tensor(tn, dtype=torch.float32)
        up = torch.nextafter(t, torch.tensor(2.0)).item()
        down = torch.nextafter(t, torch.tensor(-1.0)).item()
        candidates |= {tn, up, down, 1.0 - s, round(1.0 - s, 4)}
    for truncation in sorted(candidates):
        ref, ref_sigmas = _pipeline_truncated(steps, shift, truncation)
        assert ref_sigmas == sigmas
        ours = [effective_cfg(s, 5.0, truncation) == 1.0 for s in sigmas]
        assert ours == ref, truncation


def test_converters():
    assert guidance_to_cfg(0.0) == 1.0 and guidance_to_cfg(4.0) == 5.0
    assert cfg_to_guidance(1.0) == 0.0 and cfg_to_guidance(5.0) == 4.0
    assert cfg_to_guidance(guidance_to_cfg(3.25)) == 3.25
