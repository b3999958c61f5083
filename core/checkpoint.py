"""Inspect a model file or folder from its safetensors header alone, and say what it is.

Why header-only: a Z-Image DiT is 12 GB and a user picks files from a dropdown; telling them "that
is an SDXL UNet" or "the download was cut off" must be instant and must never page gigabytes in.
A safetensors file starts with an 8-byte little-endian header length and a JSON header holding
every tensor's dtype, shape and byte range, which is all the classification needs.

Why refuse pickles: `.ckpt`/`.pt`/`.pth`/`.bin` files are unpickled by `torch.load`, which can
execute arbitrary code. Inspection never opens them beyond the first bytes and tells the user to
convert to .safetensors.

Z-Image is recognised by structure, not by width: ComfyUI v0.8.0 only accepts `dim == 3840`, but
fine-tunes, pruned variants and the tiny test models have other widths. What tells Z-Image apart
from Lumina 2 (same NextDiT family, same `cap_embedder`) is its modulation: Z-Image's per-block
adaLN is a bare Linear (`adaLN_modulation.0`, input width min(dim, 256)) where Lumina 2 has
SiLU + Linear (`adaLN_modulation.1`, input width min(dim, 1024)).

This module is host-free: it never imports ComfyUI. Only json/struct/os are needed for reading.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from . import keys as _keys

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

KINDS = (
    "zimage_dit",
    "qwen3_text_encoder",
    "flux_vae",
    "sd1_unet",
    "sdxl_unet",
    "flux_dit",
    "lumina2_dit",
    "unknown",
)

# The fixed part of ComfyUI's Z-Image unet_config (comfy/model_detection.py, the dim == 3840 branch).
ZIMAGE_AXES_DIMS = [32, 48, 48]
ZIMAGE_AXES_LENS = [1536, 512, 512]
ZIMAGE_ROPE_THETA = 256.0
ZIMAGE_FFN_MULTIPLIER = 8.0 / 3.0
ZIMAGE_TIME_SCALE = 1000.0
ZIMAGE_PAD_TOKENS_MULTIPLE = 32
# NextDiT's constructor defaults that detection leaves implicit.
_NEXTDIT_DEFAULT_REFINERS = 2
_NEXTDIT_MULTIPLE_OF = 256
# ComfyUI's Qwen3_4BConfig fixes head_dim as a class attribute (not a constructor field).
QWEN3_HEAD_DIM = 128


# --------------------------------------------------------------------------------------------
# Errors


class CheckpointError(ValueError):
    """A model file or folder that cannot be used. `reason` is a stable machine-readable tag;
    the message names the file and says what to do."""

    reason = "invalid"

    def __init__(self, path: str | os.PathLike, problem: str, advice: str):
        self.path = os.fspath(path)
        self.problem = problem
        self.advice = advice
        super().__init__(f"{self.path}: {problem}. {advice}")


class ModelNotFoundError(CheckpointError):
    reason = "not_found"


class EmptyFileError(CheckpointError):
    reason = "empty"


class TruncatedHeaderError(CheckpointError):
    reason = "truncated_header"


class InvalidHeaderError(CheckpointError):
    reason = "invalid_header"


class TruncatedDataError(CheckpointError):
    reason = "truncated_data"


class PickleFileError(CheckpointError):
    reason = "pickle"


class NotSafetensorsError(CheckpointError):
    reason = "not_safetensors"


class MissingShardError(CheckpointError):
    reason = "missing_shard"

    def __init__(self, path, problem, advice, missing: tuple[str, ...] = (), index: str = ""):
        super().__init__(path, problem, advice)
        self.missing = missing
        self.index = index


class InvalidIndexError(CheckpointError):
    reason = "invalid_index"


class NoModelFilesError(CheckpointError):
    reason = "no_model_files"


class ModelStructureError(CheckpointError):
    """Recognised as a model, but its tensors are inconsistent (incomplete blocks, odd shapes)."""

    reason = "bad_structure"


class ComfyConfigError(ValueError):
    """The model is valid but ComfyUI's Z-Image implementation cannot build it at this size."""


_REDOWNLOAD = "Download it again (the transfer was probably cut off) or pick another file"
_CONVERT = (
    "Pickle files can run code when loaded, so they are not opened; convert it to .safetensors "
    "(e.g. `safetensors.torch.save_file(torch.load(path, weights_only=True), out)` on a file you trust) "
    "or download the .safetensors version"
)


