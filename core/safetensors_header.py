"""Read a safetensors file's header (every tensor's dtype, shape and byte range) without touching
its data, and refuse pickles.

Why header-only: a Z-Image DiT is 12 GB and a user picks files from a dropdown; telling them "that
is an SDXL UNet" or "the download was cut off" must be instant and must never page gigabytes in.
A safetensors file starts with an 8-byte little-endian header length and a JSON header holding
every tensor's dtype, shape and byte range, which is all the classification needs.

Why refuse pickles: `.ckpt`/`.pt`/`.pth`/`.bin` files are unpickled by `torch.load`, which can
execute arbitrary code. Inspection never opens them beyond the first bytes and tells the user to
convert to .safetensors.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass

from .model_errors import REDOWNLOAD, CheckpointError, refuse_pickle

# safetensors refuses headers above 100 MB; a larger length means the file is not safetensors.
MAX_HEADER_BYTES = 100_000_000

# Bits per element; sub-byte formats are packed. Unknown dtypes skip the size check rather than
# reject a file written by a newer safetensors.
DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")


@dataclass(frozen=True)
class TensorInfo:
    """One header entry. `offsets` are relative to the start of the data section, as in the file;
    `file` is the file that holds it (matters for sharded models)."""

    dtype: str
    shape: tuple[int, ...]
    offsets: tuple[int, int]
    file: str = ""

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.offsets[1] - self.offsets[0]


def _is_pickle_magic(head: bytes) -> str | None:
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive, the torch.save format"
    if head[:1] == b"\x80":
        return "it starts with a pickle protocol marker"
    return None


def read_header(path: str | os.PathLike) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Read and validate a safetensors header without touching tensor data.

    Returns (tensors by name as in the file, `__metadata__`). Raises a CheckpointError for
    every way a file can be unusable, checked in the order a user would want to hear about them."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError("not_found", path, "no such file", "Check the path, or refresh the model list")
    if os.path.isdir(path):
        raise CheckpointError(
            "not_safetensors",
            path,
            "this is a folder",
            "Use inspect_model() for folders, or pick the .safetensors file inside",
        )
    if path.lower().endswith(PICKLE_SUFFIXES):
        # ComfyUI itself picks torch.load by extension, so even a safetensors body would be unpickled.
        raise refuse_pickle(path, f"{os.path.splitext(path)[1]} extension")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise CheckpointError("empty", path, "the file is empty (0 bytes)", REDOWNLOAD)
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        plausible = 2 <= n <= MAX_HEADER_BYTES
        first = f.read(1) if plausible else b""
        # The safetensors test comes first: a header length with low byte 0x80 looks like a
        # pickle protocol marker, but only a safetensors file continues with a JSON "{".
        if not (plausible and first == b"{"):
            why = _is_pickle_magic(head)
            if why:
                raise refuse_pickle(path, why)
            if head.startswith(b"GGUF"):
                raise CheckpointError(
                    "not_safetensors",
                    path,
                    "this is a GGUF file, not safetensors",
                    "Load GGUF models with a GGUF loader node (e.g. ComfyUI-GGUF), or use the .safetensors release",
                )
            if size < 8:
                raise CheckpointError(
                    "truncated_header", path, f"only {size} bytes, too short for a safetensors header", REDOWNLOAD
                )
            raise CheckpointError(
                "not_safetensors",
                path,
                f"not a safetensors file (no JSON header after the 8-byte length {n})",
                "Pick a .safetensors model file",
            )
        if 8 + n > size:
            raise CheckpointError(
                "truncated_header",
                path,
                f"the header should be {n} bytes but the file has only {size - 8} after the length field",
                REDOWNLOAD,
            )
        raw = first + f.read(n - 1)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            "invalid_header", path, f"the safetensors header is not valid JSON ({e})", REDOWNLOAD
        ) from None
    tensors, metadata, data_end = _parse_header(path, header)
    data_size = size - 8 - n
    if data_end > data_size:
        raise CheckpointError(
            "truncated_data",
            path,
            f"the file is truncated: its tensors need {data_end} bytes of data but only {data_size} are there "
            f"(expected file size {8 + n + data_end} bytes, actual {size})",
            REDOWNLOAD,
        )
    return tensors, metadata


def _parse_header(path: str, header) -> tuple[dict[str, TensorInfo], dict[str, str], int]:
    def bad(what: str) -> CheckpointError:
        return CheckpointError("invalid_header", path, f"the safetensors header is malformed: {what}", REDOWNLOAD)

    if not isinstance(header, dict):
        raise bad("it is not a JSON object")
    meta_raw = header.get("__metadata__", {}) or {}
    if not isinstance(meta_raw, dict):
        raise bad("__metadata__ is not an object")
    metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta_raw.items()}
    tensors: dict[str, TensorInfo] = {}
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise bad(f"entry {name!r} is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str):
            raise bad(f"tensor {name!r} has no dtype")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise bad(f"tensor {name!r} has an invalid shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise bad(f"tensor {name!r} has invalid data_offsets {offsets!r}")
        info = TensorInfo(dtype, tuple(shape), (offsets[0], offsets[1]), path)
        bits = DTYPE_BITS.get(dtype)
        if bits is not None and info.nbytes != (info.numel * bits + 7) // 8:
            raise bad(
                f"tensor {name!r} ({dtype} {list(shape)}) spans {info.nbytes} bytes, expected {(info.numel * bits + 7) // 8}"
            )
        tensors[name] = info
        data_end = max(data_end, offsets[1])
    return tensors, metadata, data_end
