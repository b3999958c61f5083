"""Positive and negative of a Z-Image model as one batched forward, in place of ComfyUI's
`calc_cond_batch` (which runs them one at a time: their caption lengths differ).

The batched pass is taken only when all of these hold, else ComfyUI's own `calc_cond_batch` runs
and the reason is logged once:
* the conds are plain text conds (no areas, masks, hooks, control, extra model inputs such as
  Omni's `ref_latents`/`siglip_feats`) and `transformer_options` holds only keys it reproduces;
* the model is a Z-Image NextDiT that `zimage_batched.can_batch` accepts;
* the batch fits: ComfyUI's own rule, `memory_required(batch shape) * 1.5 < free memory`;
* `GUARD` verified, once per (model, shapes, caption lengths, dtype, device, option keys), that the
  batched pass equals ComfyUI's per-sample forwards on this host (one extra forward pair per new
  signature).
"""

from __future__ import annotations

import comfy.model_management
import comfy.patcher_extension as pe
import comfy.samplers
import comfy.utils
import torch

from ..model import skeleton, zimage_batched
from ..model.forward_guard import ForwardGuard
from . import host_model

GUARD = ForwardGuard("Z-Image CFG Guider batched forward")

# Cond entries with any of these need ComfyUI's general (sequential) path.
_UNBATCHABLE_COND_KEYS = ("area", "mask", "control", "gligen", "hooks", "timestep_start", "timestep_end", "patches")
_MODEL_CONDS = {"c_crossattn", "num_tokens"}
# transformer_options keys the batched pass reproduces (set by ComfyUI's sampling itself, or read by
# the NextDiT blocks it calls unchanged). Anything else may be a feature it does not know.
TRANSFORMER_OPTIONS = {
    "wrappers",
    "callbacks",
    "patches",
    "patches_replace",
    "sample_sigmas",
    "sigmas",
    "cond_or_uncond",
    "uuids",
    "rope_options",
    "optimized_attention_override",
    "total_blocks",
    "block_type",
    "block_index",
    "activations_shape",
    "prefetch_dynamic_vbars",
}
_WRAPPER_KEY = "zimage_nodes.batched_cfg"
NEGATIVE_SKIPPED = "negative not evaluated this step"


def free_memory(model, device) -> float:
    # v0.33 asks the patcher (it adds what dynamic offloading can give back); v0.8.0 asks
    # model_management directly. The same figure ComfyUI's calc_cond_batch uses on each.
    patcher = getattr(model, "current_patcher", None)
    if patcher is not None and hasattr(patcher, "get_free_memory"):
        return patcher.get_free_memory(device)
    return comfy.model_management.get_free_memory(device)


def memory_blocker(model, conds, x) -> str | None:
    """ComfyUI's batching rule from `_calc_cond_batch`, for the batch of positive + negative."""
    shape = [2 * x.shape[0]] + list(x.shape[1:])
    cond_shapes = {}
    for cond in conds:
        for key, value in cond[0]["model_conds"].items():
            if hasattr(value, "size"):
                cond_shapes.setdefault(key, []).append(value.size())
    needed = model.memory_required(shape, cond_shapes=cond_shapes) * 1.5
    free = free_memory(model, x.device)
    if needed < free:
        return None
    return f"batch of {shape[0]} needs ~{needed / 2**20:.0f} MiB with ComfyUI's margin, {free / 2**20:.0f} MiB free"


def blocker(model, conds, x, model_options) -> str | None:
    """Why positive and negative cannot run as one batched forward (None if they can)."""
    if conds[1] is None:
        return NEGATIVE_SKIPPED
    transformer_options = model_options.get("transformer_options", {})
    ok, reason = zimage_batched.can_batch(model.diffusion_model, transformer_options)
    if not ok:
        return reason
    unknown = set(transformer_options) - TRANSFORMER_OPTIONS
    if unknown:
        return f"transformer_options has entries the batched forward does not reproduce: {sorted(unknown)}"
    if "multigpu_clones" in model_options:
        return "multi-GPU sampling (ComfyUI splits the conds across devices)"
    if pe.get_all_wrappers(pe.WrappersMP.CALC_COND_BATCH, model_options, is_model_options=True):
        return "a calc_cond_batch wrapper is installed"
    patcher = getattr(model, "current_patcher", None)
    if patcher is not None and patcher.get_all_callbacks(pe.CallbacksMP.ON_PREPARE_STATE):
        return "ON_PREPARE_STATE callbacks are installed (ComfyUI's calc_cond_batch runs them)"
    for cond in conds:
        if cond is None or len(cond) != 1:
            return "conditioning combines several entries"
        entry = cond[0]
        if any(k in entry for k in _UNBATCHABLE_COND_KEYS) or entry.get("strength", 1.0) != 1.0:
            return "conditioning uses areas, masks, hooks, timestep ranges or control"
        extra = set(entry["model_conds"]) - _MODEL_CONDS
        if extra:
            return f"conditioning carries model inputs the batched forward does not reproduce: {sorted(extra)}"
    return memory_blocker(model, conds, x)


