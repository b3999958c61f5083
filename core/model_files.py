"""Which files make up a model: one .safetensors file, a shard set behind its index json, or a
diffusers folder (`transformer/` or the repository root above it). Shard sets are checked as a
whole (every shard present, index and shards agreeing) from their headers alone."""

from __future__ import annotations

import json
import os
import re

from .model_errors import REDOWNLOAD, CheckpointError, MissingShardError, refuse_pickle
from .safetensors_header import PICKLE_SUFFIXES, TensorInfo, read_header


def read_shards(index_path: str) -> tuple[list[str], dict[str, TensorInfo], dict[str, str]]:
    """Validate a sharded model's index json and union its shards' headers."""
    try:
        with open(index_path, "rb") as f:
            index = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            "invalid_index", index_path, f"the shard index is not valid JSON ({e})", REDOWNLOAD
        ) from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError("invalid_index", index_path, "the shard index has no usable weight_map", REDOWNLOAD)
    folder = os.path.dirname(os.path.abspath(index_path))
    shard_names = sorted(set(weight_map.values()))
    shards = [os.path.join(folder, s) for s in shard_names]
    missing = tuple(s for s, p in zip(shard_names, shards) if not os.path.isfile(p))
    if missing:
        raise MissingShardError(
            os.path.join(folder, missing[0]),
            f"shard {', '.join(missing)} listed in {os.path.basename(index_path)} is missing "
            f"({len(shard_names) - len(missing)} of {len(shard_names)} shards present)",
            f"Download the missing shard{'s' if len(missing) > 1 else ''} into {folder}",
            missing=missing,
            index=index_path,
        )
    tensors: dict[str, TensorInfo] = {}
    metadata: dict[str, str] = {}
    for shard_name, shard in zip(shard_names, shards):
        shard_tensors, shard_meta = read_header(shard)
        for name, info in shard_tensors.items():
            if name in tensors:
                raise CheckpointError(
                    "invalid_index",
                    index_path,
                    f"tensor {name!r} appears in both {os.path.basename(tensors[name].file)} and {shard_name}",
                    REDOWNLOAD,
                )
            tensors[name] = info
        for k, v in shard_meta.items():
            metadata.setdefault(k, v)
    for name, shard_name in weight_map.items():
        info = tensors.get(name)
        if info is None or os.path.basename(info.file) != os.path.basename(shard_name):
            raise CheckpointError(
                "invalid_index",
                index_path,
                f"the index places {name!r} in {shard_name} but that shard does not contain it",
                "The shards and the index are from different versions; download them again together",
            )
    return shards, tensors, metadata


_SHARD_NAME = re.compile(r"^(.+)-\d+-of-\d+\.safetensors$")


def resolve(path: str) -> tuple[list[str], str | None]:
    """(files, index json or None) for a file, an index json or a (diffusers) folder."""
    if not os.path.exists(path):
        raise CheckpointError("not_found", path, "no such file or folder", "Check the path, or refresh the model list")
    if os.path.isfile(path):
        if path.endswith(".index.json"):
            return [path], path
        shard = _SHARD_NAME.match(os.path.basename(path))
        if shard:
            # One shard alone is a fraction of a model: use the whole set when its index is there.
            index = os.path.join(os.path.dirname(path), shard.group(1) + ".safetensors.index.json")
            if os.path.isfile(index):
                return [], index
        return [path], None
    sub = os.path.join(path, "transformer")
    if os.path.isdir(sub):
        # A diffusers repository root: the DiT is what this pack loads.
        return resolve(sub)
    entries = sorted(os.listdir(path))
    preferred = "diffusion_pytorch_model.safetensors"
    if preferred + ".index.json" in entries:
        return [], os.path.join(path, preferred + ".index.json")
    if preferred in entries:
        return [os.path.join(path, preferred)], None
    indexes = [e for e in entries if e.endswith(".safetensors.index.json")]
    singles = [e for e in entries if e.endswith((".safetensors", ".sft"))]
    if len(indexes) == 1:
        return [], os.path.join(path, indexes[0])
    if not indexes and len(singles) == 1:
        return [os.path.join(path, singles[0])], None
    pickles = [e for e in entries if e.lower().endswith(PICKLE_SUFFIXES)]
    if not indexes and not singles and pickles:
        raise refuse_pickle(
            os.path.join(path, pickles[0]), "the folder has only pickle weights: " + ", ".join(pickles[:4])
        )
    if len(indexes) > 1 or len(singles) > 1:
        found = indexes if len(indexes) > 1 else singles
        raise CheckpointError(
            "no_model_files",
            path,
            "the folder holds several models (" + ", ".join(found[:6]) + ") and no single index",
            "Pick one file instead of the folder",
        )
    shown = ", ".join(entries[:8]) + (" ..." if len(entries) > 8 else "") if entries else "it is empty"
    raise CheckpointError(
        "no_model_files",
        path,
        f"no model files found ({shown})",
        "Point at a .safetensors file, a diffusers folder with diffusion_pytorch_model*.safetensors, or a repository root with transformer/",
    )
