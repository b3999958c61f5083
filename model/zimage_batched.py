"""One batched Z-Image DiT forward for samples whose captions have different lengths.

ComfyUI (v0.8.0) evaluates a Z-Image positive and negative as two batch-1 forwards per step:
their caption lengths differ, so `calc_cond_batch` cannot concatenate them. The reference
implementation (diffusers `ZImageTransformer2DModel`) batches them instead, and so does
`batched_forward` here, reusing the submodules of ComfyUI's own `NextDiT`:

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

Not supported (`can_batch` returns False with the reason, `batched_forward` raises
NotImplementedError): models without pad tokens (Lumina 2, NewBie's `clip_text_pooled_proj`),
subclasses that override `_forward`/`patchify_and_embed`, "noise_refiner" or "double_block"
patches (they are defined on a single shared caption length), DIFFUSION_MODEL wrappers (they wrap
`NextDiT.forward`, which this path bypasses), and caption attention masks that actually mask
something. ComfyUI's Z-Image text encoder does not pad (`pad_to_max_length=False`), so in practice
ComfyUI passes no attention mask; an all-ones mask (or None) is accepted and ignored, which is what
ComfyUI's `Lumina2.extra_conds` does with it too.

Written against `comfy/ldm/lumina/model.py` of ComfyUI v0.8.0 and v0.33.0. Where the host has the
embedding step as its own method (v0.33's `NextDiT.embed_all`: caption embedder, pad tokens, rope
positions, patchify) it is called per sample; v0.8.0 has none, so `_v08_embed` mirrors it. What
stays mirrored (the refiner/layer loop, masks, final layer) can drift with a future host: callers
verify this pass against the host's own forward once per model and shape (`forward_guard`,
`batched_cfg`) and fall back to ComfyUI's sequential path on a mismatch. ComfyUI is imported lazily,
so this module imports without a host.
"""

from __future__ import annotations

import torch

__all__ = ["batched_forward", "can_batch"]


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
    patches = transformer_options.get("patches", {}) or {}
    for name in ("noise_refiner", "double_block"):
        if patches.get(name):
            return False, f"'{name}' patches are present (defined on one shared caption length)"
    try:
        import comfy.patcher_extension as pe

        if pe.get_all_wrappers(pe.WrappersMP.DIFFUSION_MODEL, transformer_options):
            return False, "DIFFUSION_MODEL wrappers are present (they wrap NextDiT.forward)"
    except ImportError:  # pragma: no cover
        pass
    if attention_masks is not None and not all(_mask_is_trivial(m) for m in attention_masks):
        return False, "a caption attention mask masks tokens (padded text encoder output), not supported"
    return True, ""


def key_padding_mask(valid_lens: list[int], total: int, dtype, device):
    """Additive [B, 1, 1, total] mask: 0 for keys < valid_len, a large negative value after."""
    lens = torch.tensor(valid_lens, device=device)
    keep = torch.arange(total, device=device)[None, :] < lens[:, None]
    mask = torch.zeros(keep.shape, dtype=dtype, device=device)
    mask.masked_fill_(~keep, -torch.finfo(dtype).max)
    return mask[:, None, None, :]


