"""The Z-Image NAG node's model patch: a negative prompt that acts on Z-Image-Turbo at cfg 1, through normalized attention
guidance (NAG), without CFG's second forward.

The node returns a clone of the model with a DIFFUSION_MODEL wrapper (ModelPatcher's wrapper
surface). On each model call the wrapper decides:

* NAG off for this call (sigma below nag_sigma_end, neutral settings, only negative-branch rows):
  the host's forward runs untouched;
* otherwise the rows of the positive branch (`cond_or_uncond` 0) run through
  the skeleton forward with zimage_nag's layout (one forward, image stream computed once), and rows of a CFG negative
  branch, if ComfyUI batched them in, run plain: with real CFG, NAG guides the positive branch
  only, as the authors' NAGCFGGuider does.

The mirrored forward is self-checked against the host's own forward once per model, device and
dtype (forward_guard, on small probe inputs), first with the shared-keys attention (image keys
attended once for z+ and z-); if that fails, with the two-window attention (`attention_path`,
the reason logged). If both fail, or a call carries something the
mirror does not support (other DIFFUSION_MODEL wrappers, noise_refiner/double_block patches, Omni
reference latents, masked captions), that call runs the host's plain forward and the reason is
logged once, as a warning.
"""

from __future__ import annotations

import logging

import comfy.patcher_extension as pe
import torch

from ..core.nag import NagParams
from ..model import skeleton, zimage_batched, zimage_nag
from ..model.forward_guard import ForwardGuard
from . import host_model

log = logging.getLogger("zimage_nodes")

WRAPPER_KEY = "zimage_nodes.nag"

# Verdicts of zimage_nag.self_check, per diffusion model, device and dtype: the shared-keys
# attention first; where it fails, the two-window attention; where that fails, the host's forward.
GUARD_SHARED = ForwardGuard("Z-Image NAG shared-keys attention", instead="two attention windows")
GUARD = ForwardGuard("Z-Image NAG forward")


def attention_path(diffusion_model, transformer_options: dict, device, dtype) -> tuple[str | None, str]:
    """Which NAG attention runs for this model, device and dtype ("shared", "windows", or None: the
    host's forward), and why, from the self-checks (each reason logged once)."""
    args = dict(device=device, dtype=dtype)
    ok, why = zimage_nag.self_check(diffusion_model, transformer_options, guard=GUARD_SHARED, **args)
    if ok:
        return "shared", why
    shared_why = why
    ok, why = zimage_nag.self_check(diffusion_model, transformer_options, guard=GUARD, attention="windows", **args)
    if ok:
        return "windows", f"shared-keys attention: {shared_why}"
    return None, f"shared-keys attention: {shared_why}; two windows: {why}"


def verified(diffusion_model, transformer_options: dict, device, dtype) -> tuple[bool, str]:
    path, why = attention_path(diffusion_model, transformer_options, device, dtype)
    return path is not None, why


