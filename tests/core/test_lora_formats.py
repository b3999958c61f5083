"""LoRA formats recognised and mapped from the header alone, alpha read before use, other families
refused, and tools/convert_lora.py writing the ComfyUI-native form (no ComfyUI needed)."""

import json
import subprocess
import sys
from pathlib import Path

import lora_files
import pytest
import torch
from safetensors.torch import load_file, save_file

from zimage_nodes.core.lora_convert import model_targets, plan_lora, zimage_shapes
from zimage_nodes.core.lora_formats import LoraFileError, metadata_alpha, split_key

PACK_DIR = Path(__file__).resolve().parents[2]
SMALL = zimage_shapes(dim=256, n_layers=2, n_refiner=1, ffn=768, cap_dim=64)


def _model_sd():
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=g) * 0.05 for k, s in SMALL.items()}


def _plan(case, path="x.safetensors"):
    t = case.tensors
    return plan_lora(path, t, case.metadata, SMALL, lambda k: float(t[k].float().reshape(-1)[0]))


@pytest.mark.parametrize("case", lora_files.cases(SMALL, _model_sd()), ids=lambda c: c.name)
def test_every_convention_places_every_key_on_the_weight_the_trainer_meant(case):
    plan = _plan(case)
    assert not plan.unplaced, plan.summary()
    assert plan.placed_keys == len(case.tensors)
    got = {m.parts[next(iter(m.parts))].rsplit(".", 1)[0]: (m.target.weight, m.target.offset) for m in plan.modules}
    for mod in case.mods:
        placed = [v for k, v in got.items() if k.startswith(mod.prefix)]
        want = (mod.weight, None if mod.offset is None else (0, *mod.offset))
        assert want in placed, (mod.prefix, placed)
        dora = {m.dora_axis for m in plan.modules if m.parts[next(iter(m.parts))].startswith(mod.prefix + ".")}
        assert dora == {mod.dora}


def test_split_key_and_targets_on_dotted_and_underscored_names():
    assert split_key("diffusion_model.layers.0.attention.to.q.lora.down.weight") == (
        "ai-toolkit / ComfyUI", "layers_0_attention_to_q", "lora_down.weight")  # fmt: skip
    assert split_key("layers.3.attention.to_k.lora_A.default.weight")[1:] == (
        "layers_3_attention_to_k",
        "lora_down.weight",
    )
    assert split_key("something.else.weight") is None
    targets = model_targets(SMALL)
    assert targets["layers_1_attention_to_v"].offset == (0, 512, 256)
    assert targets["noise_refiner_0_attention_to_out_0"].weight == "noise_refiner.0.attention.out.weight"
    assert targets["all_final_layer_2-1_adaLN_modulation_1"].weight == "final_layer.adaLN_modulation.1.weight"


def test_metadata_alpha_flat_nested_and_kohya():
    flat = {"lora_adapter_metadata": json.dumps({"transformer.r": 4, "transformer.lora_alpha": 8})}
    nested = {"peft_config": json.dumps({"transformer": {"r": 16, "lora_alpha": 4}})}
    assert metadata_alpha(flat) == (8.0, 4.0, "lora_adapter_metadata")
    assert metadata_alpha(nested) == (4.0, 16.0, "peft_config")
    assert metadata_alpha({"ss_network_alpha": "2", "ss_network_dim": "8"}) == (2.0, 8.0, "ss_network_alpha")
    assert metadata_alpha({"other": "x"}) is None


