"""Verify-once guard for a forward pass that mirrors host (ComfyUI) code.

A mirrored forward (e.g. one batched pass where ComfyUI runs one pass per sample) is only worth
running while it computes what the host computes. ComfyUI's model code changes between releases,
so instead of trusting a copy, `ForwardGuard` compares it against the host's own path the first
time it sees a (model, signature) pair, caches the verdict, and from then on runs the mirror only
where it matched. On a mismatch, or when the caller reports a structure it does not know, the
caller's reference (host) path runs instead, and the reason is logged once.

Cost: one extra run of the mirror per new (model, signature), plus one device-to-host read of the
comparison; later calls with a known signature cost nothing extra.

    guard = ForwardGuard("Z-Image batched forward")
    out = guard.run(model, signature, mirror=lambda: ..., reference=lambda: ..., baseline=None)
    guard.verdict(model, signature)  # Verdict(ok, reason) once decided, else None
    guard.fallback(reason)           # log a fallback reason once (static checks, e.g. unknown inputs)
    guard.reset()                    # forget verdicts

Only the host's reference output is returned on the step that is checked, so a checked step is
exactly the host's result. Host-free: it only needs torch (the caller passes the two callables).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch

log = logging.getLogger("zimage_nodes")

# Largest allowed relative L2 error ||mirror - reference|| / ||reference||. A correct mirror differs
# from the host only by kernel rounding (batch shapes, masked vs unmasked attention); a structural
# divergence (a position id, a pad token, a modulation off) is of order 1e-2 to 1.
REL_TOL = {
    torch.float64: 1e-6,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 2e-2,
}
DEFAULT_REL_TOL = 2e-2

_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""
    error: float | None = None  # relative L2 error measured, when compared


def relative_error(mirror: torch.Tensor, reference: torch.Tensor, baseline=None) -> torch.Tensor:
    """||mirror - reference|| / ||reference - baseline|| as a device scalar (fp32 at least)."""
    acc = torch.promote_types(reference.dtype, torch.float32)
    ref = reference.to(acc)
    diff = torch.linalg.vector_norm(mirror.to(acc) - ref)
    scale = ref if baseline is None else ref - baseline.to(acc)
    return diff / torch.linalg.vector_norm(scale).clamp_min(torch.finfo(acc).tiny)


def compare(mirror, reference, tolerance: float | None = None, baseline=None) -> Verdict:
    """Compare two outputs (tensors, or lists/tuples of tensors). One device-to-host read.

    `baseline`: a tensor both outputs contain unchanged (e.g. the input x of a denoised prediction
    x - sigma * v); errors are measured relative to what the model adds to it, so a large
    baseline cannot hide a divergence."""
    mirrors = list(mirror) if isinstance(mirror, (list, tuple)) else [mirror]
    references = list(reference) if isinstance(reference, (list, tuple)) else [reference]
    if len(mirrors) != len(references):
        return Verdict(False, f"mirror returned {len(mirrors)} outputs, host {len(references)}")
    for m, r in zip(mirrors, references):
        if m.shape != r.shape:
            return Verdict(False, f"mirror output shape {tuple(m.shape)} != host {tuple(r.shape)}")
    dtype = references[0].dtype
    tol = tolerance if tolerance is not None else REL_TOL.get(dtype, DEFAULT_REL_TOL)
    stats = torch.stack(
        [relative_error(m, r, baseline) for m, r in zip(mirrors, references)]
        + [torch.isfinite(r).all().to(torch.float32) for r in references]
    )
    values = stats.tolist()  # the one read
    n = len(references)
    errors, finite = values[:n], values[n:]
    if not all(finite):
        # Nothing to compare against: undecided, not a verdict (the caller retries on a later call).
        return Verdict(False, "host output not finite; check deferred")
    worst = max(errors)
    if worst != worst or worst > tol:  # NaN from the mirror counts as a mismatch
        return Verdict(False, f"mirror differs from the host forward (relative error {worst:.3g} > {tol:.3g})", worst)
    return Verdict(True, "", worst)


class ForwardGuard:
    """Per-(model, signature) verdicts on a mirrored forward, checked once against the host's.

    `model` is any weak-referenceable object (the host's diffusion model module): verdicts die with
    it. `signature` is any hashable the caller derives from what changes the computation's
    structure (shapes, token lengths, dtype, device, option keys)."""

    def __init__(self, name: str, logger: logging.Logger = log, instead: str = "host path"):
        self.name = name
        self.instead = instead  # what runs when the mirror is not verified (for the log)
        self.log = logger
        self._verdicts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._logged: set[str] = set()
        self.checks = 0  # comparisons run (each cost one extra mirror run)

    def reset(self) -> None:
        """Forget all verdicts and logged reasons (tests; or after swapping host code at runtime)."""
        self._verdicts = weakref.WeakKeyDictionary()
        self._logged.clear()
        self.checks = 0

    def verdict(self, model, signature: Hashable) -> Verdict | None:
        return self._verdicts.get(model, {}).get(signature)

    def fallback(self, reason: str) -> None:
        """Log, once per distinct reason, that the host path runs instead of the mirror."""
        if reason not in self._logged:
            self._logged.add(reason)
            self.log.info("%s: %s (%s)", self.name, self.instead, reason)

    def run(
        self,
        model,
        signature: Hashable,
        mirror: Callable[[], object],
        reference: Callable[[], object],
        tolerance: float | None = None,
        baseline=None,
    ):
        """The mirror's output where it is verified for (model, signature), else the reference's.

        On the first call for a pair both run and are compared (see `compare` for `tolerance` and
        `baseline`); the reference output is returned."""
        known = self.verdict(model, signature)
        if known is not None:
            if known.ok:
                return mirror()
            self.fallback(known.reason)
            return reference()
        try:
            mirrored = mirror()
        except _OUT_OF_MEMORY:
            # Not a verdict on the structure: run the host path this time, check again next time.
            self.fallback("mirror ran out of memory; check deferred")
            return reference()
        except Exception as e:  # an unknown host structure can fail anywhere in the mirror
            result = Verdict(False, f"mirror raised {type(e).__name__}: {e}")
        else:
            result = None
        expected = reference()
        if result is None:
            self.checks += 1
            result = compare(mirrored, expected, tolerance, baseline)
            if not result.ok and result.reason.endswith("check deferred"):
                self.fallback(result.reason)
                return expected
        self._verdicts.setdefault(model, {})[signature] = result
        if result.ok:
            self.log.debug("%s: verified for %r (relative error %.3g)", self.name, signature, result.error)
        else:
            self.fallback(result.reason)
        return expected
