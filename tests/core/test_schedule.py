import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zimage_nodes.core.schedule import shift_sigmas, zimage_sigmas


def test_turbo_8_steps_shift_3():
    s = zimage_sigmas(8, 3.0)
    assert s.dtype == torch.float32 and s.shape == (9,)
    assert [round(v, 4) for v in s.tolist()] == [1.0, 0.9545, 0.9, 0.8333, 0.75, 0.6429, 0.5, 0.3, 0.0]


def test_shift_formula():
    s = torch.tensor([0.0, 0.25, 0.5, 1.0])
    torch.testing.assert_close(shift_sigmas(s, 3.0), torch.tensor([0.0, 0.5, 0.75, 1.0]))
    # shift 1 is the identity; endpoints are fixed for every shift.
    torch.testing.assert_close(shift_sigmas(s, 1.0), s)
    assert shift_sigmas(torch.tensor([0.0, 1.0]), 6.0).tolist() == [0.0, 1.0]


@settings(max_examples=80, deadline=None)
@given(steps=st.integers(1, 200), shift=st.floats(0.1, 20.0, allow_nan=False))
def test_grid_shape_and_monotone(steps, shift):
    s = zimage_sigmas(steps, shift)
    assert s.shape == (steps + 1,) and s.dtype == torch.float32
    assert s[0].item() == pytest.approx(1.0, abs=1e-6)
    assert s[-1].item() == 0.0
    assert bool((s[1:] < s[:-1]).all()), s


def test_higher_shift_spends_more_steps_at_high_noise():
    lo, hi = zimage_sigmas(28, 3.0), zimage_sigmas(28, 6.0)
    assert bool((hi[1:-1] > lo[1:-1]).all())


def test_denoise_one_is_full_grid():
    assert torch.equal(zimage_sigmas(8, 3.0, 1.0), zimage_sigmas(8, 3.0))


@pytest.mark.parametrize("steps, denoise, total", [(8, 0.5, 16), (8, 0.6, 13), (10, 0.75, 13), (1, 0.3, 3)])
def test_denoise_keeps_tail_of_longer_grid(steps, denoise, total):
    """ComfyUI KSampler semantics: grid for int(steps / denoise) steps, last steps + 1 values."""
    s = zimage_sigmas(steps, 3.0, denoise)
    full = zimage_sigmas(total, 3.0)
    assert s.shape == (steps + 1,)
    assert torch.equal(s, full[-(steps + 1) :])
    assert s[0].item() < 1.0 and s[-1].item() == 0.0


def test_denoise_zero_is_empty():
    s = zimage_sigmas(8, 3.0, 0.0)
    assert s.numel() == 0 and s.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0, shift=3.0), "steps must be an integer >= 1"),
        (dict(steps=-2, shift=3.0), "steps must be an integer >= 1"),
        (dict(steps=8.0, shift=3.0), "steps must be an integer >= 1"),
        (dict(steps=8, shift=0.0), "shift must be a finite number > 0"),
        (dict(steps=8, shift=-1.0), "shift must be a finite number > 0"),
        (dict(steps=8, shift=float("nan")), "shift must be a finite number > 0"),
        (dict(steps=8, shift=3.0, denoise=1.5), "denoise must be between 0 and 1"),
        (dict(steps=8, shift=3.0, denoise=-0.1), "denoise must be between 0 and 1"),
        (dict(steps=8, shift=3.0, denoise=float("nan")), "denoise must be between 0 and 1"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        zimage_sigmas(**kwargs)
