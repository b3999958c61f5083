"""NAG's attention with the image keys shared between the positive and the negative branch.

In a Z-Image main layer the image queries attend over [caption, image] keys. NAG needs that
attention twice: with the positive caption (z+) and with the negative one (z-). Both use the same
image keys, and attention over a union of key sets is exactly the log-sum-exp merge of attention
over each set: with o_i, l_i the output and log-sum-exp of part i,

    out = (e^(l1 - m) o1 + e^(l2 - m) o2) / (e^(l1 - m) + e^(l2 - m)),   m = max(l1, l2)
        = o2 + (o1 - o2) * sigmoid(l1 - l2)

So the image queries attend over the image keys ONCE, then over each caption's (few) keys, and two
merges give z+ and z-. This is exact up to float rounding, not an approximation.

Kernels returning (output, log-sum-exp), picked per device, dtype and head size (`kernel_for`):
torch's CPU flash kernel on the CPU; on CUDA the flash kernel, else the memory-efficient one with
`compute_log_sumexp` (whichever accepts the dtype and head size); a matmul/softmax version that
always works. Host-free: torch only.
"""

from __future__ import annotations

import logging
import math

import torch

__all__ = ["KERNELS", "attention_lse", "attention", "merge", "shared_keys_rows", "kernel_for", "force_kernel"]

log = logging.getLogger("zimage_nodes")

KERNELS = ("cpu_flash", "cuda_flash", "cuda_efficient", "matmul")

# (device type, dtype, head size) -> kernel name, decided once by a tiny probe call.
_CHOSEN: dict[tuple, str] = {}
# A kernel forced for every call (tests and the bench's comparisons); None: choose.
_FORCED: str | None = None


def _cpu_flash(q, k, v):
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
    return out, lse


def _cuda_flash(q, k, v):
    res = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)
    return res[0], res[1]


def _cuda_efficient(q, k, v):
    res = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True)
    # The log-sum-exp may come padded along the query axis (to the kernel's block size).
    return res[0], res[1][..., : q.shape[-2]]


def _matmul(q, k, v):
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.matmul(torch.exp(scores - lse[..., None]), v.float()).to(q.dtype)
    return out, lse


_FUNCS = {"cpu_flash": _cpu_flash, "cuda_flash": _cuda_flash, "cuda_efficient": _cuda_efficient, "matmul": _matmul}


def _candidates(device_type: str) -> tuple:
    if device_type == "cpu":
        return ("cpu_flash", "matmul")
    if device_type == "cuda":
        return ("cuda_flash", "cuda_efficient", "matmul")
    return ("matmul",)


def kernel_for(device, dtype, head_dim: int) -> str:
    """The kernel attention_lse uses for this device, dtype and head size: the first candidate whose
    tiny probe runs and agrees with the matmul version (logged at debug level, once)."""
    if _FORCED is not None:
        return _FORCED
    device = torch.device(device)
    key = (device.type, dtype, head_dim)
    name = _CHOSEN.get(key)
    if name is not None:
        return name
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn((1, 2, n, head_dim), generator=g).to(device=device, dtype=dtype) for n in (5, 7, 7))
    ref_out, ref_lse = _matmul(q, k, v)
    tol = 1e-4 if dtype in (torch.float32, torch.float64) else 3e-2
    why = []
    for name in _candidates(device.type):
        if name == "matmul":
            break
        try:
            out, lse = _FUNCS[name](q, k, v)
            if out.shape != q.shape or lse.shape != q.shape[:-1]:
                raise RuntimeError(f"returned shapes {tuple(out.shape)}, {tuple(lse.shape)}")
            err = max(float((out.float() - ref_out.float()).abs().max()), float((lse.float() - ref_lse).abs().max()))
            if not err <= tol:
                raise RuntimeError(f"differs from matmul attention by {err:.3g}")
            break
        except Exception as e:  # noqa: BLE001 - any refusal (dtype, head size, build) means: next kernel
            why.append(f"{name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    _CHOSEN[key] = name
    log.debug(
        "Z-Image NAG attention kernel for %s %s head size %d: %s%s",
        device.type,
        dtype,
        head_dim,
        name,
        f" (not taken: {'; '.join(why)})" if why else "",
    )
    return name


def force_kernel(name: str | None) -> None:
    """Use `name` for every call from now on (None: choose per device, dtype and head size again)."""
    global _FORCED
    if name is not None and name not in _FUNCS:
        raise ValueError(f"unknown attention kernel {name!r}; one of {', '.join(KERNELS)}")
    _FORCED = name


def attention_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: str | None = None):
    """Scaled dot-product attention of q [B, H, Lq, d] over k, v [B, H, Lk, d], no mask.
    Returns (output [B, H, Lq, d] in q's dtype, log-sum-exp of the scores [B, H, Lq] in float32)."""
    name = kernel or kernel_for(q.device, q.dtype, q.shape[-1])
    out, lse = _FUNCS[name](q, k, v)
    return out, lse.float()


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: str | None = None) -> torch.Tensor:
    """attention_lse's output only."""
    return attention_lse(q, k, v, kernel)[0]


def merge(
    o1: torch.Tensor, l1: torch.Tensor, o2: torch.Tensor, l2: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Attention over the union of two key sets from each set's (output, log-sum-exp), computed in
    float32 in one pass: o1 + (o2 - o1) * sigmoid(l2 - l1), sigmoid(l2 - l1) being part 2's share of
    the softmax mass (stable for any l1, l2). Written into `out` if given (it may be o1 itself: each
    element is read before it is written); else returned in float32 with o1's memory layout."""
    w = torch.sigmoid(l2 - l1)[..., None]
    if o1.dtype == torch.float32 and o2.dtype == torch.float32:
        return torch.lerp(o1, o2, w) if out is None else torch.lerp(o1, o2, w, out=out)
    merged = torch.lerp(o1.float(), o2.float(), w)
    return merged if out is None else out.copy_(merged)


def shared_keys_rows(
    q: torch.Tensor,
    P: int,
    Ni: int,
    k_shared: torch.Tensor,
    v_shared: torch.Tensor,
    k_pos: torch.Tensor,
    v_pos: torch.Tensor,
    k_neg: torch.Tensor,
    v_neg: torch.Tensor,
    kernel: str | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """NAG's attention for query rows q [B, H, P + Ni + N, d] laid out [positive caption, image,
    negative caption]: the positive caption's and the image rows attend over shared + pos keys
    (window A), the image and the negative caption's rows over shared + neg keys (window B).
    Three kernel calls:

    1. every row over the shared keys (the big one, once, with all rows: the kernel works in
       large query blocks, as in a plain forward's single call);
    2. positive caption + image rows over the pos keys;
    3. image + negative caption rows over the neg keys;

    and two merges. Returns (window A's rows [B, H, P + Ni, d], window B's rows [B, H, Ni + N, d]):
    window A written into `out` if given (else float32), window B into call 1's output in place
    (q's dtype). At most two image-sized outputs are alive besides `out`: at 4096 image tokens each
    is as large as the attention output of a plain layer."""
    o1, l1 = attention_lse(q, k_shared, v_shared, kernel)
    o2, l2 = attention_lse(q[:, :, : P + Ni], k_pos, v_pos, kernel)
    window_a = merge(o1[:, :, : P + Ni], l1[..., : P + Ni], o2, l2, out=out)
    del o2
    o3, l3 = attention_lse(q[:, :, P:], k_neg, v_neg, kernel)
    window_b = o1[:, :, P:]
    merge(window_b, l1[..., P:], o3, l3, out=window_b)
    return window_a, window_b