class NagPatch:
    """The wrapper's state: settings, the negative caption, and the last fallback reason (logged once)."""

    def __init__(self, params: NagParams, negative: torch.Tensor):
        self.params = params
        self.negative = negative  # [n, L, cap_feat_dim], as the text encoder produced it
        self.fallback_reason: str | None = None
        self.attention = "shared"  # the NAG attention path of the last call (attention_path)

    def _fallback(self, why: str):
        if why != self.fallback_reason:
            log.warning("Z-Image NAG: this call runs without NAG (%s)", why)
            self.fallback_reason = why

    def blocker(self, dm, x, attention_mask, options: dict, extra: dict) -> str | None:
        """Why this call cannot run NAG, or None (then `self.attention` is the path that runs)."""
        for name, value in extra.items():
            if value is None or (isinstance(value, (list, tuple, dict)) and len(value) == 0):
                continue
            return f"the model call carries '{name}' (e.g. Omni reference latents or NewBie pooled text), not supported"
        ok, why = zimage_nag.can_nag(dm, options, [attention_mask])
        if not ok:
            return why
        path, why = attention_path(dm, options, x.device, x.dtype)
        if path is None:
            return f"self-check failed: {why}"
        self.attention = path
        return None

    def __call__(self, executor, x, timesteps, context, num_tokens, attention_mask=None, **kwargs):
        options = kwargs.get("transformer_options") or {}
        sigmas = options.get("sigmas", timesteps)
        sigma = float(torch.as_tensor(sigmas).min())
        cond_or_uncond = options.get("cond_or_uncond") or [0]
        if not self.params.active_at(sigma) or 0 not in cond_or_uncond:
            return executor(x, timesteps, context, num_tokens, attention_mask, **kwargs)

        dm = executor.class_obj
        inner = host_model.without_wrapper(options, WRAPPER_KEY)
        extra = {k: v for k, v in kwargs.items() if k != "transformer_options"}
        why = self.blocker(dm, x, attention_mask, inner, extra)
        if why is not None:
            self._fallback(why)
            return executor(x, timesteps, context, num_tokens, attention_mask, **kwargs)

        B = x.shape[0]
        chunks = len(cond_or_uncond)
        if B % chunks:
            self._fallback(f"batch of {B} does not split into {chunks} cond/uncond chunks")
            return executor(x, timesteps, context, num_tokens, attention_mask, **kwargs)
        per = B // chunks
        pos_rows = [c * per + j for c, kind in enumerate(cond_or_uncond) if kind == 0 for j in range(per)]
        other_rows = [r for r in range(B) if r not in set(pos_rows)]
        timesteps = zimage_batched.batch_timesteps(timesteps, B, x.device)
        negative = self.negative.to(device=x.device, dtype=context.dtype)
        pos_ctx = [context[r] for r in pos_rows]
        neg_ctx = [negative[(r % per) % negative.shape[0]] for r in pos_rows]
        p = self.params
        # The skeleton forward laid out for NAG (blocker() checked what nag_forward would check).
        layout = zimage_nag.NagLayout(neg_ctx, p.scale, p.tau, p.alpha, self.attention)
        if not other_rows:
            return skeleton.forward(dm, x, timesteps, pos_ctx, layout, dict(inner))
        out = torch.empty_like(x)
        rows = torch.tensor(pos_rows, device=x.device)
        out[rows] = skeleton.forward(dm, x[rows], timesteps[rows], pos_ctx, layout, dict(inner)).to(out.dtype)
        # A CFG negative that ComfyUI batched in with the positive (same caption length): plain.
        rows = torch.tensor(other_rows, device=x.device)
        out[rows] = zimage_batched.batched_forward(
            dm, x[rows], timesteps[rows], [context[r] for r in other_rows], inner
        ).to(out.dtype)
        return out


def nag_patch_of(model) -> NagPatch | None:
    """The NAG patch a model carries (this pack's node), if any."""
    fns = model.get_wrappers(pe.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)
    return fns[0] if fns else None


def apply_nag(model, negative, params: NagParams):
    """A clone of `model` whose forwards are guided away from `negative` (ComfyUI CONDITIONING) by NAG."""
    params.validate()
    if not host_model.is_zimage(model):
        config = getattr(getattr(model, "model", None), "model_config", None)
        raise ValueError(
            f"Z-Image NAG works on Z-Image / Z-Image-Turbo models only; this model is "
            f"{type(config).__name__ if config is not None else type(model).__name__}. For other models use "
            "ComfyUI's own NAG node or the authors' ComfyUI-NAG."
        )
    dm = model.model.diffusion_model
    ok, why = zimage_nag.can_nag(dm, {})
    if not ok:
        raise ValueError(f"Z-Image NAG cannot patch this model: {why}")
    if not isinstance(negative, list) or len(negative) == 0:
        raise ValueError("the negative input holds no conditioning: wire a CLIP Text Encode of your negative prompt")
    if len(negative) != 1:
        raise ValueError(
            f"the negative conditioning combines {len(negative)} entries (Conditioning Combine/areas); NAG takes "
            "one encoded negative prompt: encode the whole negative text with one CLIP Text Encode"
        )
    tensor = negative[0][0]
    cap_dim = dm.cap_embedder[0].weight.shape[0]
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3 or tensor.shape[-1] != cap_dim:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(
            f"the negative conditioning has shape {shape}, the model expects [batch, tokens, {cap_dim}]: encode the "
            "negative prompt with the Z-Image text encoder (Qwen3-4B) that encodes the positive"
        )
    mask = negative[0][1].get("attention_mask")
    if mask is not None and not bool((mask != 0).all()):
        raise ValueError("the negative conditioning carries a padding mask; Z-Image's own text encoder does not pad")
    m = model.clone()
    m.remove_wrappers_with_key(pe.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)
    m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, NagPatch(params, tensor.detach()))
    return m
