"""Tiny random-weight models with the real key layouts, built at test time (weights are never
committed). Sizes follow ../shared/zimage-reference.md: head size = sum(axes_dims) = 128."""
from __future__ import annotations

import torch

# dim 256 (2 heads of 128): smallest width ComfyUI builds; diffusers builds it too, but its
# timestep MLP differs from ComfyUI's below dim 1024, so cross-implementation checks use CROSS.
TINY = dict(dim=256, n_layers=2, n_refiner_layers=1, n_heads=2, cap_feat_dim=64)
# Same weights give the same function in diffusers and ComfyUI (dim >= 1024, dim*8/3 % 256 == 0).
CROSS = dict(dim=1152, n_layers=1, n_refiner_layers=1, n_heads=9, cap_feat_dim=64)


def diffusers_transformer(seed: int = 0, dim=256, n_layers=2, n_refiner_layers=1, n_heads=2, cap_feat_dim=64):
    """A diffusers ZImageTransformer2DModel with random weights, pad tokens included."""
    from diffusers import ZImageTransformer2DModel

    torch.manual_seed(seed)
    model = ZImageTransformer2DModel(
        dim=dim,
        n_layers=n_layers,
        n_refiner_layers=n_refiner_layers,
        n_heads=n_heads,
        n_kv_heads=n_heads,
        cap_feat_dim=cap_feat_dim,
        axes_dims=[32, 48, 48],
        axes_lens=[1536, 512, 512],
    )
    # diffusers zero-initialises some layers (final layer, adaLN); random values everywhere make
    # parity tests sensitive to every weight.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return model.eval()


def save_safetensors(path, state_dict: dict, metadata: dict | None = None):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path), metadata=metadata)
    return path
