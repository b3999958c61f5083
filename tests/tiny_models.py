"""Tiny random-weight models with the real key layouts, built at test time (weights are never
committed). Head size is always sum(axes_dims) = 128, the only one ComfyUI's Z-Image rotary
embedding takes."""

from __future__ import annotations

import torch

from zimage_nodes.core.model_configs import ZIMAGE_AXES_DIMS, ZIMAGE_AXES_LENS
from zimage_nodes.tools.demo_weights import FULL, TINY, fill_random  # noqa: F401  (FULL re-exported: tm.TINY, tm.FULL)

# TINY (dim 256, the demo models' size): diffusers builds it too, but its FFN and timestep MLP
# differ from ComfyUI's below dim 1024, so cross-implementation checks use CROSS.
# Same weights give the same function in diffusers and ComfyUI (dim >= 1024, dim*8/3 % 256 == 0).
CROSS = dict(dim=1152, n_layers=1, n_refiner_layers=1, n_heads=9, cap_feat_dim=64)


def diffusers_transformer(seed: int = 0, **size):
    """A diffusers ZImageTransformer2DModel with random weights, pad tokens included (TINY size
    unless overridden)."""
    from diffusers import ZImageTransformer2DModel

    size = {**TINY, **size}
    model = ZImageTransformer2DModel(
        **size,
        n_kv_heads=size["n_heads"],
        axes_dims=list(ZIMAGE_AXES_DIMS),
        axes_lens=list(ZIMAGE_AXES_LENS),
    )
    # diffusers zero-initialises some layers (final layer, adaLN); random values everywhere make
    # parity tests sensitive to every weight.
    return fill_random(model, seed, norm_gain=0.0).eval()


def sharp_cross_transformer(seed: int = 4):
    """diffusers_transformer at CROSS size with O(1) q/k RMSNorm gains. With small weights the
    attention logits are ~0 and softmax is uniform, so q and k could be swapped unnoticed; these
    gains give sharp attention that depends on their order."""
    model = diffusers_transformer(seed=seed, **CROSS)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm_q.weight", "norm_k.weight")):
                p.copy_(2.0 + torch.randn(p.shape, generator=g))
    return model


def save_safetensors(path, state_dict: dict, metadata: dict | None = None):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path), metadata=metadata)
    return path


# ---------------------------------------------------------------------------------------------
# Fake state dicts with the real key names of the model families the checkpoint inspector tells
# apart. Widths are tiny except where the shape is the signal (a UNet's cross-attention context
# width, a VAE's latent channels). Builders return {name: shape}; `zeros` makes tensors of them and
# `write_header_only` writes a sparse file of any size (a real-size header without the gigabytes).


def zeros(shapes: dict, dtype=None) -> dict:
    dtype = dtype or torch.float16
    return {k: torch.zeros(s, dtype=dtype) for k, s in shapes.items()}


def prefixed(shapes: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in shapes.items()}


def write_header_only(path, shapes: dict, dtype: str = "BF16", metadata: dict | None = None) -> int:
    from zimage_nodes.tools.demo_weights import save_header_only

    return save_header_only(path, shapes, dtype, metadata)


def _block_shapes(b: str, dim: int, n_heads: int, n_kv_heads: int, hd: int, ffn: int) -> dict:
    """One NextDiT transformer block (Z-Image and Lumina 2 share it), without its adaLN."""
    return {
        b + "attention.qkv.weight": ((n_heads + 2 * n_kv_heads) * hd, dim),
        b + "attention.out.weight": (dim, n_heads * hd),
        b + "attention.q_norm.weight": (hd,),
        b + "attention.k_norm.weight": (hd,),
        b + "feed_forward.w1.weight": (ffn, dim),
        b + "feed_forward.w2.weight": (dim, ffn),
        b + "feed_forward.w3.weight": (ffn, dim),
        b + "attention_norm1.weight": (dim,),
        b + "ffn_norm1.weight": (dim,),
        b + "attention_norm2.weight": (dim,),
        b + "ffn_norm2.weight": (dim,),
    }


