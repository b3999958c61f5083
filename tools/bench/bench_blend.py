"""Section 3: the guidance blend itself, core `cfg_blend` against the textbook expression.

Time: median per call over many interleaved blocks of calls (torch.inference_mode, CPU).
Memory, two ways: (1) torch.profiler with profile_memory=True, allocator level: every CPU
allocation made during one call, kernel-internal ones included; "temporaries" is that total minus
the returned result, i.e. what the caller never gets to keep. (2) a TorchDispatchMode that sees
each aten op's outputs and counts those whose storage is new (views and in-place results are
free): it gives the number of tensors created, but cannot see allocations a kernel makes inside
itself (e.g. the float32 copy `linalg_vector_norm(x, dtype=float32)` makes of a bf16 input).
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

import bench_common as bc
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def textbook(pos, neg, cfg, normalization=0.0):
    """`uncond + (cond - uncond) * cfg`, plus the reference pipeline's normalization written as
    diffusers writes it (per sample, a Python `if` on the norms)."""
    pred = neg + (pos - neg) * cfg
    if normalization <= 0:
        return pred
    out = []
    for j in range(pred.shape[0]):
        ori = torch.linalg.vector_norm(pos[j])
        new = torch.linalg.vector_norm(pred[j])
        max_norm = ori * float(normalization)
        p = pred[j]
        if new > max_norm:
            p = p * (max_norm / new)
        out.append(p)
    return torch.stack(out)


class AllocCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen: set[int] = set()
        self.bytes = 0
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = {
            t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
        }
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                ptr = st.data_ptr()
                if ptr not in inputs and ptr not in self.seen:
                    self.seen.add(ptr)
                    self.bytes += st.nbytes()
                    self.count += 1
        return out


class _KeepAlive(AllocCounter):
    """AllocCounter that keeps every output alive until the call is over, so no storage address is
    freed and reused within the call (which would hide an allocation)."""

    def __init__(self):
        super().__init__()
        self.alive = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        self.alive.append(out)
        return out


def allocations(fn, *args) -> tuple[int, int, int]:
    """(bytes allocated in total, of which temporaries, number of allocations) for one call."""
    with torch.inference_mode():
        counter = _KeepAlive()
        with counter:
            result = fn(*args)
        kept = result.untyped_storage().nbytes()
    return counter.bytes, counter.bytes - kept, counter.count


def time_per_call(fns: dict, args, rounds: int, calls: int) -> dict[str, list[float]]:
    """Per-call seconds, one sample per block of `calls` calls, blocks interleaved."""
    names = list(fns)
    out = {n: [] for n in names}
    with torch.inference_mode():
        for n in names:  # warm-up
            for _ in range(3):
                fns[n](*args)
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for n in order:
                fn = fns[n]
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn(*args)
                out[n].append((time.perf_counter() - t0) / calls)
    return out


def run(cfg_blend, batches=(1, 4), dtypes=(torch.float32, torch.bfloat16), cfg=5.0, rounds=15, calls=20) -> list[dict]:
    rows = []
    for dtype in dtypes:
        for batch in batches:
            g = torch.Generator().manual_seed(batch)
            pos = torch.randn(batch, 16, 128, 128, generator=g).to(dtype)
            neg = torch.randn(batch, 16, 128, 128, generator=g).to(dtype)
            for norm in (0.0, 1.0):
                fns = {
                    "textbook": (lambda p, n, norm=norm: textbook(p, n, cfg, norm)),
                    "cfg_blend": (lambda p, n, norm=norm: cfg_blend(p, n, cfg, norm)),
                }
                times = time_per_call(fns, (pos, neg), rounds, calls)
                with torch.inference_mode():
                    a, b = fns["textbook"](pos, neg), fns["cfg_blend"](pos, neg)
                    diff = float((a.float() - b.float()).abs().max() / a.float().abs().max())
                row = {
                    "dtype": str(dtype).replace("torch.", ""),
                    "batch": batch,
                    "norm": norm,
                    "rel_diff": diff,
                    "input_bytes": pos.untyped_storage().nbytes(),
                }
                for n in fns:
                    d_total, _, count = allocations(fns[n], pos, neg)
                    total, kept = profiler_bytes(fns[n], pos, neg)
                    row[n] = {
                        "time": bc.median(times[n]),
                        "spread": bc.spread(times[n]),
                        "bytes": total,
                        "temps": total - kept,
                        "tensors": count,
                        "dispatch_bytes": d_total,
                    }
                rows.append(row)
    return rows


@contextmanager
def _quiet_fd2():
    """Kineto prints start/stop lines from C++ straight to fd 2: silence them for the call."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def profiler_bytes(fn, *args) -> tuple[int, int]:
    """(bytes allocated during one call, bytes of the returned result) from torch.profiler with
    profile_memory=True: the sum of the positive self CPU memory of every event, which is where
    the allocator's allocations land (leaf ops such as empty_strided, including allocations a
    kernel makes internally)."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_fd2(), torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn(*args)
    total = sum(e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage > 0)
    return total, result.untyped_storage().nbytes()
