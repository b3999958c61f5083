"""Parity of the diffusers -> ComfyUI key conversion for the Z-Image DiT.

A real (tiny) diffusers transformer round-trips exactly, and its converted state dict has the keys
and shapes of the reference ComfyUI layout. That ComfyUI itself builds and runs the converted
weights is checked in tests/host/test_host_diffusers_keys.py."""

import dataclasses

import diffusers_layout
import pytest
import tiny_models as tm
import torch

from zimage_nodes.core import keys
from zimage_nodes.core.model_configs import ZImageDiTConfig
from zimage_nodes.core.model_inspection import inspect_model


@pytest.fixture(scope="module")
def tiny():
    return tm.diffusers_transformer(seed=3, **tm.TINY)


@pytest.fixture(scope="module")
def cross():
    return tm.sharp_cross_transformer(seed=4)


def _config_from(tmp_path, sd, name="m.safetensors") -> ZImageDiTConfig:
    return inspect_model(tm.save_safetensors(tmp_path / name, sd)).config


def test_tiny_diffusers_round_trip_is_exact(tiny):
    sd = tiny.state_dict()
    comfy = keys.diffusers_to_comfy(sd)
    back = diffusers_layout.comfy_to_diffusers(comfy)
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
    # And the config inferred from it is the one ComfyUI builds at that size.
    cfg = _config_from(tmp_path, comfy)
    assert dataclasses.replace(cfg, params=0) == ZImageDiTConfig.for_size(**tm.CROSS)


def test_tiny_size_differs_from_comfy_only_where_documented(tmp_path, tiny):
    """At dim 256 diffusers' FFN (682) and timestep MLP (1024) differ from ComfyUI's (768, 256):
    every other key and shape must agree."""
    comfy = {k: tuple(v.shape) for k, v in keys.diffusers_to_comfy(tiny.state_dict()).items()}
    expected = tm.zimage_comfy_shapes(**tm.TINY)
    assert set(comfy) == set(expected)
    differing = {k for k in comfy if comfy[k] != expected[k]}
    assert differing and all(".feed_forward.w" in k or k.startswith("t_embedder.mlp.") for k in differing)
