"""Classifier-free guidance for Z-Image, in ComfyUI's ``cfg`` convention.

ComfyUI blends ``neg + cfg * (pos - neg)``; diffusers' ``ZImagePipeline`` writes the same blend as
``pos + g * (pos - neg)`` with ``g = guidance_scale``, so ``cfg = g + 1`` (Turbo's ``g = 0`` is
``cfg = 1``: the negative is never evaluated).

Z-Image adds two knobs on top of the blend (as diffusers' ``ZImagePipeline`` applies them):

* ``cfg_normalization = r``: per sample, the guided prediction may not be longer (L2) than ``r``
  times the positive prediction; longer ones are scaled back onto that sphere.
* ``cfg_truncation = c``: guidance is switched off once ``1 - sigma > c`` (the late, low-noise
  steps), so those steps cost one forward instead of two.

The blend runs every step on the sampling device, so it is written to never synchronise with the
host: no tensor value is read back to Python, the clamp is a ``torch.where``.

One deliberate difference from the pipeline: diffusers treats ``guidance_scale < 0`` (``cfg < 1``)
as "no guidance", ComfyUI blends with any ``cfg``. This module follows ComfyUI; only ``cfg == 1``
means guidance is off.
"""

from __future__ import annotations

import math
import struct

import torch

__all__ = ["cfg_blend", "effective_cfg"]


def _check_number(name: str, value: object) -> float:
    # A tensor here would make float() a silent device->host sync; the callers have host floats.
    if isinstance(value, torch.Tensor) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a Python number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def cfg_blend(pos: torch.Tensor, neg: torch.Tensor, cfg: float, normalization: float = 0.0) -> torch.Tensor:
    """Return ``neg + cfg * (pos - neg)``, optionally clamped by Z-Image's cfg_normalization.

    ``pos``/``neg`` are the model's predictions for the positive and negative caption, batch on
    dim 0. ``normalization`` is ``r`` (``True`` means 1.0, 0 means off): a sample whose guided
    prediction has L2 norm above ``r * ||pos||`` is rescaled to exactly that norm. Norms are taken
    over all non-batch dims, accumulated in fp32 (fp64 for fp64 inputs) as the reference does (bf16
    norms are rounded to bf16 once: 2**-9 relative); the result keeps the inputs' dtype and device. ``cfg == 1`` returns ``pos`` itself: guidance is off, and the reference skips the
    normalization too in that case.
    """
    cfg = _check_number("cfg", cfg)
    r = _check_number("normalization", normalization)
    if r < 0:
        raise ValueError(f"normalization must be >= 0 (0 = off, 1.0 = Z-Image default), got {r}")
    if not isinstance(pos, torch.Tensor) or not isinstance(neg, torch.Tensor):
        raise ValueError("pos and neg must be tensors")
    if pos.shape != neg.shape:
        raise ValueError(f"pos and neg must have the same shape, got pos {tuple(pos.shape)} and neg {tuple(neg.shape)}")
    if pos.dtype != neg.dtype or pos.device != neg.device:
        raise ValueError(
            f"pos and neg must share dtype and device, got pos {pos.dtype} on {pos.device} "
            f"and neg {neg.dtype} on {neg.device}"
        )
    if pos.dim() == 0:
        raise ValueError("pos and neg need a batch dimension (dim 0)")
    if cfg == 1.0:
        return pos

    # One fused kernel, no temporaries. For weight >= 0.5 torch evaluates pos - (pos - neg) * (1 - cfg),
    # the reference's pos + g * (pos - neg) with 1 - cfg = -g exact; the kernel may use an FMA, so
    # results agree to float rounding (1 ulp), not bit for bit.
    pred = torch.lerp(neg, pos, cfg)
    if r == 0.0:
        return pred

    batch = pos.shape[0]
    bshape = (batch,) + (1,) * (pos.dim() - 1)
    acc = torch.promote_types(pos.dtype, torch.float32)
    # fp16 norms overflow past 65504, so fp16 is converted to fp32 for the reduction. bf16 has
    # fp32's range and reductions accumulate in fp32 internally: converting it first would only
    # cost a full-size fp32 copy of both tensors.
    cast = torch.float32 if pos.dtype == torch.float16 else None
    pos_norm = torch.linalg.vector_norm(pos.reshape(batch, -1), dim=1, dtype=cast).to(acc)
    pred_norm = torch.linalg.vector_norm(pred.reshape(batch, -1), dim=1, dtype=cast).to(acc)
    max_norm = pos_norm * r
    # where() instead of a Python `if`: the decision stays on the device. The clamp on the
    # denominator only keeps the unselected branch finite (pred_norm == 0 is never "too long").
    safe_norm = pred_norm.clamp_min(torch.finfo(acc).tiny)
    scale = torch.where(pred_norm > max_norm, max_norm / safe_norm, 1.0)
    # In place on the blend's own output: no second full-size tensor.
    return pred.mul_(scale.reshape(bshape).to(pred.dtype))


def _f32(x: float) -> float:
    """Round a Python float to the nearest float32, to replay the pipeline's float32 arithmetic."""
    return struct.unpack("f", struct.pack("f", x))[0]


def _pipeline_t_norm(sigma: float) -> float:
    # The pipeline compares ((1000 - t) / 1000) with t = sigma * 1000, all float32, not 1 - sigma.
    # Each float32 op is one correctly rounded double op rounded again to float32, which is exact
    # for + - * / (53 >= 2 * 24 + 2), so this agrees bit for bit with the pipeline.
    t = _f32(_f32(sigma) * 1000.0)
    return _f32(_f32(1000.0 - t) / 1000.0)


def effective_cfg(sigma: float, cfg: float, truncation: float) -> float:
    """The cfg to use at ``sigma`` under Z-Image's cfg_truncation: ``cfg``, or 1.0 when truncated.

    Guidance is off once ``t_norm = 1 - sigma`` exceeds ``truncation`` (only when
    ``truncation <= 1``; 1.0 or more never truncates, since ``t_norm < 1`` for every sigma > 0).
    ``t_norm`` is computed with the pipeline's float32 arithmetic so that a truncation value that
    lands on a schedule point switches off at the same step as in diffusers.
    """
    sigma = _check_number("sigma", sigma)
    cfg = _check_number("cfg", cfg)
    truncation = _check_number("truncation", truncation)
    if truncation <= 1.0 and _pipeline_t_norm(sigma) > truncation:
        return 1.0
    return cfg
