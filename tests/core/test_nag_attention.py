"""The shared-keys attention of core/nag_attention.py against plain attention over the joined keys."""

import pytest
import torch

from zimage_nodes.core import nag_attention as na

CPU_KERNELS = ["cpu_flash", "matmul"]


def _qkv(seed, B=2, H=3, Lq=37, d=16, parts=(50, 9, 21), dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn((B, H, Lq, d), generator=g).to(dtype)
    ks = [torch.randn((B, H, n, d), generator=g).to(dtype) for n in parts]
    vs = [torch.randn((B, H, n, d), generator=g).to(dtype) for n in parts]
    return q, ks, vs


def _sdpa(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_kernel_output_and_log_sum_exp(kernel):
    q, (k, _, _), (v, _, _) = _qkv(0)
    out, lse = na.attention_lse(q, k, v, kernel)
    scores = q @ k.transpose(-1, -2) / 4.0
    assert (out - _sdpa(q, k, v)).abs().max() <= 1e-5
    assert (lse - torch.logsumexp(scores, -1)).abs().max() <= 1e-5


def _rows(seed, dtype=torch.float32, P=9, Ni=50, N=21, shared=50, d=16):
    """Query rows [positive caption, image, negative caption] and key sets (shared, pos, neg)."""
    q, ks, vs = _qkv(seed, Lq=P + Ni + N, parts=(shared, P, N), d=d, dtype=dtype)
    return q, P, Ni, ks, vs


def _shared_keys_rows(q, P, Ni, ks, vs, kernel=None, out=None):
    return na.shared_keys_rows(q, P, Ni, ks[0], vs[0], ks[1], vs[1], ks[2], vs[2], kernel, out=out)


@pytest.mark.parametrize("kernel", CPU_KERNELS)
@pytest.mark.parametrize("into_output", [False, True])
def test_shared_keys_rows_equal_attention_over_each_window(kernel, into_output):
    q, P, Ni, (ks, kp, kn), (vs, vp, vn) = _rows(1)
    B, H, _, d = q.shape
    out = torch.full((B, P + Ni, H, d), float("nan")).transpose(1, 2) if into_output else None
    window_a, window_b = _shared_keys_rows(q, P, Ni, (ks, kp, kn), (vs, vp, vn), kernel, out=out)
    if into_output:
        assert window_a.data_ptr() == out.data_ptr() and not out.isnan().any()
    ref_a = _sdpa(q[:, :, : P + Ni], torch.cat([kp, ks], 2), torch.cat([vp, vs], 2))
    ref_b = _sdpa(q[:, :, P:], torch.cat([ks, kn], 2), torch.cat([vs, vn], 2))
    assert (window_a - ref_a).abs().max() <= 1e-5
    assert (window_b - ref_b).abs().max() <= 1e-5
    assert window_a.dtype == window_b.dtype == torch.float32


def test_merge_in_place_and_in_bfloat16():
    g = torch.Generator().manual_seed(4)
    o1, o2 = torch.randn((2, 3, 40, 8), generator=g), torch.randn((2, 3, 40, 8), generator=g)
    l1, l2 = torch.randn((2, 3, 40), generator=g), torch.randn((2, 3, 40), generator=g)
    ref = na.merge(o1, l1, o2, l2)
    # The union's softmax: part 2's share of the mass is e^l2 / (e^l1 + e^l2).
    share = (l2.exp() / (l1.exp() + l2.exp()))[..., None]
    assert (ref - (o1 * (1 - share) + o2 * share)).abs().max() <= 1e-6
    inplace = o1.clone()
    assert na.merge(inplace, l1, o2, l2, out=inplace) is inplace and torch.equal(inplace, ref)
    o1h, o2h = o1.bfloat16(), o2.bfloat16()
    assert na.merge(o1h, l1, o2h, l2).dtype == torch.float32
    into = torch.empty_like(o1h)
    na.merge(o1h, l1, o2h, l2, out=into)
    assert (into.float() - na.merge(o1h.float(), l1, o2h.float(), l2)).abs().max() <= 2e-2


def test_forced_kernels_give_the_same_result():
    q, P, Ni, ks, vs = _rows(2, P=32, Ni=128, N=64, shared=128, d=32)
    results = {}
    try:
        for kernel in CPU_KERNELS:
            na.force_kernel(kernel)
            assert na.kernel_for(q.device, q.dtype, q.shape[-1]) == kernel
            results[kernel] = _shared_keys_rows(q, P, Ni, ks, vs)
    finally:
        na.force_kernel(None)
    for a, b in zip(results["cpu_flash"], results["matmul"]):
        assert (a - b).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="unknown attention kernel"):
        na.force_kernel("sage")


def test_the_cpu_picks_its_flash_kernel_in_float32_and_bfloat16():
    assert na.kernel_for("cpu", torch.float32, 128) == "cpu_flash"
    assert na.kernel_for("cpu", torch.bfloat16, 128) == "cpu_flash"


def test_merge_is_stable_for_far_apart_log_sum_exps():
    o1, o2 = torch.ones((1, 1, 2, 4)), torch.zeros((1, 1, 2, 4))
    l1, l2 = torch.tensor([[[1000.0, -1000.0]]]), torch.tensor([[[-1000.0, 1000.0]]])
    out = na.merge(o1, l1, o2, l2)
    assert torch.isfinite(out).all()
    assert out[0, 0, 0].tolist() == [1.0] * 4 and out[0, 0, 1].tolist() == [0.0] * 4


def test_bfloat16_close_to_float32():
    q, P, Ni, ks, vs = _rows(3, dtype=torch.bfloat16)
    z16 = _shared_keys_rows(q, P, Ni, ks, vs)
    z32 = _shared_keys_rows(q.float(), P, Ni, [k.float() for k in ks], [v.float() for v in vs], "matmul")
    for a, b in zip(z16, z32):
        assert (a - b).abs().max() <= 3e-2
