"""Tiny Z-Image LoRA files, one per trainer convention, with that trainer's key names, orientation
and alpha convention (read from ai-toolkit, musubi-tuner networks/lora_zimage.py and its ComfyUI
converter, DiffSynth-Studio, OneTrainer's LoRASaverMixin, diffusers' train_dreambooth_lora_z_image.py,
SimpleTuner, LyCORIS). Each case also lists, independently of the pack's mapping, which model
weight region every module changes and by what merge rule, so a test can compute the expected
weights from the file itself.

Model names are ComfyUI's (`layers.0.attention.qkv.weight`); the trainers name modules in the
diffusers layout (`layers.0.attention.to_q`, `to_out.0`, `all_x_embedder.2-1`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

RANK = 4


@dataclass
class Mod:
    prefix: str  # the module's key prefix in the file
    weight: str  # model weight key (ComfyUI name)
    offset: tuple[int, int] | None  # (start row, rows) in a fused weight
    kind: str = "lora"  # lora / lokr / loha / lokr_w2 (w2 decomposed)
    dora: str | None = None  # output / input
    alpha: float | None = None  # the alpha the trainer's merge uses (None: = rank)


@dataclass
class Case:
    name: str  # row label
    trainer: str
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    mods: list[Mod] = field(default_factory=list)


def modules(shapes: dict, blocks=True, top=True, refiner_out=True):
    """(diffusers module name, model weight, offset) of the modules the trainers adapt."""
    dim = shapes["layers.0.attention.out.weight"][0]
    out = []
    names = sorted({k.split(".attention.")[0] for k in shapes if ".attention.qkv" in k})
    for block in names if blocks else []:
        for i, q in enumerate(("to_q", "to_k", "to_v")):
            out.append((f"{block}.attention.{q}", f"{block}.attention.qkv.weight", (i * dim, dim)))
        if refiner_out or not block.startswith(("noise_refiner", "context_refiner")):
            out.append((f"{block}.attention.to_out.0", f"{block}.attention.out.weight", None))
        for w in ("w1", "w2", "w3"):
            out.append((f"{block}.feed_forward.{w}", f"{block}.feed_forward.{w}.weight", None))
        if f"{block}.adaLN_modulation.0.weight" in shapes:
            out.append((f"{block}.adaLN_modulation.0", f"{block}.adaLN_modulation.0.weight", None))
    if top:
        out += [
            ("all_x_embedder.2-1", "x_embedder.weight", None),
            ("all_final_layer.2-1.linear", "final_layer.linear.weight", None),
            ("all_final_layer.2-1.adaLN_modulation.1", "final_layer.adaLN_modulation.1.weight", None),
            ("cap_embedder.1", "cap_embedder.1.weight", None),
            ("t_embedder.mlp.0", "t_embedder.mlp.0.weight", None),
            ("t_embedder.mlp.2", "t_embedder.mlp.2.weight", None),
        ]
    return out


def _rows_cols(shapes, weight, offset):
    rows, cols = shapes[weight]
    return (offset[1] if offset else rows), cols


class _Writer:
    def __init__(self, shapes, sd, seed):
        self.shapes, self.sd = shapes, sd
        self.gen = torch.Generator().manual_seed(seed)

    def rand(self, *shape, scale=0.05):
        return torch.randn(shape, generator=self.gen) * scale

    def lora(self, t, prefix, weight, offset, down, up, alpha=None, alpha_key="alpha", dora=None, dora_key=None):
        rows, cols = _rows_cols(self.shapes, weight, offset)
        t[f"{prefix}.{down}"] = self.rand(RANK, cols)
        t[f"{prefix}.{up}"] = self.rand(rows, RANK)
        if alpha is not None and alpha_key:
            t[f"{prefix}.{alpha_key}"] = torch.tensor(float(alpha))
        if dora:
            w = self.sd[weight]
            w = w[offset[0] : offset[0] + offset[1]] if offset else w
            if dora == "output":
                m = w.norm(dim=1) * (1 + 0.2 * torch.rand(rows, generator=self.gen))
                t[f"{prefix}.{dora_key}"] = m.reshape(rows, 1) if dora_key == "dora_scale" else m
            else:
                m = w.norm(dim=0) * (1 + 0.2 * torch.rand(cols, generator=self.gen))
                t[f"{prefix}.{dora_key}"] = m.reshape(1, cols)
        return Mod(prefix, weight, offset, "lora", dora, alpha)


def underscore(name: str) -> str:
    return name.replace(".", "_")


def cases(shapes: dict, sd: dict) -> list[Case]:
    """Every convention, on a model with these ComfyUI weight shapes and weights."""
    w = _Writer(shapes, sd, 7)
    out = []
    all_mods = modules(shapes)
    block_mods = modules(shapes, top=False)

    def simple(name, trainer, key, down, up, alpha=None, mods=all_mods, metadata=None, meta_alpha=None, **kw):
        t, ms = {}, []
        for module, weight, offset in mods:
            m = w.lora(t, key(module), weight, offset, down, up, alpha, **kw)
            if meta_alpha is not None:
                m.alpha = meta_alpha
            ms.append(m)
        out.append(Case(name, trainer, t, metadata or {}, ms))

    simple(
        "ai-toolkit LoRA (PEFT)",
        "ostris/ai-toolkit",
        lambda m: f"diffusion_model.{m}",
        "lora_A.weight",
        "lora_B.weight",
    )
    simple(
        "musubi-tuner / OneTrainer KOHYA",
        "kohya-ss/musubi-tuner",
        lambda m: f"lora_unet_{underscore(m)}",
        "lora_down.weight",
        "lora_up.weight",
        alpha=2.0,
        mods=block_mods,
    )
    simple(
        "DiffSynth-Studio (bare keys)",
        "modelscope/DiffSynth-Studio",
        lambda m: m,
        "lora_A.default.weight",
        "lora_B.default.weight",
    )
    simple(
        "OneTrainer DIFFUSERS (transformer.)",
        "Nerogar/OneTrainer",
        lambda m: f"transformer.{m}",
        "lora_down.weight",
        "lora_up.weight",
        alpha=1.0,
    )
    simple(
        "OneTrainer ORIGINAL (bare, lora_down)",
        "Nerogar/OneTrainer",
        lambda m: m,
        "lora_down.weight",
        "lora_up.weight",
        alpha=8.0,
    )
    for trainer, alpha in (("diffusers dreambooth", 8.0), ("SimpleTuner", 2.0)):
        meta = {"transformer.r": RANK, "transformer.lora_alpha": alpha, "transformer.use_dora": False}
        import json

        simple(
            f"{trainer}, alpha {alpha:g} in metadata",
            trainer,
            lambda m: f"transformer.{m}",
            "lora_A.weight",
            "lora_B.weight",
            metadata={"lora_adapter_metadata": json.dumps(meta)},
            meta_alpha=alpha,
        )

    # musubi's ComfyUI conversion: q/k/v fused block-diagonally into `attention_qkv` (rank 3r,
    # alpha 3x so alpha/rank stays); `to_out_0` renamed `out` in the main layers only.
    t, ms = {}, []
    for module, weight, offset in block_mods:
        block, _, leaf = module.partition(".attention.")
        if leaf in ("to_k", "to_v"):
            continue
        if leaf == "to_q":
            rows, cols = _rows_cols(shapes, weight, None)
            prefix = f"lora_unet_{underscore(block)}_attention_qkv"
            t[f"{prefix}.lora_down.weight"] = w.rand(3 * RANK, cols)
            up = torch.zeros(rows, 3 * RANK)
            for i in range(3):
                up[i * rows // 3 : (i + 1) * rows // 3, i * RANK : (i + 1) * RANK] = w.rand(rows // 3, RANK)
            t[f"{prefix}.lora_up.weight"] = up
            t[f"{prefix}.alpha"] = torch.tensor(6.0)
            ms.append(Mod(prefix, weight, None, "lora", None, 6.0))
            continue
        name = module
        if leaf == "to_out.0" and block.startswith("layers"):
            name = f"{block}.attention.out"
        ms.append(w.lora(t, f"lora_unet_{underscore(name)}", weight, offset, "lora_down.weight", "lora_up.weight", 2.0))
    out.append(Case("musubi ComfyUI conversion (fused qkv, refiner to_out_0)", "kohya-ss/musubi-tuner", t, {}, ms))

    # musubi's ComfyUI conversion of a LoHa: q/k/v fused losslessly (hada_w*_a block-diagonal,
    # hada_w*_b stacked, rank and alpha 3x); other modules keep their names.
    t, ms = {}, []
    for module, weight, offset in block_mods:
        block, _, leaf = module.partition(".attention.")
        rows, cols = _rows_cols(shapes, weight, offset)
        if leaf in ("to_k", "to_v"):
            continue
        if leaf == "to_q":
            p = f"lora_unet_{underscore(block)}_attention_qkv"
            for w_ in ("w1", "w2"):
                t[f"{p}.hada_{w_}_a"] = torch.block_diag(*[w.rand(rows, RANK) for _ in range(3)])
                t[f"{p}.hada_{w_}_b"] = torch.cat([w.rand(RANK, cols) for _ in range(3)])
            t[f"{p}.alpha"] = torch.tensor(6.0)
            ms.append(Mod(p, weight, None, "loha", None, 6.0))
            continue
        name = f"{block}.attention.out" if leaf == "to_out.0" and block.startswith("layers") else module
        p = f"lora_unet_{underscore(name)}"
        t[f"{p}.hada_w1_a"], t[f"{p}.hada_w1_b"] = w.rand(rows, RANK), w.rand(RANK, cols)
        t[f"{p}.hada_w2_a"], t[f"{p}.hada_w2_b"] = w.rand(rows, RANK), w.rand(RANK, cols)
        t[f"{p}.alpha"] = torch.tensor(2.0)
        ms.append(Mod(p, weight, offset, "loha", None, 2.0))
    out.append(Case("musubi ComfyUI conversion, LoHa (block-diagonal qkv)", "kohya-ss/musubi-tuner", t, {}, ms))

    # Fused and split names in one file, dotted part names.
    t, ms = {}, []
    dim = shapes["layers.0.attention.out.weight"][0]
    for i, q in enumerate("qkv"):
        ms.append(
            w.lora(
                t,
                f"diffusion_model.layers.0.attention.to.{q}",
                "layers.0.attention.qkv.weight",
                (i * dim, dim),
                "lora.down.weight",
                "lora.up.weight",
                4.0,
            )
        )
    for module, weight in (
        ("diffusion_model.layers.0.attention.out", "layers.0.attention.out.weight"),
        ("diffusion_model.layers.1.attention.qkv", "layers.1.attention.qkv.weight"),
        ("diffusion_model.layers.1.attention.to_out.0", "layers.1.attention.out.weight"),
    ):
        ms.append(w.lora(t, module, weight, None, "lora.down.weight", "lora.up.weight", 4.0))
    out.append(Case("fused and split names mixed", "mixed", t, {}, ms))

    # LoKr / LoHa.
    for name, key, kind in (
        ("ai-toolkit LoKr (full w1, w2)", lambda m: f"diffusion_model.{m}", "lokr"),
        ("LyCORIS LoKr, old lycoris_ names (w2 = w2_a w2_b)", lambda m: f"lycoris_{underscore(m)}", "lokr_w2"),
        ("LyCORIS LoHa", lambda m: f"lycoris_{underscore(m)}", "loha"),
    ):
        t, ms = {}, []
        for module, weight, offset in block_mods:
            rows, cols = _rows_cols(shapes, weight, offset)
            p = key(module)
            if kind == "loha":
                t[f"{p}.hada_w1_a"], t[f"{p}.hada_w1_b"] = w.rand(rows, RANK), w.rand(RANK, cols)
                t[f"{p}.hada_w2_a"], t[f"{p}.hada_w2_b"] = w.rand(rows, RANK), w.rand(RANK, cols)
                t[f"{p}.alpha"] = torch.tensor(2.0)
                ms.append(Mod(p, weight, offset, "loha", None, 2.0))
                continue
            f = 4 if rows % 4 == 0 and cols % 4 == 0 else 1
            t[f"{p}.lokr_w1"] = w.rand(f, f, scale=0.5)
            if kind == "lokr":
                t[f"{p}.lokr_w2"] = w.rand(rows // f, cols // f)
                t[f"{p}.alpha"] = torch.tensor(float(RANK))
                ms.append(Mod(p, weight, offset, "lokr", None, None))
            else:
                t[f"{p}.lokr_w2_a"], t[f"{p}.lokr_w2_b"] = w.rand(rows // f, RANK), w.rand(RANK, cols // f)
                t[f"{p}.alpha"] = torch.tensor(2.0)
                ms.append(Mod(p, weight, offset, "lokr_w2", None, 2.0))
        out.append(Case(name, "LyCORIS", t, {}, ms))

    # ai-toolkit LoKr saved in fp16: alpha overflows to inf (unused: both factors whole).
    fp16 = Case("ai-toolkit LoKr fp16, alpha inf", "ostris/ai-toolkit", {}, {}, [])
    for k, v in out[-3].tensors.items():
        fp16.tensors[k] = torch.tensor(float("inf"), dtype=torch.float16) if k.endswith(".alpha") else v.half()
    fp16.mods = [Mod(m.prefix, m.weight, m.offset, "lokr", None, None) for m in out[-3].mods]
    out.append(fp16)

    # DoRA in every naming.
    attn = [m for m in block_mods if ".attention." in m[0] or ".feed_forward." in m[0]]
    simple(
        "DoRA ai-toolkit (.magnitude)", "ostris/ai-toolkit", lambda m: f"diffusion_model.{m}", "lora_A.weight", "lora_B.weight",
        mods=attn, dora="output", dora_key="magnitude",
    )  # fmt: skip
    simple(
        "DoRA diffusers (lora_magnitude_vector.weight)", "diffusers", lambda m: f"transformer.{m}", "lora_A.weight", "lora_B.weight",
        mods=attn, dora="output", dora_key="lora_magnitude_vector.weight",
    )  # fmt: skip
    simple(
        "DoRA SimpleTuner (lora_magnitude_vector)", "SimpleTuner", lambda m: f"transformer.{m}", "lora_A.weight", "lora_B.weight",
        mods=attn, dora="output", dora_key="lora_magnitude_vector",
    )  # fmt: skip
    simple(
        "DoRA LyCORIS dora_wd (dora_scale (out, 1))", "LyCORIS", lambda m: f"lycoris_{underscore(m)}", "lora_down.weight",
        "lora_up.weight", alpha=2.0, mods=attn, dora="output", dora_key="dora_scale",
    )  # fmt: skip
    simple(
        "DoRA OneTrainer, output axis", "Nerogar/OneTrainer", lambda m: f"transformer.{m}", "lora_down.weight",
        "lora_up.weight", alpha=1.0, mods=attn, dora="output", dora_key="dora_scale",
    )  # fmt: skip
    simple(
        "DoRA OneTrainer, input axis (dora_scale (1, in))", "Nerogar/OneTrainer", lambda m: f"transformer.{m}",
        "lora_down.weight", "lora_up.weight", alpha=1.0, mods=attn, dora="input", dora_key="dora_scale",
    )  # fmt: skip
    return out


def delta(case: Case, mod: Mod, W: torch.Tensor, strength: float) -> torch.Tensor:
    """The trainer's merge of one module, minus W, at this strength (W: the region it changes)."""
    t = {k[len(mod.prefix) + 1 :]: v.float() for k, v in case.tensors.items() if k.startswith(mod.prefix + ".")}

    def pick(*names):
        return next(t[n] for n in names if n in t)

    if mod.kind == "lokr":
        return strength * torch.kron(t["lokr_w1"], t["lokr_w2"])
    if mod.kind == "lokr_w2":
        rank = t["lokr_w2_b"].shape[0]
        return strength * torch.kron(t["lokr_w1"], t["lokr_w2_a"] @ t["lokr_w2_b"]) * (mod.alpha / rank)
    if mod.kind == "loha":
        rank = t["hada_w1_b"].shape[0]
        return strength * (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"]) * (mod.alpha / rank)
    up = pick("lora_B.weight", "lora_up.weight", "lora.up.weight", "lora_B.default.weight")
    down = pick("lora_A.weight", "lora_down.weight", "lora.down.weight", "lora_A.default.weight")
    rank = down.shape[0]
    dW = ((mod.alpha if mod.alpha is not None else rank) / rank) * up @ down
    if mod.dora is None:
        return strength * dW
    V = W + dW
    m = pick("magnitude", "lora_magnitude_vector.weight", "lora_magnitude_vector", "dora_scale")
    if mod.dora == "output":
        merged = m.reshape(-1, 1) * V / V.norm(dim=1, keepdim=True)
    else:
        merged = m.reshape(1, -1) * V / V.norm(dim=0, keepdim=True)
    return strength * (merged - W)


def expected(case: Case, sd: dict, strength: float) -> dict[str, torch.Tensor]:
    """Model weight key -> expected patched weight, for every weight the case changes."""
    out = {}
    for mod in case.mods:
        W = out.get(mod.weight, sd[mod.weight].float().clone())
        region = W[mod.offset[0] : mod.offset[0] + mod.offset[1]] if mod.offset else W
        region += delta(case, mod, region.clone(), strength)
        out[mod.weight] = W
    return out


def other_family_files() -> dict[str, tuple[dict, str]]:
    """Files that are not Z-Image LoRAs: name -> (tensors, the family the refusal must name)."""
    r = torch.zeros(4, 8)
    return {
        "sdxl_lora.safetensors": ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": r}, "SDXL"),
        "flux_lora.safetensors": ({"diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight": r}, "Flux"),
        "qwen_image_lora.safetensors": ({"transformer_blocks.0.img_mlp.net.0.proj.lora_A.weight": r}, "Qwen-Image"),
        "zimage_full_model.safetensors": ({"layers.0.attention.qkv.weight": torch.zeros(12, 4)}, "whole Z-Image model"),
        "vae_not_lora.safetensors": ({"encoder.conv_in.weight": torch.zeros(4, 3, 3, 3)}, "not a LoRA"),
    }
