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


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_shared_key_pair_equals_attention_over_the_joined_keys(kernel):
    q, (ks, kp, kn), (vs, vp, vn) = _qkv(1)
    z_pos, z_neg = na.shared_key_pair(q, ks, vs, kp, vp, kn, vn, kernel)
    assert (z_pos - _sdpa(q, torch.cat([kp, ks], 2), torch.cat([vp, vs], 2))).abs().max() <= 1e-5
    assert (z_neg - _sdpa(q, torch.cat([ks, kn], 2), torch.cat([vs, vn], 2))).abs().max() <= 1e-5


def test_forced_kernels_give_the_same_result():
    q, (ks, kp, kn), (vs, vp, vn) = _qkv(2, Lq=64, parts=(128, 32, 64), d=32)
    results = {}
    try:
        for kernel in CPU_KERNELS:
            na.force_kernel(kernel)
            assert na.kernel_for(q.device, q.dtype, q.shape[-1]) == kernel
            results[kernel] = na.shared_key_pair(q, ks, vs, kp, vp, kn, vn)
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
    q, (ks, kp, kn), (vs, vp, vn) = _qkv(3, dtype=torch.bfloat16)
    z16 = na.shared_key_pair(q, ks, vs, kp, vp, kn, vn)
    z32 = na.shared_key_pair(*(t.float() for t in (q, ks, vs, kp, vp, kn, vn)), kernel="matmul")
    for a, b in zip(z16, z32):
        assert (a - b).abs().max() <= 3e-2
