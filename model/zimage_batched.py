"""One batched Z-Image DiT forward for samples whose captions have different lengths.

ComfyUI (v0.8.0) evaluates a Z-Image positive and negative as two batch-1 forwards per step:
their caption lengths differ, so `calc_cond_batch` cannot concatenate them. The reference
implementation (diffusers `ZImageTransformer2DModel`) batches them instead, and so does
`batched_forward` here: the shared skeleton (model/skeleton.py) with this module's `BatchedLayout`,
reusing the submodules of ComfyUI's own `NextDiT`:

* each caption is padded to ITS OWN multiple of `pad_tokens_multiple` (32) with `cap_pad_token`,
  exactly as a batch-1 ComfyUI forward pads it; image tokens are padded with `x_pad_token`;
* position ids are per sample: caption tokens 1..Lp_i on the first axis, image tokens at
  first-axis position Lp_i + 1 (Lp_i = that sample's padded caption length), height/width on the
  other two axes (with `transformer_options["rope_options"]` scale/shift applied as ComfyUI does);
* the context refiner runs once on the batch of per-sample padded captions, right-padded to the
  longest with an additive key mask for the batch padding only;
* the noise refiner runs once on the image tokens (same length for every sample, no mask);
* the main layers run once on `[caption_i (Lp_i tokens), image tokens]` per sample, right-padded
  to the batch maximum, again with a key mask for the batch padding only. Pad tokens that a
  batch-1 forward would see (cap/x pad tokens) stay visible, as in ComfyUI and diffusers.

When all captions pad to the same length no mask is built at all, so flash/sage attention keep
their unmasked fast path. Masks are additive float tensors of shape [B, 1, 1, S] with a finite
large negative value, the format every ComfyUI attention backend accepts (flash attention logs a
warning and falls back to PyTorch SDPA for masked calls, as it does for any masked call).

Result: for each sample i, `batched_forward(...)[i]` equals
`diffusion_model(x[i:i+1], timesteps[i:i+1], contexts[i][None], num_tokens=L_i,
transformer_options=...)[0]`, i.e. ComfyUI's NEGATED velocity (ComfyUI's sign is kept), up to
floating-point reordering (<= 1e-5 in fp32 on tiny models).

Supported: Z-Image NextDiT models (z_image modulation, `pad_tokens_multiple` with pad tokens);
any batch size; non-square and odd latent sizes (`pad_to_patch_size`, circular, cropped back);
dtype handling as in `NextDiT._forward` (timestep embedding in the input dtype, captions cast to
the input's dtype/device, pad tokens cast like ComfyUI does); `rope_options`; attention overrides
(`optimized_attention_override`) are passed through the blocks untouched; `transformer_options`
gets the same `total_blocks` / `block_type` / `block_index` entries `_forward` writes.

Model patches: ComfyUI's Z-Image Fun ControlNet patch ("noise_refiner" and "double_block",
`ZImageControlPatch`) runs at the host's points with the host's arguments, on each sample's image
rows (skeleton.py); it computes each row from that row's own tokens, so the batch equals the
per-sample forwards.

Not supported (`can_batch` returns False with the reason, `batched_forward` raises
NotImplementedError): models without pad tokens (Lumina 2, NewBie's `clip_text_pooled_proj`),
subclasses that override `_forward`/`patchify_and_embed`, "noise_refiner" or "double_block"
patches other than the Fun ControlNet's, DIFFUSION_MODEL wrappers (they wrap
`NextDiT.forward`, which this path bypasses), and caption attention masks that actually mask
something. ComfyUI's Z-Image text encoder does not pad (`pad_to_max_length=False`), so in practice
ComfyUI passes no attention mask; an all-ones mask (or None) is accepted and ignored, which is what
ComfyUI's `Lumina2.extra_conds` does with it too.

Written against `comfy/ldm/lumina/model.py` of ComfyUI v0.8.0 and v0.33.0. Where the host has the
embedding step as its own method (v0.33's `NextDiT.embed_all`: caption embedder, pad tokens, rope
positions, patchify) the skeleton calls it per sample; v0.8.0 has none, so it is mirrored. What
stays mirrored (the refiner/layer loop, masks, final layer) can drift with a future host: callers
verify this pass against the host's own forward once per model and shape (`forward_guard`,
`batched_cfg`) and fall back to ComfyUI's sequential path on a mismatch. ComfyUI is imported lazily,
so this module imports without a host.
"""

from __future__ import annotations

import torch

from . import skeleton

# Shared with the NAG forward and the wrappers (one definition, in the skeleton).
batch_timesteps = skeleton.batch_timesteps
caption_tokens = skeleton.caption_tokens
key_padding_mask = skeleton.key_padding_mask

__all__ = ["batched_forward", "can_batch", "BatchedLayout"]


def _nextdit_class():
    try:
        from comfy.ldm.lumina.model import NextDiT
    except Exception:  # pragma: no cover - only without a host
        return None
    return NextDiT


def _mask_is_trivial(mask) -> bool:
    return mask is None or bool((mask != 0).all())


