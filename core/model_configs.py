"""Model hyper-parameters inferred from tensor shapes (Z-Image DiT, Qwen3 text encoder), and
what ComfyUI needs to build each: the Z-Image `unet_config` (the one place it is written) and the
Qwen3 text-encoder config. Also checks whether ComfyUI's implementation can hold a given size."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import keys as _keys
from .model_errors import ComfyConfigError, bad_structure

Shapes = Mapping[str, tuple]

# The fixed part of ComfyUI's Z-Image unet_config (comfy/model_detection.py, the dim == 3840 branch).
ZIMAGE_AXES_DIMS = [32, 48, 48]
ZIMAGE_AXES_LENS = [1536, 512, 512]
ZIMAGE_ROPE_THETA = 256.0
ZIMAGE_FFN_MULTIPLIER = 8.0 / 3.0
ZIMAGE_TIME_SCALE = 1000.0
ZIMAGE_PAD_TOKENS_MULTIPLE = 32
# NextDiT's constructor defaults that detection leaves implicit.
_NEXTDIT_DEFAULT_REFINERS = 2
_NEXTDIT_MULTIPLE_OF = 256
# ComfyUI's Qwen3_4BConfig fixes head_dim as a class attribute (not a constructor field).
QWEN3_HEAD_DIM = 128
# ComfyUI recognises the Qwen3-4B text encoder (Z-Image's) by this width and builds it unconfigured.
QWEN3_4B_HIDDEN = 2560
QWEN3_4B_LAYERS = 36


def comfy_ffn_hidden(dim: int) -> int:
    """The FFN width ComfyUI's NextDiT builds: int(8/3 * dim) rounded up to a multiple of 256."""
    hidden = int(ZIMAGE_FFN_MULTIPLIER * dim)
    return _NEXTDIT_MULTIPLE_OF * ((hidden + _NEXTDIT_MULTIPLE_OF - 1) // _NEXTDIT_MULTIPLE_OF)


@dataclass(frozen=True)
class ZImageDiTConfig:
    """Z-Image DiT hyper-parameters inferred from tensor shapes (ComfyUI names).

    `t_embed_hidden` and `adaln_dim` are kept because they are where diffusers and ComfyUI builds
    of the same width disagree below dim 1024 (diffusers' timestep MLP is always 1024 wide)."""

    dim: int
    n_layers: int
    n_refiner_layers: int
    n_heads: int
    head_dim: int
    n_kv_heads: int
    cap_feat_dim: int
    in_channels: int
    patch_size: int
    ffn_hidden: int
    has_pad_tokens: bool
    t_embed_hidden: int
    adaln_dim: int
    params: int = 0

    @classmethod
    def for_size(
        cls,
        dim: int,
        n_layers: int,
        n_refiner_layers: int,
        n_heads: int,
        cap_feat_dim: int,
        n_kv_heads: int | None = None,
        has_pad_tokens: bool = True,
    ) -> ZImageDiTConfig:
        """A Z-Image of this size with every other width as ComfyUI builds it (demo, test and
        benchmark models are sized this way)."""
        return cls(
            dim=dim,
            n_layers=n_layers,
            n_refiner_layers=n_refiner_layers,
            n_heads=n_heads,
            head_dim=dim // n_heads,
            n_kv_heads=n_kv_heads or n_heads,
            cap_feat_dim=cap_feat_dim,
            in_channels=16,
            patch_size=2,
            ffn_hidden=comfy_ffn_hidden(dim),
            has_pad_tokens=has_pad_tokens,
            t_embed_hidden=min(dim, 1024),
            adaln_dim=min(dim, 256),
        )

    def comfy_ffn_hidden(self) -> int:
        return comfy_ffn_hidden(self.dim)

    def comfy_incompatibilities(self) -> list[str]:
        """Why ComfyUI's Z-Image implementation could not hold these weights (empty if it can)."""
        problems = []
        if self.head_dim != sum(ZIMAGE_AXES_DIMS):
            problems.append(
                f"head size {self.head_dim}: ComfyUI's rotary embedding for Z-Image needs {sum(ZIMAGE_AXES_DIMS)} (axes_dims {ZIMAGE_AXES_DIMS})"
            )
        if self.n_heads * self.head_dim != self.dim:
            problems.append(f"{self.n_heads} heads of {self.head_dim} do not make the width {self.dim}")
        if self.patch_size != 2:
            problems.append(f"patch size {self.patch_size}: ComfyUI assumes 2")
        if self.ffn_hidden != self.comfy_ffn_hidden():
            problems.append(
                f"FFN width {self.ffn_hidden}: ComfyUI builds {self.comfy_ffn_hidden()} at width {self.dim}"
            )
        if self.t_embed_hidden != min(self.dim, 1024):
            problems.append(
                f"timestep MLP width {self.t_embed_hidden}: ComfyUI builds {min(self.dim, 1024)} at width {self.dim}"
            )
        if self.adaln_dim != min(self.dim, 256):
            problems.append(f"adaLN input width {self.adaln_dim}: ComfyUI builds {min(self.dim, 256)}")
        return problems

    def comfy_unet_config(self) -> dict:
        """The unet_config ComfyUI's model_detection produces for a Z-Image of this size.

        For the real model (dim 3840, 2 refiners) this equals detect_unet_config's output exactly.
        `n_refiner_layers` is added only when it differs from NextDiT's default of 2, because
        detection never sets it. Raises ComfyConfigError if ComfyUI cannot build this size."""
        problems = self.comfy_incompatibilities()
        if problems:
            raise ComfyConfigError("ComfyUI's Z-Image model cannot hold this checkpoint: " + "; ".join(problems))
        cfg = {
            "image_model": "lumina2",
            "patch_size": self.patch_size,
            "in_channels": self.in_channels,
            "dim": self.dim,
            "cap_feat_dim": self.cap_feat_dim,
            "n_layers": self.n_layers,
            "qk_norm": True,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "axes_dims": list(ZIMAGE_AXES_DIMS),
            "axes_lens": list(ZIMAGE_AXES_LENS),
            "rope_theta": ZIMAGE_ROPE_THETA,
            "ffn_dim_multiplier": ZIMAGE_FFN_MULTIPLIER,
            "z_image_modulation": True,
            "time_scale": ZIMAGE_TIME_SCALE,
        }
        if self.has_pad_tokens:
            cfg["pad_tokens_multiple"] = ZIMAGE_PAD_TOKENS_MULTIPLE
        if self.n_refiner_layers != _NEXTDIT_DEFAULT_REFINERS:
            cfg["n_refiner_layers"] = self.n_refiner_layers
        return cfg


@dataclass(frozen=True)
class Qwen3Config:
    """Qwen3 text-encoder hyper-parameters inferred from tensor shapes."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    head_dim: int = QWEN3_HEAD_DIM
    params: int = 0

    def comfy_model_config(self) -> dict:
        """Fields for `model_options={"qwen3_4b_model_config": ...}`: ComfyUI's Qwen3_4BConfig
        constructor fields (comfy/text_encoders/llama.py). head_dim is a class attribute there
        (fixed at 128, passing it would be a TypeError), so other head sizes are refused."""
        if self.head_dim != QWEN3_HEAD_DIM:
            raise ComfyConfigError(
                f"head size {self.head_dim}: ComfyUI's Qwen3_4B text encoder fixes it at {QWEN3_HEAD_DIM}"
            )
        return {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
        }


def count_blocks(names: Iterable[str], prefix: str) -> int:
    """Contiguous block count from 0, as ComfyUI's count_blocks does."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = set()
    for n in names:
        m = pattern.match(n)
        if m:
            found.add(int(m.group(1)))
    count = 0
    while count in found:
        count += 1
    return count


def zimage_config_from_shapes(path: str, shapes: Shapes, prefix: str, layout: str) -> ZImageDiTConfig:
    s = {k[len(prefix) :]: tuple(v) for k, v in shapes.items() if k.startswith(prefix)}
    if layout == "diffusers":
        try:
            s = _keys.diffusers_to_comfy_shapes(s)
        except (KeyError, ValueError) as e:
            raise bad_structure(path, f"a diffusers-layout Z-Image DiT with inconsistent tensors: {e}") from None

    def need(name: str, ndim: int) -> tuple[int, ...]:
        shape = s.get(name)
        if shape is None or len(shape) != ndim:
            raise bad_structure(path, f"a Z-Image DiT without a usable {prefix}{name} (shape {shape})")
        return shape

    dim, cap = need("cap_embedder.1.weight", 2)
    x_out, patch_in = need("x_embedder.weight", 2)
    (head_dim,) = need("layers.0.attention.q_norm.weight", 1)
    qkv_rows, _ = need("layers.0.attention.qkv.weight", 2)
    ffn_hidden, _ = need("layers.0.feed_forward.w1.weight", 2)
    _, adaln_dim = need("layers.0.adaLN_modulation.0.weight", 2)
    t_hidden, _ = need("t_embedder.mlp.0.weight", 2)
    patch = 2  # both layouts fix it: diffusers names it ("all_x_embedder.2-1"), ComfyUI hardcodes it
    if x_out != dim or head_dim <= 0 or dim % head_dim or patch_in % (patch * patch):
        raise bad_structure(
            path, f"a Z-Image DiT with inconsistent widths (dim {dim}, x_embedder {x_out}x{patch_in}, head {head_dim})"
        )
    n_heads = dim // head_dim
    kv2 = qkv_rows // head_dim - n_heads
    if qkv_rows % head_dim or kv2 <= 0 or kv2 % 2:
        raise bad_structure(
            path, f"a Z-Image DiT whose qkv ({qkv_rows} rows) does not fit {n_heads} heads of {head_dim}"
        )
    names = list(s)
    noise, context = count_blocks(names, "noise_refiner."), count_blocks(names, "context_refiner.")
    if noise != context:
        raise bad_structure(path, f"a Z-Image DiT with {noise} noise-refiner but {context} context-refiner blocks")
    params = sum(math.prod(v) for v in s.values())
    return ZImageDiTConfig(
        dim=dim,
        n_layers=count_blocks(names, "layers."),
        n_refiner_layers=noise,
        n_heads=n_heads,
        head_dim=head_dim,
        n_kv_heads=kv2 // 2,
        cap_feat_dim=cap,
        in_channels=patch_in // (patch * patch),
        patch_size=patch,
        ffn_hidden=ffn_hidden,
        has_pad_tokens="cap_pad_token" in s,
        t_embed_hidden=t_hidden,
        adaln_dim=adaln_dim,
        params=params,
    )


def qwen3_config_from_shapes(path: str, shapes: Shapes, prefix: str, layout: str) -> Qwen3Config:
    base = prefix if layout == "transformers" else prefix + "model."

    def need(name: str, ndim: int) -> tuple[int, ...]:
        shape = shapes.get(base + name)
        if shape is None or len(shape) != ndim:
            raise bad_structure(path, f"a Qwen3 text encoder without a usable {base}{name} (shape {shape})")
        return tuple(shape)

    vocab, hidden = need("embed_tokens.weight", 2)
    (head_dim,) = need("layers.0.self_attn.q_norm.weight", 1)
    q_rows, _ = need("layers.0.self_attn.q_proj.weight", 2)
    k_rows, _ = need("layers.0.self_attn.k_proj.weight", 2)
    inter, _ = need("layers.0.mlp.gate_proj.weight", 2)
    if q_rows % head_dim or k_rows % head_dim:
        raise bad_structure(
            path, f"a Qwen3 text encoder whose attention ({q_rows}/{k_rows} rows) does not fit heads of {head_dim}"
        )
    params = sum(math.prod(v) for k, v in shapes.items() if k.startswith(prefix))
    return Qwen3Config(
        hidden_size=hidden,
        num_hidden_layers=count_blocks(shapes, base + "layers."),
        num_attention_heads=q_rows // head_dim,
        num_key_value_heads=k_rows // head_dim,
        intermediate_size=inter,
        vocab_size=vocab,
        head_dim=head_dim,
        params=params,
    )
