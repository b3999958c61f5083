"""Texts the nodes show in their message box (web/js/node_messages.js) when a fast path of this
pack is off for a run, and the checks that decide it from the model a node receives.

The fast paths decide per model call (host/nag_patch.py, host/batched_cfg.py) and log the reason;
what can be known when the node runs (a model patch or wrapper they do not reproduce) is shown on
the node as well, where the user looks."""

from __future__ import annotations

from ..model import zimage_batched, zimage_nag
from . import batched_cfg, host_model, nag_patch


def nag_off(reason: str) -> str:
    return f"NAG is off for this run: {reason}. The model runs its own forward, so the negative has no effect."


def batched_off(reason: str) -> str:
    return (
        f"Batched CFG is off for this run: {reason}. Positive and negative run as ComfyUI's CFGGuider runs them "
        "(the same result, slower)."
    )


def _transformer_options(model) -> dict:
    return (model.model_options or {}).get("transformer_options", {}) or {}


def nag_blocker(model) -> str | None:
    """Why the NAG patch on `model` will run the host's plain forward, as far as the model shows."""
    if nag_patch.nag_patch_of(model) is None:
        return None
    options = host_model.without_wrapper(_transformer_options(model), nag_patch.WRAPPER_KEY)
    ok, why = zimage_nag.can_nag(model.model.diffusion_model, options)
    return None if ok else why


def batched_blocker(model) -> str | None:
    """Why the guider's batched forward will not run for `model` (a Z-Image model), as far as the
    model shows; conditioning and memory are known only while sampling."""
    if not host_model.is_zimage(model):
        return None
    options = _transformer_options(model)
    ok, why = zimage_batched.can_batch(model.model.diffusion_model, options)
    if not ok:
        return why
    unknown = set(options) - batched_cfg.TRANSFORMER_OPTIONS
    if unknown:
        return f"the model carries transformer_options the batched forward does not reproduce: {sorted(unknown)}"
    return None