def signature(model, conds, x, model_options) -> tuple:
    """What the batched pass's structure depends on: shapes, each caption's padded length, dtypes,
    device and the option keys. One verification per distinct signature."""
    multiple = model.diffusion_model.pad_tokens_multiple
    lengths = []
    for cond in conds:
        c = cond[0]["model_conds"]["c_crossattn"].cond
        lengths.append(c.shape[1] + (-c.shape[1]) % multiple)
    options = model_options.get("transformer_options", {})
    return (
        tuple(x.shape),
        tuple(lengths),
        x.dtype,
        model.get_dtype(),
        str(x.device),
        tuple(sorted(options)),
        tuple(sorted((options.get("rope_options") or {}).items())),
        skeleton.patch_kinds(options),
        "model_function_wrapper" in model_options,
    )


def calc_conds(model, conds, x, timestep, model_options, batched: bool = True):
    """Drop-in for `comfy.samplers.calc_cond_batch(model, conds, ...)` that batches pos + neg.

    A step runs the batched forward, or ComfyUI's path (including steps where only the positive
    runs), or both on the first step of a new signature (verify: ComfyUI's result is used)."""
    reason = blocker(model, conds, x, model_options) if batched else "batching switched off"
    if reason is not None:
        if reason != NEGATIVE_SKIPPED:
            GUARD.fallback(reason)
        return comfy.samplers.calc_cond_batch(model, conds, x, timestep, model_options)
    key = signature(model, conds, x, model_options)
    return GUARD.run(
        model.diffusion_model,
        key,
        mirror=lambda: batched_conds(model, conds, x, timestep, model_options),
        reference=lambda: comfy.samplers.calc_cond_batch(model, conds, x, timestep, model_options),
        baseline=x,  # denoised = x - sigma * v: measure the error on what the model adds
    )


def batched_conds(model, conds, x, timestep, model_options):
    """[positive, negative] outputs of one batched apply_model call (batch = 2 * x's batch)."""
    batch = x.shape[0]
    captions = []
    for cond in conds:
        c = cond[0]["model_conds"]["c_crossattn"].cond
        c = comfy.utils.repeat_to_batch_size(c, batch)
        captions.extend(c[i] for i in range(batch))

    x_in = torch.cat([x, x])
    t_in = torch.cat([timestep, timestep])
    transformer_options = dict(model_options.get("transformer_options", {}))
    transformer_options["cond_or_uncond"] = [0, 1]
    transformer_options["uuids"] = [conds[0][0].get("uuid"), conds[1][0].get("uuid")]
    transformer_options["sigmas"] = t_in
    wrappers = {k: {kk: list(vv) for kk, vv in v.items()} for k, v in transformer_options.get("wrappers", {}).items()}
    wrappers.setdefault(pe.WrappersMP.DIFFUSION_MODEL, {})[_WRAPPER_KEY] = [_batched_diffusion_model(captions)]
    transformer_options["wrappers"] = wrappers

    # The padded stack only carries the batch through apply_model's casts; the wrapper reads
    # the captions at their own lengths.
    longest = max(c.shape[0] for c in captions)
    stacked = torch.zeros((len(captions), longest, captions[0].shape[-1]), dtype=captions[0].dtype, device=x.device)
    kwargs = {"c_crossattn": stacked, "num_tokens": longest, "transformer_options": transformer_options}
    if "model_function_wrapper" in model_options:
        output = model_options["model_function_wrapper"](
            model.apply_model, {"input": x_in, "timestep": t_in, "c": kwargs, "cond_or_uncond": [0, 1]}
        )
    else:
        output = model.apply_model(x_in, t_in, **kwargs)
    return list(output.chunk(2))


def _batched_diffusion_model(captions):
    def wrapper(executor, x, timesteps, context, num_tokens, attention_mask=None, **kwargs):
        device, dtype = x.device, context.dtype
        contexts = [c.to(device=device, dtype=dtype) for c in captions]
        options = host_model.without_wrapper(kwargs.get("transformer_options") or {}, _WRAPPER_KEY)
        return zimage_batched.batched_forward(executor.class_obj, x, timesteps, contexts, options)

    return wrapper
