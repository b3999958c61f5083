"""Z-Image sigma schedules, identical to diffusers' ``ZImagePipeline``.

The pipeline feeds ``FlowMatchEulerDiscreteScheduler(shift=shift, use_dynamic_shifting=False)`` the
base grid ``linspace(1, 1/n, n)``; the scheduler shifts it with ``shift*s / (1 + (shift-1)*s)``
in float32 and appends a terminal 0. :func:`zimage_sigmas` replays exactly that, op for op in
float32, so a sampler built on it reproduces the reference bit for bit.

Relation to ComfyUI's ``simple`` scheduler (with AuraFlow-style model sampling, multiplier 1):
``simple`` picks entries from a 1000-point table, base point ``1 - int(i * 1000/n) / 1000``
instead of ``1 - i/n``. When 1000 is divisible by ``steps`` (4, 5, 8, 10, 20, 25, 50, ...) the
grids agree to float32 rounding (<= 1.2e-7). Otherwise ``int()`` truncates each base point to a
multiple of 1/1000, so ComfyUI's sigmas are slightly higher: measured against ComfyUI v0.8.0,
up to 1.8e-3 (9 steps) / 1.7e-3 (28 steps) at shift 3 and 2.2e-3 (9, 28 steps) / 2.9e-3
(30 steps) at shift 6, i.e. differences in the third decimal. Base's default 28 steps is such a
case, which is why this pack computes the grid itself.
"""

from __future__ import annotations

import math

import torch

__all__ = ["shift_sigmas", "zimage_sigmas"]


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Flow-matching time shift ``shift*s / (1 + (shift-1)*s)``; ``shift > 1`` spends more steps at high noise.

    Written in the scheduler's order of operations so float32 results match it exactly.
    """
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def _check(steps: int, shift: float, denoise: float) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift) or shift <= 0:
        raise ValueError(f"shift must be a finite number > 0 (Turbo 3.0, Base 6.0), got {shift!r}")
    if isinstance(denoise, bool) or not isinstance(denoise, (int, float)) or not 0.0 <= denoise <= 1.0:
        raise ValueError(f"denoise must be between 0 and 1, got {denoise!r}")


def _full_grid(n: int, shift: float) -> torch.Tensor:
    base = torch.linspace(1.0, 1.0 / n, n, dtype=torch.float32)
    shifted = shift_sigmas(base, float(shift))
    return torch.cat([shifted, torch.zeros(1, dtype=torch.float32)])


def zimage_sigmas(steps: int, shift: float, denoise: float = 1.0) -> torch.Tensor:
    """Float32 sigmas, ``steps + 1`` long and ending in 0, as the Z-Image pipeline uses them.

    ``denoise < 1`` follows ComfyUI's KSampler so the pack behaves like the host's samplers for
    img2img: the grid is computed for ``int(steps / denoise)`` steps and its last ``steps + 1``
    values kept (the step count stays what the user asked for). ``denoise <= 0`` gives an empty
    tensor: nothing to do.
    """
    _check(steps, shift, denoise)
    if denoise <= 0.0:
        return torch.zeros(0, dtype=torch.float32)
    total = int(steps / denoise)
    return _full_grid(total, shift)[-(steps + 1) :]
