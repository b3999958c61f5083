"""diffusers' conventions where tests need them and the pack does not: the ComfyUI -> diffusers key
layout (to write diffusers-format test files from a ComfyUI model) and diffusers' guidance scale.
The pack itself only converts diffusers -> ComfyUI (core/keys.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from zimage_nodes.core import keys

_MODULE_RENAMES_C2D = tuple((c, d) for d, c in keys._MODULE_RENAMES_D2C)
_ATTN_RENAMES_C2D = tuple((c, d) for d, c in keys._ATTN_RENAMES_D2C)


def comfy_to_diffusers_names(names: Iterable[str]) -> dict[str, str | tuple[str, str, str]]:
    """Plan the ComfyUI -> diffusers conversion from key names alone.

    Returns {comfy_name: diffusers name}, or for a fused qkv {comfy_name: (q_name, k_name, v_name)}."""
    plan: dict[str, str | tuple[str, str, str]] = {}
    for name in names:
        parts = keys._split_attention_key(name)
        if parts is not None and parts[1].startswith("qkv."):
            head, rest = parts
            param = rest[len("qkv.") :]
            plan[name] = tuple(f"{head}{p}.{param}" for p in keys._QKV_PARTS)  # type: ignore[assignment]
        else:
            plan[name] = keys._rename(name, _MODULE_RENAMES_C2D, _ATTN_RENAMES_C2D)
    return plan


def _qkv_sizes(sd: Mapping, name: str, rows: int, q_rows: int | None) -> list[int]:
    """Row counts (q, k, v) of a fused qkv tensor.

    With grouped-query attention k and v are narrower than q, so an even three-way split would be
    wrong: the q width is read from the block's output projection (`out.weight` has n_heads *
    head_dim input features) unless given."""
    if q_rows is None:
        head = keys._split_attention_key(name)[0]  # type: ignore[index]
        out_w = sd.get(head + "out.weight")
        if out_w is not None and len(out_w.shape) == 2:
            q_rows = int(out_w.shape[1])
    if q_rows is None:
        if rows % 3:
            raise ValueError(
                f"{name!r}: {rows} rows cannot be split evenly into q, k, v and no out.weight gives the q width"
            )
        return [rows // 3] * 3
    kv = rows - q_rows
    if q_rows <= 0 or kv <= 0 or kv % 2:
        raise ValueError(f"{name!r}: {rows} rows do not split into q ({q_rows}) and two equal k, v parts")
    return [q_rows, kv // 2, kv // 2]


def comfy_to_diffusers(sd: Mapping, q_rows: int | None = None) -> dict:
    """Convert a ComfyUI-layout Z-Image DiT state dict (unprefixed) to the diffusers layout.

    Renamed tensors are the same objects; q, k and v are views into the fused qkv tensor (no copy).
    `q_rows` overrides the q width of every fused qkv (default: read from each block's out.weight)."""
    import torch

    out = {}
    for name, target in comfy_to_diffusers_names(sd.keys()).items():
        tensor = sd[name]
        if isinstance(target, str):
            out[target] = tensor
            continue
        sizes = _qkv_sizes(sd, name, int(tensor.shape[0]), q_rows)
        for new, piece in zip(target, torch.split(tensor, sizes, dim=0)):
            out[new] = piece
    return out


def guidance_to_cfg(g: float) -> float:
    """diffusers ``guidance_scale`` -> ComfyUI ``cfg`` (Turbo: 0 -> 1, Base: 4 -> 5)."""
    return float(g) + 1.0


def cfg_to_guidance(cfg: float) -> float:
    """ComfyUI ``cfg`` -> diffusers ``guidance_scale``."""
    return float(cfg) - 1.0
