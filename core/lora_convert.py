"""Every key of a Z-Image LoRA mapped onto the model's own weights, and alpha read before it is used.

The model's weights are ComfyUI's names (`layers.N.attention.qkv.weight`, ...). A trainer names a
module by the diffusers layout (`to_q`/`to_k`/`to_v` are row slices of the fused `qkv` at offsets
0, dim, 2*dim; `to_out.0` is `out`; `all_x_embedder.2-1` is `x_embedder`) or by ComfyUI's, with
dots or underscores. Matching is on the canonical form (every dot an underscore), which is unique
for this model's names.

Alpha, in this order: the module's own `.alpha` key, the file's metadata, the rank (scale 1).
An alpha is only read where the format uses it: a LoKr with both factors stored whole ignores it
(ai-toolkit saves it as inf in fp16 files), so it is dropped there instead of divided.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from .lora_formats import (
    TEXT_ENCODER_PREFIXES,
    LoraFileError,
    canonical,
    finite,
    metadata_alpha,
    recognise,
    refuse_other_family,
    split_key,
)

# diffusers / trainer module names -> ComfyUI module names, per block (suffix after `<block>.N.`).
BLOCK_ALIASES = {"attention.to_out.0": "attention.out", "attention.to.out.0": "attention.out"}
TOP_ALIASES = {"all_x_embedder.2-1": "x_embedder", "all_final_layer.2-1.linear": "final_layer.linear"}
TOP_ALIASES["all_final_layer.2-1.adaLN_modulation.1"] = "final_layer.adaLN_modulation.1"


PREFIX = "diffusion_model."


def zimage_shapes(dim=3840, n_layers=30, n_refiner=2, ffn=10240, cap_dim=2560, patch_in=64) -> dict[str, tuple]:
    """The 2-D weights of ComfyUI's Z-Image DiT (the released size by default), for mapping a LoRA
    without a model at hand (tools/convert_lora.py)."""
    adaln = min(dim, 256)
    shapes = {}
    blocks = [f"layers.{i}" for i in range(n_layers)]
    blocks += [f"{r}.{i}" for r in ("noise_refiner", "context_refiner") for i in range(n_refiner)]
    for b in blocks:
        shapes[f"{b}.attention.qkv.weight"] = (3 * dim, dim)
        shapes[f"{b}.attention.out.weight"] = (dim, dim)
        shapes[f"{b}.feed_forward.w1.weight"] = (ffn, dim)
        shapes[f"{b}.feed_forward.w2.weight"] = (dim, ffn)
        shapes[f"{b}.feed_forward.w3.weight"] = (ffn, dim)
        if not b.startswith("context_refiner"):
            shapes[f"{b}.adaLN_modulation.0.weight"] = (4 * dim, adaln)
    shapes["x_embedder.weight"] = (dim, patch_in)
    shapes["final_layer.linear.weight"] = (patch_in, dim)
    shapes["final_layer.adaLN_modulation.1.weight"] = (dim, adaln)
    shapes["cap_embedder.1.weight"] = (dim, cap_dim)
    shapes["t_embedder.mlp.0.weight"] = (min(dim, 1024), 256)
    shapes["t_embedder.mlp.2.weight"] = (256, min(dim, 1024))
    return shapes


@dataclass(frozen=True)
class Target:
    weight: str  # the model's weight key (ComfyUI name, no `diffusion_model.`)
    offset: tuple[int, int, int] | None = None  # (dim, start, length): a row slice of a fused weight
    native: str = ""  # the module name in ComfyUI-native LoRA form (what the converter writes)


def model_targets(model_shapes: dict[str, tuple]) -> dict[str, Target]:
    """Canonical module name -> Target, for every 2-D weight of the model and its aliases."""
    targets: dict[str, Target] = {}

    def add(name: str, target: Target):
        targets.setdefault(canonical(name), target)

    for key, shape in model_shapes.items():
        if not key.endswith(".weight") or len(shape) != 2:
            continue
        module = key[: -len(".weight")]
        if module.endswith(".attention.qkv"):
            dim = shape[0] // 3
            block = module[: -len(".qkv")]
            add(module, Target(key, None, module))
            for i, name in enumerate(("to_q", "to_k", "to_v")):
                add(f"{block}.{name}", Target(key, (0, i * dim, dim), f"{block}.{name}"))
                add(f"{block}.to.{name[-1]}", Target(key, (0, i * dim, dim), f"{block}.{name}"))
            continue
        add(module, Target(key, None, module))
        for alias, real in {**BLOCK_ALIASES, **TOP_ALIASES}.items():
            if module.endswith(real) and (module == real or module.endswith("." + real)):
                add(module[: len(module) - len(real)] + alias, Target(key, None, module))
    return targets


@dataclass
class Module:
    """One adapted module of the file: its parts (ComfyUI part name -> file key) and placement."""

    source: str  # canonical module path without the trainer's prefix
    parts: dict[str, str] = field(default_factory=dict)
    target: Target | None = None
    kind: str = "lora"
    dora_axis: str | None = None  # "output" or "input"
    alpha: float | None = None  # what ComfyUI gets as `.alpha` (None: scale 1)
    rank: int | None = None
    alpha_source: str = ""

    @property
    def name(self) -> str:
        return self.target.native if self.target else self.source


@dataclass
class LoraPlan:
    path: str
    format: str
    modules: list[Module]
    unplaced: dict[str, list[str]]  # group label -> file keys
    text_encoder_keys: list[str]
    alpha_sources: dict[str, int]
    # (first module, other module, identical) for two names of one weight region: identical copies
    # are applied once, different ones both (each is a change the file asks for).
    duplicates: list[tuple[str, str, bool]]

    @property
    def placed_keys(self) -> int:
        return sum(len(m.parts) for m in self.modules)

    def summary(self) -> str:
        lines = [f"{self.format}: {len(self.modules)} modules patched ({self.placed_keys} keys)"]
        lines += [f"alpha {src}: {n} modules" for src, n in sorted(self.alpha_sources.items())]
        dora = defaultdict(int)
        for m in self.modules:
            if m.dora_axis:
                dora[m.dora_axis] += 1
        lines += [
            f"DoRA, magnitude per {axis} {'row' if axis == 'output' else 'column'}: {n} modules"
            for axis, n in dora.items()
        ]
        for kept, other, same in self.duplicates:
            how = "identical copies, applied once" if same else "different changes, both applied"
            lines.append(f"'{other}' and '{kept}' name the same weight: {how}")
        if self.text_encoder_keys:
            lines.append(f"{len(self.text_encoder_keys)} text-encoder keys (applied to CLIP when connected)")
        for group, keys in self.unplaced.items():
            lines.append(f"{len(keys)} keys of `{group}`: not in this model (e.g. {keys[0]})")
        return "\n".join(lines)


_BLOCK = re.compile(r"^(layers|noise_refiner|context_refiner)_(\d+)_")


def _group(source: str) -> str:
    m = _BLOCK.match(source)
    return f"{m.group(1)}.{m.group(2)}.*" if m else source.split("_")[0] + "*"


def plan_lora(
    path: str,
    tensors: dict,
    metadata: dict[str, str],
    model_shapes: dict[str, tuple],
    read_scalar,
) -> LoraPlan:
    """Place every key of the file. `tensors` maps file key -> an object with `.shape` (header
    entries do); `read_scalar(key)` returns the value of a one-element tensor (alpha keys)."""
    keys = list(tensors)
    refuse_other_family(path, keys)
    fmt = recognise(keys, metadata)
    targets = model_targets(model_shapes)
    modules: dict[str, Module] = {}
    unplaced: dict[str, list[str]] = defaultdict(list)
    te_keys = []
    for key in keys:
        if key.startswith(TEXT_ENCODER_PREFIXES):
            te_keys.append(key)
            continue
        parsed = split_key(key)
        if parsed is None:
            unplaced["not a LoRA part"].append(key)
            continue
        _, source, part = parsed
        modules.setdefault(source, Module(source)).parts[part] = key

    meta = metadata_alpha(metadata)
    placed: list[Module] = []
    regions: dict[tuple, Module] = {}
    duplicates = []
    alpha_sources: dict[str, int] = defaultdict(int)
    for source, module in modules.items():
        target = targets.get(source)
        if target is None:
            unplaced[_group(source)].extend(module.parts.values())
            continue
        module.target = target
        shape = model_shapes[target.weight]
        rows = target.offset[2] if target.offset else shape[0]
        p = module.parts
        if "lokr_w1" in p or "lokr_w1_a" in p:
            module.kind = "lokr"
        elif "hada_w1_a" in p:
            module.kind = "loha"
        elif "lora_down.weight" in p:
            module.kind = "lora"
            module.rank = tensors[p["lora_down.weight"]].shape[0]
        elif "diff" in p:
            module.kind = "diff"
        else:
            unplaced["incomplete (no lora_down/lora_A, lokr or hada weights)"].extend(p.values())
            continue
        if module.kind == "lokr":
            module.rank = next((tensors[p[k]].shape[0] for k in ("lokr_w1_b", "lokr_w2_b") if k in p), None)
        if module.kind == "loha":
            module.rank = tensors[p["hada_w1_b"]].shape[0]
        for part in ("magnitude", "dora_scale"):
            if part in p:
                mshape = tuple(tensors[p[part]].shape)
                cols = shape[1]
                if mshape in ((rows,), (rows, 1)):
                    module.dora_axis = "output"
                elif mshape == (1, cols):
                    module.dora_axis = "input"
                else:
                    raise LoraFileError(
                        path,
                        f"DoRA magnitude '{p[part]}' has shape {list(mshape)}, which fits neither axis of "
                        f"'{target.weight}' ({rows} x {cols})",
                        "The file is damaged or for another model",
                    )
        _alpha(path, module, read_scalar, meta, alpha_sources)
        region = (target.weight, target.offset)
        first = regions.setdefault(region, module)
        if first is not module:
            same = _same_parts(tensors, first, module)
            duplicates.append((first.source, module.source, same))
            if same:
                continue
        placed.append(module)
    if not placed and not te_keys:
        first = next(iter(unplaced.values()))[0]
        raise LoraFileError(
            path,
            f"none of its {len(keys)} keys fits a Z-Image model (e.g. '{first}'): a LoRA for another model",
            "Pick a LoRA trained for Z-Image / Z-Image-Turbo",
        )
    return LoraPlan(path, fmt, placed, dict(unplaced), te_keys, dict(alpha_sources), duplicates)


def _same_parts(tensors, a: Module, b: Module) -> bool:
    if set(a.parts) != set(b.parts):
        return False
    for part in a.parts:
        x, y = tensors[a.parts[part]], tensors[b.parts[part]]
        if not (
            isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape == y.shape and torch.equal(x, y)
        ):
            return False
    return True


def _alpha(path, module: Module, read_scalar, meta, sources):
    p = module.parts
    uses_alpha = module.kind in ("lora", "loha") or (module.kind == "lokr" and ("lokr_w1_a" in p or "lokr_w2_a" in p))
    if not uses_alpha:
        # Full-matrix LoKr (and diffs) have no rank to divide by: alpha is unused, whatever it holds.
        module.alpha, module.alpha_source = None, "unused (full-matrix LoKr)" if module.kind == "lokr" else "unused"
        sources[module.alpha_source] += 1
        return
    if "alpha" in p:
        value = read_scalar(p["alpha"])
        if not finite(value):
            raise LoraFileError(
                path,
                f"alpha '{p['alpha']}' is {value}, and this module's scale is alpha / rank",
                "The file was saved with an overflowing alpha (fp16); re-save it with alpha in fp32",
            )
        module.alpha = value
        module.alpha_source = "from the .alpha keys"
    elif meta is not None:
        value, meta_rank, meta_key = meta
        if not finite(value):
            raise LoraFileError(path, f"the metadata alpha ({meta_key}) is {value}", "Fix the file's metadata")
        module.alpha = value
        module.alpha_source = f"{value:g} of rank {module.rank}, from the file's metadata ({meta_key})"
    else:
        module.alpha = None
        module.alpha_source = "= rank (no alpha in the file: scale 1)"
    sources[module.alpha_source] += 1


def native_state_dict(plan: LoraPlan, tensors: dict) -> dict:
    """The file in ComfyUI-native form: `diffusion_model.<module>.<part>` with ComfyUI's part names
    (lora_up/lora_down/alpha/dora_scale, lokr_*, hada_*), split q/k/v kept split (ComfyUI maps them
    onto the fused qkv), alpha written as a key where it came from the metadata or the rank."""
    out: dict[str, torch.Tensor] = {}
    for m in plan.modules:
        base = PREFIX + m.name
        for part, key in m.parts.items():
            t = tensors[key]
            if part in ("magnitude", "dora_scale"):
                rows = m.target.offset[2] if m.target.offset else t.shape[0]
                t = t.reshape(rows, 1) if m.dora_axis == "output" else t.reshape(1, -1)
                part = "dora_scale"
            if part == "alpha":
                continue
            out[f"{base}.{part}"] = t
        if m.alpha is not None:
            out[f"{base}.alpha"] = torch.tensor(float(m.alpha))
    return out
