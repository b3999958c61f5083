"""The config inference and the fake model layouts of the host-free tests, checked against ComfyUI
itself: its model detection, its Qwen3 and NextDiT classes."""

import pytest
import tiny_models as tm
import torch

from zimage_nodes.core.model_configs import Qwen3Config
from zimage_nodes.core.model_inspection import inspect_model

pytestmark = pytest.mark.host


def meta(shapes: dict) -> dict:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


@pytest.mark.parametrize("pad", [True, False])
def test_comfyui_detection_agrees_at_real_size(host, tmp_path, pad):
    import comfy.model_detection

    shapes = tm.zimage_comfy_shapes(**tm.FULL, pad_tokens=pad)
    tm.write_header_only(tmp_path / "z.safetensors", shapes)
    ours = inspect_model(tmp_path / "z.safetensors").config.comfy_unet_config()
    assert ours == comfy.model_detection.detect_unet_config(meta(shapes), "")
    prefixed = meta(tm.prefixed(shapes, "model.diffusion_model."))
    assert comfy.model_detection.unet_prefix_from_state_dict(prefixed) == "model.diffusion_model."
    assert ours == comfy.model_detection.detect_unet_config(prefixed, "model.diffusion_model.")


def test_comfyui_recognises_the_fake_qwen3_and_builds_ours(host):
    import comfy.ops
    import comfy.sd
    import comfy.text_encoders.llama

    assert comfy.sd.detect_te_model(meta(tm.qwen3_te_shapes(**tm.QWEN3_4B))) == comfy.sd.TEModel.QWEN3_4B
    shapes = tm.qwen3_te_shapes(**tm.QWEN3_TINY)
    cfg = Qwen3Config(**tm.QWEN3_TINY)
    module = comfy.text_encoders.llama.Qwen3_4B(cfg.comfy_model_config(), torch.float32, "cpu", comfy.ops.manual_cast)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == shapes


def test_comfyui_lumina2_layout_matches_the_fake(host):
    dit = tm.lumina2_comfy_dit()
    assert {k: tuple(v.shape) for k, v in dit.state_dict().items()} == tm.lumina2_comfy_shapes()
