"""ComfyUI builds and runs the diffusers -> ComfyUI key conversion: the converted state dict loads
strictly into ComfyUI's Z-Image, and computes the same function as the diffusers model."""

import pytest
import tiny_models as tm
import torch

from zimage_nodes.core import keys
from zimage_nodes.core.model_inspection import inspect_model

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def cross():
    return tm.sharp_cross_transformer(seed=4)


def _unet_config(tmp_path, sd) -> dict:
    return inspect_model(tm.save_safetensors(tmp_path / "m.safetensors", sd)).config.comfy_unet_config()


def test_comfyui_builds_exactly_the_converted_state_dict(host, tmp_path, cross):
    import comfy.supported_models

    sd = keys.diffusers_to_comfy(cross.state_dict())
    unet_config = _unet_config(tmp_path, sd)
    model = comfy.supported_models.ZImage(unet_config).get_model({})
    expected = {k: tuple(v.shape) for k, v in model.diffusion_model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    missing, unexpected = model.diffusion_model.load_state_dict(sd, strict=True)
    assert not missing and not unexpected


@torch.no_grad()
def test_converted_weights_compute_the_diffusers_function(host, tmp_path, cross):
    """Key names and shapes could all match with q and k swapped; only a forward pass shows the
    conversion is right. ComfyUI negates the velocity inside the model, diffusers in the pipeline."""
    import comfy.supported_models

    sd = keys.diffusers_to_comfy(cross.state_dict())
    model = comfy.supported_models.ZImage(_unet_config(tmp_path, sd)).get_model({})
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
