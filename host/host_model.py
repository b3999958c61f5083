"""Turning inspected Z-Image files into ComfyUI objects (ModelPatcher, CLIP, VAE) with the host's
own classes, and the small model patches the nodes share (flow shift, variant tag)."""

from __future__ import annotations

import logging

import comfy.model_management as mm
import comfy.model_patcher
import comfy.model_sampling
import comfy.samplers
import comfy.sd
import comfy.supported_models
import comfy.supported_models_base
import comfy.text_encoders.z_image
import comfy.utils
import folder_paths
import torch
from comfy.text_encoders.hunyuan_video import llama_detect

from ..core import keys
from ..core.model_inspection import ModelInfo

log = logging.getLogger("zimage_nodes")

VARIANT_KEY = "zimage_variant"

WEIGHT_DTYPES = {
    "default": {},
    "bf16": {"dtype": torch.bfloat16},
    "fp8_e4m3fn": {"dtype": torch.float8_e4m3fn},
    "fp8_e4m3fn_fast": {"dtype": torch.float8_e4m3fn, "fp8_optimizations": True},
    "fp8_e5m2": {"dtype": torch.float8_e5m2},
}


def load_dit_state_dict(info: ModelInfo) -> tuple[dict, dict]:
    """Read the DiT's tensors (all shards) and return them in ComfyUI's unprefixed layout."""
    sd: dict = {}
    metadata: dict = dict(info.metadata or {})
    for path in info.files:
        part, meta = comfy.utils.load_torch_file(str(path), safe_load=True, return_metadata=True)
        sd.update(part)
        metadata.update(meta or {})
    if info.prefix:
        sd = keys.strip_prefix(sd, info.prefix)
    if info.layout == "diffusers":
        sd = keys.diffusers_to_comfy(sd)
    return sd, metadata


def build_zimage_model(sd: dict, unet_config: dict, metadata: dict, weight_dtype: str = "default"):
    """Build the Z-Image DiT from the inferred config, the way comfy.sd.load_diffusion_model_state_dict
    does after detection. Detection itself is skipped: ComfyUI recognises Z-Image only at width
    3840 and would treat any other width (fine-tunes, test models) as Lumina 2."""
    options = WEIGHT_DTYPES[weight_dtype]
    sd, metadata = comfy.utils.convert_old_quants(sd, "", metadata=metadata)
    parameters = comfy.utils.calculate_parameters(sd)
    stored_dtype = comfy.utils.weight_dtype(sd)
    load_device = mm.get_torch_device()
    offload_device = mm.unet_offload_device()

    model_config = comfy.supported_models.ZImage(dict(unet_config))
    quant_config = comfy.utils.detect_layer_quantization(sd, "")
    if quant_config:
        model_config.quant_config = quant_config
        stored_dtype = None
    unet_dtype = options.get("dtype") or mm.unet_dtype(
        model_params=parameters,
        supported_dtypes=list(model_config.supported_inference_dtypes),
        weight_dtype=stored_dtype,
    )
    manual_cast = mm.unet_manual_cast(
        None if quant_config else unet_dtype, load_device, model_config.supported_inference_dtypes
    )
    model_config.set_inference_dtype(unet_dtype, manual_cast)
    if options.get("fp8_optimizations"):
        model_config.optimizations["fp8"] = True

    model = model_config.get_model(sd, "")
    model = model.to(offload_device)
    missing = set(model.diffusion_model.state_dict()) - set(sd)
    if missing:
        # A silently half-loaded model renders noise: refuse it instead.
        raise ValueError(
            f"the diffusion model file lacks {len(missing)} weight(s) the Z-Image model needs "
            f"(first: {sorted(missing)[:3]}); the file is incomplete or not a Z-Image DiT"
        )
    model.load_model_weights(sd, "")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def load_text_encoder(info: ModelInfo, te_config: dict | None):
    """Qwen3 text encoder with the Z-Image tokenizer; `te_config` sizes the model when it is not
    the 4B one (ComfyUI only recognises the 4B by its 2560 width)."""
    sd = comfy.utils.load_torch_file(str(info.files[0]), safe_load=True)
    if info.prefix:
        sd = keys.strip_prefix(sd, info.prefix)
    if info.layout == "transformers":
        # ComfyUI's Qwen3 module nests the decoder under `model.`; Hugging Face's bare model does not.
        sd = keys.add_prefix(sd, "model.")
    target = comfy.supported_models_base.ClipTarget(
        comfy.text_encoders.z_image.ZImageTokenizer, comfy.text_encoders.z_image.te(**llama_detect(sd))
    )
    model_options = {"qwen3_4b_model_config": te_config} if te_config else {}
    return comfy.sd.CLIP(
        target,
        embedding_directory=folder_paths.get_folder_paths("embeddings"),
        parameters=comfy.utils.calculate_parameters(sd),
        state_dict=[sd],
        model_options=model_options,
    )


def load_vae(path: str):
    sd, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    vae = comfy.sd.VAE(sd=sd, metadata=metadata)
    vae.throw_exception_if_invalid()
    return vae


class _FlowSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
    pass


def with_flow_shift(model, shift: float):
    """A clone whose sigma schedule uses `shift`, patched exactly as ComfyUI's ModelSamplingAuraFlow
    node patches it (multiplier 1: the Z-Image DiT expects sigma in [0, 1])."""
    m = model.clone()
    sampling = _FlowSampling(model.model.model_config)
    sampling.set_parameters(shift=shift, multiplier=1.0)
    m.add_object_patch("model_sampling", sampling)
    return m


def current_shift(model) -> float:
    """The model's flow shift; NaN when its sampling has none (not a flow-matching model)."""
    sampling = model.get_model_object("model_sampling")
    return float(getattr(sampling, "shift", float("nan")))


def without_wrapper(transformer_options: dict, key: str) -> dict:
    """A copy of a model call's transformer_options without the wrappers registered under `key`: a
    DIFFUSION_MODEL wrapper that runs its own forward must not have the model below it call it again."""
    options = dict(transformer_options)
    wrappers = {}
    for kind, by_key in (options.get("wrappers") or {}).items():
        kept = {k: fns for k, fns in by_key.items() if k != key}
        if kept:
            wrappers[kind] = kept
    options["wrappers"] = wrappers
    return options


def tag_variant(model, variant_name: str, reason: str):
    model.model_options[VARIANT_KEY] = {"name": variant_name, "reason": reason}


def variant_of(model) -> dict | None:
    """The variant the Z-Image loader tagged this model with, if it came from our loader."""
    return getattr(model, "model_options", {}).get(VARIANT_KEY)


def is_zimage(model) -> bool:
    """Whether a MODEL is ComfyUI's Z-Image (its model config), however it was loaded."""
    config = getattr(getattr(model, "model", None), "model_config", None)
    return isinstance(config, comfy.supported_models.ZImage)


def turbo_sigmas(model, steps: int, sampler_name: str, denoise: float):
    # KSampler's own sigma logic (denoise tail, samplers that discard the penultimate sigma).
    return comfy.samplers.KSampler(
        model,
        steps=steps,
        device="cpu",
        sampler=sampler_name,
        scheduler="simple",
        denoise=denoise,
        model_options=model.model_options,
    ).sigmas
