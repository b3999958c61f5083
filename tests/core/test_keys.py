"""Key conversion between the diffusers and ComfyUI layouts of the Z-Image DiT."""

import diffusers_layout
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zimage_nodes.core import keys


def _diffusers_block(prefix: str, dim: int, kv_rows: int | None = None, bias=False) -> dict:
    kv_rows = kv_rows or dim
    sd = {
        prefix + "attention.to_q.weight": torch.randn(dim, dim),
        prefix + "attention.to_k.weight": torch.randn(kv_rows, dim),
        prefix + "attention.to_v.weight": torch.randn(kv_rows, dim),
        prefix + "attention.to_out.0.weight": torch.randn(dim, dim),
        prefix + "attention.norm_q.weight": torch.randn(8),
        prefix + "attention.norm_k.weight": torch.randn(8),
        prefix + "feed_forward.w1.weight": torch.randn(3, dim),
    }
    if bias:
        for p in ("to_q", "to_k", "to_v"):
            rows = dim if p == "to_q" else kv_rows
            sd[prefix + f"attention.{p}.bias"] = torch.randn(rows)
    return sd


def _diffusers_sd(dim=16, kv_rows=None) -> dict:
    sd = {
        "all_x_embedder.2-1.weight": torch.randn(dim, 64),
        "all_x_embedder.2-1.bias": torch.randn(dim),
        "all_final_layer.2-1.linear.weight": torch.randn(64, dim),
        "all_final_layer.2-1.adaLN_modulation.1.weight": torch.randn(dim, dim),
        "cap_embedder.1.weight": torch.randn(dim, 4),
        "x_pad_token": torch.randn(1, dim),
    }
    for b in ("noise_refiner.0.", "context_refiner.0.", "layers.0.", "layers.1."):
        sd.update(_diffusers_block(b, dim, kv_rows))
    return sd


def test_renames_follow_the_reference_table():
    comfy = keys.diffusers_to_comfy(_diffusers_sd())
    for name in (
        "x_embedder.weight",
        "x_embedder.bias",
        "final_layer.linear.weight",
        "final_layer.adaLN_modulation.1.weight",
        "layers.1.attention.qkv.weight",
        "layers.1.attention.out.weight",
        "layers.1.attention.q_norm.weight",
        "layers.1.attention.k_norm.weight",
        "noise_refiner.0.attention.qkv.weight",
        "cap_embedder.1.weight",
        "x_pad_token",
        "layers.0.feed_forward.w1.weight",
    ):
        assert name in comfy, name
    assert not [k for k in comfy if "to_q" in k or "to_out" in k or "norm_q" in k or k.startswith("all_")]