def zimage_comfy_shapes(n_kv_heads=None, in_channels=16, pad_tokens=True, **size) -> dict:
    """ComfyUI-layout Z-Image DiT keys and shapes, written out from comfy/ldm/lumina/model.py
    (NextDiT with z_image_modulation), independently of core's config inference (a test oracle).
    `size`: TINY's fields, any of them overridden."""
    size = {**TINY, **size}
    dim, n_layers, n_refiner_layers, n_heads = size["dim"], size["n_layers"], size["n_refiner_layers"], size["n_heads"]
    cap_feat_dim = size["cap_feat_dim"]
    n_kv_heads = n_kv_heads or n_heads
    hd = dim // n_heads
    ffn = 256 * ((int(8.0 / 3.0 * dim) + 255) // 256)
    t, ada, p = min(dim, 1024), min(dim, 256), 4 * in_channels
    sd = {
        "x_embedder.weight": (dim, p),
        "x_embedder.bias": (dim,),
        "t_embedder.mlp.0.weight": (t, 256),
        "t_embedder.mlp.0.bias": (t,),
        "t_embedder.mlp.2.weight": (256, t),
        "t_embedder.mlp.2.bias": (256,),
        "cap_embedder.0.weight": (cap_feat_dim,),
        "cap_embedder.1.weight": (dim, cap_feat_dim),
        "cap_embedder.1.bias": (dim,),
        "final_layer.linear.weight": (p, dim),
        "final_layer.linear.bias": (p,),
        "final_layer.adaLN_modulation.1.weight": (dim, ada),
        "final_layer.adaLN_modulation.1.bias": (dim,),
    }
    if pad_tokens:
        sd["x_pad_token"] = (1, dim)
        sd["cap_pad_token"] = (1, dim)
    blocks = [(f"noise_refiner.{i}.", True) for i in range(n_refiner_layers)]
    blocks += [(f"context_refiner.{i}.", False) for i in range(n_refiner_layers)]
    blocks += [(f"layers.{i}.", True) for i in range(n_layers)]
    for b, mod in blocks:
        sd.update(_block_shapes(b, dim, n_heads, n_kv_heads, hd, ffn))
        if mod:
            sd[b + "adaLN_modulation.0.weight"] = (4 * dim, ada)
            sd[b + "adaLN_modulation.0.bias"] = (4 * dim,)
    return sd


# The Lumina 2 fakes' size: a small NextDiT without Z-Image's modulation (head size 32).
LUMINA2 = dict(dim=64, n_layers=1, n_heads=2, n_kv_heads=1, cap_feat_dim=32)


def _lumina2_axes(size: dict) -> list[int]:
    """Rotary axes splitting the head size as Lumina 2 does (1/4 time, 3/8 each image axis)."""
    hd = size["dim"] // size["n_heads"]
    return [hd // 4, 3 * hd // 8, 3 * hd // 8]


def lumina2_comfy_shapes(**size) -> dict:
    """ComfyUI-layout Lumina 2 DiT (NextDiT without z_image_modulation: SiLU + Linear adaLN at
    index 1, input width min(dim, 1024); no pad tokens), written out by hand. `size`: LUMINA2's
    fields, any of them overridden."""
    size = {**LUMINA2, **size}
    dim, n_layers, n_heads, n_kv_heads, cap_feat_dim = (size[k] for k in LUMINA2)
    hd = dim // n_heads
    ffn = 256 * ((int(4.0 * dim) + 255) // 256)
    t, p = min(dim, 1024), 64
    sd = {
        "x_embedder.weight": (dim, p),
        "x_embedder.bias": (dim,),
        "t_embedder.mlp.0.weight": (t, 256),
        "t_embedder.mlp.0.bias": (t,),
        "t_embedder.mlp.2.weight": (t, t),
        "t_embedder.mlp.2.bias": (t,),
        "cap_embedder.0.weight": (cap_feat_dim,),
        "cap_embedder.1.weight": (dim, cap_feat_dim),
        "cap_embedder.1.bias": (dim,),
        "final_layer.linear.weight": (p, dim),
        "final_layer.linear.bias": (p,),
        "final_layer.adaLN_modulation.1.weight": (dim, t),
        "final_layer.adaLN_modulation.1.bias": (dim,),
    }
    for b, mod in [("noise_refiner.0.", True), ("context_refiner.0.", False)] + [
        (f"layers.{i}.", True) for i in range(n_layers)
    ]:
        sd.update(_block_shapes(b, dim, n_heads, n_kv_heads, hd, ffn))
        if mod:
            sd[b + "adaLN_modulation.1.weight"] = (4 * dim, t)
            sd[b + "adaLN_modulation.1.bias"] = (4 * dim,)
    return sd


def lumina2_comfy_dit(**size):
    """ComfyUI's own NextDiT built as a Lumina 2 DiT (ffn multiplier 4, no pad tokens, classic
    adaLN) on the meta device: for what its structure and key layout tell. `size`: as
    lumina2_comfy_shapes."""
    import comfy.ldm.lumina.model
    import comfy.ops

    size = {**LUMINA2, **size}
    return comfy.ldm.lumina.model.NextDiT(
        patch_size=2,
        in_channels=16,
        n_refiner_layers=1,
        ffn_dim_multiplier=4.0,
        qk_norm=True,
        axes_dims=_lumina2_axes(size),
        axes_lens=[300, 512, 512],
        device="meta",
        operations=comfy.ops.disable_weight_init,
        **size,
    )


def lumina2_diffusers(**size):
    """diffusers' Lumina2Transformer2DModel at the same sizes as lumina2_comfy_dit."""
    from diffusers import Lumina2Transformer2DModel

    size = {**LUMINA2, **size}
    return Lumina2Transformer2DModel(
        hidden_size=size["dim"],
        num_layers=size["n_layers"],
        num_refiner_layers=1,
        num_attention_heads=size["n_heads"],
        num_kv_heads=size["n_kv_heads"],
        cap_feat_dim=size["cap_feat_dim"],
        axes_dim_rope=tuple(_lumina2_axes(size)),
        sample_size=16,
    )


def flux_dit_shapes(hidden=32, context=4096) -> dict:
    """BFL/ComfyUI-layout Flux DiT (comfy/ldm/flux): the keys ComfyUI's detection looks at."""
    h = hidden
    return {
        "img_in.weight": (h, 64),
        "img_in.bias": (h,),
        "txt_in.weight": (h, context),
        "txt_in.bias": (h,),
        "time_in.in_layer.weight": (h, 256),
        "time_in.out_layer.weight": (h, h),
        "vector_in.in_layer.weight": (h, 768),
        "vector_in.out_layer.weight": (h, h),
        "guidance_in.in_layer.weight": (h, 256),
        "guidance_in.out_layer.weight": (h, h),
        "double_blocks.0.img_mod.lin.weight": (6 * h, h),
        "double_blocks.0.img_attn.qkv.weight": (3 * h, h),
        "double_blocks.0.img_attn.qkv.bias": (3 * h,),
        "double_blocks.0.img_attn.norm.query_norm.scale": (16,),
        "double_blocks.0.img_attn.norm.key_norm.scale": (16,),
        "double_blocks.0.img_attn.proj.weight": (h, h),
        "double_blocks.0.txt_attn.qkv.weight": (3 * h, h),
        "double_blocks.0.img_mlp.0.weight": (4 * h, h),
        "double_blocks.0.img_mlp.2.weight": (h, 4 * h),
        "single_blocks.0.linear1.weight": (7 * h, h),
        "single_blocks.0.linear2.weight": (h, 5 * h),
        "single_blocks.0.norm.query_norm.scale": (16,),
        "single_blocks.0.norm.key_norm.scale": (16,),
        "single_blocks.0.modulation.lin.weight": (3 * h, h),
        "final_layer.linear.weight": (64, h),
        "final_layer.adaLN_modulation.1.weight": (2 * h, h),
    }


def _ldm_unet_shapes(context: int, adm: int | None, attn_block: str) -> dict:
    c = 8
    sd = {
        "time_embed.0.weight": (4 * c, c),
        "time_embed.2.weight": (4 * c, 4 * c),
        "input_blocks.0.0.weight": (c, 4, 3, 3),
        "input_blocks.0.0.bias": (c,),
        "input_blocks.1.0.in_layers.0.weight": (c,),
        "input_blocks.1.0.out_layers.3.weight": (c, c, 3, 3),
        "input_blocks.3.0.op.weight": (c, c, 3, 3),
        f"{attn_block}.1.proj_in.weight": (c, c),
        f"{attn_block}.1.transformer_blocks.0.attn1.to_q.weight": (c, c),
        f"{attn_block}.1.transformer_blocks.0.attn2.to_k.weight": (c, context),
        f"{attn_block}.1.transformer_blocks.0.attn2.to_v.weight": (c, context),
        "middle_block.0.in_layers.0.weight": (c,),
        "middle_block.1.proj_in.weight": (c, c),
        "middle_block.1.transformer_blocks.0.attn2.to_k.weight": (c, context),
        "output_blocks.0.0.in_layers.0.weight": (2 * c,),
        "out.0.weight": (c,),
        "out.2.weight": (4, c, 3, 3),
    }
    if adm:
        sd["label_emb.0.0.weight"] = (4 * c, adm)
        sd["label_emb.0.2.weight"] = (4 * c, 4 * c)
    return sd


def sd1_unet_shapes() -> dict:
    """LDM/ComfyUI-layout SD 1.x UNet: cross-attention context 768, no label_emb."""
    return _ldm_unet_shapes(768, None, "input_blocks.1")


def sdxl_unet_shapes() -> dict:
    """LDM/ComfyUI-layout SDXL UNet: context 2048, label_emb (ADM 2816), no attention at level 1."""
    return _ldm_unet_shapes(2048, 2816, "input_blocks.4")


def diffusers_sdxl_unet_shapes() -> dict:
    """Diffusers UNet2DConditionModel names (SDXL: add_embedding, context 2048)."""
    c = 8
    return {
        "conv_in.weight": (c, 4, 3, 3),
        "time_embedding.linear_1.weight": (4 * c, c),
        "add_embedding.linear_1.weight": (4 * c, 2816),
        "down_blocks.0.resnets.0.conv1.weight": (c, c, 3, 3),
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (c, 2048),
        "mid_block.resnets.0.conv1.weight": (c, c, 3, 3),
        "up_blocks.0.resnets.0.conv1.weight": (c, 2 * c, 3, 3),
        "conv_out.weight": (4, c, 3, 3),
    }


# Qwen3 text-encoder sizes, as the Qwen3Config fields the inspector infers: the fakes' and the
# released Qwen3-4B's (Z-Image's text encoder).
_QWEN3_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
)
QWEN3_TINY = dict(zip(_QWEN3_FIELDS, (64, 3, 2, 1, 96, 512)))
QWEN3_4B = dict(zip(_QWEN3_FIELDS, (2560, 36, 32, 8, 9728, 151936)))


def qwen3_te_shapes(head_dim=128, lm_head=False, **size) -> dict:
    """Qwen3 text encoder in ComfyUI's layout (comfy/text_encoders/llama.py Qwen3_4B: model.embed_tokens,
    model.layers.N.{self_attn.{q,k,v,o}_proj, self_attn.{q,k}_norm, mlp.{gate,up,down}_proj,
    input_layernorm, post_attention_layernorm}, model.norm), which is also the HF Qwen3ForCausalLM layout.
    `size`: QWEN3_TINY's fields, any of them overridden."""
    hidden, n_layers, n_heads, n_kv_heads, intermediate, vocab = ({**QWEN3_TINY, **size}[k] for k in _QWEN3_FIELDS)
    sd = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    for i in range(n_layers):
        b = f"model.layers.{i}."
        sd.update(
            {
                b + "self_attn.q_proj.weight": (n_heads * head_dim, hidden),
                b + "self_attn.k_proj.weight": (n_kv_heads * head_dim, hidden),
                b + "self_attn.v_proj.weight": (n_kv_heads * head_dim, hidden),
                b + "self_attn.o_proj.weight": (hidden, n_heads * head_dim),
                b + "self_attn.q_norm.weight": (head_dim,),
                b + "self_attn.k_norm.weight": (head_dim,),
                b + "mlp.gate_proj.weight": (intermediate, hidden),
                b + "mlp.up_proj.weight": (intermediate, hidden),
                b + "mlp.down_proj.weight": (hidden, intermediate),
                b + "input_layernorm.weight": (hidden,),
                b + "post_attention_layernorm.weight": (hidden,),
            }
        )
    if lm_head:
        sd["lm_head.weight"] = (vocab, hidden)
    return sd


def flux_vae_shapes(z_channels=16, ch=8) -> dict:
    """Flux VAE in the original/ComfyUI layout (comfy/ldm/modules/diffusionmodules/model.py
    Encoder/Decoder, no quant_conv): decoder.conv_in takes the 16 latent channels."""
    return {
        "encoder.conv_in.weight": (ch, 3, 3, 3),
        "encoder.conv_in.bias": (ch,),
        "encoder.down.0.block.0.conv1.weight": (ch, ch, 3, 3),
        "encoder.down.0.downsample.conv.weight": (ch, ch, 3, 3),
        "encoder.mid.block_1.conv1.weight": (ch, ch, 3, 3),
        "encoder.mid.attn_1.q.weight": (ch, ch, 1, 1),
        "encoder.norm_out.weight": (ch,),
        "encoder.conv_out.weight": (2 * z_channels, ch, 3, 3),
        "decoder.conv_in.weight": (ch, z_channels, 3, 3),
        "decoder.conv_in.bias": (ch,),
        "decoder.mid.block_1.conv1.weight": (ch, ch, 3, 3),
        "decoder.mid.attn_1.q.weight": (ch, ch, 1, 1),
        "decoder.up.0.block.0.conv1.weight": (ch, ch, 3, 3),
        "decoder.up.1.upsample.conv.weight": (ch, ch, 3, 3),
        "decoder.norm_out.weight": (ch,),
        "decoder.conv_out.weight": (3, ch, 3, 3),
    }


def diffusers_flux_vae(seed: int = 0, latent_channels: int = 16) -> dict:
    """A real (tiny) diffusers AutoencoderKL state dict with the Flux VAE's 16 latent channels."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4,
        layers_per_block=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    return vae.state_dict()
