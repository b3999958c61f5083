"""The one mirrored skeleton of ComfyUI's Z-Image NextDiT forward, shared by the batched-CFG forward
(zimage_batched) and the NAG forward (zimage_nag).

    forward(dm, x, timesteps, captions, layout, transformer_options)

runs, in NextDiT._forward's order:

1. timestep embedding, x padded to the patch size;
2. embedding (`embed`): each image row's caption and image tokens with their RoPE frequencies,
   through the host's own `NextDiT.embed_all` / `embed_cap` where it has them (v0.33), mirrored
   where it does not (v0.8.0); the layout's extra captions (NAG's negatives) the same way;
3. the context refiner, captions of one length batched together (none padded);
4. the noise refiner on the image tokens, with the host's `noise_refiner` model patches after
   each layer;
5. `layout.join`: the main layers' sequence (where each row's caption, image and any extra tokens
   sit, their RoPE positions, the key mask, and the attention hook of the main layers);
6. the main layers, with the host's `double_block` model patches after each layer, called on
   each row's image tokens and caption;
7. the final layer on the image tokens, unpatchified, cropped and negated (`image_output`).

The two forwards differ only in step 5. Model patches are called with the arguments the host's
forward gives them (comfy/ldm/lumina/model.py, v0.8.0 and v0.33.0): for a batched sequence whose
rows have their image at different offsets, `img`/`img_input`/`pe` are gathered per row and what
the patch writes (in place, or returned) is scattered back. Only patches this mirror was checked
with run here (`KNOWN_PATCHES`: ComfyUI's ZImageFunControlnet patch, which computes each image
row from that row's own tokens); any other makes `unsupported_patch` name it, and the caller takes
the host's own forward. ComfyUI is imported lazily: this module imports without a host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

# (module, class) of model patches whose per-row behaviour this skeleton reproduces. ComfyUI loads
# comfy_extras by file path, so the module name is the file's path there: compared by its last two parts.
KNOWN_PATCHES = {(("comfy_extras", "nodes_model_patch"), "ZImageControlPatch")}
PATCH_POINTS = ("noise_refiner", "double_block")


def unsupported_patch(transformer_options: dict) -> str | None:
    """Why the model patches in `transformer_options` cannot run through the skeleton, or None."""
    patches = transformer_options.get("patches") or {}
    for point in PATCH_POINTS:
        for p in patches.get(point) or ():
            module, name = type(p).__module__, type(p).__qualname__
            if (tuple(re.split(r"[./\\]", module)[-2:]), name) not in KNOWN_PATCHES:
                module, name = getattr(p, "__module__", module), getattr(p, "__qualname__", name)
                return f"a '{point}' model patch this pack does not know ({name} from {module})"
    return None


def patch_kinds(transformer_options: dict) -> tuple:
    """Which model patches run where (for a guard's signature: a new set is checked again)."""
    patches = transformer_options.get("patches") or {}
    return tuple((point, tuple(type(p).__qualname__ for p in patches.get(point) or ())) for point in PATCH_POINTS)


def _patches(transformer_options: dict, point: str) -> list:
    return list((transformer_options.get("patches") or {}).get(point) or ())


def batch_timesteps(timesteps, batch: int, device) -> torch.Tensor:
    """[batch] timesteps from [batch] or one value for all."""
    t = torch.as_tensor(timesteps, device=device).reshape(-1)
    if t.numel() == 1 and batch > 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"{t.numel()} timesteps for a batch of {batch}")
    return t


def caption_tokens(c: torch.Tensor, device, dtype) -> torch.Tensor:
    """One caption's features as [L, D] on `device` in `dtype` (given as [L, D] or [1, L, D])."""
    if c.ndim == 3:
        if c.shape[0] != 1:
            raise ValueError(f"each context must hold one caption, got shape {tuple(c.shape)}")
        c = c[0]
    if c.ndim != 2:
        raise ValueError(f"context must be [L, D] or [1, L, D], got shape {tuple(c.shape)}")
    return c.to(device=device, dtype=dtype)


def key_padding_mask(valid_lens: list[int], total: int, dtype, device):
    """Additive [B, 1, 1, total] mask: 0 for keys < valid_len, a large negative value after."""
    lens = torch.tensor(valid_lens, device=device)
    keep = torch.arange(total, device=device)[None, :] < lens[:, None]
    mask = torch.zeros(keep.shape, dtype=dtype, device=device)
    mask.masked_fill_(~keep, -torch.finfo(dtype).max)
    return mask[:, None, None, :]


# -- 2. embedding ---------------------------------------------------------------------------------


