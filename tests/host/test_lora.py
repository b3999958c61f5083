"""Z-Image LoRA node: one tiny LoRA per trainer convention (tests/lora_files.py), applied through the
node and through ComfyUI's own LoraLoaderModelOnly, every patched weight compared with the merge
the trainer defines, computed here from the file. With ZIMAGE_LORA_TABLE_DIR set, the comparison
table (the README's) is written there as lora_table_v<ComfyUI version>.md."""

import logging
import os
from pathlib import Path

import lora_files
import pytest
import torch

pytestmark = pytest.mark.host

STRENGTH = 0.8
TOL = 1e-6


def _patcher(seed=0):
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    from zimage_nodes.tools import demo_weights

    model_config = comfy.supported_models.ZImage(demo_weights.unet_config())
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    demo_weights.fill_random(model.diffusion_model, seed).eval()
    device = mm.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


@pytest.fixture
def fresh_guard(pack):
    """The batched forward's guard with no verdicts: its first guided step verifies again."""
    pack.host.batched_cfg.GUARD.reset()
    return pack.host.batched_cfg.GUARD


@pytest.fixture(scope="module")
def zmodel(host):
    return _patcher()


@pytest.fixture(scope="module")
def base_sd(zmodel):
    return {k: v.detach().clone() for k, v in zmodel.model.diffusion_model.state_dict().items()}


@pytest.fixture(scope="module")
def loras(host, tmp_path_factory, base_sd):
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("loras")
    host.add_model_folder("loras", root)
    shapes = {k: tuple(v.shape) for k, v in base_sd.items()}
    written = {}
    for i, case in enumerate(lora_files.cases(shapes, base_sd)):
        name = f"case{i:02d}.safetensors"
        save_file(
            {k: v.contiguous() for k, v in case.tensors.items()}, str(root / name), metadata=case.metadata or None
        )
        written[name] = case
    return root, written


def weights(patcher) -> dict:
    """The diffusion model's weights with the patcher's patches applied (ComfyUI's patch_model),
    then unpatched again."""
    patcher.patch_model()
    try:
        return {k: v.detach().float().clone() for k, v in patcher.model.diffusion_model.state_dict().items()}
    finally:
        patcher.unpatch_model()


def run_node(host, model, name, strength=STRENGTH, strict=True, clip=None):
    cls = host.node_class("ZINodesLoRA")
    out = cls.execute(model=model, lora_name=name, strength_model=strength, strict=strict, clip=clip, strength_clip=1.0)
    return out.args[0], out.ui.as_dict()["text"][0]


def max_error(got: dict, case, base_sd, strength) -> float:
    want = lora_files.expected(case, base_sd, strength)
    err = 0.0
    for k, w in got.items():
        ref = want.get(k, base_sd[k].float())
        err = max(err, (w - ref).abs().max().item())
    return err


class _NotLoaded(logging.Handler):
    def __init__(self):
        super().__init__()
        self.keys = []

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("lora key not loaded: "):
            self.keys.append(msg.split(": ", 1)[1])


def comfy_loader(host, model, name):
    handler = _NotLoaded()
    logging.getLogger().addHandler(handler)
    try:
        patched = host.call("LoraLoaderModelOnly", model=model, lora_name=name, strength_model=STRENGTH)[0]
    finally:
        logging.getLogger().removeHandler(handler)
    return patched, handler.keys


