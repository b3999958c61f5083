"""API-format prompts over the demo models (tools/demo_weights.py names), shared by the host tests
that run whole graphs in process or on a server."""


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
