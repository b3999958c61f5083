"""Tiny random-weight Z-Image model files with the real key layouts, for running graphs end to end
where the real weights are absent (tests, `run_workflow --demo-weights`). Images made with them
are noise: the point is that every node, file format and connection is exercised for real.

Built with ComfyUI's own model classes, so a booted host is required (see headless.py); the
sizes (TINY, FULL) and the random fill are also what the tests and benchmarks use.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.model_configs import ZImageDiTConfig

# Model sizes (ZImageDiTConfig.for_size arguments), shared by the demo files, tests and benchmarks.
# TINY: dim 256 = 2 heads of 128 (head size must equal sum(axes_dims)), the smallest width ComfyUI
# builds; caption width = the demo text encoder's width.
TINY = dict(dim=256, n_layers=2, n_refiner_layers=1, n_heads=2, cap_feat_dim=64)
# FULL: the released Z-Image / Z-Image-Turbo DiT (6.15 B parameters).
FULL = dict(dim=3840, n_layers=30, n_refiner_layers=2, n_heads=30, cap_feat_dim=2560)
TEXT_ENCODER = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1
)

NAMES = {
    "turbo": "zimage_demo_turbo.safetensors",
    "base": "zimage_demo_base.safetensors",
    "text_encoder": "zimage_demo_qwen3.safetensors",
    "vae": "zimage_demo_flux_vae.safetensors",
    "lora": "zimage_demo_lora.safetensors",
}


def unet_config(**size) -> dict:
    """ComfyUI's Z-Image unet_config at this size (TINY's fields, any of them overridden)."""
    return ZImageDiTConfig.for_size(**{**TINY, **size}).comfy_unet_config()


def random_tensors(
    shapes: dict, seed: int, scale: float = 0.05, norm_gain: float = 1.0, dtype=torch.float32, device="cpu"
):
    """(name, tensor) pairs of N(0, scale) values for {name: shape}, one tensor at a time (a full-size
    model is filled in place without a second copy). ComfyUI's ops skip weight init (weights
    normally come from a file), so random models are filled with this. Norm gains (1-D weights
    named *norm*) get `norm_gain` added: gains near 0 scale every activation to ~0 and make
    attention uniform, so outputs would barely depend on the weights being checked; 0.0 keeps them
    plain noise."""
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, shape in shapes.items():
        t = torch.randn(tuple(shape), generator=gen, device=device, dtype=torch.float32).mul_(scale)
        if norm_gain and len(shape) == 1 and "norm" in name and name.endswith("weight"):
            t.add_(norm_gain)
        yield name, t.to(dtype)


def fill_random(module: torch.nn.Module, seed: int, scale: float = 0.05, norm_gain: float = 1.0) -> torch.nn.Module:
    """Overwrite every floating-point parameter and buffer of `module` in place with
    random_tensors, on the module's device and in its dtypes."""
    tensors = module.state_dict(keep_vars=True)
    device = next(iter(tensors.values())).device
    shapes = {k: tuple(v.shape) for k, v in tensors.items() if v.is_floating_point()}
    with torch.no_grad():
        for name, value in random_tensors(shapes, seed, scale, norm_gain, device=device):
            tensors[name].copy_(value)
    return module


def dit_shapes(**size) -> dict:
    """Key -> shape of ComfyUI's Z-Image NextDiT at this size, built on the meta device (no memory)."""
    import comfy.ldm.lumina.model
    import comfy.ops

    cfg = {k: v for k, v in unet_config(**size).items() if k != "image_model"}
    model = comfy.ldm.lumina.model.NextDiT(
        **cfg, dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init
    )
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def dit_state_dict(seed: int = 0, **size) -> dict:
    return dict(random_tensors(dit_shapes(**size), seed, norm_gain=0.0))


def text_encoder_state_dict(seed: int = 1, **size) -> dict:
    import comfy.ops
    import comfy.text_encoders.llama

    config = {**TEXT_ENCODER, **size}
    model = comfy.text_encoders.llama.Qwen3_4B(
        config, dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init
    )
    return dict(random_tensors({k: v.shape for k, v in model.state_dict().items()}, seed))


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
    shapes = {k: v.shape for k, v in vae.state_dict().items() if k.startswith(("encoder.", "decoder."))}
    return dict(random_tensors(shapes, seed, scale=0.02, dtype=dtype))


def lora_state_dict(seed: int = 3, rank: int = 4, **size) -> dict:
    """A rank-4 LoRA of the demo DiT in ai-toolkit's layout (diffusers module names, lora_A/lora_B,
    split q/k/v of the fused qkv), on every attention and feed-forward layer."""
    shapes = {}
    for key, (rows, cols) in ((k, s) for k, s in dit_shapes(**size).items() if len(s) == 2):
        module = key[: -len(".weight")]
        if module.endswith(".attention.qkv"):
            for q in ("to_q", "to_k", "to_v"):
                shapes[f"{module[:-4]}.{q}"] = (rows // 3, cols)
        elif module.endswith(".attention.out"):
            shapes[module[:-4] + ".to_out.0"] = (rows, cols)
        elif ".feed_forward." in module:
            shapes[module] = (rows, cols)
    parts = {}
    for module, (rows, cols) in shapes.items():
        parts[f"diffusion_model.{module}.lora_A.weight"] = (rank, cols)
        parts[f"diffusion_model.{module}.lora_B.weight"] = (rows, rank)
    return dict(random_tensors(parts, seed, scale=0.05))


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
    """Write the demo DiTs (turbo and base), text encoder, VAE and LoRA under models_dir in ComfyUI's
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
        ("loras", NAMES["lora"]): lambda: (lora_state_dict(), note),
    }
    for (folder, name), make in jobs.items():
        path = models_dir / folder / name
        if not path.exists():
            sd, meta = make()
            save(path, sd, meta)
    return dict(NAMES)