def test_inf_alpha_refused_where_used_ignored_for_full_matrix_lokr():
    down, up = torch.zeros(4, 256), torch.zeros(256, 4)
    t = {
        "lora_unet_layers_0_attention_to_q.lora_down.weight": down,
        "lora_unet_layers_0_attention_to_q.lora_up.weight": up,
    }
    t["lora_unet_layers_0_attention_to_q.alpha"] = torch.tensor(float("inf"))
    with pytest.raises(LoraFileError, match=r"alpha 'lora_unet_layers_0_attention_to_q.alpha' is inf"):
        plan_lora("f.safetensors", t, {}, SMALL, lambda k: float(t[k]))
    lokr = {"diffusion_model.layers.0.attention.to_out.0.lokr_w1": torch.zeros(4, 4)}
    lokr["diffusion_model.layers.0.attention.to_out.0.lokr_w2"] = torch.zeros(64, 64)
    lokr["diffusion_model.layers.0.attention.to_out.0.alpha"] = torch.tensor(float("inf"), dtype=torch.float16)
    plan = plan_lora("f.safetensors", lokr, {}, SMALL, lambda k: float(lokr[k]))
    assert plan.modules[0].alpha is None and "unused" in plan.summary()


@pytest.mark.parametrize("name", list(lora_files.other_family_files()))
def test_other_families_refused_with_the_family_named(name):
    tensors, family = lora_files.other_family_files()[name]
    with pytest.raises(LoraFileError) as e:
        plan_lora(name, tensors, {}, SMALL, lambda k: 1.0)
    assert family in str(e.value) and name in str(e.value)


def test_convert_cli_writes_the_native_form_and_never_overwrites(tmp_path):
    t = {"lora_unet_layers_4_attention_to_q.lora_down.weight": torch.randn(4, 3840)}
    t["lora_unet_layers_4_attention_to_q.lora_up.weight"] = torch.randn(3840, 4)
    t["lora_unet_layers_4_attention_to_q.alpha"] = torch.tensor(2.0)
    src, dst = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    save_file(t, str(src))
    before = src.read_bytes()
    cli = [sys.executable, str(PACK_DIR / "tools" / "convert_lora.py")]
    r = subprocess.run([*cli, str(src), str(dst)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "1 modules patched (3 keys)" in r.stdout
    out = load_file(str(dst))
    assert set(out) == {
        f"diffusion_model.layers.4.attention.to_q.{p}" for p in ("lora_down.weight", "lora_up.weight", "alpha")
    }
    assert torch.equal(
        out["diffusion_model.layers.4.attention.to_q.lora_up.weight"],
        t["lora_unet_layers_4_attention_to_q.lora_up.weight"],
    )
    for target in (src, dst):
        r = subprocess.run([*cli, str(src), str(target)], capture_output=True, text=True)
        assert r.returncode == 2 and "nothing is overwritten" in r.stderr
    assert src.read_bytes() == before


def test_two_names_of_one_weight_identical_applied_once_different_both():
    g = torch.Generator().manual_seed(1)
    down, up = torch.randn(4, 256, generator=g), torch.randn(256, 4, generator=g)
    t = {}
    for name in ("attention.out", "attention.to_out.0"):
        t[f"diffusion_model.layers.0.{name}.lora_A.weight"] = down
        t[f"diffusion_model.layers.0.{name}.lora_B.weight"] = up
    plan = plan_lora("f.safetensors", t, {}, SMALL, lambda k: 1.0)
    assert len(plan.modules) == 1 and "identical copies, applied once" in plan.summary()
    t["diffusion_model.layers.0.attention.to_out.0.lora_B.weight"] = up * 2
    plan = plan_lora("f.safetensors", t, {}, SMALL, lambda k: 1.0)
    assert len(plan.modules) == 2 and "different changes, both applied" in plan.summary()


def test_a_lora_whose_keys_all_miss_the_model_is_refused():
    t = {"diffusion_model.blocks.3.attn.proj.lora_A.weight": torch.zeros(4, 8)}
    t["diffusion_model.blocks.3.attn.proj.lora_B.weight"] = torch.zeros(8, 4)
    with pytest.raises(LoraFileError, match=r"none of its 2 keys fits a Z-Image model"):
        plan_lora("other.safetensors", t, {}, SMALL, lambda k: 1.0)
