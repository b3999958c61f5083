"""Say what kind of model a set of tensor shapes is (Z-Image, Lumina 2, Flux, SD UNets, Qwen3, VAEs),
in which key layout, and under which prefix.

Z-Image is recognised by structure, not by width: ComfyUI v0.8.0 only accepts `dim == 3840`, but
fine-tunes, pruned variants and the tiny test models have other widths. What tells Z-Image apart
from Lumina 2 (same NextDiT family, same `cap_embedder`) is its modulation: Z-Image's per-block
adaLN is a bare Linear (`adaLN_modulation.0`, input width min(dim, 256)) where Lumina 2 has
SiLU + Linear (`adaLN_modulation.1`, input width min(dim, 1024)).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .model_configs import Shapes

KINDS = (
    "zimage_dit",
    "qwen3_text_encoder",
    "flux_vae",
    "sd1_unet",
    "sdxl_unet",
    "flux_dit",
    "lumina2_dit",
    "unknown",
)


@dataclass(frozen=True)
class Match:
    kind: str
    description: str
    layout: str | None
    prefix: str
    priority: int


def _prefixes(names: Iterable[str], anchor: str) -> list[str]:
    """Prefixes p (empty or ending in '.') such that p + anchor is a key; shortest first."""
    out = []
    for name in names:
        if name.endswith(anchor):
            p = name[: len(name) - len(anchor)]
            if p == "" or p.endswith("."):
                out.append(p)
    return sorted(set(out), key=len)


def _layout_for(prefix: str, base: str) -> str:
    if base == "comfyui" and prefix:
        return "checkpoint"
    return base


def _detect_zimage_or_lumina(shapes: Shapes) -> list[Match]:
    out = []
    for p in _prefixes(shapes, "cap_embedder.1.weight"):
        if p + "layers.0.adaLN_modulation.0.weight" in shapes:
            if p + "layers.0.attention.to_q.weight" in shapes or p + "all_x_embedder.2-1.weight" in shapes:
                out.append(Match("zimage_dit", "a Z-Image DiT", "diffusers", p, 100))
            else:
                out.append(Match("zimage_dit", "a Z-Image DiT", _layout_for(p, "comfyui"), p, 100))
        elif p + "layers.0.adaLN_modulation.1.weight" in shapes:
            out.append(Match("lumina2_dit", "a Lumina 2 DiT", _layout_for(p, "comfyui"), p, 90))
    for p in _prefixes(shapes, "time_caption_embed.caption_embedder.1.weight"):
        out.append(Match("lumina2_dit", "a Lumina 2 DiT", "diffusers", p, 90))
    return out


def _detect_flux(shapes: Shapes) -> list[Match]:
    out = []
    for p in _prefixes(shapes, "double_blocks.0.img_attn.qkv.weight"):
        if p + "double_stream_modulation_img.lin.weight" in shapes:
            desc = "a Flux.2 DiT"
        elif any(k.startswith(p + "distilled_guidance_layer.") for k in shapes):
            desc = "a Chroma DiT (Flux-based)"
        else:
            desc = "a Flux DiT"
        out.append(Match("flux_dit", desc, _layout_for(p, "comfyui"), p, 90))
    for p in _prefixes(shapes, "single_transformer_blocks.0.proj_out.weight"):
        if p + "x_embedder.weight" in shapes and p + "context_embedder.weight" in shapes:
            out.append(Match("flux_dit", "a Flux DiT", "diffusers", p, 90))
    return out


def _context_dim(shapes: Shapes, prefix: str) -> int | None:
    for k, s in shapes.items():
        if k.startswith(prefix) and k.endswith("transformer_blocks.0.attn2.to_k.weight") and len(s) == 2:
            return int(s[1])
    return None


def _unet_match(shapes: Shapes, p: str, has_adm: bool, base: str) -> Match:
    ctx = _context_dim(shapes, p)
    layout = _layout_for(p, base)
    if has_adm:
        desc = "an SDXL refiner UNet" if ctx == 1280 else "an SDXL UNet"
        return Match("sdxl_unet", desc, layout, p, 80)
    desc = "an SD 2.x UNet" if ctx == 1024 else "an SD 1.x UNet"
    return Match("sd1_unet", desc, layout, p, 80)


def _detect_unet(shapes: Shapes) -> list[Match]:
    out = []
    for p in _prefixes(shapes, "input_blocks.0.0.weight"):
        if any(k.startswith(p + "middle_block.") for k in shapes):
            out.append(_unet_match(shapes, p, p + "label_emb.0.0.weight" in shapes, "comfyui"))
    for p in _prefixes(shapes, "time_embedding.linear_1.weight"):
        if p + "conv_in.weight" in shapes and p + "down_blocks.0.resnets.0.conv1.weight" in shapes:
            out.append(_unet_match(shapes, p, p + "add_embedding.linear_1.weight" in shapes, "diffusers"))
    return out


def _qwen3_ok(shapes: Shapes, p: str) -> bool:
    # Gemma 3 also has q_norm but adds post_feedforward_layernorm; Qwen 2.5 has k_proj biases.
    return (
        p + "layers.0.self_attn.q_proj.weight" in shapes
        and p + "layers.0.post_feedforward_layernorm.weight" not in shapes
        and p + "layers.0.self_attn.k_proj.bias" not in shapes
    )


def _detect_qwen3(shapes: Shapes) -> list[Match]:
    out = []
    for p in _prefixes(shapes, "model.layers.0.self_attn.q_norm.weight"):
        if _qwen3_ok(shapes, p + "model."):
            out.append(Match("qwen3_text_encoder", "a Qwen3 text encoder", _layout_for(p, "comfyui"), p, 50))
    if not out:
        for p in _prefixes(shapes, "layers.0.self_attn.q_norm.weight"):
            if _qwen3_ok(shapes, p):
                out.append(Match("qwen3_text_encoder", "a Qwen3 text encoder", "transformers", p, 50))
    return out


def _detect_vae(shapes: Shapes) -> list[Match]:
    out = []
    for p in _prefixes(shapes, "decoder.conv_in.weight"):
        s = shapes[p + "decoder.conv_in.weight"]
        if p + "decoder.up.0.block.0.conv1.weight" in shapes:
            base = "comfyui"
        elif p + "decoder.up_blocks.0.resnets.0.conv1.weight" in shapes:
            base = "diffusers"
        else:
            continue
        if len(s) != 4:
            continue  # video VAEs have 3D convolutions
        if s[1] == 16:
            out.append(Match("flux_vae", "a Flux VAE", _layout_for(p, base), p, 40))
        else:
            # Not a kind of its own: reported as unknown with words that say which VAE it is.
            out.append(
                Match(
                    "unknown",
                    f"a {s[1]}-channel VAE (SD 1.x/SDXL style, not the 16-channel Flux VAE)",
                    _layout_for(p, base),
                    p,
                    10,
                )
            )
    return out


_DETECTORS = (_detect_zimage_or_lumina, _detect_flux, _detect_unet, _detect_qwen3, _detect_vae)


def classify_shapes(shapes: Shapes) -> list[Match]:
    """Every recognised component, best (the main model) first."""
    matches = [m for detect in _DETECTORS for m in detect(shapes)]
    return sorted(matches, key=lambda m: (-m.priority, len(m.prefix)))