# --------------------------------------------------------------------------------------------
# Header reading


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


def _refuse_pickle(path: str, why: str) -> PickleFileError:
    return PickleFileError(path, f"this is a pickle file ({why}), not a safetensors file", _CONVERT)


def _is_pickle_magic(head: bytes) -> str | None:
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive, the torch.save format"
    if head[:1] == b"\x80":
        return "it starts with a pickle protocol marker"
    return None


def read_header(path: str | os.PathLike) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Read and validate a safetensors header without touching tensor data.

    Returns (tensors by name as in the file, `__metadata__`). Raises a CheckpointError subclass for
    every way a file can be unusable, checked in the order a user would want to hear about them."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelNotFoundError(path, "no such file", "Check the path, or refresh the model list")
    if os.path.isdir(path):
        raise NotSafetensorsError(
            path, "this is a folder", "Use inspect_model() for folders, or pick the .safetensors file inside"
        )
    if path.lower().endswith(PICKLE_SUFFIXES):
        # ComfyUI itself picks torch.load by extension, so even a safetensors body would be unpickled.
        raise _refuse_pickle(path, f"{os.path.splitext(path)[1]} extension")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise EmptyFileError(path, "the file is empty (0 bytes)", _REDOWNLOAD)
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        plausible = 2 <= n <= MAX_HEADER_BYTES
        first = f.read(1) if plausible else b""
        # The safetensors test comes first: a header length with low byte 0x80 looks like a
        # pickle protocol marker, but only a safetensors file continues with a JSON "{".
        if not (plausible and first == b"{"):
            why = _is_pickle_magic(head)
            if why:
                raise _refuse_pickle(path, why)
            if head.startswith(b"GGUF"):
                raise NotSafetensorsError(
                    path,
                    "this is a GGUF file, not safetensors",
                    "Load GGUF models with a GGUF loader node (e.g. ComfyUI-GGUF), or use the .safetensors release",
                )
            if size < 8:
                raise TruncatedHeaderError(path, f"only {size} bytes, too short for a safetensors header", _REDOWNLOAD)
            raise NotSafetensorsError(
                path,
                f"not a safetensors file (no JSON header after the 8-byte length {n})",
                "Pick a .safetensors model file",
            )
        if 8 + n > size:
            raise TruncatedHeaderError(
                path,
                f"the header should be {n} bytes but the file has only {size - 8} after the length field",
                _REDOWNLOAD,
            )
        raw = first + f.read(n - 1)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidHeaderError(path, f"the safetensors header is not valid JSON ({e})", _REDOWNLOAD) from None
    tensors, metadata, data_end = _parse_header(path, header)
    data_size = size - 8 - n
    if data_end > data_size:
        raise TruncatedDataError(
            path,
            f"the file is truncated: its tensors need {data_end} bytes of data but only {data_size} are there "
            f"(expected file size {8 + n + data_end} bytes, actual {size})",
            _REDOWNLOAD,
        )
    return tensors, metadata


def _parse_header(path: str, header) -> tuple[dict[str, TensorInfo], dict[str, str], int]:
    def bad(what: str) -> InvalidHeaderError:
        return InvalidHeaderError(path, f"the safetensors header is malformed: {what}", _REDOWNLOAD)

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


# --------------------------------------------------------------------------------------------
# Files and folders


def _read_index(index_path: str) -> tuple[list[str], dict[str, TensorInfo], dict[str, str]]:
    """Validate a sharded model's index json and union its shards' headers."""
    try:
        with open(index_path, "rb") as f:
            index = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidIndexError(index_path, f"the shard index is not valid JSON ({e})", _REDOWNLOAD) from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise InvalidIndexError(index_path, "the shard index has no usable weight_map", _REDOWNLOAD)
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
                raise InvalidIndexError(
                    index_path,
                    f"tensor {name!r} appears in both {os.path.basename(tensors[name].file)} and {shard_name}",
                    _REDOWNLOAD,
                )
            tensors[name] = info
        for k, v in shard_meta.items():
            metadata.setdefault(k, v)
    for name, shard_name in weight_map.items():
        info = tensors.get(name)
        if info is None or os.path.basename(info.file) != os.path.basename(shard_name):
            raise InvalidIndexError(
                index_path,
                f"the index places {name!r} in {shard_name} but that shard does not contain it",
                "The shards and the index are from different versions; download them again together",
            )
    return shards, tensors, metadata