def test_round_trip_is_identity_on_keys_and_values():
    sd = _diffusers_sd()
    back = diffusers_layout.comfy_to_diffusers(keys.diffusers_to_comfy(sd))
    assert set(back) == set(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k


def test_comfy_round_trip_is_identity():
    comfy = keys.diffusers_to_comfy(_diffusers_sd())
    again = keys.diffusers_to_comfy(diffusers_layout.comfy_to_diffusers(comfy))
    assert set(again) == set(comfy)
    assert all(torch.equal(again[k], comfy[k]) for k in comfy)


def test_qkv_is_q_then_k_then_v_on_dim_0():
    sd = _diffusers_sd()
    qkv = keys.diffusers_to_comfy(sd)["layers.0.attention.qkv.weight"]
    q, k, v = (sd[f"layers.0.attention.to_{p}.weight"] for p in "qkv")
    assert qkv.shape == (48, 16)
    assert torch.equal(qkv[:16], q) and torch.equal(qkv[16:32], k) and torch.equal(qkv[32:], v)


def test_biases_are_fused_too():
    sd = _diffusers_block("layers.0.", 16, bias=True)
    comfy = keys.diffusers_to_comfy(sd)
    assert torch.equal(comfy["layers.0.attention.qkv.bias"][16:32], sd["layers.0.attention.to_k.bias"])


def test_grouped_query_attention_splits_by_out_width():
    # k and v narrower than q: an even three-way split would put q rows into k.
    sd = _diffusers_sd(dim=16, kv_rows=8)
    comfy = keys.diffusers_to_comfy(sd)
    assert comfy["layers.0.attention.qkv.weight"].shape == (32, 16)
    back = diffusers_layout.comfy_to_diffusers(comfy)
    assert back["layers.0.attention.to_q.weight"].shape == (16, 16)
    assert torch.equal(back["layers.0.attention.to_v.weight"], sd["layers.0.attention.to_v.weight"])


def test_renamed_tensors_are_not_copied():
    sd = _diffusers_sd()
    comfy = keys.diffusers_to_comfy(sd)
    assert comfy["x_embedder.weight"] is sd["all_x_embedder.2-1.weight"]
    assert comfy["layers.0.attention.out.weight"] is sd["layers.0.attention.to_out.0.weight"]
    assert comfy["layers.0.attention.q_norm.weight"] is sd["layers.0.attention.norm_q.weight"]
    assert comfy["x_pad_token"] is sd["x_pad_token"]
    back = diffusers_layout.comfy_to_diffusers(comfy)
    assert back["all_x_embedder.2-1.weight"] is sd["all_x_embedder.2-1.weight"]


def test_split_qkv_are_contiguous_views_of_the_fused_tensor():
    comfy = keys.diffusers_to_comfy(_diffusers_sd())
    qkv = comfy["layers.0.attention.qkv.weight"]
    back = diffusers_layout.comfy_to_diffusers(comfy)
    base = qkv.untyped_storage().data_ptr()
    row_bytes = qkv.stride(0) * qkv.element_size()
    for i, p in enumerate("qkv"):
        piece = back[f"layers.0.attention.to_{p}.weight"]
        assert piece.untyped_storage().data_ptr() == base
        assert piece.data_ptr() == qkv.data_ptr() + i * 16 * row_bytes
        assert piece.is_contiguous()


def test_fusing_copies_each_tensor_once():
    sd = _diffusers_sd()
    comfy = keys.diffusers_to_comfy(sd)
    qkv = comfy["layers.0.attention.qkv.weight"]
    # The fused tensor owns new memory (one cat), unrelated to any source.
    assert qkv.untyped_storage().data_ptr() not in {t.untyped_storage().data_ptr() for t in sd.values()}
    assert qkv.untyped_storage().nbytes() == qkv.numel() * qkv.element_size()


def test_incomplete_block_names_the_block():
    sd = _diffusers_sd()
    del sd["layers.1.attention.to_v.weight"]
    with pytest.raises(keys.IncompleteBlockError) as e:
        keys.diffusers_to_comfy(sd)
    assert e.value.block == "layers.1.attention"
    assert e.value.missing == ("layers.1.attention.to_v.weight",)
    assert "layers.1.attention" in str(e.value) and "to_v" in str(e.value)
    assert isinstance(e.value, KeyError)
    with pytest.raises(keys.IncompleteBlockError):
        keys.diffusers_to_comfy_names(sd)


def test_quantisation_scales_are_not_fused():
    sd = _diffusers_block("layers.0.", 16)
    for p in ("to_q", "to_k", "to_v"):
        sd[f"layers.0.attention.{p}.scale_weight"] = torch.ones(())
    with pytest.raises(ValueError, match="scale_weight"):
        keys.diffusers_to_comfy(sd)


def test_name_plan_and_shape_table_work_without_tensors():
    sd = _diffusers_sd(dim=16, kv_rows=8)
    plan = keys.diffusers_to_comfy_names(sd)
    assert plan["layers.0.attention.qkv.weight"] == (
        "layers.0.attention.to_q.weight",
        "layers.0.attention.to_k.weight",
        "layers.0.attention.to_v.weight",
    )
    assert plan["x_embedder.weight"] == ("all_x_embedder.2-1.weight",)
    shapes = keys.diffusers_to_comfy_shapes({k: tuple(v.shape) for k, v in sd.items()})
    converted = keys.diffusers_to_comfy(sd)
    assert shapes == {k: tuple(v.shape) for k, v in converted.items()}
    back_plan = diffusers_layout.comfy_to_diffusers_names(converted)
    assert back_plan["final_layer.linear.weight"] == "all_final_layer.2-1.linear.weight"
    assert back_plan["layers.0.attention.qkv.weight"] == plan["layers.0.attention.qkv.weight"]


def test_strip_and_add_prefix():
    sd = {"model.diffusion_model.x_embedder.weight": torch.ones(1), "vae.decoder.conv_in.weight": torch.ones(1)}
    stripped = keys.strip_prefix(sd, keys.CHECKPOINT_PREFIX)
    assert list(stripped) == ["x_embedder.weight"]
    assert stripped["x_embedder.weight"] is sd["model.diffusion_model.x_embedder.weight"]
    assert keys.strip_prefix(sd, "") == sd
    assert keys.add_prefix(stripped, keys.CHECKPOINT_PREFIX) == {
        "model.diffusion_model.x_embedder.weight": sd["model.diffusion_model.x_embedder.weight"]
    }


@settings(max_examples=40, deadline=None)
@given(
    n_blocks=st.integers(1, 3),
    heads=st.integers(1, 4),
    kv_div=st.sampled_from([1, 2]),
    head_dim=st.sampled_from([2, 4]),
    with_bias=st.booleans(),
)
def test_round_trip_property(n_blocks, heads, kv_div, head_dim, with_bias):
    kv_heads = max(1, heads // kv_div)
    dim = heads * head_dim
    sd = {"all_x_embedder.2-1.weight": torch.randn(dim, 4)}
    for i in range(n_blocks):
        sd.update(_diffusers_block(f"layers.{i}.", dim, kv_heads * head_dim, bias=with_bias))
    comfy = keys.diffusers_to_comfy(sd)
    assert comfy["layers.0.attention.qkv.weight"].shape[0] == (heads + 2 * kv_heads) * head_dim
    back = diffusers_layout.comfy_to_diffusers(comfy)
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
