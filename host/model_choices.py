"""The Z-Image Loader's model dropdown (ComfyUI's diffusion_models files, diffusers-format folders
and checkpoints), the path each choice names, and the check of what a chosen file holds."""

from __future__ import annotations

import os

import folder_paths

from ..core.model_errors import CheckpointError
from ..core.model_inspection import inspect_model

CHECKPOINT_TAG = "[checkpoint] "


def _looks_like_diffusers_dir(path: str) -> bool:
    try:
        names = os.listdir(path)
    except OSError:
        return False
    if "transformer" in names and os.path.isdir(os.path.join(path, "transformer")):
        return True
    return any(n.endswith(".safetensors.index.json") or n.startswith("diffusion_pytorch_model") for n in names)


def _diffusers_dirs() -> list[str]:
    """Diffusers-format model folders under diffusion_models (two levels deep), as "name/"."""
    found = []
    for root in folder_paths.get_folder_paths("diffusion_models"):
        if not os.path.isdir(root):
            continue
        for name in sorted(os.listdir(root)):
            full = os.path.join(root, name)
            if os.path.isdir(full) and _looks_like_diffusers_dir(full):
                found.append(name + "/")
    return found


def model_choices() -> list[str]:
    dirs = _diffusers_dirs()
    # Shards inside a diffusers folder are offered through the folder, not one by one.
    files = [f for f in folder_paths.get_filename_list("diffusion_models") if not any(f.startswith(d) for d in dirs)]
    checkpoints = [CHECKPOINT_TAG + f for f in folder_paths.get_filename_list("checkpoints")]
    return files + dirs + checkpoints


def resolve_model_path(choice: str) -> str:
    if choice.startswith(CHECKPOINT_TAG):
        return folder_paths.get_full_path_or_raise("checkpoints", choice[len(CHECKPOINT_TAG) :])
    if choice.endswith("/"):
        for root in folder_paths.get_folder_paths("diffusion_models"):
            full = os.path.join(root, choice.rstrip("/"))
            if os.path.isdir(full):
                return full
        raise FileNotFoundError(f"Z-Image Loader: model folder '{choice}' is not in any diffusion_models folder")
    return folder_paths.get_full_path_or_raise("diffusion_models", choice)


def inspect_choice(path: str, role: str, choice: str, kind: str, wanted: str, advice: str):
    """inspect_model, refusing anything but `kind`. Refusals are written for the node's user:
    which input, what is wrong with the file, what to do, and the full path (the dropdown shows
    only a relative name)."""
    try:
        info = inspect_model(path)
    except CheckpointError as e:
        raise ValueError(f"Z-Image Loader, {role} '{choice}': {e.problem}. {e.advice}. (File: {e.path})") from None
    if info.kind != kind:
        raise ValueError(f"Z-Image Loader: {role} '{choice}' is {info.description}, not {wanted}. {advice}")
    return info
