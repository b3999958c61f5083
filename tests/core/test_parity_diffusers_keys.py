"""Parity of the diffusers -> ComfyUI key conversion for the Z-Image DiT.

Without a host: a real (tiny) diffusers transformer round-trips exactly, and its converted state
dict has the keys and shapes of the reference ComfyUI layout. With a host: ComfyUI's own NextDiT,
built from our inferred unet_config, has exactly those keys and shapes and, loaded with the
converted weights, computes the same function as diffusers (up to ComfyUI's sign convention)."""

import pytest
import tiny_models as tm
import torch

from zimage_nodes.core import checkpoint as ck
from zimage_nodes.core import keys


@pytest.fixture(scope="module")
def tiny():
    return tm.diffusers_transformer(seed=3, **tm.TINY)


@pytest.fixture(scope="module")
def cross():
    model = tm.diffusers_transformer(seed=4, **tm.CROSS)
    # With every weight ~0.05 the attention logits are ~0 and softmax is uniform, so q and k could
    # be swapped unnoticed. O(1) q/k RMSNorm scales give sharp attention that depends on their order.
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm_q.weight", "norm_k.weight")):
                p.copy_(2.0 + torch.randn(p.shape, generator=g))
    return model


def _config_from(tmp_path, sd, name="m.safetensors") -> ck.ZImageDiTConfig:
    return ck.inspect_model(tm.save_safetensors(tmp_path / name, sd)).config


def test_tiny_diffusers_round_trip_is_exact(tiny):
    sd = tiny.state_dict()
    comfy = keys.diffusers_to_comfy(sd)
    back = keys.comfy_to_diffusers(comfy)
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert back[k].shape == v.shape and torch.equal(back[k], v), k
    # Loadable into diffusers again, strictly.
    fresh = tm.diffusers_transformer(seed=99, **tm.TINY)
    fresh.load_state_dict(back, strict=True)
    assert torch.equal(fresh.state_dict()["layers.1.attention.to_v.weight"], sd["layers.1.attention.to_v.weight"])


def test_cross_size_matches_the_reference_comfy_layout(tmp_path, cross):
    comfy = keys.diffusers_to_comfy(cross.state_dict())
    got = {k: tuple(v.shape) for k, v in comfy.items()}
    # Independent table written from comfy/ldm/lumina/model.py (tests/tiny_models.py).
    assert got == tm.zimage_comfy_shapes(**tm.CROSS)
    # And the table core.checkpoint derives from the inferred config.
    cfg = _config_from(tmp_path, comfy)
    assert cfg.comfy_state_dict_shapes() == got


def test_tiny_size_differs_from_comfy_only_where_documented(tmp_path, tiny):
    """At dim 256 diffusers' FFN (682) and timestep MLP (1024) differ from ComfyUI's (768, 256):
    every other key and shape must agree."""
    comfy = {k: tuple(v.shape) for k, v in keys.diffusers_to_comfy(tiny.state_dict()).items()}
    expected = tm.zimage_comfy_shapes(**tm.TINY)
    assert set(comfy) == set(expected)
    differing = {k for k in comfy if comfy[k] != expected[k]}
    assert differing and all(".feed_forward.w" in k or k.startswith("t_embedder.mlp.") for k in differing)


@pytest.mark.host
def test_comfyui_builds_exactly_the_converted_state_dict(host, tmp_path, cross):
    import comfy.supported_models

    sd = keys.diffusers_to_comfy(cross.state_dict())
    unet_config = _config_from(tmp_path, sd).comfy_unet_config()
    model = comfy.supported_models.ZImage(unet_config).get_model({})
    expected = {k: tuple(v.shape) for k, v in model.diffusion_model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    missing, unexpected = model.diffusion_model.load_state_dict(sd, strict=True)
    assert not missing and not unexpected


@pytest.mark.host
@torch.no_grad()
def test_converted_weights_compute_the_diffusers_function(host, tmp_path, cross):
    """Key names and shapes could all match with q and k swapped; only a forward pass shows the
    conversion is right. ComfyUI negates the velocity inside the model, diffusers in the pipeline."""
    import comfy.supported_models

    sd = keys.diffusers_to_comfy(cross.state_dict())
    model = comfy.supported_models.ZImage(_config_from(tmp_path, sd).comfy_unet_config()).get_model({})
    dit = model.diffusion_model.float().eval()
    dit.load_state_dict(sd, strict=True)
    # The one implementation difference: ComfyUI's q/k RMSNorm uses eps=None (float32 machine eps),
    # diffusers 1e-5. With sharp attention that alone moves outputs by ~1e-4; align it so the test
    # measures the key conversion, not that.
    for module in dit.modules():
        if type(module).__name__ == "JointAttention":
            module.q_norm.eps = module.k_norm.eps = 1e-5

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 8, 8, generator=g)
    caption = torch.randn(1, 32, tm.CROSS["cap_feat_dim"], generator=g)
    sigma = torch.tensor([0.7])
    ours = dit(x, sigma, caption, num_tokens=32)
    ref = cross.float()(list(x.unsqueeze(2).unbind(0)), 1.0 - sigma, list(caption.unbind(0)), return_dict=False)[0]
    ref = torch.stack(ref).squeeze(2)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, -ref, atol=1e-5, rtol=1e-4), (ours + ref).abs().max()

    # A wrong fusing order (q and k swapped in one block) is caught by this comparison.
    bad = dict(sd)
    qkv = sd["layers.0.attention.qkv.weight"]
    d = tm.CROSS["dim"]
    bad["layers.0.attention.qkv.weight"] = torch.cat([qkv[d : 2 * d], qkv[:d], qkv[2 * d :]])
    dit.load_state_dict(bad, strict=True)
    assert (dit(x, sigma, caption, num_tokens=32) + ref).abs().max() > 100 * (ours + ref).abs().max()
