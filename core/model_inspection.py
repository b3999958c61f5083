"""Inspect a model file or folder from its safetensors headers alone, and say what it is: kind,
key layout, prefix, the components of a full checkpoint, and the inferred config.

This package's core is host-free: it never imports ComfyUI. Only json/struct/os are needed for
reading.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .model_configs import (
    QWEN3_4B_HIDDEN,
    QWEN3_4B_LAYERS,
    Qwen3Config,
    ZImageDiTConfig,
    qwen3_config_from_shapes,
    zimage_config_from_shapes,
)
from .model_files import read_shards, resolve
from .model_kinds import classify_shapes
from .safetensors_header import TensorInfo, read_header


@dataclass
class ModelInfo:
    """What a model file or folder holds.

    kind: one of model_kinds.KINDS (the main model; a full checkpoint's DiT/UNet wins over its VAE and text encoder).
    description: human words for messages ("an SDXL UNet", "a Flux DiT").
    layout: "comfyui" (unprefixed), "checkpoint" (prefixed, e.g. `model.diffusion_model.`),
        "diffusers"; for text encoders also "transformers" (keys lack the `model.` level ComfyUI
        expects); None when unknown.
    prefix: strip it from the file's keys to get that layout's names ("" when unprefixed).
    components: every recognised part -> its prefix (a full checkpoint lists its VAE and encoder).
    params: element count of the main model's tensors.
    """

    path: str
    kind: str
    description: str
    layout: str | None
    files: list[str]
    prefix: str
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]
    config: ZImageDiTConfig | Qwen3Config | None = None
    params: int = 0
    components: dict[str, str] = field(default_factory=dict)

    def model_keys(self) -> list[str]:
        """The file's keys that belong to the main model (under `prefix`)."""
        return [k for k in self.tensors if k.startswith(self.prefix)]


def inspect_model(path: str | os.PathLike) -> ModelInfo:
    """Identify a model file (.safetensors), a shard index json, or a folder (a diffusers
    `transformer/` folder or the repository root above it) from headers alone."""
    path = os.fspath(path)
    files, index = resolve(path)
    if index is not None:
        files, tensors, metadata = read_shards(index)
    else:
        tensors, metadata = read_header(files[0])
    shapes = {k: v.shape for k, v in tensors.items()}
    matches = classify_shapes(shapes)
    components: dict[str, str] = {}
    for m in matches:
        if m.kind != "unknown":
            components.setdefault(m.kind, m.prefix)
    if not matches:
        sample = ", ".join(list(tensors)[:3])
        return ModelInfo(
            path=path,
            kind="unknown",
            description=f"an unrecognised model ({len(tensors)} tensors, e.g. {sample})"
            if tensors
            else "a safetensors file with no tensors",
            layout=None,
            files=files,
            prefix="",
            metadata=metadata,
            tensors=tensors,
            params=sum(v.numel for v in tensors.values()),
            components=components,
        )
    main = matches[0]
    config: ZImageDiTConfig | Qwen3Config | None = None
    if main.kind == "zimage_dit":
        config = zimage_config_from_shapes(path, shapes, main.prefix, main.layout)
    elif main.kind == "qwen3_text_encoder":
        config = qwen3_config_from_shapes(path, shapes, main.prefix, main.layout)
    description = main.description
    if (
        main.kind == "qwen3_text_encoder"
        and config.hidden_size == QWEN3_4B_HIDDEN
        and config.num_hidden_layers == QWEN3_4B_LAYERS
    ):
        description = "a Qwen3-4B text encoder"
    params = sum(v.numel for k, v in tensors.items() if k.startswith(main.prefix))
    return ModelInfo(
        path=path,
        kind=main.kind,
        description=description,
        layout=main.layout,
        files=files,
        prefix=main.prefix,
        metadata=metadata,
        tensors=tensors,
        config=config,
        params=params,
        components=components,
    )
