"""NAG for ComfyUI's Z-Image NextDiT in one forward: the image stream is computed once.

Z-Image's main layers are single-stream: joint attention over [caption, image]. NAG needs, in each
of them, the image tokens' attention output against the positive caption (z+) and against the
negative caption (z-); both branches then continue with the combined output (core/nag.py). So
the image stream is ONE stream, and `nag_forward` runs each sample as one joint sequence

    [positive caption (P tokens), image (Ni tokens), negative caption (N tokens)]

through the host's own blocks. Every linear layer, norm and MLP sees each token once; the extra
work over a plain forward is the negative caption's tokens (embedder, context refiner, the main
layers) and small attention passes. The attention is replaced, for the main layers only, through
ComfyUI's `optimized_attention_override` hook (the host computes q, k, v with its own code, norms
and RoPE included, and calls the hook). Conceptually there are two windows:

* window A = [positive caption, image] attends to itself: the positive caption's and z+ rows;
* window B = [image, negative caption] attends to itself: z- and the negative caption's rows;
* the image rows become nag_combine(z+, z-); the host's output projection follows.

Both windows hold the same image keys, so `_SharedKeysAttention` (the default) attends every row
over them ONCE (one kernel call for all rows, as a plain forward's one call) and merges in each
window's caption keys by log-sum-exp (core/nag_attention.py): exact, and NAG's extra attention is
then only the caption parts. `_NagAttention` computes the two windows as such through the host's
attention function; it is the fallback when the shared-keys path fails its self-check, or when
another attention override is already in place.

RoPE positions: the positive caption and the image are where a plain forward puts them (caption
1..P, image at P + 1). The negative caption sits at P - N + 1 .. P on the first axis, so the image
is right after it, as in a plain forward of the negative (image at N + 1): attention scores under
RoPE depend only on position differences, so window B's attention is the negative branch's. The
exception is the image pad tokens (odd latent sizes): a plain forward puts them at position 0
whatever the caption length, so in window B their q and k are rotated once more by P - N.

Window B is not the whole negative branch, though: the image stream entering the main layers is
the positive branch's. With image pad tokens and captions of different padded lengths the noise
refiner (which runs on the image alone) sees the pad tokens at other positions relative to the
image than a plain forward of the negative would; a held-out NAG reference that runs the negative
at its native positions gave outputs 0.19-1.26 apart on such inputs (tiny random models). One image stream is still the right choice: NAG is
defined on ONE image stream whose attention is computed against two captions (the authors apply
it inside each attention layer of a single forward), the combined output continues for both
branches anyway after the first layer, and a second image stream would double the forward's cost.

Exactness: equals a forward that runs the batch doubled ([pos, img] and [neg, img]) and applies
NAG on the image slice in every layer (tests/host/test_nag.py, <= 1e-5 in fp32). Everything but
the sequence layout and the attention (embedding, padding, refiners, model patches, final layer)
is the shared skeleton (model/skeleton.py), and the same `can_batch` conditions apply;
`self_check` compares against the host's own forward.

A ComfyUI Z-Image Fun ControlNet patch acts on the image rows, which belong to the positive
caption: the control is applied to the one image stream that both branches share.
"""

from __future__ import annotations

import torch

from ..core import nag_attention
from ..core.nag import nag_combine
from . import skeleton, zimage_batched

__all__ = ["nag_forward", "can_nag", "self_check", "MirrorMismatch", "NagLayout", "ATTENTION_PATHS"]

ATTENTION_PATHS = ("shared", "windows")


class MirrorMismatch(RuntimeError):
    """The host's blocks did not behave as this mirror expects (e.g. the attention hook was not
    called once per main layer, or with tensors of another layout)."""


def can_nag(
    diffusion_model, transformer_options: dict | None = None, attention_masks: list | None = None
) -> tuple[bool, str]:
    return zimage_batched.can_batch(diffusion_model, transformer_options or {}, attention_masks)


