"""Which trainer wrote a LoRA file, from its header alone (key names and metadata), and whether it
is a Z-Image LoRA at all.

Why from the header: the same Z-Image LoRA is published in half a dozen key layouts (ai-toolkit's
PEFT names, musubi/kohya `lora_unet_` underscores, DiffSynth's bare keys, OneTrainer's variants,
diffusers/SimpleTuner with alpha only in the metadata), and a file for another model family must
be refused before anything is read or patched. Key names and metadata are all that takes.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass

from .model_errors import CheckpointError
from .safetensors_header import TensorInfo, read_header

# Part names after the module path, canonical form (dots -> underscores) -> ComfyUI's part name.
# ComfyUI's weight adapters read `lora_up/lora_down/lora_mid/alpha/dora_scale`, `lokr_*`, `hada_*`.
PARTS = {
    "lora_A_weight": "lora_down.weight",
    "lora_A_default_weight": "lora_down.weight",
    "lora_B_weight": "lora_up.weight",
    "lora_B_default_weight": "lora_up.weight",
    "lora_down_weight": "lora_down.weight",
    "lora_up_weight": "lora_up.weight",
    "lora_mid_weight": "lora_mid.weight",
    "alpha": "alpha",
    "dora_scale": "dora_scale",
    "magnitude": "magnitude",  # ai-toolkit DoRA: per output row
    "lora_magnitude_vector_weight": "magnitude",  # peft/diffusers/SimpleTuner DoRA
    "lora_magnitude_vector_default_weight": "magnitude",
    "lora_magnitude_vector_default": "magnitude",
    "lora_magnitude_vector": "magnitude",
    **{f"lokr_{p}": f"lokr_{p}" for p in ("w1", "w2", "w1_a", "w1_b", "w2_a", "w2_b", "t2")},
    **{f"hada_{p}": f"hada_{p}" for p in ("w1_a", "w1_b", "w2_a", "w2_b", "t1", "t2")},
    "diff": "diff",
    "diff_b": "diff_b",
}
_PARTS_LONGEST = sorted(PARTS, key=len, reverse=True)

# Prefixes the trainers put before the module path (canonical form), longest first.
PREFIXES = (
    ("base_model_model_", "peft"),
    ("model_diffusion_model_", "ComfyUI checkpoint"),
    ("diffusion_model_", "ai-toolkit / ComfyUI"),
    ("lora_transformer_", "OneTrainer"),
    ("transformer_", "diffusers"),
    ("lora_unet_", "kohya / musubi"),
    ("lycoris_", "LyCORIS"),
    ("unet_", "diffusers unet"),
)
TEXT_ENCODER_PREFIXES = ("lora_te_", "lora_te1_", "lora_te2_", "text_encoder.", "text_encoders.", "lora_te.")

# Other families, recognised from layouts a Z-Image model never has (checked on canonical keys).
FAMILIES = (
    (re.compile(r"(^|_)(down_blocks|up_blocks|mid_block|input_blocks|output_blocks|middle_block)_"), "SDXL / SD 1.x"),
    (re.compile(r"(^|_)(double_blocks|single_blocks|single_transformer_blocks)_"), "Flux"),
    (re.compile(r"(^|_)transformer_blocks_\d+_(img_mlp|txt_mlp|img_mod|txt_mod)"), "Qwen-Image"),
    (re.compile(r"(^|_)transformer_blocks_\d+_"), "Flux / Qwen-Image style (transformer_blocks)"),
    (re.compile(r"(^|_)blocks_\d+_(self_attn|cross_attn)_"), "Wan"),
    (re.compile(r"(^|_)joint_blocks_\d+_"), "SD3"),
)


class LoraFileError(ValueError):
    """A LoRA file that cannot be applied; the message names the file, the problem and what to do."""

    def __init__(self, path: str, problem: str, advice: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"Z-Image LoRA '{os.path.basename(self.path)}': {problem}. {advice}")


def canonical(key: str) -> str:
    return key.replace(".", "_")


def split_key(key: str) -> tuple[str, str, str] | None:
    """A file key -> (prefix tag, canonical module path, ComfyUI part name); None if it is no LoRA part."""
    c = canonical(key)
    for part in _PARTS_LONGEST:
        if c.endswith("_" + part):
            module = c[: -len(part) - 1]
            for prefix, tag in PREFIXES:
                if module.startswith(prefix):
                    return tag, module[len(prefix) :], PARTS[part]
            return "bare", module, PARTS[part]
    return None


@dataclass
class LoraHeader:
    path: str
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]


def read_lora_header(path: str | os.PathLike) -> LoraHeader:
    """The header, or a LoraFileError for a pickle, a truncated or a non-safetensors file."""
    try:
        tensors, metadata = read_header(path)
    except CheckpointError as e:
        raise LoraFileError(path, e.problem, e.advice) from None
    return LoraHeader(os.fspath(path), tensors, metadata)


def recognise(keys, metadata: dict[str, str]) -> str:
    """The trainer/format name for the node's message (refusals are `refuse_other_family`'s job)."""
    keys = list(keys)
    raw = " ".join(keys)
    c = [canonical(k) for k in keys]
    dora = any(p in raw for p in ("magnitude", "dora_scale"))
    lokr = "lokr_" in raw
    loha = "hada_" in raw
    kind = "LoKr" if lokr else "LoHa" if loha else "DoRA" if dora else "LoRA"
    if any(k.startswith("lycoris_") for k in c):
        name = "LyCORIS (old ai-toolkit lycoris_ names)"
    elif any(k.startswith("lora_unet_") for k in c):
        fused = any("_attention_qkv_" in k for k in c)
        name = "musubi-tuner ComfyUI conversion (fused qkv)" if fused else "musubi-tuner / kohya (lora_unet_)"
    elif any(k.startswith("lora_transformer_") for k in c):
        name = "OneTrainer (lora_transformer_)"
    elif any(k.startswith("diffusion_model.") for k in keys):
        name = "ai-toolkit / ComfyUI (diffusion_model.)"
    elif any(k.startswith("transformer.") for k in keys):
        if any(".lora_A." in k or ".lora_magnitude_vector" in k for k in keys):
            name = "diffusers / SimpleTuner (transformer.)"
        else:
            name = "OneTrainer (transformer.)"
    elif any(k.startswith("base_model.model.") for k in keys):
        name = "peft (base_model.model.)"
    elif any(".default." in k for k in keys):
        name = "DiffSynth-Studio (bare keys)"
    else:
        name = "bare keys"
    if any(".to.q." in k or ".to.out." in k for k in keys) or (
        any("attention_qkv_" in k for k in c) and any("attention_to_q_" in k for k in c)
    ):
        name += ", fused and split names mixed"
    meta_alpha = metadata_alpha(metadata)
    if meta_alpha is not None:
        name += ", alpha in metadata"
    return f"{kind}, {name}"


def refuse_other_family(path: str, keys) -> None:
    """Raise a LoraFileError naming the family when the file is no Z-Image LoRA."""
    keys = list(keys)
    if not keys:
        raise LoraFileError(path, "the file holds no tensors", "Pick a LoRA file")
    canon = [canonical(k) for k in keys]
    for pattern, family in FAMILIES:
        hits = [k for k, c in zip(keys, canon) if pattern.search(c)]
        if hits:
            raise LoraFileError(
                path,
                f"this is a LoRA (or model) for {family}, not for Z-Image ({len(hits)} keys such as '{hits[0]}')",
                "Pick a LoRA trained for Z-Image / Z-Image-Turbo",
            )
    lora_parts = [k for k in keys if split_key(k) is not None]
    if not lora_parts:
        whole = any(canonical(k).endswith(("attention_qkv_weight", "feed_forward_w1_weight")) for k in keys)
        what = (
            "a whole Z-Image model, not a LoRA" if whole else "not a LoRA: no LoRA weights (lora_A/lora_down/lokr/hada)"
        )
        raise LoraFileError(
            path, f"{what} (keys such as '{keys[0]}')", "Load models with the Z-Image Loader; pick a LoRA file here"
        )


def _walk(value, found: dict):
    if isinstance(value, dict):
        for k, v in value.items():
            name = str(k).rsplit(".", 1)[-1]
            if name in ("lora_alpha", "r") and isinstance(v, (int, float)) and not isinstance(v, bool):
                found.setdefault(name, float(v))
            else:
                _walk(v, found)


def metadata_alpha(metadata: dict[str, str]) -> tuple[float, float | None, str] | None:
    """(alpha, rank or None, metadata key) from diffusers' `lora_adapter_metadata`, a peft config
    stored in the header, or kohya's `ss_network_alpha`; None when the metadata has none."""
    for key in ("lora_adapter_metadata", "peft_config", "lora_config", "adapter_config"):
        text = metadata.get(key)
        if not text:
            continue
        try:
            found: dict = {}
            _walk(json.loads(text), found)
        except (json.JSONDecodeError, TypeError):
            continue
        if "lora_alpha" in found:
            return found["lora_alpha"], found.get("r"), key
    if "ss_network_alpha" in metadata:
        try:
            rank = metadata.get("ss_network_dim")
            return float(metadata["ss_network_alpha"]), float(rank) if rank else None, "ss_network_alpha"
        except ValueError:
            return None
    return None


def finite(value: float) -> bool:
    return not (math.isinf(value) or math.isnan(value))
