"""Why a model file or folder cannot be used, said so that a user knows what to do.

One class carries every file problem: no caller handles an empty file differently from a
truncated one, so the kind of problem is a stable tag (`reason`), not a class. The classes that
remain are the ones a caller tells apart: `MissingShardError` carries which shards are missing,
and `ComfyConfigError` is not about the file at all (it is sound, but ComfyUI cannot build a
model of its size)."""

from __future__ import annotations

import os

# Every value `CheckpointError.reason` can take.
REASONS = (
    "not_found",
    "empty",
    "truncated_header",
    "invalid_header",
    "truncated_data",
    "pickle",
    "not_safetensors",
    "missing_shard",
    "invalid_index",
    "no_model_files",
    "bad_structure",
)

REDOWNLOAD = "Download it again (the transfer was probably cut off) or pick another file"
CONVERT = (
    "Pickle files can run code when loaded, so they are not opened; convert it to .safetensors "
    "(e.g. `safetensors.torch.save_file(torch.load(path, weights_only=True), out)` on a file you trust) "
    "or download the .safetensors version"
)


class CheckpointError(ValueError):
    """A model file or folder that cannot be used. `reason` is one of REASONS (a stable
    machine-readable tag); the message names the file, says what is wrong and what to do."""

    def __init__(self, reason: str, path: str | os.PathLike, problem: str, advice: str):
        if reason not in REASONS:
            raise ValueError(f"unknown CheckpointError reason {reason!r}; known: {', '.join(REASONS)}")
        self.reason = reason
        self.path = os.fspath(path)
        self.problem = problem
        self.advice = advice
        super().__init__(f"{self.path}: {problem}. {advice}")


class MissingShardError(CheckpointError):
    """A sharded model with shards missing; `missing` names them, `index` is the index json."""

    def __init__(self, path, problem: str, advice: str, missing: tuple[str, ...] = (), index: str = ""):
        super().__init__("missing_shard", path, problem, advice)
        self.missing = missing
        self.index = index


class ComfyConfigError(ValueError):
    """The model is valid but ComfyUI's Z-Image implementation cannot build it at this size."""


def refuse_pickle(path: str, why: str) -> CheckpointError:
    return CheckpointError("pickle", path, f"this is a pickle file ({why}), not a safetensors file", CONVERT)


def bad_structure(path: str, what: str) -> CheckpointError:
    """Recognised as a model, but its tensors are inconsistent (incomplete blocks, odd shapes)."""
    return CheckpointError(
        "bad_structure", path, what, "The file is damaged or not a standard release; download it again"
    )
