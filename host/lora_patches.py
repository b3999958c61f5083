"""A Z-Image LoRA as ComfyUI ModelPatcher patches: every module placed by core/lora_convert.py is
handed to ComfyUI's own `comfy.lora.load_lora` (its LoRA, LoHa and LoKr weight adapters) under the
module's ComfyUI-native name, and patched with `add_patches`, so ComfyUI's weight math, offloading,
casting (fp8, GGUF through its patcher) and unpatching apply and stacked LoRAs add up.

The one own piece of math: DoRA with the magnitude per output row. ComfyUI's `weight_decompose`
(comfy/weight_adapter/base.py, v0.8.0 through v0.33.0) divides by the row norms of the original W
on that axis, where DoRA (peft, LyCORIS `wd_on_output`, ai-toolkit) normalises W + dW. Those modules
get `DoraPatch`, a subclass of ComfyUI's adapter that lets ComfyUI compute dW and does only the
decomposition itself. Its input-axis mode exists so a test can compare it with ComfyUI's (correct)
input-axis branch: a future ComfyUI fix of the output axis shows up there.
"""

from __future__ import annotations

import logging

import torch

from ..core.lora_convert import PREFIX, LoraPlan, native_state_dict, plan_lora
from ..core.lora_formats import LoraFileError, read_lora_header

log = logging.getLogger("zimage_nodes")


def read_lora(path: str) -> tuple[dict, dict]:
    """(header metadata, tensors) of a LoRA file, its header checked first (pickle, truncation)."""
    header = read_lora_header(path)
    from safetensors.torch import load_file

    try:
        tensors = load_file(path)
    except Exception as e:  # noqa: BLE001  (safetensors raises its own error types per problem)
        raise LoraFileError(
            path, f"the tensors cannot be read ({e})", "Download it again or pick another file"
        ) from None
    return header.metadata, tensors


def model_shapes(patcher) -> dict[str, tuple]:
    sd = patcher.model.diffusion_model.state_dict()
    return {k: tuple(getattr(v, "tensor_shape", v.shape)) for k, v in sd.items()}


def plan(path: str, metadata: dict, tensors: dict, patcher) -> LoraPlan:
    return plan_lora(
        path, tensors, metadata, model_shapes(patcher), lambda key: float(tensors[key].float().reshape(-1)[0])
    )


def _patch_key(m):
    key = PREFIX + m.target.weight
    return (key, m.target.offset) if m.target.offset else key


def model_patches(plan: LoraPlan, tensors: dict) -> list[tuple[object, object]]:
    """(ComfyUI patch key, adapter) for every module, through ComfyUI's load_lora one module at a
    time (two names for the same weight region both stay, as two patches)."""
    import comfy.lora

    native = native_state_dict(plan, tensors)
    patches = []
    for m in plan.modules:
        base = PREFIX + m.name
        sd = {k: v for k, v in native.items() if k.startswith(base + ".")}
        magnitude = sd.get(base + ".dora_scale") if m.dora_axis == "output" else None
        key = _patch_key(m)
        loaded = comfy.lora.load_lora(sd, {base: key}, log_missing=False)
        if key not in loaded:
            raise LoraFileError(
                plan.path, f"ComfyUI could not read module '{m.name}' ({sorted(sd)})", "Report this file"
            )
        adapter = loaded[key]
        if magnitude is not None:
            adapter = dora_patch(adapter, magnitude, "output")
        patches.append((key, adapter))
    return patches


def apply(patcher, patches, strength: float):
    """A clone of the model with the patches added at this strength (ComfyUI's rule for DoRA too:
    W + strength * (merged - W))."""
    model = patcher.clone()
    for key, adapter in patches:
        added = model.add_patches({key: adapter}, strength)
        if not added:
            raise ValueError(f"Z-Image LoRA: the model has no weight '{key}' to patch")
    return model


# -- DoRA on the output axis ----------------------------------------------------------------------

_CLASSES: dict = {}


def dora_patch(adapter, magnitude: torch.Tensor, axis: str):
    """`adapter` (a ComfyUI LoRA/LoHa/LoKr adapter whose dW is wanted) as a DoraPatch of the same
    adapter type: the magnitude takes the adapter's dora_scale slot, so ComfyUI can rebuild it with
    `type(p)(loaded_keys, weights)` as v0.33's prefetch does."""
    weights = list(adapter.weights)
    slot = _DORA_SLOT[type(adapter).__name__]
    weights[slot] = magnitude
    cls = _dora_class(type(adapter), slot, axis)
    return cls(adapter.loaded_keys, tuple(weights))


# Where each ComfyUI adapter keeps its dora_scale in `weights` (the same in v0.8.0 and v0.33.0).
_DORA_SLOT = {"LoRAAdapter": 4, "LoHaAdapter": 7, "LoKrAdapter": 8}


def _dora_class(base, slot: int, axis: str):
    key = (base, slot, axis)
    if key in _CLASSES:
        return _CLASSES[key]

    def calculate_weight(
        self,
        weight,
        key,
        strength,
        strength_model,
        offset,
        function,
        intermediate_dtype=torch.float32,
        original_weight=None,
    ):
        weights = list(self.weights)
        magnitude = weights[slot]
        weights[slot] = None
        plain = base(self.loaded_keys, tuple(weights))
        # V = W + dW, dW by ComfyUI's own adapter math (alpha / rank, function, LoKr/LoHa products).
        v = weight.to(intermediate_dtype, copy=True)
        v = plain.calculate_weight(v, key, 1.0, 1.0, offset, function, intermediate_dtype, original_weight)
        mag = magnitude.to(v.device, intermediate_dtype)
        if axis == "output":
            norm = v.reshape(v.shape[0], -1).norm(dim=1).reshape(v.shape[0], *[1] * (v.dim() - 1))
            mag = mag.reshape(v.shape[0], *[1] * (v.dim() - 1))
        else:
            norm = v.transpose(0, 1).reshape(v.shape[1], -1).norm(dim=1).reshape(1, v.shape[1], *[1] * (v.dim() - 2))
            mag = mag.reshape(1, v.shape[1], *[1] * (v.dim() - 2))
        merged = v * (mag / (norm + torch.finfo(v.dtype).eps))
        # In place: with an offset `weight` is a view into the fused qkv.
        weight += (strength * (merged - weight.to(intermediate_dtype))).to(weight.dtype)
        return weight

    cls = type(f"ZImageDora{axis.capitalize()}{base.__name__}", (base,), {"calculate_weight": calculate_weight})
    cls.name = f"zimage_dora_{axis}"
    _CLASSES[key] = cls
    return cls


# -- text encoder keys, through ComfyUI's own CLIP key map ------------------------------------


def clip_patches(plan: LoraPlan, tensors: dict, clip) -> tuple[dict, int]:
    import comfy.lora

    if clip is None or not plan.text_encoder_keys:
        return {}, 0
    key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {})
    sd = {k: tensors[k] for k in plan.text_encoder_keys}
    patches = comfy.lora.load_lora(sd, key_map, log_missing=False)
    return patches, len(patches)