def caption_tokens(c: torch.Tensor, device, dtype) -> torch.Tensor:
    """One caption's features as [L, D] on `device` in `dtype` (given as [L, D] or [1, L, D])."""
    if c.ndim == 3:
        if c.shape[0] != 1:
            raise ValueError(f"each context must hold one caption, got shape {tuple(c.shape)}")
        c = c[0]
    if c.ndim != 2:
        raise ValueError(f"context must be [L, D] or [1, L, D], got shape {tuple(c.shape)}")
    return c.to(device=device, dtype=dtype)


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
    import comfy.ldm.common_dit

    if transformer_options is None:
        transformer_options = {}
    ok, why = can_batch(diffusion_model, transformer_options, attention_masks)
    if not ok:
        raise NotImplementedError(f"batched Z-Image forward not possible: {why}")

    dm = diffusion_model
    B, _, h, w = x.shape
    if len(contexts) != B:
        raise ValueError(f"{len(contexts)} contexts for a batch of {B}")
    if attention_masks is not None and len(attention_masks) != B:
        raise ValueError(f"{len(attention_masks)} attention masks for a batch of {B}")
    timesteps = batch_timesteps(timesteps, B, x.device)

    caps = [caption_tokens(c, x.device, x.dtype) for c in contexts]

    pH = pW = dm.patch_size
    x = comfy.ldm.common_dit.pad_to_patch_size(x, (pH, pW))
    H, W = x.shape[-2:]
    H_tokens, W_tokens = H // pH, W // pW
    device = x.device

    # Timestep embedding, as NextDiT._forward (t = 1 - timestep, scaled, embedded in x's dtype).
    t = 1.0 - timesteps
    adaln_input = dm.t_embedder(t * dm.time_scale, dtype=x.dtype)  # [B, 256]

    # Per sample: caption tokens padded to their own multiple, image tokens, and their rope
    # frequencies; from the host's own embedding step where it has one (v0.33's embed_all).
    if hasattr(dm, "embed_all"):
        per_sample = [_host_embed(dm, x[i : i + 1], caps[i], transformer_options) for i in range(B)]
    else:
        per_sample = _v08_embed(dm, x, caps, transformer_options)
    cap_pad_lens = [cap.shape[0] for cap, _, _, _ in per_sample]  # Lp_i
    Lc = max(cap_pad_lens)
    same_caps = all(Lp == Lc for Lp in cap_pad_lens)
    n_img = H_tokens * W_tokens
    Ni = per_sample[0][2].shape[0]
    # Batch padding (zeros) beyond Lp_i: masked keys, outputs never read.
    cap = torch.stack([torch.nn.functional.pad(c, (0, 0, 0, Lc - c.shape[0])) for c, _, _, _ in per_sample])
    img = torch.stack([i for _, _, i, _ in per_sample])
    cap_freqs = torch.stack([_pad_rows(f, Lc) for _, f, _, _ in per_sample])
    img_freqs = torch.stack([f for _, _, _, f in per_sample])
    freqs = torch.cat((cap_freqs, img_freqs), dim=1)

    # Context refiner on the batch of captions, batch padding masked.
    cap_mask = None if same_caps else key_padding_mask(cap_pad_lens, Lc, cap.dtype, device)
    for layer in dm.context_refiner:
        cap = layer(cap, cap_mask, cap_freqs, transformer_options=transformer_options)

    # Noise refiner on the image tokens: same length for all samples, no mask.
    for layer in dm.noise_refiner:
        img = layer(img, None, img_freqs, adaln_input, transformer_options=transformer_options)

    # Joint sequence per sample: [cap_i[:Lp_i], img_i], right-padded to Lc + Ni.
    if same_caps:
        joint = torch.cat((cap, img), dim=1)
        joint_freqs = freqs
        joint_mask = None
    else:
        order = []
        for Lp in cap_pad_lens:
            order.append(list(range(Lp)) + list(range(Lc, Lc + Ni)) + list(range(Lp, Lc)))
        order = torch.tensor(order, dtype=torch.long, device=device)
        rows = torch.arange(B, device=device)[:, None]
        joint = torch.cat((cap, img), dim=1)[rows, order]
        joint_freqs = freqs[rows, order]
        joint_mask = key_padding_mask([Lp + Ni for Lp in cap_pad_lens], Lc + Ni, joint.dtype, device)
    joint_freqs = joint_freqs.to(joint.device)

    transformer_options["total_blocks"] = len(dm.layers)
    transformer_options["block_type"] = "double"
    for i, layer in enumerate(dm.layers):
        transformer_options["block_index"] = i
        joint = layer(joint, joint_mask, joint_freqs, adaln_input, transformer_options=transformer_options)

    return image_output(dm, joint, cap_pad_lens, n_img, adaln_input, (H, W), (h, w))


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    if t.shape[0] == rows:
        return t
    return torch.cat((t, t.new_zeros((rows - t.shape[0],) + tuple(t.shape[1:]))))


def _host_embed(dm, x1, cap, transformer_options):
    """One sample through the host's NextDiT.embed_all (ComfyUI >= v0.33): caption embedder + pad
    tokens + caption rope, patchify + image pad tokens + image rope, exactly as its forward does."""
    embeds, freqs, _ = dm.embed_all(x1, cap[None], transformer_options=transformer_options)
    if len(embeds) != 3 or embeds[1] is not None:
        raise NotImplementedError("NextDiT.embed_all returned an unknown layout")
    return embeds[0][0], freqs[0][0], embeds[-1][0], freqs[-1][0]