def test_every_convention_loads_whole_and_exact_and_comfyui_is_measured(host, zmodel, base_sd, loras):
    _, written = loras
    rows = []
    for name, case in written.items():
        patched, text = run_node(host, zmodel, name)
        got = weights(patched)
        err = max_error(got, case, base_sd, STRENGTH)
        assert err <= TOL, f"{case.name}: max weight error {err:.3g}\n{text}"
        assert "not in this model" not in text, text
        assert f"{len(case.mods)} modules patched ({len(case.tensors)} keys)" in text, text
        if "metadata" in case.name:
            assert "from the file's metadata (lora_adapter_metadata)" in text, text
        # Strength 1.0 too (DoRA's own rule at full strength).
        if "DoRA" in case.name:
            full, _ = run_node(host, zmodel, name, strength=1.0)
            assert max_error(weights(full), case, base_sd, 1.0) <= TOL

        comfy, not_loaded = comfy_loader(host, zmodel, name)
        comfy_err = max_error(weights(comfy), case, base_sd, STRENGTH)
        n = len(case.tensors)
        rows.append((case.name, n, n - len(not_loaded), comfy_err, n, err))
    table = [
        f"ComfyUI v{host.version}, strength {STRENGTH}, max |patched - trainer's merge| over every weight (fp32)\n",
        "| file | keys | LoraLoaderModelOnly: placed | its max error | Z-Image LoRA: placed | its max error |",
        "|---|---|---|---|---|---|",
    ]
    table += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.2g} | {r[4]} | {r[5]:.2g} |" for r in rows]
    print("\n".join(table))
    out = os.environ.get("ZIMAGE_LORA_TABLE_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"lora_table_v{host.version}.md").write_text("\n".join(table) + "\n")


def test_two_loras_stack_as_their_summed_deltas(host, zmodel, base_sd, loras):
    _, written = loras
    a, b = "case00.safetensors", "case03.safetensors"
    first, _ = run_node(host, zmodel, a)
    both, _ = run_node(host, first, b)
    got = weights(both)
    da = lora_files.expected(written[a], base_sd, STRENGTH)
    db = lora_files.expected(written[b], base_sd, STRENGTH)
    for k, w in got.items():
        ref = base_sd[k].float() + (da.get(k, base_sd[k]) - base_sd[k]) + (db.get(k, base_sd[k]) - base_sd[k])
        assert (w - ref).abs().max().item() <= TOL, k
    # The input model is untouched (ComfyUI clones the patcher).
    assert not zmodel.patches


def test_dora_patch_matches_comfyui_on_the_input_axis(host, pack):
    """The pack's DoRA patch and ComfyUI's weight_decompose agree where ComfyUI's math is right
    (magnitude per input column); on the output axis they differ, because ComfyUI normalises by the
    original W's row norms. If this second assertion ever fails, ComfyUI fixed its output axis."""
    import comfy.lora
    import comfy.weight_adapter

    lp = pack.host.lora_patches
    g = torch.Generator().manual_seed(3)
    W = torch.randn(32, 16, generator=g)
    up, down = torch.randn(32, 4, generator=g) * 0.3, torch.randn(4, 16, generator=g) * 0.3
    results = {}
    for axis, mag in (("input", W.norm(dim=0).reshape(1, 16) * 1.1), ("output", W.norm(dim=1).reshape(32, 1) * 1.1)):
        sd = {"m.lora_up.weight": up, "m.lora_down.weight": down, "m.alpha": torch.tensor(2.0), "m.dora_scale": mag}
        comfy_adapter = comfy.lora.load_lora(sd, {"m": "w"}, log_missing=False)["w"]
        ours = lp.dora_patch(comfy_adapter, mag, axis)
        c = comfy.lora.calculate_weight([(0.8, comfy_adapter, 1.0, None, None)], W.clone(), "w")
        o = comfy.lora.calculate_weight([(0.8, ours, 1.0, None, None)], W.clone(), "w")
        V = W + 0.5 * up @ down
        norm = V.norm(dim=0, keepdim=True) if axis == "input" else V.norm(dim=1, keepdim=True)
        want = W + 0.8 * (mag * V / norm - W)
        assert (o - want).abs().max() <= TOL
        results[axis] = (c - want).abs().max().item()
    assert results["input"] <= TOL
    assert results["output"] > 1e-3, "ComfyUI's output-axis DoRA now matches: the pack's own patch can go"


def test_refusals_name_the_file_and_patch_nothing(host, zmodel, loras):
    from safetensors.torch import save_file

    root, written = loras
    for name, (tensors, family) in lora_files.other_family_files().items():
        save_file(tensors, str(root / name))
        with pytest.raises(ValueError) as e:
            run_node(host, zmodel, name)
        assert name in str(e.value) and family in str(e.value), str(e.value)
    good = (root / "case00.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (root / "pickled.pt").write_bytes(b"\x80\x02}q\x00.")
    for name, words in (("truncated.safetensors", "truncated"), ("pickled.pt", "pickle")):
        with pytest.raises(ValueError) as e:
            run_node(host, zmodel, name)
        assert name in str(e.value) and words in str(e.value), str(e.value)
    assert not zmodel.patches


def test_inf_alpha_where_used_is_refused_and_strict_refuses_unplaced_keys(host, zmodel, loras, base_sd):
    from safetensors.torch import save_file

    root, written = loras
    t = dict(written["case01.safetensors"].tensors)
    first_alpha = next(k for k in t if k.endswith(".alpha"))
    t[first_alpha] = torch.tensor(float("inf"), dtype=torch.float16)
    save_file(t, str(root / "inf_alpha.safetensors"))
    with pytest.raises(ValueError, match="inf") as e:
        run_node(host, zmodel, "inf_alpha.safetensors")
    assert first_alpha in str(e.value)

    t = dict(written["case00.safetensors"].tensors)
    t["diffusion_model.context_refiner.7.attention.to_q.lora_A.weight"] = torch.zeros(4, 256)
    t["diffusion_model.context_refiner.7.attention.to_q.lora_B.weight"] = torch.zeros(256, 4)
    save_file(t, str(root / "extra_keys.safetensors"))
    with pytest.raises(ValueError, match="cannot be placed"):
        run_node(host, zmodel, "extra_keys.safetensors", strict=True)
    patched, text = run_node(host, zmodel, "extra_keys.safetensors", strict=False)
    assert "2 keys of `context_refiner.7.*`: not in this model" in text, text
    assert max_error(weights(patched), written["case00.safetensors"], base_sd, STRENGTH) <= TOL


def test_lora_with_batched_guider_equals_cfg_guider_and_nag_keeps_acting(host, zmodel, loras, pack, fresh_guard):
    from zimage_nodes.tools.forward_spy import GuiderStepSpy, NagCallSpy
    from zimage_nodes.tools.sampling_paths import cfg_guider, custom_advanced, nag_model, turbo_sampler

    patched, _ = run_node(host, zmodel, "case00.safetensors")
    g = torch.Generator().manual_seed(5)
    pos = [[torch.randn(1, 7, 64, generator=g), {}]]
    neg = [[torch.randn(1, 12, 64, generator=g), {}]]
    latent = {"samples": torch.zeros(1, 16, 16, 16)}
    sigmas = host.call("BasicScheduler", model=patched, scheduler="simple", steps=4, denoise=1.0)[0]
    noise = host.call("RandomNoise", noise_seed=3)[0]
    sampler = host.call("KSamplerSelect", sampler_name="euler")[0]
    with GuiderStepSpy(pack.host.batched_cfg) as spy:
        ours = custom_advanced(
            host, cfg_guider(host, patched, pos, neg, cfg=4.0), sigmas, latent, noise=noise, sampler=sampler
        )
    comfy = host.call("CFGGuider", model=patched, positive=pos, negative=neg, cfg=4.0)[0]
    ref = custom_advanced(host, comfy, sigmas, latent, noise=noise, sampler=sampler)
    a, b = ours["samples"], ref["samples"]
    scale = b.abs().max().item()
    err = (a - b).abs().max().item()
    print(f"LoRA + batched guider vs CFGGuider: max abs {err:.3g} on latents of scale {scale:.3g}; steps {spy.counts}")
    assert err <= 1e-5 * scale
    assert spy.counts["batched"] > 0, spy.counts

    plain = turbo_sampler(host, patched, pos, latent, seed=3, steps=4)["samples"]
    with NagCallSpy(pack.host.nag_patch) as nag_spy:
        nagged = turbo_sampler(host, nag_model(host, patched, neg), pos, latent, seed=3, steps=4)["samples"]
    assert (nagged - plain).abs().max().item() > 1e-4
    assert nag_spy.counts["fallback"] == 0 and nag_spy.counts["nag"] > 0, nag_spy.counts


def test_fp8_weights_take_the_lora_through_comfyuis_casting(host, loras):
    """An fp8 (e4m3fn) model: ComfyUI computes the patched weight in fp32 and stores it in fp8, so
    the patched weight is the exact merge up to one fp8 rounding step; sampling stays finite."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    from zimage_nodes.tools import demo_weights
    from zimage_nodes.tools.sampling_paths import turbo_sampler

    model_config = comfy.supported_models.ZImage(demo_weights.unet_config())
    model_config.set_inference_dtype(torch.float8_e4m3fn, torch.float32)
    model = model_config.get_model({})
    demo_weights.fill_random(model.diffusion_model, 0).eval()
    device = mm.get_torch_device()
    fp8 = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)
    base = {k: v.detach().float().clone() for k, v in model.diffusion_model.state_dict().items()}
    _, written = loras
    patched, _ = run_node(host, fp8, "case00.safetensors")
    with torch.no_grad():  # as ComfyUI loads models (its fp8 rounding writes with out=)
        patched.patch_model()
    try:
        got = {k: v.detach().clone() for k, v in patched.model.diffusion_model.state_dict().items()}
    finally:
        patched.unpatch_model()
    want = lora_files.expected(written["case00.safetensors"], base, STRENGTH)
    worst = 0.0
    for k, ref in want.items():
        assert got[k].dtype == torch.float8_e4m3fn, (k, got[k].dtype)
        # e4m3: 3 mantissa bits, so one rounding step is at most 2^-3 of the value (plus subnormals).
        err = ((got[k].float() - ref).abs() - ref.abs() * 2**-3 - 2**-9).max().item()
        worst = max(worst, err)
    assert worst <= 0, worst
    g = torch.Generator().manual_seed(5)
    pos = [[torch.randn(1, 7, 64, generator=g), {}]]
    out = turbo_sampler(host, patched, pos, {"samples": torch.zeros(1, 16, 16, 16)}, seed=3, steps=2)["samples"]
    assert torch.isfinite(out).all()
