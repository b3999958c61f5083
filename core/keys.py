"""Key conversion between the diffusers and the ComfyUI layouts of the Z-Image DiT.

ComfyUI v0.8.0 loads a diffusers-format Z-Image DiT without converting it: the missing keys only
log warnings and the model runs with uninitialised weights. Converting here is what makes the
official Hugging Face layout (`Tongyi-MAI/Z-Image-Turbo`, `transformer/`) usable.

The two layouts differ only in (diffusers -> ComfyUI):

    all_x_embedder.2-1.*                 -> x_embedder.*
    all_final_layer.2-1.*                -> final_layer.*
    <block>.attention.to_q / to_k / to_v -> <block>.attention.qkv  (q, k, v concatenated on dim 0)
    <block>.attention.to_out.0.*         -> <block>.attention.out.*
    <block>.attention.norm_q / norm_k    -> <block>.attention.q_norm / k_norm

Everything else has the same name in both. Keys this module does not know are passed through
unchanged, so extra tensors (e.g. a future variant's embedders) are not silently dropped.

Memory matters: the real model is 12 GB in bf16. Every tensor is copied at most once: renamed
tensors are the very same objects, fusing q/k/v is a single `torch.cat`, and splitting a fused
qkv returns views of it (dim-0 slices of a contiguous tensor are themselves contiguous, so they
can be saved or loaded without another copy).

The name-only functions (`diffusers_to_comfy_names`, `diffusers_to_comfy_shapes`) let inspection
validate a file from its safetensors header alone. The reverse direction (ComfyUI -> diffusers) is
only needed to build test files: tests/diffusers_layout.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

CHECKPOINT_PREFIX = "model.diffusion_model."

# Whole-module renames; the diffusers names carry the patch sizes ("2-1" = patch 2, frame patch 1).
_MODULE_RENAMES_D2C = (
    ("all_x_embedder.2-1.", "x_embedder."),
    ("all_final_layer.2-1.", "final_layer."),
)
# Renames inside an attention module (suffix after "<block>.attention.").
_ATTN_RENAMES_D2C = (
    ("to_out.0.", "out."),
    ("norm_q.", "q_norm."),
    ("norm_k.", "k_norm."),
)
_QKV_PARTS = ("to_q", "to_k", "to_v")
# Only weights and biases can be concatenated: per-tensor quantisation scales of q, k and v differ
# and have no fused equivalent.
_FUSABLE_PARAMS = ("weight", "bias")


class IncompleteBlockError(KeyError):
    """A fused projection cannot be built or split because one of its parts is missing.

    Subclasses KeyError because it is a missing-key problem; `str()` is overridden so the message is
    readable (KeyError would repr-quote it)."""

    def __init__(self, message: str, block: str, missing: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.block = block
        self.missing = missing

    def __str__(self) -> str:
        return self.message


def strip_prefix(sd: Mapping, prefix: str) -> dict:
    """Keys under `prefix` with the prefix removed; other keys (a checkpoint's VAE, text encoder)
    are dropped. The tensors are not copied. An empty prefix returns a shallow copy."""
    if not prefix:
        return dict(sd)
    n = len(prefix)
    return {k[n:]: v for k, v in sd.items() if k.startswith(prefix)}


def add_prefix(sd: Mapping, prefix: str) -> dict:
    """The inverse of `strip_prefix` (e.g. to write a full checkpoint); tensors are not copied."""
    return {prefix + k: v for k, v in sd.items()}


def _split_attention_key(name: str) -> tuple[str, str] | None:
    """('<block>.attention.', rest) for a key inside an attention module, else None."""
    marker = ".attention."
    i = name.find(marker)
    if i < 0:
        return None
    cut = i + len(marker)
    return name[:cut], name[cut:]


def _rename(name: str, module_renames, attn_renames) -> str:
    """`name` with the first matching (old, new) module prefix, or attention sub-key, replaced."""
    for old, new in module_renames:
        if name.startswith(old):
            return new + name[len(old) :]
    parts = _split_attention_key(name)
    if parts is not None:
        head, rest = parts
        for old, new in attn_renames:
            if rest.startswith(old):
                return head + new + rest[len(old) :]
    return name


def _rename_d2c(name: str) -> str:
    return _rename(name, _MODULE_RENAMES_D2C, _ATTN_RENAMES_D2C)


def _qkv_part(name: str) -> tuple[str, str, str] | None:
    """(attention head '<block>.attention.', part 'to_q'|'to_k'|'to_v', param suffix) or None."""
    parts = _split_attention_key(name)
    if parts is None:
        return None
    head, rest = parts
    for part in _QKV_PARTS:
        if rest.startswith(part + "."):
            return head, part, rest[len(part) + 1 :]
    return None


def diffusers_to_comfy_names(names: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Plan the diffusers -> ComfyUI conversion from key names alone.

    Returns {comfy_name: source diffusers names}: one source for a rename, three (q, k, v in that
    order) for a fused qkv. Raises IncompleteBlockError naming the block if a q/k/v set is
    incomplete, and ValueError for q/k/v tensors that cannot be fused (quantisation scales)."""
    plan: dict[str, tuple[str, ...]] = {}
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for name in names:
        qkv = _qkv_part(name)
        if qkv is None:
            new = _rename_d2c(name)
            if new in plan:
                raise ValueError(f"two keys map to the same ComfyUI key {new!r}: {plan[new][0]!r} and {name!r}")
            plan[new] = (name,)
            continue
        head, part, param = qkv
        if param not in _FUSABLE_PARAMS:
            raise ValueError(
                f"{name!r}: q/k/v tensors other than weight and bias (here {param!r}, likely a "
                "quantisation scale) cannot be fused into ComfyUI's qkv; convert an unquantised file"
            )
        groups.setdefault((head, param), {})[part] = name
    for (head, param), found in groups.items():
        missing = tuple(f"{head}{p}.{param}" for p in _QKV_PARTS if p not in found)
        if missing:
            block = head.rstrip(".")
            raise IncompleteBlockError(
                f"attention block {block!r} is incomplete: {', '.join(missing)} missing "
                f"(found {', '.join(sorted(found.values()))}); the file is damaged or only part of a sharded model",
                block=block,
                missing=missing,
            )
        new = f"{head}qkv.{param}"
        if new in plan:
            raise ValueError(f"{new!r} is present both fused and as separate to_q/to_k/to_v")
        plan[new] = tuple(found[p] for p in _QKV_PARTS)
    return plan


def diffusers_to_comfy_shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The ComfyUI key -> shape table a diffusers file converts to, from its header alone.

    Lets inspection infer the config through one code path whatever the layout. Raises like
    `diffusers_to_comfy_names`, and ValueError if q/k/v cannot be concatenated (mismatched
    trailing dimensions)."""
    out: dict[str, tuple[int, ...]] = {}
    for new, sources in diffusers_to_comfy_names(shapes).items():
        if len(sources) == 1:
            out[new] = tuple(shapes[sources[0]])
            continue
        parts = [tuple(shapes[s]) for s in sources]
        if any(len(p) == 0 or p[1:] != parts[0][1:] for p in parts):
            raise ValueError(f"cannot fuse {', '.join(sources)}: shapes {parts} differ beyond dim 0")
        out[new] = (sum(p[0] for p in parts),) + parts[0][1:]
    return out


def diffusers_to_comfy(sd: Mapping) -> dict:
    """Convert a diffusers-layout Z-Image DiT state dict (unprefixed) to the ComfyUI layout.

    Renamed tensors are the same objects; each fused qkv is one `torch.cat` (the only copy)."""
    import torch

    out = {}
    for new, sources in diffusers_to_comfy_names(sd.keys()).items():
        if len(sources) == 1:
            out[new] = sd[sources[0]]
        else:
            out[new] = torch.cat([sd[s] for s in sources], dim=0)
    return out
