"""ZImageLoader in a real ComfyUI: every supported file format loads the same model, and every
listed mistake is refused with a message that names the file and says what to do."""

import json

import pytest
import torch
from tiny_models import save_safetensors, sdxl_unet_shapes, zeros

pytestmark = pytest.mark.host


def load(host, names, model, text_encoder=None, variant="auto"):
    return host.node_class("ZINodesLoader").execute(
        diffusion_model=model,
        text_encoder=text_encoder or names["text_encoder"],
        vae=names["vae"],
        variant=variant,
        weight_dtype="default",
    )


@pytest.fixture(scope="module")
def formats(demo_models):
    """The demo Turbo DiT written in every layout the loader accepts."""
    from diffusers_layout import comfy_to_diffusers
    from safetensors.torch import load_file

    root, names = demo_models
    sd = load_file(root / "diffusion_models" / names["turbo"])
    dm = root / "diffusion_models"
    save_safetensors(
        root / "checkpoints" / "zimage_full_turbo.safetensors", {"model.diffusion_model." + k: v for k, v in sd.items()}
    )
    diffusers_sd = comfy_to_diffusers(sd)
    save_safetensors(dm / "zimage_diffusers_turbo.safetensors", diffusers_sd)
    sharded = dm / "zimage_sharded_turbo"
    (sharded / "transformer").mkdir(parents=True, exist_ok=True)
    keys = sorted(diffusers_sd)
    halves = {
        "diffusion_pytorch_model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "diffusion_pytorch_model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    weight_map = {}
    for shard, shard_keys in halves.items():
        save_safetensors(sharded / "transformer" / shard, {k: diffusers_sd[k] for k in shard_keys})
        weight_map.update({k: shard for k in shard_keys})
    (sharded / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return sd


@pytest.mark.parametrize(
    "choice",
    [
        "[checkpoint] zimage_full_turbo.safetensors",
        "zimage_diffusers_turbo.safetensors",
        "zimage_sharded_turbo/",
    ],
)
def test_every_layout_loads_the_same_weights(host, demo_models, formats, choice):
    _, names = demo_models
    out = load(host, names, choice)
    model, steps, cfg = out.args[0], out.args[3], out.args[4]
    assert (steps, cfg) == (8, 1.0)
    loaded = model.model.diffusion_model.state_dict()
    assert set(loaded) == set(formats)
    assert all(torch.equal(loaded[k], formats[k].to(loaded[k].dtype)) for k in formats)
    assert model.get_model_object("model_sampling").shift == 3.0


def test_base_variant_gets_shift_6_and_base_recommendations(host, demo_models):
    _, names = demo_models
    out = load(host, names, names["base"])
    assert out.args[0].get_model_object("model_sampling").shift == 6.0
    assert (out.args[3], out.args[4]) == (28, 5.0)
    assert "base" in out.ui.as_dict()["text"][0].lower()


def test_explicit_variant_overrides_the_file_name(host, demo_models):
    _, names = demo_models
    out = load(host, names, names["turbo"], variant="base")
    assert out.args[0].get_model_object("model_sampling").shift == 6.0
    assert "chosen" in out.ui.as_dict()["text"][0].lower() or "explicit" in out.ui.as_dict()["text"][0].lower()


@pytest.fixture(scope="module")
def bad_files(demo_models):
    root, names = demo_models
    dm = root / "diffusion_models"
    save_safetensors(dm / "sdxl_unet.safetensors", zeros(sdxl_unet_shapes()))
    (dm / "empty.safetensors").write_bytes(b"")
    good = (dm / names["turbo"]).read_bytes()
    (dm / "truncated_turbo.safetensors").write_bytes(good[: len(good) // 2])
    torch.save({"x": torch.zeros(2)}, dm / "pickled_turbo.ckpt")
    sharded = dm / "zimage_missing_shard"
    (sharded / "transformer").mkdir(parents=True, exist_ok=True)
    save_safetensors(
        sharded / "transformer" / "diffusion_pytorch_model-00001-of-00002.safetensors",
        {"x_pad_token": torch.zeros(1, 256)},
    )
    (sharded / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps(
            {
                "weight_map": {
                    "x_pad_token": "diffusion_pytorch_model-00001-of-00002.safetensors",
                    "cap_pad_token": "diffusion_pytorch_model-00002-of-00002.safetensors",
                }
            }
        )
    )
    wide_te = root / "text_encoders" / "qwen3_wide.safetensors"
    from zimage_nodes.tools import demo_weights

    # A text encoder whose hidden width (96) differs from the demo DiT's caption width (64).
    save_safetensors(wide_te, demo_weights.text_encoder_state_dict(hidden_size=96))
    return names


@pytest.mark.parametrize(
    "model, text_encoder, expected",
    [
        ("sdxl_unet.safetensors", None, ["sdxl_unet.safetensors", "SDXL UNet", "not a Z-Image"]),
        ("empty.safetensors", None, ["empty.safetensors", "empty"]),
        ("truncated_turbo.safetensors", None, ["truncated_turbo.safetensors", "truncated"]),
        ("pickled_turbo.ckpt", None, ["pickled_turbo.ckpt", "safetensors"]),
        ("zimage_missing_shard/", None, ["diffusion_pytorch_model-00002-of-00002.safetensors", "missing"]),
        ("TURBO", "qwen3_wide.safetensors", ["qwen3_wide.safetensors", "96", "64"]),
    ],
)
def test_bad_input_gives_a_clear_error(host, bad_files, model, text_encoder, expected):
    names = bad_files
    with pytest.raises(Exception) as info:
        load(host, names, names["turbo"] if model == "TURBO" else model, text_encoder=text_encoder)
    message = str(info.value)
    assert info.type in (ValueError, FileNotFoundError) or issubclass(info.type, ValueError)
    for fragment in expected:
        assert fragment.lower() in message.lower(), message


def test_loader_errors_reach_the_user_through_a_graph(host, bad_files):
    from zimage_nodes.tools.headless import WorkflowError

    names = bad_files
    prompt = {
        "1": {
            "class_type": "ZINodesLoader",
            "inputs": {
                "diffusion_model": "sdxl_unet.safetensors",
                "text_encoder": names["text_encoder"],
                "vae": names["vae"],
                "variant": "auto",
                "weight_dtype": "default",
            },
        },
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 3]}},
    }
    with pytest.raises(WorkflowError) as info:
        host.run(prompt)
    assert info.value.node_id == "1" and "SDXL UNet" in str(info.value)