def _v08_embed(dm, x, caps, transformer_options):
    """ComfyUI v0.8.0 has no reusable embedding step (patchify_and_embed also runs the refiners on
    one shared caption length): this mirrors its embedding part, per sample."""
    device = x.device
    img, n_img = embed_image(dm, x)
    grid_y, grid_x = image_positions(dm, x, transformer_options)
    out = []
    for i, cap in enumerate(embed_captions(dm, caps)):
        Lp = cap.shape[0]
        # Caption tokens at first-axis positions 1..Lp, image tokens at Lp + 1 (pad tokens: 0).
        cap_ids = torch.zeros((Lp, 3), dtype=torch.float32, device=device)
        cap_ids[:, 0] = torch.arange(Lp, dtype=torch.float32, device=device) + 1.0
        img_ids = torch.zeros((img.shape[1], 3), dtype=torch.float32, device=device)
        img_ids[:n_img, 0] = Lp + 1
        img_ids[:n_img, 1] = grid_y
        img_ids[:n_img, 2] = grid_x
        freqs = dm.rope_embedder(torch.cat((cap_ids, img_ids))[None]).movedim(1, 2)[0]
        out.append((cap, freqs[:Lp], img[i], freqs[Lp:]))
    return out


# The embedding and output steps of NextDiT._forward, shared by this batched forward and the NAG
# forward (zimage_nag), which mirror the same host code.


def batch_timesteps(timesteps, batch: int, device) -> torch.Tensor:
    """[batch] timesteps from [batch] or one value for all."""
    t = torch.as_tensor(timesteps, device=device).reshape(-1)
    if t.numel() == 1 and batch > 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"{t.numel()} timesteps for a batch of {batch}")
    return t


def embed_captions(dm, caps: list) -> list:
    """Each caption ([L_i, cap_feat_dim]) embedded and padded with cap_pad_token to its own multiple
    of pad_tokens_multiple, as a batch-1 forward pads it: a list of [Lp_i, D]. One embedder pass
    over all captions' tokens (the embedder is per token)."""
    cap_emb = dm.cap_embedder(torch.cat(caps, dim=0)[None])[0]  # [sum L, D]
    cap_pad = dm.cap_pad_token.to(device=cap_emb.device, dtype=cap_emb.dtype, copy=True)  # [1, D]
    out, start = [], 0
    for c in caps:
        L = c.shape[0]
        out.append(torch.cat((cap_emb[start : start + L], cap_pad.repeat((-L) % dm.pad_tokens_multiple, 1))))
        start += L
    return out


def embed_image(dm, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Patchified, embedded image tokens [B, Ni, D], padded with x_pad_token to a multiple of
    pad_tokens_multiple, and n_img, the number of real ones (x already padded to the patch size)."""
    B, C, H, W = x.shape
    pH = pW = dm.patch_size
    img = dm.x_embedder(x.view(B, C, H // pH, pH, W // pW, pW).permute(0, 2, 4, 3, 5, 1).flatten(3).flatten(1, 2))
    n_img = img.shape[1]
    extra = (-n_img) % dm.pad_tokens_multiple
    if extra:
        x_pad = dm.x_pad_token.to(device=img.device, dtype=img.dtype, copy=True)
        img = torch.cat((img, x_pad.unsqueeze(0).repeat(B, extra, 1)), dim=1)
    return img, n_img


def image_positions(dm, x: torch.Tensor, transformer_options: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Height and width rope positions of the real image tokens (row-major, [n_img] each), with
    `transformer_options["rope_options"]` scale/shift applied as ComfyUI applies them."""
    rope_options = transformer_options.get("rope_options", None) or {}
    H_tokens, W_tokens = x.shape[-2] // dm.patch_size, x.shape[-1] // dm.patch_size
    ys = torch.arange(H_tokens, dtype=torch.float32, device=x.device) * rope_options.get("scale_y", 1.0)
    xs = torch.arange(W_tokens, dtype=torch.float32, device=x.device) * rope_options.get("scale_x", 1.0)
    ys = (ys + rope_options.get("shift_y", 0.0)).view(-1, 1)
    xs = (xs + rope_options.get("shift_x", 0.0)).view(1, -1)
    return ys.repeat(1, W_tokens).flatten(), xs.repeat(H_tokens, 1).flatten()


def image_output(dm, joint, starts: list, n_img: int, adaln_input, padded_hw, hw) -> torch.Tensor:
    """The final layer on each sample's real image tokens (joint[i, starts[i] : starts[i] + n_img]; it
    is per token), unpatchified to the padded size `padded_hw`, cropped to `hw` and negated, as
    NextDiT.forward returns it: [B, C_out, h, w]."""
    B, device = joint.shape[0], joint.device
    pH = pW = dm.patch_size
    (H, W), (h, w) = padded_hw, hw
    sel = torch.tensor(starts, device=device)[:, None] + torch.arange(n_img, device=device)[None, :]
    img_out = dm.final_layer(joint[torch.arange(B, device=device)[:, None], sel], adaln_input)
    C_out = dm.out_channels
    out = img_out.view(B, H // pH, W // pW, pH, pW, C_out).permute(0, 5, 1, 3, 2, 4).reshape(B, C_out, H, W)
    return -out[:, :, :h, :w]
