"""The straightforward NAG reference the host tests compare the pack's one-stream NAG forward with.

Each sample's positive and negative branch run as a batch of two rows, [pos caption, image] and
[neg caption, image], each with the positions a plain forward gives it; in every main layer the
image rows' attention outputs are replaced, in both rows, by the NAG rule (written out here as
the paper states it) applied to them. With `patches` (ComfyUI model patches, e.g. the Z-Image Fun
ControlNet's), they are called where the host's forward calls them, on the one image stream: the
positive row's image, which then replaces the negative row's (the two are equal by construction).
"""

import torch


def _nag_rule(z_pos, z_neg, scale, tau, alpha):
    g = z_pos * scale - z_neg * (scale - 1)
    n_pos = torch.norm(z_pos, p=1, dim=-1, keepdim=True).clamp_min(1e-6)
    n_g = torch.norm(g, p=1, dim=-1, keepdim=True).clamp_min(1e-6)
    r = n_g / n_pos
    g = g * torch.minimum(r, torch.full_like(r, tau)) / r
    return alpha * g + (1 - alpha) * z_pos


def _pad32(dm, feats):
    extra = (-feats.shape[1]) % dm.pad_tokens_multiple
    pad = dm.cap_pad_token.to(feats.dtype).unsqueeze(0).repeat(feats.shape[0], extra, 1)
    return torch.cat((feats, pad), dim=1)


def _ids(L_cap, H_t, W_t, n_img_padded):
    n_img = H_t * W_t
    cap = torch.zeros((L_cap, 3))
    cap[:, 0] = torch.arange(L_cap) + 1.0
    img = torch.zeros((n_img_padded, 3))
    img[:n_img, 0] = L_cap + 1
    img[:n_img, 1] = torch.arange(H_t).repeat_interleave(W_t).float()
    img[:n_img, 2] = torch.arange(W_t).repeat(H_t).float()
    return cap, img


def reference_forward(dm, x, t, pos, neg, scale, tau, alpha, patches=None):
    """One sample (x [1, C, H, W], captions [L, D]) -> the NAG model output [1, C, H, W]."""
    patches = patches or {}
    import comfy.ldm.common_dit

    _, _, h, w = x.shape
    p = dm.patch_size
    x = comfy.ldm.common_dit.pad_to_patch_size(x, (p, p))
    _, C, H, W = x.shape
    adaln = dm.t_embedder((1.0 - t) * dm.time_scale, dtype=x.dtype)
    img = dm.x_embedder(x.view(1, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1).flatten(3).flatten(1, 2))
    n_img = img.shape[1]
    extra = (-n_img) % dm.pad_tokens_multiple
    img = torch.cat((img, dm.x_pad_token.unsqueeze(0).repeat(1, extra, 1)), dim=1)

    rows = []
    for caption in (pos, neg):
        cap = _pad32(dm, dm.cap_embedder(caption[None]))
        cap_ids, img_ids = _ids(cap.shape[1], H // p, W // p, img.shape[1])
        cap_f = dm.rope_embedder(cap_ids[None]).movedim(1, 2)
        img_f = dm.rope_embedder(img_ids[None]).movedim(1, 2)
        for layer in dm.context_refiner:
            cap = layer(cap, None, cap_f, transformer_options={})
        rows.append((cap, cap_f, img_f))
    img_input = img
    for i, layer in enumerate(dm.noise_refiner):
        img = layer(img, None, rows[0][2], adaln, transformer_options={})
        for patch in patches.get("noise_refiner", []):
            args = {"img": img, "img_input": img_input, "txt": rows[0][0], "pe": rows[0][2], "vec": adaln, "x": x}
            out = patch({**args, "block_index": i, "transformer_options": {}, "block_type": "noise_refiner"})
            img = out.get("img", img)

    # The doubled batch, right-padded to a common length, padding keys masked.
    lens = [r[0].shape[1] for r in rows]
    S = max(lens) + img.shape[1]
    seq = torch.zeros((2, S, img.shape[-1]))
    freqs = torch.zeros((2, S) + tuple(rows[0][1].shape[2:]))
    mask = torch.zeros((2, 1, 1, S))
    for i, (cap, cap_f, img_f) in enumerate(rows):
        L = cap.shape[1]
        seq[i, :L], seq[i, L : L + img.shape[1]] = cap[0], img[0]
        freqs[i, :L], freqs[i, L : L + img.shape[1]] = cap_f[0], img_f[0]
        mask[i, ..., L + img.shape[1] :] = -torch.finfo(torch.float32).max
    Ni = img.shape[1]

    def nag_attention(func, q, k, v, heads, m=None, *args, **kwargs):
        out = func(q, k, v, heads, m, *args, **kwargs)
        z = _nag_rule(out[0, lens[0] : lens[0] + Ni], out[1, lens[1] : lens[1] + Ni], scale, tau, alpha)
        out = out.clone()
        out[0, lens[0] : lens[0] + Ni] = z
        out[1, lens[1] : lens[1] + Ni] = z
        return out

    options = {"optimized_attention_override": nag_attention}
    P = lens[0]
    seq_input = seq.clone()
    for i, layer in enumerate(dm.layers):
        seq = layer(seq, mask, freqs, adaln.repeat(2, 1), transformer_options=options)
        for patch in patches.get("double_block", []):
            stream = seq[:1, P : P + Ni]  # the one image stream, as the positive row holds it
            args = {"img": stream, "img_input": seq_input[:1, P : P + Ni], "txt": seq[:1, :P]}
            out = patch(
                {**args, "pe": freqs[:1, P : P + Ni], "vec": adaln, "x": x, "block_index": i, "transformer_options": {}}
            )
            seq[0, P : P + Ni] = out.get("img", stream)[0]
            seq[1, lens[1] : lens[1] + Ni] = seq[0, P : P + Ni]

    out = dm.final_layer(seq[:1, lens[0] : lens[0] + n_img], adaln)
    out = out.view(1, H // p, W // p, p, p, C).permute(0, 5, 1, 3, 2, 4).reshape(1, C, H, W)
    return -out[:, :, :h, :w]
