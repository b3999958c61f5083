"""Tiny random-weight Z-Image model files with the real key layouts, for running graphs end to end
where the real weights are absent (tests, `run_workflow --demo-weights`). Images made with them
are noise: the point is that every node, file format and connection is exercised for real.

Built with ComfyUI's own model classes, so a booted host is required (see headless.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

# dim 256 = 2 heads of 128 (head size must equal sum(axes_dims)); caption width = text encoder width.
DIT = dict(dim=256, n_layers=2, n_refiner_layers=1, n_heads=2, cap_feat_dim=64)
TEXT_ENCODER = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1
)

NAMES = {
    "turbo": "zimage_demo_turbo.safetensors",
    "base": "zimage_demo_base.safetensors",
    "text_encoder": "zimage_demo_qwen3.safetensors",
    "vae": "zimage_demo_flux_vae.safetensors",
}


def zimage_unet_config(dim: int, n_layers: int, n_refiner_layers: int, n_heads: int, cap_feat_dim: int) -> dict:
    """The unet_config ComfyUI's detection produces for Z-Image, at any width."""
    return {
        "image_model": "lumina2",
        "patch_size": 2,
        "in_channels": 16,
        "dim": dim,
        "cap_feat_dim": cap_feat_dim,
        "n_layers": n_layers,
        "n_refiner_layers": n_refiner_layers,
        "n_heads": n_heads,
        "n_kv_heads": n_heads,
        "qk_norm": True,
        "axes_dims": [32, 48, 48],
        "axes_lens": [1536, 512, 512],
        "rope_theta": 256.0,
        "ffn_dim_multiplier": 8.0 / 3.0,
        "z_image_modulation": True,
        "time_scale": 1000.0,
        "pad_tokens_multiple": 32,
    }


def _randomise(module: torch.nn.Module, seed: int, scale: float = 0.05) -> dict:
    # ComfyUI's ops skip weight init (weights normally come from a file): fill every tensor.
    gen = torch.Generator().manual_seed(seed)
    sd = module.state_dict()
    return {k: (torch.randn(v.shape, generator=gen) * scale).to(v.dtype) for k, v in sd.items()}


def dit_shapes(**size) -> dict:
    """Key -> shape of ComfyUI's Z-Image NextDiT at this size, built on the meta device (no memory)."""
    import comfy.ldm.lumina.model
    import comfy.ops

    cfg = zimage_unet_config(**{**DIT, **size})
    cfg = {k: v for k, v in cfg.items() if k != "image_model"}
    model = comfy.ldm.lumina.model.NextDiT(
        **cfg, dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init
    )
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def dit_state_dict(seed: int = 0, **size) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=gen) * 0.05 for k, shape in dit_shapes(**size).items()}


def text_encoder_state_dict(seed: int = 1, **size) -> dict:
    import comfy.ops
    import comfy.text_encoders.llama

    config = {**TEXT_ENCODER, **size}
    model = comfy.text_encoders.llama.Qwen3_4B(
        config, dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init
    )
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        # Norm weights near 1 keep the hidden states finite through the layers.
        base = 1.0 if k.endswith("norm.weight") else 0.0
        out[k] = base + torch.randn(v.shape, generator=gen) * 0.05
    return out


def flux_vae_state_dict(seed: int = 2, dtype=torch.bfloat16) -> dict:
    import comfy.ldm.models.autoencoder
    import comfy.ops

    ddconfig = {
        "double_z": True,
        "z_channels": 16,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    with torch.device("meta"):
        vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=ddconfig, embed_dim=16)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in vae.state_dict().items():
        if not (k.startswith("encoder.") or k.startswith("decoder.")):
            continue
        base = 1.0 if (".norm" in k and k.endswith(".weight")) else 0.0
        out[k] = (base + torch.randn(v.shape, generator=gen) * 0.02).to(dtype)
    return out


def save_header_only(path, shapes: dict, dtype: str = "BF16", metadata: dict | None = None) -> int:
    """A valid safetensors file whose data section is a hole: header written, file extended with
    truncate(). Sparse on any common filesystem, so a 12 GB model costs no disk (for inspection
    tests and benchmarks). Returns the size."""
    import json
    import math
    import struct

    bits = {"BF16": 16, "F16": 16, "F32": 32, "F8_E4M3": 8}[dtype]
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape) * bits // 8
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.truncate(8 + len(raw) + offset)
    return 8 + len(raw) + offset


def save(path: Path, sd: dict, metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=metadata)
    return path


def write_demo_models(models_dir: str | Path) -> dict:
    """Write the demo DiTs (turbo and base), text encoder and VAE under models_dir in ComfyUI's
    folder layout; returns {role: file name}. Existing files are reused."""
    models_dir = Path(models_dir)
    note = {"zimage.demo": "random weights: images are noise"}
    jobs = {
        ("diffusion_models", NAMES["turbo"]): lambda: (
            dit_state_dict(0),
            {**note, "modelspec.title": "Z-Image-Turbo demo"},
        ),
        ("diffusion_models", NAMES["base"]): lambda: (
            dit_state_dict(1),
            {**note, "modelspec.title": "Z-Image base demo"},
        ),
        ("text_encoders", NAMES["text_encoder"]): lambda: (text_encoder_state_dict(), note),
        ("vae", NAMES["vae"]): lambda: (flux_vae_state_dict(), note),
    }
    for (folder, name), make in jobs.items():
        path = models_dir / folder / name
        if not path.exists():
            sd, meta = make()
            save(path, sd, meta)
    return dict(NAMES)