_SHARD_NAME = re.compile(r"^(.+)-\d+-of-\d+\.safetensors$")


def _resolve(path: str) -> tuple[list[str], str | None]:
    """(files, index json or None) for a file, an index json or a (diffusers) folder."""
    if not os.path.exists(path):
        raise ModelNotFoundError(path, "no such file or folder", "Check the path, or refresh the model list")
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
        return _resolve(sub)
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
        raise _refuse_pickle(
            os.path.join(path, pickles[0]), "the folder has only pickle weights: " + ", ".join(pickles[:4])
        )
    if len(indexes) > 1 or len(singles) > 1:
        found = indexes if len(indexes) > 1 else singles
        raise NoModelFilesError(
            path,
            "the folder holds several models (" + ", ".join(found[:6]) + ") and no single index",
            "Pick one file instead of the folder",
        )
    shown = ", ".join(entries[:8]) + (" ..." if len(entries) > 8 else "") if entries else "it is empty"
    raise NoModelFilesError(
        path,
        f"no model files found ({shown})",
        "Point at a .safetensors file, a diffusers folder with diffusion_pytorch_model*.safetensors, or a repository root with transformer/",
    )


# --------------------------------------------------------------------------------------------
# Configs


@dataclass(frozen=True)
class ZImageDiTConfig:
    """Z-Image DiT hyper-parameters inferred from tensor shapes (ComfyUI names).

    `t_embed_hidden` and `adaln_dim` are kept because they are where diffusers and ComfyUI builds
    of the same width disagree below dim 1024 (diffusers' timestep MLP is always 1024 wide)."""

    dim: int
    n_layers: int
    n_refiner_layers: int
    n_heads: int
    head_dim: int
    n_kv_heads: int
    cap_feat_dim: int
    in_channels: int
    patch_size: int
    ffn_hidden: int
    has_pad_tokens: bool
    t_embed_hidden: int
    adaln_dim: int
    params: int = 0

    def comfy_ffn_hidden(self) -> int:
        """The FFN width ComfyUI's NextDiT builds: int(8/3 * dim) rounded up to a multiple of 256."""
        hidden = int(ZIMAGE_FFN_MULTIPLIER * self.dim)
        return _NEXTDIT_MULTIPLE_OF * ((hidden + _NEXTDIT_MULTIPLE_OF - 1) // _NEXTDIT_MULTIPLE_OF)

    def comfy_incompatibilities(self) -> list[str]:
        """Why ComfyUI's Z-Image implementation could not hold these weights (empty if it can)."""
        problems = []
        if self.head_dim != sum(ZIMAGE_AXES_DIMS):
            problems.append(
                f"head size {self.head_dim}: ComfyUI's rotary embedding for Z-Image needs {sum(ZIMAGE_AXES_DIMS)} (axes_dims {ZIMAGE_AXES_DIMS})"
            )
        if self.n_heads * self.head_dim != self.dim:
            problems.append(f"{self.n_heads} heads of {self.head_dim} do not make the width {self.dim}")
        if self.patch_size != 2:
            problems.append(f"patch size {self.patch_size}: ComfyUI assumes 2")
        if self.ffn_hidden != self.comfy_ffn_hidden():
            problems.append(
                f"FFN width {self.ffn_hidden}: ComfyUI builds {self.comfy_ffn_hidden()} at width {self.dim}"
            )
        if self.t_embed_hidden != min(self.dim, 1024):
            problems.append(
                f"timestep MLP width {self.t_embed_hidden}: ComfyUI builds {min(self.dim, 1024)} at width {self.dim}"
            )
        if self.adaln_dim != min(self.dim, 256):
            problems.append(f"adaLN input width {self.adaln_dim}: ComfyUI builds {min(self.dim, 256)}")
        return problems

    def comfy_unet_config(self) -> dict:
        """The unet_config ComfyUI's model_detection produces for a Z-Image of this size.

        For the real model (dim 3840, 2 refiners) this equals detect_unet_config's output exactly.
        `n_refiner_layers` is added only when it differs from NextDiT's default of 2, because
        detection never sets it. Raises ComfyConfigError if ComfyUI cannot build this size."""
        problems = self.comfy_incompatibilities()
        if problems:
            raise ComfyConfigError("ComfyUI's Z-Image model cannot hold this checkpoint: " + "; ".join(problems))
        cfg = {
            "image_model": "lumina2",
            "patch_size": self.patch_size,
            "in_channels": self.in_channels,
            "dim": self.dim,
            "cap_feat_dim": self.cap_feat_dim,
            "n_layers": self.n_layers,
            "qk_norm": True,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "axes_dims": list(ZIMAGE_AXES_DIMS),
            "axes_lens": list(ZIMAGE_AXES_LENS),
            "rope_theta": ZIMAGE_ROPE_THETA,
            "ffn_dim_multiplier": ZIMAGE_FFN_MULTIPLIER,
            "z_image_modulation": True,
            "time_scale": ZIMAGE_TIME_SCALE,
        }
        if self.has_pad_tokens:
            cfg["pad_tokens_multiple"] = ZIMAGE_PAD_TOKENS_MULTIPLE
        if self.n_refiner_layers != _NEXTDIT_DEFAULT_REFINERS:
            cfg["n_refiner_layers"] = self.n_refiner_layers
        return cfg

    def comfy_state_dict_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every key and shape of ComfyUI's NextDiT for this config (the reference layout),
        as ComfyUI would build it: FFN and timestep widths follow ComfyUI's rules, not the file's."""
        d, hd = self.dim, self.head_dim
        ffn = self.comfy_ffn_hidden()
        t_hidden, ada = min(d, 1024), min(d, 256)
        patch_out = self.patch_size * self.patch_size * self.in_channels
        qkv_rows = (self.n_heads + 2 * self.n_kv_heads) * hd
        shapes: dict[str, tuple[int, ...]] = {
            "x_embedder.weight": (d, patch_out),
            "x_embedder.bias": (d,),
            "t_embedder.mlp.0.weight": (t_hidden, 256),
            "t_embedder.mlp.0.bias": (t_hidden,),
            "t_embedder.mlp.2.weight": (256, t_hidden),
            "t_embedder.mlp.2.bias": (256,),
            "cap_embedder.0.weight": (self.cap_feat_dim,),
            "cap_embedder.1.weight": (d, self.cap_feat_dim),
            "cap_embedder.1.bias": (d,),
            "final_layer.linear.weight": (patch_out, d),
            "final_layer.linear.bias": (patch_out,),
            "final_layer.adaLN_modulation.1.weight": (d, ada),
            "final_layer.adaLN_modulation.1.bias": (d,),
        }
        if self.has_pad_tokens:
            shapes["x_pad_token"] = (1, d)
            shapes["cap_pad_token"] = (1, d)

        def block(prefix: str, modulated: bool) -> None:
            shapes.update(
                {
                    prefix + "attention.qkv.weight": (qkv_rows, d),
                    prefix + "attention.out.weight": (d, self.n_heads * hd),
                    prefix + "attention.q_norm.weight": (hd,),
                    prefix + "attention.k_norm.weight": (hd,),
                    prefix + "feed_forward.w1.weight": (ffn, d),
                    prefix + "feed_forward.w2.weight": (d, ffn),
                    prefix + "feed_forward.w3.weight": (ffn, d),
                    prefix + "attention_norm1.weight": (d,),
                    prefix + "ffn_norm1.weight": (d,),
                    prefix + "attention_norm2.weight": (d,),
                    prefix + "ffn_norm2.weight": (d,),
                }
            )
            if modulated:
                shapes[prefix + "adaLN_modulation.0.weight"] = (4 * d, ada)
                shapes[prefix + "adaLN_modulation.0.bias"] = (4 * d,)

        for i in range(self.n_refiner_layers):
            block(f"noise_refiner.{i}.", True)
            block(f"context_refiner.{i}.", False)
        for i in range(self.n_layers):
            block(f"layers.{i}.", True)
        return shapes


@dataclass(frozen=True)
class Qwen3Config:
    """Qwen3 text-encoder hyper-parameters inferred from tensor shapes."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    head_dim: int = QWEN3_HEAD_DIM
    params: int = 0

    def comfy_model_config(self) -> dict:
        """Fields for `model_options={"qwen3_4b_model_config": ...}`: ComfyUI's Qwen3_4BConfig
        constructor fields (comfy/text_encoders/llama.py). head_dim is a class attribute there
        (fixed at 128, passing it would be a TypeError), so other head sizes are refused."""
        if self.head_dim != QWEN3_HEAD_DIM:
            raise ComfyConfigError(
                f"head size {self.head_dim}: ComfyUI's Qwen3_4B text encoder fixes it at {QWEN3_HEAD_DIM}"
            )
        return {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
        }


# --------------------------------------------------------------------------------------------
# Classification


Shapes = Mapping[str, tuple]


@dataclass
class ModelInfo:
    """What a model file or folder holds.

    kind: one of KINDS (the main model; a full checkpoint's DiT/UNet wins over its VAE and text encoder).
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

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v.shape for k, v in self.tensors.items()}

    def model_keys(self) -> list[str]:
        """The file's keys that belong to the main model (under `prefix`)."""
        return [k for k in self.tensors if k.startswith(self.prefix)]


@dataclass(frozen=True)
class _Match:
    kind: str
    description: str
    layout: str | None
    prefix: str
    priority: int


def _prefixes(names: Iterable[str], anchor: str) -> list[str]:
    """Prefixes p (empty or ending in '.') such that p + anchor is a key; shortest first."""
    out = []
    for name in names:
        if name.endswith(anchor):
            p = name[: len(name) - len(anchor)]
            if p == "" or p.endswith("."):
                out.append(p)
    return sorted(set(out), key=len)


def _count_blocks(names: Iterable[str], prefix: str) -> int:
    """Contiguous block count from 0, as ComfyUI's count_blocks does."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = set()
    for n in names:
        m = pattern.match(n)
        if m:
            found.add(int(m.group(1)))
    count = 0
    while count in found:
        count += 1
    return count


def _layout_for(prefix: str, base: str) -> str:
    if base == "comfyui" and prefix:
        return "checkpoint"
    return base


def _detect_zimage_or_lumina(shapes: Shapes) -> list[_Match]:
    out = []
    for p in _prefixes(shapes, "cap_embedder.1.weight"):
        if p + "layers.0.adaLN_modulation.0.weight" in shapes:
            if p + "layers.0.attention.to_q.weight" in shapes or p + "all_x_embedder.2-1.weight" in shapes:
                out.append(_Match("zimage_dit", "a Z-Image DiT", "diffusers", p, 100))
            else:
                out.append(_Match("zimage_dit", "a Z-Image DiT", _layout_for(p, "comfyui"), p, 100))
        elif p + "layers.0.adaLN_modulation.1.weight" in shapes:
            out.append(_Match("lumina2_dit", "a Lumina 2 DiT", _layout_for(p, "comfyui"), p, 90))
    for p in _prefixes(shapes, "time_caption_embed.caption_embedder.1.weight"):
        out.append(_Match("lumina2_dit", "a Lumina 2 DiT", "diffusers", p, 90))
    return out


def _detect_flux(shapes: Shapes) -> list[_Match]:
    out = []
    for p in _prefixes(shapes, "double_blocks.0.img_attn.qkv.weight"):
        if p + "double_stream_modulation_img.lin.weight" in shapes:
            desc = "a Flux.2 DiT"
        elif any(k.startswith(p + "distilled_guidance_layer.") for k in shapes):
            desc = "a Chroma DiT (Flux-based)"
        else:
            desc = "a Flux DiT"
        out.append(_Match("flux_dit", desc, _layout_for(p, "comfyui"), p, 90))
    for p in _prefixes(shapes, "single_transformer_blocks.0.proj_out.weight"):
        if p + "x_embedder.weight" in shapes and p + "context_embedder.weight" in shapes:
            out.append(_Match("flux_dit", "a Flux DiT", "diffusers", p, 90))
    return out


def _context_dim(shapes: Shapes, prefix: str) -> int | None:
    for k, s in shapes.items():
        if k.startswith(prefix) and k.endswith("transformer_blocks.0.attn2.to_k.weight") and len(s) == 2:
            return int(s[1])
    return None


def _unet_match(shapes: Shapes, p: str, has_adm: bool, base: str) -> _Match:
    ctx = _context_dim(shapes, p)
    layout = _layout_for(p, base)
    if has_adm:
        desc = "an SDXL refiner UNet" if ctx == 1280 else "an SDXL UNet"
        return _Match("sdxl_unet", desc, layout, p, 80)
    desc = "an SD 2.x UNet" if ctx == 1024 else "an SD 1.x UNet"
    return _Match("sd1_unet", desc, layout, p, 80)


def _detect_unet(shapes: Shapes) -> list[_Match]:
    out = []
    for p in _prefixes(shapes, "input_blocks.0.0.weight"):
        if any(k.startswith(p + "middle_block.") for k in shapes):
            out.append(_unet_match(shapes, p, p + "label_emb.0.0.weight" in shapes, "comfyui"))
    for p in _prefixes(shapes, "time_embedding.linear_1.weight"):
        if p + "conv_in.weight" in shapes and p + "down_blocks.0.resnets.0.conv1.weight" in shapes:
            out.append(_unet_match(shapes, p, p + "add_embedding.linear_1.weight" in shapes, "diffusers"))
    return out


def _qwen3_ok(shapes: Shapes, p: str) -> bool:
    # Gemma 3 also has q_norm but adds post_feedforward_layernorm; Qwen 2.5 has k_proj biases.
    return (
        p + "layers.0.self_attn.q_proj.weight" in shapes
        and p + "layers.0.post_feedforward_layernorm.weight" not in shapes
        and p + "layers.0.self_attn.k_proj.bias" not in shapes
    )


def _detect_qwen3(shapes: Shapes) -> list[_Match]:
    out = []
    for p in _prefixes(shapes, "model.layers.0.self_attn.q_norm.weight"):
        if _qwen3_ok(shapes, p + "model."):
            out.append(_Match("qwen3_text_encoder", "a Qwen3 text encoder", _layout_for(p, "comfyui"), p, 50))
    if not out:
        for p in _prefixes(shapes, "layers.0.self_attn.q_norm.weight"):
            if _qwen3_ok(shapes, p):
                out.append(_Match("qwen3_text_encoder", "a Qwen3 text encoder", "transformers", p, 50))
    return out


def _detect_vae(shapes: Shapes) -> list[_Match]:
    out = []
    for p in _prefixes(shapes, "decoder.conv_in.weight"):
        s = shapes[p + "decoder.conv_in.weight"]
        if p + "decoder.up.0.block.0.conv1.weight" in shapes:
            base = "comfyui"
        elif p + "decoder.up_blocks.0.resnets.0.conv1.weight" in shapes:
            base = "diffusers"
        else:
            continue
        if len(s) != 4:
            continue  # video VAEs have 3D convolutions
        if s[1] == 16:
            out.append(_Match("flux_vae", "a Flux VAE", _layout_for(p, base), p, 40))
        else:
            # Not a kind of its own: reported as unknown with words that say which VAE it is.
            out.append(
                _Match(
                    "unknown",
                    f"a {s[1]}-channel VAE (SD 1.x/SDXL style, not the 16-channel Flux VAE)",
                    _layout_for(p, base),
                    p,
                    10,
                )
            )
    return out


_DETECTORS = (_detect_zimage_or_lumina, _detect_flux, _detect_unet, _detect_qwen3, _detect_vae)


def classify_shapes(shapes: Shapes) -> list[_Match]:
    """Every recognised component, best (the main model) first."""
    matches = [m for detect in _DETECTORS for m in detect(shapes)]
    return sorted(matches, key=lambda m: (-m.priority, len(m.prefix)))


def _bad_structure(path: str, what: str) -> ModelStructureError:
    return ModelStructureError(path, what, "The file is damaged or not a standard release; download it again")


def _zimage_config(path: str, shapes: Shapes, prefix: str, layout: str) -> ZImageDiTConfig:
    s = {k[len(prefix) :]: tuple(v) for k, v in shapes.items() if k.startswith(prefix)}
    if layout == "diffusers":
        try:
            s = _keys.diffusers_to_comfy_shapes(s)
        except (KeyError, ValueError) as e:
            raise _bad_structure(path, f"a diffusers-layout Z-Image DiT with inconsistent tensors: {e}") from None

    def need(name: str, ndim: int) -> tuple[int, ...]:
        shape = s.get(name)
        if shape is None or len(shape) != ndim:
            raise _bad_structure(path, f"a Z-Image DiT without a usable {prefix}{name} (shape {shape})")
        return shape

    dim, cap = need("cap_embedder.1.weight", 2)
    x_out, patch_in = need("x_embedder.weight", 2)
    (head_dim,) = need("layers.0.attention.q_norm.weight", 1)
    qkv_rows, _ = need("layers.0.attention.qkv.weight", 2)
    ffn_hidden, _ = need("layers.0.feed_forward.w1.weight", 2)
    _, adaln_dim = need("layers.0.adaLN_modulation.0.weight", 2)
    t_hidden, _ = need("t_embedder.mlp.0.weight", 2)
    patch = 2  # both layouts fix it: diffusers names it ("all_x_embedder.2-1"), ComfyUI hardcodes it
    if x_out != dim or head_dim <= 0 or dim % head_dim or patch_in % (patch * patch):
        raise _bad_structure(
            path, f"a Z-Image DiT with inconsistent widths (dim {dim}, x_embedder {x_out}x{patch_in}, head {head_dim})"
        )
    n_heads = dim // head_dim
    kv2 = qkv_rows // head_dim - n_heads
    if qkv_rows % head_dim or kv2 <= 0 or kv2 % 2:
        raise _bad_structure(
            path, f"a Z-Image DiT whose qkv ({qkv_rows} rows) does not fit {n_heads} heads of {head_dim}"
        )
    names = list(s)
    noise, context = _count_blocks(names, "noise_refiner."), _count_blocks(names, "context_refiner.")
    if noise != context:
        raise _bad_structure(path, f"a Z-Image DiT with {noise} noise-refiner but {context} context-refiner blocks")
    params = sum(math.prod(v) for v in s.values())
    return ZImageDiTConfig(
        dim=dim,
        n_layers=_count_blocks(names, "layers."),
        n_refiner_layers=noise,
        n_heads=n_heads,
        head_dim=head_dim,
        n_kv_heads=kv2 // 2,
        cap_feat_dim=cap,
        in_channels=patch_in // (patch * patch),
        patch_size=patch,
        ffn_hidden=ffn_hidden,
        has_pad_tokens="cap_pad_token" in s,
        t_embed_hidden=t_hidden,
        adaln_dim=adaln_dim,
        params=params,
    )


def _qwen3_config(path: str, shapes: Shapes, prefix: str, layout: str) -> Qwen3Config:
    base = prefix if layout == "transformers" else prefix + "model."

    def need(name: str, ndim: int) -> tuple[int, ...]:
        shape = shapes.get(base + name)
        if shape is None or len(shape) != ndim:
            raise _bad_structure(path, f"a Qwen3 text encoder without a usable {base}{name} (shape {shape})")
        return tuple(shape)

    vocab, hidden = need("embed_tokens.weight", 2)
    (head_dim,) = need("layers.0.self_attn.q_norm.weight", 1)
    q_rows, _ = need("layers.0.self_attn.q_proj.weight", 2)
    k_rows, _ = need("layers.0.self_attn.k_proj.weight", 2)
    inter, _ = need("layers.0.mlp.gate_proj.weight", 2)
    if q_rows % head_dim or k_rows % head_dim:
        raise _bad_structure(
            path, f"a Qwen3 text encoder whose attention ({q_rows}/{k_rows} rows) does not fit heads of {head_dim}"
        )
    params = sum(math.prod(v) for k, v in shapes.items() if k.startswith(prefix))
    return Qwen3Config(
        hidden_size=hidden,
        num_hidden_layers=_count_blocks(shapes, base + "layers."),
        num_attention_heads=q_rows // head_dim,
        num_key_value_heads=k_rows // head_dim,
        intermediate_size=inter,
        vocab_size=vocab,
        head_dim=head_dim,
        params=params,
    )


def inspect_model(path: str | os.PathLike) -> ModelInfo:
    """Identify a model file (.safetensors), a shard index json, or a folder (a diffusers
    `transformer/` folder or the repository root above it) from headers alone."""
    path = os.fspath(path)
    files, index = _resolve(path)
    if index is not None:
        files, tensors, metadata = _read_index(index)
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
        config = _zimage_config(path, shapes, main.prefix, main.layout)
    elif main.kind == "qwen3_text_encoder":
        config = _qwen3_config(path, shapes, main.prefix, main.layout)
    description = main.description
    if main.kind == "qwen3_text_encoder" and config.hidden_size == 2560 and config.num_hidden_layers == 36:
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