@dataclass
class Tokens:
    """What the embedding step hands on. Captions: the B image rows' own first, then the layout's
    extras; each [Lp_i, D] padded with cap_pad_token to its own multiple, freqs at positions 1..Lp_i."""

    caps: list
    cap_freqs: list
    img: torch.Tensor  # [B, Ni, D], image tokens then x_pad_token rows
    img_freqs: torch.Tensor  # [B, Ni, ...], row b's image right after row b's own caption
    n_img: int  # real image tokens (the rest of Ni are pad tokens)


def embed(dm, x: torch.Tensor, caps: list, transformer_options: dict) -> Tokens:
    B = x.shape[0]
    if hasattr(dm, "embed_all") and hasattr(dm, "embed_cap"):
        rows = [_host_embed(dm, x[i : i + 1], caps[i], transformer_options) for i in range(B)]
        extra = [dm.embed_cap(c[None], offset=0, bsz=1, device=x.device, dtype=x.dtype) for c in caps[B:]]
        return Tokens(
            caps=[r[0] for r in rows] + [e[0][0][0] for e in extra],
            cap_freqs=[r[1] for r in rows] + [e[1][0][0] for e in extra],
            img=torch.stack([r[2] for r in rows]),
            img_freqs=torch.stack([r[3] for r in rows]),
            n_img=(x.shape[-2] // dm.patch_size) * (x.shape[-1] // dm.patch_size),
        )
    return _v08_embed(dm, x, caps, transformer_options)


def _host_embed(dm, x1, cap, transformer_options):
    """One row through the host's NextDiT.embed_all (ComfyUI >= v0.33): caption embedder + pad
    tokens + caption rope, patchify + image pad tokens + image rope, exactly as its forward does."""
    embeds, freqs, _ = dm.embed_all(x1, cap[None], transformer_options=transformer_options)
    if len(embeds) != 3 or embeds[1] is not None:
        raise NotImplementedError("NextDiT.embed_all returned an unknown layout")
    return embeds[0][0], freqs[0][0], embeds[-1][0], freqs[-1][0]


def _v08_embed(dm, x, caps, transformer_options) -> Tokens:
    """ComfyUI v0.8.0 has no reusable embedding step (patchify_and_embed also runs the refiners on
    one shared caption length): this mirrors its embedding part."""
    B, device = x.shape[0], x.device
    img, n_img = embed_image(dm, x)
    padded = embed_captions(dm, caps)
    cap_freqs = [rope(dm, caption_positions(c.shape[0], device)) for c in padded]
    img_freqs = torch.stack(
        [rope(dm, image_positions(dm, x, img.shape[1], padded[i].shape[0] + 1, transformer_options)) for i in range(B)]
    )
    return Tokens(caps=padded, cap_freqs=cap_freqs, img=img, img_freqs=img_freqs, n_img=n_img)


def rope(dm, ids: torch.Tensor) -> torch.Tensor:
    """The host's RoPE frequencies for position ids [S, 3] -> [S, ...]."""
    return dm.rope_embedder(ids[None]).movedim(1, 2)[0]


def caption_positions(length: int, device, offset: float = 0.0) -> torch.Tensor:
    """[length, 3] ids of caption tokens: first axis 1 + offset .. length + offset."""
    ids = torch.zeros((length, 3), dtype=torch.float32, device=device)
    ids[:, 0] = torch.arange(length, dtype=torch.float32, device=device) + 1.0 + offset
    return ids


def image_positions(dm, x: torch.Tensor, n_tokens: int, first_axis: float, transformer_options: dict) -> torch.Tensor:
    """[n_tokens, 3] ids of the image tokens at `first_axis` on the first axis, height/width on the
    others with `rope_options` scale/shift applied as ComfyUI applies them; pad tokens stay at 0."""
    rope_options = transformer_options.get("rope_options", None) or {}
    H_tokens, W_tokens = x.shape[-2] // dm.patch_size, x.shape[-1] // dm.patch_size
    ys = torch.arange(H_tokens, dtype=torch.float32, device=x.device) * rope_options.get("scale_y", 1.0)
    xs = torch.arange(W_tokens, dtype=torch.float32, device=x.device) * rope_options.get("scale_x", 1.0)
    ys = (ys + rope_options.get("shift_y", 0.0)).view(-1, 1)
    xs = (xs + rope_options.get("shift_x", 0.0)).view(1, -1)
    n = H_tokens * W_tokens
    ids = torch.zeros((n_tokens, 3), dtype=torch.float32, device=x.device)
    ids[:n, 0] = first_axis
    ids[:n, 1] = ys.repeat(1, W_tokens).flatten()
    ids[:n, 2] = xs.repeat(H_tokens, 1).flatten()
    return ids


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


# -- 5. the layout's joint sequence -----------------------------------------------------------------


@dataclass
class Joint:
    """The main layers' input, as a layout lays it out. Row b's image tokens are
    seq[b, img_starts[b] : img_starts[b] + Ni], its own caption seq[b, cap_starts[b] : ... + cap_lens[b]]."""

    seq: torch.Tensor  # [B, S, D]
    freqs: torch.Tensor  # [B, S, ...]
    mask: torch.Tensor | None
    img_starts: list
    cap_starts: list
    cap_lens: list
    options: dict = field(default_factory=dict)  # transformer_options of the main layers (attention hook)


class Rows:
    """Row b's `length` tokens from `starts[b]` of a [B, S, ...] tensor: a view when every row
    starts at the same place (the host's own slicing), else a gather and a scatter back."""

    def __init__(self, starts: list, length: int, device):
        self.starts, self.length = list(starts), length
        self.uniform = len(set(self.starts)) == 1
        if not self.uniform:
            self.index = (
                torch.tensor(self.starts, device=device)[:, None] + torch.arange(length, device=device)[None, :]
            )
            self.rows = torch.arange(len(self.starts), device=device)[:, None]

    def take(self, t: torch.Tensor) -> torch.Tensor:
        if self.uniform:
            s = self.starts[0]
            return t[:, s : s + self.length]
        return t[self.rows, self.index]

    def put(self, t: torch.Tensor, value: torch.Tensor):
        if self.uniform:
            s = self.starts[0]
            t[:, s : s + self.length] = value
        else:
            t[self.rows, self.index] = value.to(t.dtype)


class Layout:
    """How a forward lays out its sequence (zimage_batched.BatchedLayout, zimage_nag.NagLayout)."""

    def extra_captions(self) -> list:
        """Captions beyond the image rows' own ones that go through embedder and context refiner."""
        return []

    def join(self, dm, x, tokens: Tokens, caps: list, img: torch.Tensor, transformer_options: dict) -> Joint:
        raise NotImplementedError

    def finish(self, dm):
        """Called after the main layers (e.g. to check the attention hook ran once per layer)."""


# -- the forward -----------------------------------------------------------------------------------


def forward(dm, x: torch.Tensor, timesteps, captions: list, layout: Layout, transformer_options: dict) -> torch.Tensor:
    """NextDiT._forward through `layout` (module docstring). captions: one per image row
    ([L, cap_feat_dim] or [1, L, cap_feat_dim]). Returns [B, C, h, w], the negated velocity."""
    try:
        return _forward(dm, x, timesteps, captions, layout, transformer_options)
    except BaseException:
        # The Fun ControlNet patch carries its control stream from one layer call to the next
        # (`temp_data`) and resets it only at the end of a whole forward: after a forward that
        # stopped half way, the host forward a caller falls back to would continue a stale stream.
        for point in PATCH_POINTS:
            for p in _patches(transformer_options, point):
                if hasattr(p, "temp_data"):
                    p.temp_data = None
        raise


def _forward(dm, x, timesteps, captions, layout, transformer_options):
    import comfy.ldm.common_dit

    B, _, h, w = x.shape
    device = x.device
    if len(captions) != B:
        raise ValueError(f"{len(captions)} captions for a batch of {B}")
    timesteps = batch_timesteps(timesteps, B, device)
    caps = [caption_tokens(c, device, x.dtype) for c in list(captions) + list(layout.extra_captions())]

    pH = pW = dm.patch_size
    x = comfy.ldm.common_dit.pad_to_patch_size(x, (pH, pW))
    H, W = x.shape[-2:]
    adaln_input = dm.t_embedder((1.0 - timesteps) * dm.time_scale, dtype=x.dtype)  # [B, 256]

    tokens = embed(dm, x, caps, transformer_options)

    # Context refiner per caption length (captions of one length batched, none padded: NAG's short
    # negative would otherwise run through it at the positive's length).
    lens = [c.shape[0] for c in tokens.caps]
    refined = [None] * len(lens)
    for L in dict.fromkeys(lens):
        rows = [i for i, n in enumerate(lens) if n == L]
        cap = torch.stack([tokens.caps[i] for i in rows])
        cap_freqs = torch.stack([tokens.cap_freqs[i] for i in rows]).to(device)
        for layer in dm.context_refiner:
            cap = layer(cap, None, cap_freqs, transformer_options=transformer_options)
        for j, i in enumerate(rows):
            refined[i] = cap[j]

    # Noise refiner on the image tokens (the same length in every row, no mask), and the host's
    # noise_refiner patches after each layer with the arguments its patchify_and_embed gives them.
    img = tokens.img
    img_freqs = tokens.img_freqs.to(device)
    img_input = img
    refiner_patches = _patches(transformer_options, "noise_refiner")
    if refiner_patches:  # the image rows' captions as the host hands them: [B, longest, D], right-padded
        txt = torch.stack([_pad_rows(refined[i], max(lens[:B])) for i in range(B)])
    for i, layer in enumerate(dm.noise_refiner):
        img = layer(img, None, img_freqs, adaln_input, transformer_options=transformer_options)
        for p in refiner_patches:
            out = p(
                {
                    "img": img,
                    "img_input": img_input,
                    "txt": txt,
                    "pe": img_freqs,
                    "vec": adaln_input,
                    "x": x,
                    "block_index": i,
                    "transformer_options": transformer_options,
                    "block_type": "noise_refiner",
                }
            )
            if "img" in out:
                img = out["img"]

    joint = layout.join(dm, x, tokens, refined, img, transformer_options)
    # The joint sequence holds what the main layers need: the embedded and refined image tokens (each
    # as large as a layer's activations) are released before the main layers, as the host's forward does.
    n_img, n_tokens = tokens.n_img, img.shape[1]
    tokens = img = img_input = refined = None
    seq, freqs = joint.seq, joint.freqs.to(joint.seq.device)
    options = joint.options
    options["total_blocks"] = len(dm.layers)
    options["block_type"] = "double"
    block_patches = _patches(transformer_options, "double_block")
    if block_patches:
        img_rows = Rows(joint.img_starts, n_tokens, device)
        img_input, pe = img_rows.take(seq), img_rows.take(freqs)
    for i, layer in enumerate(dm.layers):
        options["block_index"] = i
        seq = layer(seq, joint.mask, freqs, adaln_input, transformer_options=options)
        for p in block_patches:
            img_now, txt_now = img_rows.take(seq), _captions(seq, joint)
            out = p(
                {
                    "img": img_now,
                    "img_input": img_input,
                    "txt": txt_now,
                    "pe": pe,
                    "vec": adaln_input,
                    "x": x,
                    "block_index": i,
                    "transformer_options": options,
                }
            )
            if "img" in out or not img_rows.uniform:  # a view was written in place already
                img_rows.put(seq, out["img"] if "img" in out else img_now)
            if "txt" in out:
                _put_captions(seq, joint, out["txt"])
    layout.finish(dm)
    return image_output(dm, seq, joint.img_starts, n_img, adaln_input, (H, W), (h, w))


def _captions(seq: torch.Tensor, joint: Joint) -> torch.Tensor:
    """Each row's own caption tokens of the main layers' sequence as one [B, L, D] block (the host's
    `txt`): a view when every row has it at the same place and length, else zero-padded copies."""
    starts, lens = joint.cap_starts, joint.cap_lens
    if len(set(starts)) == 1 and len(set(lens)) == 1:
        return seq[:, starts[0] : starts[0] + lens[0]]
    return torch.stack([_pad_rows(seq[b, s : s + n], max(lens)) for b, (s, n) in enumerate(zip(starts, lens))])


def _put_captions(seq: torch.Tensor, joint: Joint, txt: torch.Tensor):
    for b, (s, n) in enumerate(zip(joint.cap_starts, joint.cap_lens)):
        seq[b, s : s + n] = txt[b, :n]


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    if t.shape[0] == rows:
        return t
    return torch.cat((t, t.new_zeros((rows - t.shape[0],) + tuple(t.shape[1:]))))


def image_output(dm, joint, starts: list, n_img: int, adaln_input, padded_hw, hw) -> torch.Tensor:
    """The final layer on each row's real image tokens (joint[i, starts[i] : starts[i] + n_img]; it
    is per token), unpatchified to the padded size `padded_hw`, cropped to `hw` and negated, as
    NextDiT.forward returns it: [B, C_out, h, w]."""
    B = joint.shape[0]
    pH = pW = dm.patch_size
    (H, W), (h, w) = padded_hw, hw
    img_out = dm.final_layer(Rows(starts, n_img, joint.device).take(joint), adaln_input)
    C_out = dm.out_channels
    out = img_out.view(B, H // pH, W // pW, pH, pW, C_out).permute(0, 5, 1, 3, 2, 4).reshape(B, C_out, H, W)
    return -out[:, :, :h, :w]
