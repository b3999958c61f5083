"""The nodes in a real ComfyUI v0.8.0 (CPU), on tiny random-weight models written by the tests."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.host

NODE_IDS = ["ZINodesCFGGuider", "ZINodesLoader", "ZINodesNegativePrompt", "ZINodesScheduler", "ZINodesTurboSampler"]


def loader_inputs(names, variant="auto", model=None):
    return {
        "diffusion_model": model or names["turbo"],
        "text_encoder": names["text_encoder"],
        "vae": names["vae"],
        "variant": variant,
        "weight_dtype": "default",
    }


def turbo_prompt(names, steps=None, negative=False):
    prompt = {
        "1": {"class_type": "ZINodesLoader", "inputs": loader_inputs(names)},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in snow", "clip": ["1", 1]}},
        "3": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {
            "class_type": "ZINodesTurboSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["2", 0],
                "latent_image": ["3", 0],
                "seed": 7,
                "steps": steps if steps is not None else ["1", 3],
                "sampler_name": "euler",
                "shift": 3.0,
                "denoise": 1.0,
            },
        },
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "zimage_turbo_test"}},
    }
    if negative:
        prompt["7"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}}
        prompt["4"]["inputs"]["negative"] = ["7", 0]
    return prompt


def guided_prompt(names, steps=6, cfg=4.0, truncation=1.0, normalization=0.0):
    return {
        "1": {"class_type": "ZINodesLoader", "inputs": loader_inputs(names, model=names["base"])},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "portrait photo of a man", "clip": ["1", 1]}},
        "3": {
            "class_type": "ZINodesNegativePrompt",
            "inputs": {
                "target": "zimage",
                "quality": True,
                "body": True,
                "composition": True,
                "text": True,
                "style": False,
                "extra": "mustache",
            },
        },
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": ["3", 0], "clip": ["1", 1]}},
        "5": {
            "class_type": "ZINodesCFGGuider",
            "inputs": {
                "model": ["1", 0],
                "positive": ["2", 0],
                "negative": ["4", 0],
                "cfg": cfg,
                "cfg_normalization": normalization,
                "cfg_truncation": truncation,
            },
        },
        "6": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "8": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "9": {
            "class_type": "BasicScheduler",
            "inputs": {"model": ["1", 0], "scheduler": "simple", "steps": steps, "denoise": 1.0},
        },
        "10": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {
                "noise": ["7", 0],
                "guider": ["5", 0],
                "sampler": ["8", 0],
                "sigmas": ["9", 0],
                "latent_image": ["6", 0],
            },
        },
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "zimage_base_test"}},
    }


def saved_pngs(host, result):
    files = []
    for output in result.outputs.values():
        for image in output.get("images", []):
            files.append(
                Path(host.folder_paths.get_output_directory()) / image.get("subfolder", "") / image["filename"]
            )
    return files


def test_every_node_registers_without_import_failure(host):
    assert host.pack_loaded
    assert host.pack_nodes == NODE_IDS
    for node_id in NODE_IDS:
        schema = host.node_class(node_id).GET_SCHEMA()
        assert schema.category == "Z-Image"
        assert schema.description
        for item in schema.inputs + schema.outputs:
            assert item.tooltip, f"{node_id}.{item.id or item.display_name} has no tooltip"


def test_turbo_graph_writes_a_png_with_one_forward_per_step(host, demo_models, server_forward_spy):
    _, names = demo_models
    result = host.run(turbo_prompt(names, negative=True))
    pngs = saved_pngs(host, result)
    assert len(pngs) == 1 and pngs[0].is_file() and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Loader reports Turbo (8 steps); the wired negative is never evaluated.
    assert server_forward_spy == [1] * 8
    texts = [t for o in result.outputs.values() for t in o.get("text", [])]
    assert any("Turbo" in t and "turbo" in t for t in texts), texts
    assert any("negative conditioning ignored" in t for t in texts), texts


def test_guided_graph_runs_positive_and_negative_as_one_batched_forward(host, demo_models, server_forward_spy):
    _, names = demo_models
    steps = 6
    result = host.run(guided_prompt(names, steps=steps, cfg=4.0))
    assert len(saved_pngs(host, result)) == 1
    assert server_forward_spy == [2] * steps  # one forward per step, positive and negative batched


def test_guider_truncation_skips_the_negative_on_late_steps(host, demo_models, server_forward_spy):
    _, names = demo_models
    steps = 8
    host.run(guided_prompt(names, steps=steps, cfg=4.0, truncation=0.5))
    # Base shift 6, simple schedule: guided while 1 - sigma <= 0.5.
    import comfy.model_sampling

    sigmas = [float(comfy.model_sampling.time_snr_shift(6.0, 1 - i / steps)) for i in range(steps)]
    guided = sum(1 for s in sigmas if 1 - s <= 0.5)
    assert 0 < guided < steps
    assert len(server_forward_spy) == steps
    assert sum(server_forward_spy) == steps + guided