def can_batch(
    diffusion_model, transformer_options: dict | None = None, attention_masks: list | None = None
) -> tuple[bool, str]:
    """Whether `batched_forward` reproduces the per-sample ComfyUI forwards exactly.

    Returns (True, "") or (False, reason). Cheap: attribute and dict look-ups only (plus one
    reduction per attention mask given)."""
    transformer_options = transformer_options or {}
    NextDiT = _nextdit_class()
    if NextDiT is None:
        return False, "ComfyUI's comfy.ldm.lumina.model is not importable"
    dm = diffusion_model
    if not isinstance(dm, NextDiT):
        return False, f"not a ComfyUI NextDiT ({type(dm).__name__})"
    cls = type(dm)
    if cls._forward is not NextDiT._forward or cls.patchify_and_embed is not NextDiT.patchify_and_embed:
        return False, f"{cls.__name__} overrides NextDiT._forward/patchify_and_embed"
    if getattr(dm, "pad_tokens_multiple", None) is None:
        return False, "model has no pad_tokens_multiple (Lumina 2 style model, not Z-Image)"
    if getattr(dm, "cap_pad_token", None) is None or getattr(dm, "x_pad_token", None) is None:
        return False, "model has no cap_pad_token/x_pad_token"
    if getattr(dm, "clip_text_pooled_proj", None) is not None:
        return False, "model has clip_text_pooled_proj (NewBie), not supported"
    try:
        z_mod = all(
            isinstance(layer.adaLN_modulation[0], torch.nn.Linear) for layer in list(dm.layers) + list(dm.noise_refiner)
        )
    except (AttributeError, IndexError, TypeError):
        z_mod = False
    if not z_mod:
        return False, "model does not use Z-Image modulation (not a Z-Image NextDiT)"
    why = skeleton.unsupported_patch(transformer_options)
    if why is not None:
        return False, why
    try:
        import comfy.patcher_extension as pe

        if pe.get_all_wrappers(pe.WrappersMP.DIFFUSION_MODEL, transformer_options):
            return False, "DIFFUSION_MODEL wrappers are present (they wrap NextDiT.forward)"
    except ImportError:  # pragma: no cover
        pass
    if attention_masks is not None and not all(_mask_is_trivial(m) for m in attention_masks):
        return False, "a caption attention mask masks tokens (padded text encoder output), not supported"
    return True, ""


def batched_forward(
    diffusion_model,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    contexts: list,
    transformer_options: dict | None = None,
    attention_masks: list | None = None,
) -> torch.Tensor:
    """Run ComfyUI's Z-Image NextDiT once over samples with different caption lengths.

    x: [B, C, H, W] latents (model input, as NextDiT.forward receives it);
    timesteps: [B] (or one value for all), ComfyUI's model_sampling.timestep(sigma);
    contexts: B caption features, each [L_i, cap_feat_dim] or [1, L_i, cap_feat_dim];
    attention_masks: optional B masks ([L_i] or [1, L_i]) or None entries; only masks without
    zeros are accepted (see the module docstring).
    Returns [B, C, H, W]: per sample what `diffusion_model(x[i:i+1], ...)` returns (negated velocity).
    """
    if transformer_options is None:
        transformer_options = {}
    ok, why = can_batch(diffusion_model, transformer_options, attention_masks)
    if not ok:
        raise NotImplementedError(f"batched Z-Image forward not possible: {why}")
    B = x.shape[0]
    if len(contexts) != B:
        raise ValueError(f"{len(contexts)} contexts for a batch of {B}")
    if attention_masks is not None and len(attention_masks) != B:
        raise ValueError(f"{len(attention_masks)} attention masks for a batch of {B}")
    return skeleton.forward(diffusion_model, x, timesteps, contexts, BatchedLayout(), transformer_options)


class BatchedLayout(skeleton.Layout):
    """Each sample's own sequence [caption_i (Lp_i tokens), image (Ni)], right-padded to the batch
    maximum; a key mask for the batch padding only (none when every caption pads to one length);
    the host's attention."""

    def join(self, dm, x, tokens, caps, img, transformer_options):
        B, Ni = img.shape[:2]
        lens = [c.shape[0] for c in caps[:B]]
        Lc = max(lens)
        rows, freqs = [], []
        for i in range(B):
            pad = Lc - lens[i]
            rows.append(torch.nn.functional.pad(torch.cat((caps[i], img[i])), (0, 0, 0, pad)))
            f = torch.cat((tokens.cap_freqs[i].to(img.device), tokens.img_freqs[i].to(img.device)))
            freqs.append(skeleton._pad_rows(f, Lc + Ni))
        same = len(set(lens)) == 1
        mask = None if same else key_padding_mask([n + Ni for n in lens], Lc + Ni, img.dtype, img.device)
        return skeleton.Joint(
            seq=torch.stack(rows),
            freqs=torch.stack(freqs),
            mask=mask,
            img_starts=lens,
            cap_starts=[0] * B,
            cap_lens=lens,
            options=transformer_options,
        )