def _gather_tokens(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t [B, H, S, d] gathered along S with idx [B, L] -> [B, H, L, d]."""
    B, H, _, d = t.shape
    return t.gather(2, idx[:, None, :, None].expand(B, H, idx.shape[1], d))


def _check_layout(q: torch.Tensor, S: int, mask, kwargs: dict) -> None:
    """The main layers' attention call as the mirror lays it out: no mask, q [B, heads, S, d], the
    output wanted as [B, S, heads*d]."""
    if mask is not None:
        raise MirrorMismatch("a main layer's attention received a mask; the NAG mirror passes none")
    if q.ndim != 4 or q.shape[2] != S or not kwargs.get("skip_reshape", False):
        raise MirrorMismatch(f"unexpected attention layout: q {tuple(q.shape)}, expected [B, heads, {S}, d]")
    if kwargs.get("skip_output_reshape", False):
        raise MirrorMismatch("the host asked for the attention output in [B, heads, S, d] layout")


class _NagAttention:
    """The main layers' attention: windows A and B, NAG on the image rows (see module docstring)."""

    def __init__(self, previous, pos_lens, neg_lens, n_img, seq_len, scale, tau, alpha, device, pad_rope=None):
        self.previous = previous
        self.scale, self.tau, self.alpha = scale, tau, alpha
        self.P, self.N, self.Ni, self.S = pos_lens, neg_lens, n_img, seq_len
        # (first pad row in window B, freqs [B, n_pad, 1, ...]) when image pad tokens need re-rotating.
        self.pad_rope = pad_rope
        self.calls = 0
        self._masks = None  # (window A, window B) key masks: the same in every main layer
        self.uniform = len(set(pos_lens)) == 1 and len(set(neg_lens)) == 1
        if self.uniform:
            return
        B = len(pos_lens)
        P = torch.tensor(pos_lens, device=device)[:, None]
        N = torch.tensor(neg_lens, device=device)[:, None]
        self.LA, self.LB = max(pos_lens) + n_img, max(neg_lens) + n_img
        a = torch.arange(self.LA, device=device)[None, :].expand(B, -1)
        self.valid_a = a < P + n_img
        self.idx_a = torch.where(self.valid_a, a, torch.zeros_like(a))
        b = torch.arange(self.LB, device=device)[None, :].expand(B, -1)
        self.valid_b = b < N + n_img
        self.idx_b = torch.where(self.valid_b, P + b, P.expand(-1, self.LB))
        # Where each joint position takes its output from, in cat([out_a, z, out_b[:, Ni:]]).
        j = torch.arange(seq_len, device=device)[None, :].expand(B, -1)
        src = torch.where(j < P, j, torch.zeros_like(j))
        src = torch.where((j >= P) & (j < P + n_img), self.LA + j - P, src)
        src = torch.where((j >= P + n_img) & (j < P + n_img + N), self.LA + j - P, src)
        self.src = src
        self.z_idx = P + torch.arange(n_img, device=device)[None, :]

    def _negative_window_rope(self, q, k, copied: bool):
        """Image pad tokens sit at position 0 on every axis whatever the caption length, so unlike
        all other tokens they do not move with the negative caption's shift: rotate them (q and k,
        window B only) by that shift, which puts them where the negative branch has them."""
        if self.pad_rope is None:
            return q, k
        from comfy.ldm.flux.math import apply_rope1

        first, freqs = self.pad_rope
        if not copied:
            q, k = q.clone(), k.clone()
        for t in (q, k):
            rows = t[:, :, first : self.Ni].movedim(1, 2).contiguous()
            t[:, :, first : self.Ni] = apply_rope1(rows, freqs).movedim(2, 1)
        return q, k

    def _attend(self, func, q, k, v, heads, mask, args, kwargs):
        if self.previous is not None:
            return self.previous(func, q, k, v, heads, mask, *args, **kwargs)
        return func(q, k, v, heads, mask, *args, **kwargs)

    def __call__(self, func, q, k, v, heads, mask=None, *args, **kwargs):
        self.calls += 1
        _check_layout(q, self.S, mask, kwargs)
        B, Ni = q.shape[0], self.Ni
        if self.uniform:
            P, N = self.P[0], self.N[0]
            out_a = self._attend(
                func, q[:, :, : P + Ni], k[:, :, : P + Ni], v[:, :, : P + Ni], heads, None, args, kwargs
            )
            end = P + Ni + N
            qb, kb = self._negative_window_rope(q[:, :, P:end], k[:, :, P:end], copied=False)
            out_b = self._attend(func, qb, kb, v[:, :, P:end], heads, None, args, kwargs)
            if out_a.shape[:2] != (B, P + Ni) or out_b.shape[:2] != (B, Ni + N):
                raise MirrorMismatch(f"attention output has shape {tuple(out_a.shape)}, expected [B, S, heads*d]")
            z = nag_combine(out_a[:, P:], out_b[:, :Ni], self.scale, self.tau, self.alpha)
            parts = [out_a[:, :P], z, out_b[:, Ni:]]
            if end < self.S:
                parts.append(out_a.new_zeros((B, self.S - end, out_a.shape[-1])))
            return torch.cat(parts, dim=1)
        if self._masks is None or (self._masks[0].dtype, self._masks[0].device) != (q.dtype, q.device):
            self._masks = (
                skeleton.key_padding_mask([p + Ni for p in self.P], self.LA, q.dtype, q.device),
                skeleton.key_padding_mask([n + Ni for n in self.N], self.LB, q.dtype, q.device),
            )
        mask_a, mask_b = self._masks
        qa, ka, va = (_gather_tokens(t, self.idx_a) for t in (q, k, v))
        out_a = self._attend(func, qa, ka, va, heads, mask_a, args, kwargs)
        qb, kb, vb = (_gather_tokens(t, self.idx_b) for t in (q, k, v))
        qb, kb = self._negative_window_rope(qb, kb, copied=True)
        out_b = self._attend(func, qb, kb, vb, heads, mask_b, args, kwargs)
        if out_a.shape[:2] != (B, self.LA) or out_b.shape[:2] != (B, self.LB):
            raise MirrorMismatch(f"attention output has shape {tuple(out_a.shape)}, expected [B, S, heads*d]")
        C = out_a.shape[-1]
        z_pos = out_a.gather(1, self.z_idx[:, :, None].expand(B, Ni, C))
        z = nag_combine(z_pos, out_b[:, :Ni], self.scale, self.tau, self.alpha)
        src = torch.cat([out_a, z, out_b[:, Ni:]], dim=1)
        return src.gather(1, self.src[:, :, None].expand(B, self.S, C))


def _heads_last(t: torch.Tensor) -> torch.Tensor:
    """[B, H, L, d] -> [B, L, H*d], the layout the host's attention returns."""
    B, H, L, d = t.shape
    return t.transpose(1, 2).reshape(B, L, H * d)


class _SharedKeysAttention:
    """The main layers' attention with the image keys attended once for z+ and z-: per group of rows
    with the same caption lengths (P, N), core/nag_attention.shared_keys_rows on the rows
    [positive caption, image, negative caption] with the image keys shared, the positive caption's
    keys as window A's own and the negative caption's as window B's; nag_combine on the image rows,
    written straight into the output. Every row attends over what it does in `_NagAttention`.

    Image pad tokens whose window-B rotation differs (`pad_rope`, see `_NagAttention`) are keys of
    their own in each window (with the caption's keys), not shared ones; their own query rows in z-
    are computed over the whole window B. The kernel is torch's, chosen per device, dtype and head
    size, not the attention backend the user selected for ComfyUI (README, NAG)."""

    def __init__(self, pos_lens, neg_lens, n_img, seq_len, scale, tau, alpha, pad_rope=None):
        self.P, self.N, self.Ni, self.S = list(pos_lens), list(neg_lens), n_img, seq_len
        self.scale, self.tau, self.alpha = scale, tau, alpha
        self.pad_rope = pad_rope
        self.calls = 0
        self.kernel = None  # the kernel of the last call (for logs and the bench)
        groups: dict[tuple, list] = {}
        for i, pn in enumerate(zip(self.P, self.N)):
            groups.setdefault(pn, []).append(i)
        self.groups = [(p, n, rows) for (p, n), rows in groups.items()]

    def _rotate_pad(self, t: torch.Tensor, rows) -> torch.Tensor:
        """Window B's re-rotation of image pad rows t [b, H, n_pad, d] (see `_NagAttention`)."""
        from comfy.ldm.flux.math import apply_rope1

        freqs = self.pad_rope[1] if rows is None else self.pad_rope[1][rows]
        return apply_rope1(t.movedim(1, 2).contiguous(), freqs).movedim(2, 1)

    def _group(self, q, k, v, P, N, rows, kernel, out):
        """Fills out [b, S, H*d] rows :P + Ni + N for rows with caption lengths P, N."""
        Ni, end = self.Ni, P + self.Ni + N
        img, neg = slice(P, P + Ni), slice(P + Ni, end)
        if self.pad_rope is None:
            shared = (k[:, :, img], v[:, :, img])
            pos, negative = (k[:, :, :P], v[:, :, :P]), (k[:, :, neg], v[:, :, neg])
        else:
            first = P + self.pad_rope[0]
            pad = slice(first, P + Ni)
            k_pad_b = self._rotate_pad(k[:, :, pad], rows)
            shared = (k[:, :, P:first], v[:, :, P:first])
            pos = (torch.cat([k[:, :, :P], k[:, :, pad]], 2), torch.cat([v[:, :, :P], v[:, :, pad]], 2))
            negative = (torch.cat([k_pad_b, k[:, :, neg]], 2), torch.cat([v[:, :, pad], v[:, :, neg]], 2))
        b, H, _, d = q.shape
        rows_out = out[:, :end].view(b, end, H, d).transpose(1, 2)  # [b, H, end, d] view of the output
        _, window_b = nag_attention.shared_keys_rows(
            q[:, :, :end], P, Ni, *shared, *pos, *negative, kernel, out=rows_out[:, :, : P + Ni]
        )
        z_neg = window_b[:, :, :Ni]
        if self.pad_rope is not None:
            # The pad rows' own queries in window B are rotated too: over the whole window B.
            q_pad_b = self._rotate_pad(q[:, :, pad], rows)
            k_b, v_b = torch.cat([shared[0], negative[0]], 2), torch.cat([shared[1], negative[1]], 2)
            z_neg[:, :, self.pad_rope[0] :] = nag_attention.attention(q_pad_b, k_b, v_b, kernel)
        rows_out[:, :, P + Ni :] = window_b[:, :, Ni:]
        # z+ (window A's image rows) sits in the output's image rows: the rule overwrites it in place.
        nag_combine(out[:, img], _heads_last(z_neg), self.scale, self.tau, self.alpha, out=out[:, img])

    def __call__(self, func, q, k, v, heads, mask=None, *args, **kwargs):
        self.calls += 1
        _check_layout(q, self.S, mask, kwargs)
        B, H, _, d = q.shape
        kernel = self.kernel = nag_attention.kernel_for(q.device, q.dtype, d)
        if len(self.groups) == 1:
            out = q.new_empty((B, self.S, H * d))
            P, N, _ = self.groups[0]
            out[:, P + self.Ni + N :] = 0  # batch padding rows (none with one caption length each)
            self._group(q, k, v, P, N, None, kernel, out)
            return out
        out = q.new_zeros((B, self.S, H * d))
        for P, N, rows in self.groups:
            idx = torch.tensor(rows, device=q.device)
            part = q.new_zeros((len(rows), self.S, H * d))
            self._group(q[idx], k[idx], v[idx], P, N, idx, kernel, part)
            out[idx] = part
        return out


def nag_forward(
    diffusion_model,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    pos_contexts: list,
    neg_contexts: list,
    scale: float,
    tau: float,
    alpha: float,
    transformer_options: dict | None = None,
    attention: str = "shared",
) -> torch.Tensor:
    """ComfyUI's Z-Image NextDiT forward with NAG in every main layer: the skeleton
    (model/skeleton.py) with `NagLayout`.

    x: [B, C, H, W]; timesteps: [B] or one value; pos_contexts / neg_contexts: B captions each,
    [L, cap_feat_dim] or [1, L, cap_feat_dim], any lengths. Returns what NextDiT.forward returns
    (negated velocity), [B, C, H, W]. attention: "shared" (image keys attended once for z+ and z-,
    `_SharedKeysAttention`) or "windows" (two attention windows through the host's attention,
    `_NagAttention`)."""
    transformer_options = dict(transformer_options or {})
    ok, why = can_nag(diffusion_model, transformer_options)
    if not ok:
        raise NotImplementedError(f"Z-Image NAG forward not possible: {why}")
    B = x.shape[0]
    if len(pos_contexts) != B or len(neg_contexts) != B:
        raise ValueError(f"{len(pos_contexts)} positive / {len(neg_contexts)} negative captions for a batch of {B}")
    if attention not in ATTENTION_PATHS:
        raise ValueError(f"attention must be one of {ATTENTION_PATHS}, got {attention!r}")
    layout = NagLayout(neg_contexts, scale, tau, alpha, attention)
    return skeleton.forward(diffusion_model, x, timesteps, pos_contexts, layout, transformer_options)


class NagLayout(skeleton.Layout):
    """Per sample one sequence [positive caption (P), image (Ni), negative caption (N)], right-padded
    to the batch maximum, the negative caption at first-axis positions P - N + 1 .. P (module
    docstring), and the main layers' attention replaced by `attention_hook`. The image rows are the
    positive caption's: model patches (a ControlNet) act on the one image stream."""

    def __init__(self, negatives: list, scale: float, tau: float, alpha: float, attention: str = "shared"):
        self.negatives = list(negatives)
        self.attention = attention
        self.scale, self.tau, self.alpha = scale, tau, alpha
        self.hook = None

    def extra_captions(self) -> list:
        return self.negatives

    def attention_hook(self, previous, P, N, Ni, S, device, pad_rope):
        """The one attention hook of the main layers (ComfyUI's optimized_attention_override). Another
        override already in place (`previous`) is honoured: the two windows run through it."""
        if self.attention == "shared" and previous is None:
            return _SharedKeysAttention(P, N, Ni, S, self.scale, self.tau, self.alpha, pad_rope)
        return _NagAttention(previous, P, N, Ni, S, self.scale, self.tau, self.alpha, device, pad_rope)

    def join(self, dm, x, tokens, caps, img, transformer_options):
        B, Ni = img.shape[:2]
        n_img, device = tokens.n_img, img.device
        P = [c.shape[0] for c in caps[:B]]
        N = [c.shape[0] for c in caps[B : 2 * B]]
        S = max(p + n for p, n in zip(P, N)) + Ni
        seq = img.new_zeros((B, S, img.shape[-1]))
        origin = skeleton.rope(dm, torch.zeros((1, 3), dtype=torch.float32, device=device))[0]
        freqs = origin.to(device).expand((B, S) + tuple(origin.shape)).clone()
        for i in range(B):
            p, n = P[i], N[i]
            seq[i, :p], seq[i, p : p + Ni], seq[i, p + Ni : p + Ni + n] = caps[i], img[i], caps[B + i]
            freqs[i, :p] = tokens.cap_freqs[i].to(device)
            freqs[i, p : p + Ni] = tokens.img_freqs[i].to(device)
            freqs[i, p + Ni : p + Ni + n] = skeleton.rope(dm, skeleton.caption_positions(n, device, offset=p - n))

        pad_rope = None
        if Ni > n_img and any(p != n for p, n in zip(P, N)):
            pad_ids = torch.zeros((B, Ni - n_img, 3), dtype=torch.float32, device=device)
            pad_ids[:, :, 0] = torch.tensor([p - n for p, n in zip(P, N)], dtype=torch.float32, device=device)[:, None]
            pad_rope = (n_img, dm.rope_embedder(pad_ids).movedim(1, 2).to(device))

        options = dict(transformer_options)
        self.hook = self.attention_hook(
            transformer_options.get("optimized_attention_override"), P, N, Ni, S, device, pad_rope
        )
        options["optimized_attention_override"] = self.hook
        return skeleton.Joint(
            seq=seq, freqs=freqs, mask=None, img_starts=P, cap_starts=[0] * B, cap_lens=P, options=options
        )

    def finish(self, dm):
        if self.hook.calls != len(dm.layers):
            raise MirrorMismatch(
                f"the attention hook ran {self.hook.calls} times for {len(dm.layers)} main layers: the host's "
                "blocks no longer call attention through optimized_attention_override"
            )


def self_check(
    diffusion_model,
    transformer_options: dict | None = None,
    device=None,
    dtype=None,
    guard=None,
    attention: str = "shared",
) -> tuple[bool, str]:
    """Compare this mirror (with the `attention` path) against the host's own forward on small probe
    inputs, through forward_guard (verdict cached per model and signature in `guard`, reason logged
    once).

    Three comparisons:
    * NAG neutral (scale 1): the output must equal the host's plain forward with the positive;
    * negative = positive (a large scale amplifies any mismatch between the branches): the same;
    * window B alone (scale 0, alpha 1, a tau that never caps: the image rows take z- only), with
      captions of different padded lengths (so the negative caption's position shift runs) on a
      latent without image pad tokens (where the shared noise refiner is exact): the output must
      equal the host's plain forward with the NEGATIVE caption. This one sees position errors that
      the first two cannot (they never use z-, or have no shift).
    The first two run on a latent with image pad tokens and captions of different padded lengths,
    so the windows and the pad-token rotation run too (their values are covered by host tests).
    `transformer_options` must not hold this pack's NAG wrapper (the host forward would recurse)."""
    from .forward_guard import ForwardGuard

    dm = diffusion_model
    guard = guard if guard is not None else ForwardGuard("Z-Image NAG forward")
    opts = dict(transformer_options or {})
    if device is None or dtype is None:
        param = next(dm.parameters())
        device = param.device if device is None else device
        dtype = param.dtype if dtype is None else dtype
    signature = ("NAG self-check", attention, str(device), dtype, skeleton.patch_kinds(opts))
    if guard.verdict(dm, signature) is None:
        g = torch.Generator(device="cpu").manual_seed(0)
        cap_dim = dm.cap_embedder[0].weight.shape[0]
        x = torch.randn((1, dm.in_channels, 12, 8), generator=g).to(device=device, dtype=dtype)  # 24 tokens + 8 pad
        x_b = torch.randn((1, dm.in_channels, 16, 16), generator=g).to(device=device, dtype=dtype)  # 64, no pad
        t = torch.tensor([0.6], device=device, dtype=dtype)
        pos = torch.randn((11, cap_dim), generator=g).to(device=device, dtype=dtype)
        neg = torch.randn((37, cap_dim), generator=g).to(device=device, dtype=dtype)

        def mirror():
            return [
                nag_forward(dm, x, t, [pos], [neg], 1.0, 2.5, 1.0, dict(opts), attention),
                nag_forward(dm, x, t, [pos], [pos], 4.0, 10.0, 1.0, dict(opts), attention),
                nag_forward(dm, x_b, t, [pos], [neg], 0.0, float("inf"), 1.0, dict(opts), attention),
            ]

        def reference():
            ref = dm(x, t, pos[None], pos.shape[0], transformer_options=dict(opts))
            ref_b = dm(x_b, t, neg[None], neg.shape[0], transformer_options=dict(opts))
            return [ref, ref, ref_b]

        with torch.no_grad():
            guard.run(dm, signature, mirror, reference)
    verdict = guard.verdict(dm, signature)
    if verdict is None:
        return False, "self-check undecided (the host's output was not finite)"
    return verdict.ok, verdict.reason
