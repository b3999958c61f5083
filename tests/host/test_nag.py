"""Z-Image NAG: the efficient one-stream forward against a straightforward doubled-batch reference
written here, against the host's own forward, and through the samplers, on tiny random models."""

import importlib

import pytest
import torch
from nag_reference import reference_forward

from zimage_nodes.tools.forward_spy import NagCallSpy
from zimage_nodes.tools.sampling_paths import nag_model, turbo_sampler

pytestmark = pytest.mark.host

TOL = 1e-5
STEPS = 8
TURBO_SIGMAS = [1.0, 0.9545, 0.9, 0.8333, 0.75, 0.6429, 0.5, 0.3]  # 8 steps, shift 3 (reference grid)


# ---------------------------------------------------------------------------------------------
# Tiny models


def _patcher(seed=0, **size):
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    from zimage_nodes.tools import demo_weights

    cfg = demo_weights.unet_config(**{**demo_weights.TINY, **size})
    model_config = comfy.supported_models.ZImage(cfg)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    # Norm gains near 1 (fill_random): otherwise attention is nearly uniform and positions, masks
    # and the negative caption would barely change anything.
    demo_weights.fill_random(model.diffusion_model, seed).eval()
    device = mm.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


@pytest.fixture(scope="module")
def zmodel(host):
    return _patcher()


@pytest.fixture(scope="module")
def dm(zmodel):
    return zmodel.model.diffusion_model


@pytest.fixture(scope="module")
def nag_nodes(pack):
    return pack.host.nag_patch


@pytest.fixture(scope="module")
def znag(pack):
    return pack.model.zimage_nag


def _inputs(pos_lens, neg_lens, hw=(16, 16), seed=1):
    g = torch.Generator().manual_seed(seed)
    B = len(pos_lens)
    x = torch.randn((B, 16, *hw), generator=g)
    t = torch.rand((B,), generator=g) * 0.9 + 0.05
    pos = [torch.randn((L, 64), generator=g) for L in pos_lens]
    neg = [torch.randn((L, 64), generator=g) for L in neg_lens]
    return x, t, pos, neg


def _max_diff(a, b):
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------
# The forward


def test_reference_with_neutral_nag_is_the_host_forward(dm):
    """Validates the reference itself: with NAG neutral it is ComfyUI's own forward."""
    x, t, pos, neg = _inputs([7], [40])
    with torch.no_grad():
        host = dm(x, t, pos[0][None], pos[0].shape[0], transformer_options={})
        ref = reference_forward(dm, x, t[:1], pos[0], neg[0], 1.0, 2.5, 0.5)
    assert _max_diff(ref, host) <= TOL


CASES = {
    "short_pos_long_neg": dict(pos_lens=[7], neg_lens=[40]),
    "long_pos_short_neg": dict(pos_lens=[40], neg_lens=[7]),
    "same_padded_length": dict(pos_lens=[20, 25], neg_lens=[30, 12]),  # all pad to 32: unmasked path
    "batch3_mixed": dict(pos_lens=[7, 40, 70], neg_lens=[33, 5, 64]),
    "odd_15x13": dict(pos_lens=[9, 33], neg_lens=[50, 3], hw=(15, 13)),
    "odd_batch1": dict(pos_lens=[9], neg_lens=[50], hw=(9, 11)),  # unmasked path with image pad tokens
    "non_square_16x24": dict(pos_lens=[12], neg_lens=[45], hw=(16, 24)),
}
SETTINGS = {"defaults": (5.0, 2.5, 0.25), "strong": (10.0, 5.0, 1.0)}


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("case", list(CASES))
def test_efficient_forward_matches_the_doubled_batch_reference(dm, znag, case, setting):
    scale, tau, alpha = SETTINGS[setting]
    x, t, pos, neg = _inputs(**CASES[case])
    with torch.no_grad():
        plain = torch.cat([dm(x[i : i + 1], t[i : i + 1], c[None], c.shape[0]) for i, c in enumerate(pos)])
        ref = torch.cat(
            [
                reference_forward(dm, x[i : i + 1], t[i : i + 1], pos[i], neg[i], scale, tau, alpha)
                for i in range(len(pos))
            ]
        )
        out = znag.nag_forward(dm, x, t, pos, neg, scale, tau, alpha, {})
    assert out.shape == x.shape
    diff = _max_diff(out, ref)
    effect = _max_diff(ref, plain)
    print(f"{case}/{setting}: |efficient - reference| {diff:.3g}, NAG effect {effect:.3g}")
    assert effect > 100 * TOL, "NAG changed nothing: the comparison would prove nothing"
    assert diff <= TOL


def test_negative_equal_to_positive_is_the_plain_forward(dm, znag):
    x, t, pos, _ = _inputs([7, 45], [1, 1], hw=(15, 13), seed=4)
    with torch.no_grad():
        plain = torch.cat([dm(x[i : i + 1], t[i : i + 1], c[None], c.shape[0]) for i, c in enumerate(pos)])
        out = znag.nag_forward(dm, x, t, pos, pos, 5.0, 2.5, 0.25, {})
    assert _max_diff(out, plain) <= TOL


def test_self_check_passes_and_detects_a_host_that_bypasses_the_attention_hook(dm, znag, monkeypatch):
    ok, why = znag.self_check(dm, {})
    assert ok, why
    # A host whose blocks no longer route attention through optimized_attention_override.
    import comfy.ldm.lumina.model as lumina

    def no_hook(module, *args, **kwargs):
        kwargs["transformer_options"] = {}
        return original(module, *args, **kwargs)

    original = lumina.JointAttention.forward
    monkeypatch.setattr(lumina.JointAttention, "forward", no_hook)
    ok, why = znag.self_check(dm, {})
    assert not ok and "hook" in why, why


# ---------------------------------------------------------------------------------------------
# Through the node and the samplers


def _cond(c):
    return [[c[None] if c.ndim == 2 else c, {}]]


def _turbo(host, model, positive, seed=3, batch=1, hw=(8, 8)):
    latent = {"samples": torch.zeros((batch, 16, *hw))}
    return turbo_sampler(host, model, positive, latent, seed=seed, steps=STEPS, shift=3.0)["samples"]


def _nag_model(host, model, negative, scale=5.0, tau=2.5, alpha=0.25, sigma_end=0.0):
    return nag_model(host, model, negative, scale=scale, tau=tau, alpha=alpha, sigma_end=sigma_end)


@pytest.fixture(scope="module")
def captions():
    g = torch.Generator().manual_seed(11)
    return torch.randn((1, 13, 64), generator=g), torch.randn((1, 41, 64), generator=g)


@pytest.mark.parametrize("neutral", [dict(scale=1.0), dict(alpha=0.0)])
def test_neutral_settings_are_bit_identical_to_the_plain_turbo_sampler(host, zmodel, captions, neutral):
    pos, neg = captions
    plain = _turbo(host, zmodel, _cond(pos))
    patched = _nag_model(host, zmodel, _cond(neg), **neutral)
    out = _turbo(host, patched, _cond(pos))
    # Bit-exact: neutral settings make the wrapper call the host's forward itself.
    assert torch.equal(out, plain)


def test_turbo_with_nag_runs_one_model_call_per_step_and_acts(host, zmodel, captions, nag_nodes, forward_spy):
    pos, neg = captions
    patched = _nag_model(host, zmodel, _cond(neg), sigma_end=0.0)
    _turbo(host, patched, _cond(pos))  # the first NAG call self-checks the mirror (one host forward, once)
    patch = nag_nodes.nag_patch_of(patched)
    forward_spy.clear()
    with NagCallSpy(nag_nodes) as nag_calls:
        out = _turbo(host, patched, _cond(pos))
    assert forward_spy == [1] * STEPS
    assert nag_calls.counts == {"nag": STEPS, "off": 0, "fallback": 0}, patch.fallback_reason
    forward_spy.clear()
    plain = _turbo(host, zmodel, _cond(pos))
    assert forward_spy == [1] * STEPS
    assert _max_diff(out, plain) > 1e-3
    # negative = positive: NAG has nothing to push away from.
    same = _turbo(host, _nag_model(host, zmodel, _cond(pos)), _cond(pos))
    assert _max_diff(same, plain) <= TOL


def test_sampler_result_equals_the_reference_step_by_step(host, zmodel, captions, nag_nodes):
    """The whole 8-step Turbo run, with the reference forward substituted for the efficient one."""
    pos, neg = captions
    dm = zmodel.model.diffusion_model
    patched = _nag_model(host, zmodel, _cond(neg), sigma_end=0.0)
    out = _turbo(host, patched, _cond(pos), batch=2, hw=(7, 9))

    class Reference(nag_nodes.NagPatch):
        def __call__(self, executor, x, timesteps, context, num_tokens, attention_mask=None, **kwargs):
            return torch.cat(
                [
                    reference_forward(dm, x[i : i + 1], timesteps[i : i + 1], context[i], neg[0], 5.0, 2.5, 0.25)
                    for i in range(x.shape[0])
                ]
            )

    ref_model = zmodel.clone()
    import comfy.patcher_extension as pe

    ref_model.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "test.reference", Reference(None, neg))
    ref = _turbo(host, ref_model, _cond(pos), batch=2, hw=(7, 9))
    assert _max_diff(out, ref) <= TOL


def test_sigma_end_switches_nag_off_from_the_right_step(host, zmodel, captions, nag_nodes):
    pos, neg = captions
    patched = _nag_model(host, zmodel, _cond(neg), sigma_end=0.75)
    with NagCallSpy(nag_nodes) as nag_calls:
        out = _turbo(host, patched, _cond(pos))
    sigmas = [round(s, 4) for s, _ in nag_calls.history]
    assert sigmas == TURBO_SIGMAS
    assert [what for _, what in nag_calls.history] == ["nag"] * 5 + ["off"] * 3
    # The first five steps are those of an always-on run; the last three those of a plain run
    # continued from there: compare with sigma_end 0 (NAG on every step), which must differ.
    always = _turbo(host, _nag_model(host, zmodel, _cond(neg), sigma_end=0.0), _cond(pos))
    assert _max_diff(out, always) > 1e-4


def test_cfg_above_one_guides_the_positive_branch_only(host, zmodel, captions, nag_nodes, znag):
    """With real CFG, the positive's forward gets NAG and the CFG negative's forward runs plain."""
    import comfy.patcher_extension as pe

    pos, neg = captions
    cfg_neg = torch.randn((1, 13, 64), generator=torch.Generator().manual_seed(5))  # same length: one batch
    patched = _nag_model(host, zmodel, _cond(neg))
    patch = nag_nodes.nag_patch_of(patched)
    dm = zmodel.model.diffusion_model
    x = torch.randn((2, 16, 8, 8), generator=torch.Generator().manual_seed(6))
    t = torch.tensor([0.9, 0.9])
    options = {
        "wrappers": {pe.WrappersMP.DIFFUSION_MODEL: {nag_nodes.WRAPPER_KEY: [patch]}},
        "cond_or_uncond": [1, 0],  # ComfyUI's order: the uncond chunk may come first
        "sigmas": t,
    }
    with torch.no_grad():
        out = dm(x, t, torch.cat([cfg_neg, pos]), 13, transformer_options=options)
        plain_neg = dm(x[:1], t[:1], cfg_neg, 13, transformer_options={})
        nag_pos = znag.nag_forward(dm, x[1:], t[1:], [pos], [neg], 5.0, 2.5, 0.25, {})
    assert _max_diff(out[:1], plain_neg) <= TOL
    assert _max_diff(out[1:], nag_pos) <= TOL

    # Through ComfyUI's CFGGuider at cfg 4: per step, the positive's call has NAG, the negative's not.
    import comfy.samplers

    guider = comfy.samplers.CFGGuider(patched)
    guider.set_conds(_cond(pos), _cond(torch.randn((1, 29, 64))))
    guider.set_cfg(4.0)
    sigmas = torch.tensor(TURBO_SIGMAS[:3] + [0.0])
    with NagCallSpy(nag_nodes) as nag_calls:
        guider.sample(
            torch.randn((1, 16, 8, 8)), torch.zeros((1, 16, 8, 8)), comfy.samplers.sampler_object("euler"), sigmas
        )
    assert nag_calls.counts == {"nag": 3, "off": 3, "fallback": 0}

    # The same through this pack's CFG guider (which then runs its two forwards sequentially).
    guider_mod = importlib.import_module(nag_nodes.__name__.rsplit(".", 1)[0] + ".cfg_guider")
    guider = guider_mod.ZImageGuider(patched, 4.0, 0.0, 1.0)
    guider.set_conds(_cond(pos), _cond(torch.randn((1, 29, 64))))
    with NagCallSpy(nag_nodes) as nag_calls:
        guider.sample(
            torch.randn((1, 16, 8, 8)), torch.zeros((1, 16, 8, 8)), comfy.samplers.sampler_object("euler"), sigmas
        )
    assert nag_calls.counts == {"nag": 3, "off": 3, "fallback": 0}


def test_clear_errors(host, zmodel, captions):
    import comfy.model_patcher
    import comfy.supported_models

    from zimage_nodes.tools import demo_weights

    _, neg = captions
    # Lumina 2: the same NextDiT class and model_base, but not Z-Image (no pad tokens, other modulation).
    cfg = dict(demo_weights.unet_config(**demo_weights.TINY), z_image_modulation=False)
    cfg.pop("pad_tokens_multiple")
    lumina = comfy.supported_models.Lumina2(cfg)
    lumina.set_inference_dtype(torch.float32, None)
    other = comfy.model_patcher.ModelPatcher(lumina.get_model({}), load_device="cpu", offload_device="cpu")
    with pytest.raises(ValueError, match="Z-Image NAG works on Z-Image"):
        _nag_model(host, other, _cond(neg))
    with pytest.raises(ValueError, match="expects \\[batch, tokens, 64\\]"):
        _nag_model(host, zmodel, _cond(torch.zeros((1, 5, 77))))
    with pytest.raises(ValueError, match="combines 2 entries"):
        _nag_model(host, zmodel, _cond(neg) + _cond(neg))
    with pytest.raises(ValueError, match="nag_tau must be >= 1"):
        _nag_model(host, zmodel, _cond(neg), tau=0.5)


# ---------------------------------------------------------------------------------------------
# The shared-keys attention (issue 16) against the two-window attention it replaces


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("case", list(CASES))
def test_shared_keys_equal_the_two_window_forward(dm, znag, case, setting):
    scale, tau, alpha = SETTINGS[setting]
    x, t, pos, neg = _inputs(**CASES[case])
    with torch.no_grad():
        windows = znag.nag_forward(dm, x, t, pos, neg, scale, tau, alpha, {}, "windows")
        shared = znag.nag_forward(dm, x, t, pos, neg, scale, tau, alpha, {}, "shared")
    diff = _max_diff(shared, windows)
    print(f"{case}/{setting}: |shared keys - two windows| {diff:.3g}")
    assert diff <= TOL


def test_each_kernel_gives_the_same_forward(dm, znag):
    """The CPU flash kernel and the matmul fallback, forced in turn, through the whole NAG forward."""
    kernels = znag.nag_attention
    x, t, pos, neg = _inputs(**CASES["odd_15x13"])
    outs = {}
    try:
        for kernel in ("cpu_flash", "matmul"):
            kernels.force_kernel(kernel)
            with torch.no_grad():
                outs[kernel] = znag.nag_forward(dm, x, t, pos, neg, 5.0, 2.5, 0.25, {})
    finally:
        kernels.force_kernel(None)
    assert _max_diff(outs["cpu_flash"], outs["matmul"]) <= TOL
    assert kernels.kernel_for(x.device, x.dtype, dm.dim // dm.n_heads) == "cpu_flash"


def _spy_hook(znag, monkeypatch):
    """The attention objects the NAG layout hands to the host, collected."""
    hooks = []
    original = znag.NagLayout.attention_hook

    def spy(self, *args):
        hooks.append(original(self, *args))
        return hooks[-1]

    monkeypatch.setattr(znag.NagLayout, "attention_hook", spy)
    return hooks


def test_the_shared_keys_path_runs_and_names_its_kernel(dm, znag, monkeypatch):
    hooks = _spy_hook(znag, monkeypatch)
    x, t, pos, neg = _inputs(**CASES["batch3_mixed"])
    with torch.no_grad():
        znag.nag_forward(dm, x, t, pos, neg, 5.0, 2.5, 0.25, {})
        znag.nag_forward(dm, x, t, pos, neg, 5.0, 2.5, 0.25, {}, "windows")
    assert [type(h).__name__ for h in hooks] == ["_SharedKeysAttention", "_NagAttention"]
    assert hooks[0].kernel == "cpu_flash" and hooks[0].calls == len(dm.layers)


def test_another_attention_override_is_honoured_by_the_two_windows(dm, znag, monkeypatch):
    """An override already in transformer_options (another pack's) keeps being called."""
    hooks = _spy_hook(znag, monkeypatch)
    seen = []

    def other(func, *args, **kwargs):
        seen.append(args[0].shape[2])
        return func(*args, **kwargs)

    x, t, pos, neg = _inputs(**CASES["short_pos_long_neg"])
    with torch.no_grad():
        out = znag.nag_forward(dm, x, t, pos, neg, 5.0, 2.5, 0.25, {"optimized_attention_override": other})
        ref = znag.nag_forward(dm, x, t, pos, neg, 5.0, 2.5, 0.25, {})
    # The refiners' calls, then per main layer window A (32 + 64 rows) and window B (64 + 64).
    L = len(dm.layers)
    assert type(hooks[0]).__name__ == "_NagAttention" and seen[-2 * L :] == [96, 128] * L
    assert _max_diff(out, ref) <= TOL


def test_self_check_window_b_probe_sees_a_negative_position_error(dm, znag, pack, monkeypatch):
    """The probes of neutral NAG and negative = positive cannot see where the negative caption sits;
    the window-B probe (scale 0, alpha 1: the image rows take z- alone) must."""
    from zimage_nodes.model.forward_guard import ForwardGuard

    assert znag.self_check(dm, {}, guard=ForwardGuard("test"))[0]
    skeleton = pack.model.skeleton
    positions = skeleton.caption_positions

    def unshifted(length, device, offset=0.0):  # the negative caption at 1..N instead of P-N+1..P
        return positions(length, device)

    monkeypatch.setattr(skeleton, "caption_positions", unshifted)
    for attention in znag.ATTENTION_PATHS:
        ok, why = znag.self_check(dm, {}, guard=ForwardGuard("test"), attention=attention)
        assert not ok and "relative error" in why, why


def test_a_failing_shared_keys_check_takes_the_two_windows_then_the_host(
    host, zmodel, captions, nag_nodes, znag, monkeypatch, caplog
):
    """Forced failures: the shared-keys path's self-check fails -> two windows, reason logged; both
    fail -> the host's forward (NAG off for the call), reason logged."""
    import logging

    pos, neg = captions
    expected = _turbo(host, _nag_model(host, zmodel, _cond(neg)), _cond(pos))
    kernels = znag.nag_attention

    def wrong_merge(o1, l1, o2, l2, out=None):
        return o2.float() if out is None else out.copy_(o2)  # drops the image keys' part

    monkeypatch.setattr(kernels, "merge", wrong_merge)
    for guard in (nag_nodes.GUARD_SHARED, nag_nodes.GUARD):
        guard.reset()
    try:
        patched = _nag_model(host, zmodel, _cond(neg))
        with caplog.at_level(logging.INFO, logger="zimage_nodes"), NagCallSpy(nag_nodes) as calls:
            out = _turbo(host, patched, _cond(pos))
        assert calls.counts == {"nag": STEPS, "off": 0, "fallback": 0}
        assert nag_nodes.nag_patch_of(patched).attention == "windows"
        assert "Z-Image NAG shared-keys attention: two attention windows (mirror differs" in caplog.text
        assert _max_diff(out, expected) <= TOL

        def no_hook(self, *args):
            return None  # the host then runs its own attention: the windows' check fails too

        monkeypatch.setattr(znag.NagLayout, "attention_hook", no_hook)
        for guard in (nag_nodes.GUARD_SHARED, nag_nodes.GUARD):
            guard.reset()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="zimage_nodes"), NagCallSpy(nag_nodes) as calls:
            out = _turbo(host, _nag_model(host, zmodel, _cond(neg)), _cond(pos))
        assert calls.counts == {"nag": 0, "off": 0, "fallback": STEPS}
        assert "self-check failed: shared-keys attention:" in caplog.text and "two windows:" in caplog.text
        assert torch.equal(out, _turbo(host, zmodel, _cond(pos)))
    finally:
        monkeypatch.undo()
        for guard in (nag_nodes.GUARD_SHARED, nag_nodes.GUARD):
            guard.reset()


def test_whole_turbo_run_equals_the_two_window_path(host, zmodel, captions, nag_nodes, monkeypatch):
    pos, neg = captions
    shared = _turbo(host, _nag_model(host, zmodel, _cond(neg)), _cond(pos), batch=2, hw=(7, 9))
    windows = _nag_model(host, zmodel, _cond(neg))
    original = nag_nodes.attention_path

    def two_windows(*args):
        path, why = original(*args)
        return ("windows" if path else None), why

    monkeypatch.setattr(nag_nodes, "attention_path", two_windows)
    old = _turbo(host, windows, _cond(pos), batch=2, hw=(7, 9))
    assert nag_nodes.nag_patch_of(windows).attention == "windows"
    diff = _max_diff(shared, old)
    print(f"8-step Turbo run: |shared keys - two windows| {diff:.3g}")
    assert diff <= TOL


def test_sigma_end_at_its_maximum_is_off(host, zmodel, captions, nag_nodes):
    pos, neg = captions
    with NagCallSpy(nag_nodes) as calls:
        out = _turbo(host, _nag_model(host, zmodel, _cond(neg), sigma_end=1.0), _cond(pos))
    assert calls.counts == {"nag": 0, "off": STEPS, "fallback": 0}
    assert torch.equal(out, _turbo(host, zmodel, _cond(pos)))


@pytest.fixture(scope="module")
def dm_bf16(host):
    import comfy.model_patcher
    import comfy.supported_models

    from zimage_nodes.tools import demo_weights

    cfg = demo_weights.unet_config(**demo_weights.TINY)
    model_config = comfy.supported_models.ZImage(cfg)
    model_config.set_inference_dtype(torch.bfloat16, None)
    model = model_config.get_model({})
    demo_weights.fill_random(model.diffusion_model, 0).eval()
    return comfy.model_patcher.ModelPatcher(model, load_device="cpu", offload_device="cpu").model.diffusion_model


def test_bfloat16_within_the_self_checks_tolerance(dm_bf16, znag):
    from zimage_nodes.model.forward_guard import REL_TOL, ForwardGuard, compare

    dm = dm_bf16
    assert next(dm.parameters()).dtype == torch.bfloat16
    ok, why = znag.self_check(dm, {}, guard=ForwardGuard("test"), dtype=torch.bfloat16)
    assert ok, why
    x, t, pos, neg = _inputs(**CASES["odd_15x13"])
    x, t = x.bfloat16(), t.bfloat16()
    pos, neg = [c.bfloat16() for c in pos], [c.bfloat16() for c in neg]
    with torch.no_grad():
        shared = znag.nag_forward(dm, x, t, pos, neg, 5.0, 2.5, 0.25, {})
        windows = znag.nag_forward(dm, x, t, pos, neg, 5.0, 2.5, 0.25, {}, "windows")
    verdict = compare(shared, windows)
    print(f"bf16: relative error shared keys vs two windows {verdict.error:.3g} (tolerance {REL_TOL[torch.bfloat16]})")
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize("backend", ["attention_pytorch", "attention_split", "attention_sub_quad", "attention_basic"])
def test_nag_stays_within_tolerance_of_each_cpu_attention_backend(dm, znag, backend, monkeypatch):
    """Whatever attention ComfyUI runs (the user's choice), NAG (its own kernel) stays within the
    self-check's tolerance of that host's own forward: neutral settings and negative = positive."""
    import comfy.ldm.lumina.model as lumina
    import comfy.ldm.modules.attention as attention

    from zimage_nodes.model.forward_guard import ForwardGuard, compare

    monkeypatch.setattr(lumina, "optimized_attention_masked", getattr(attention, backend))
    ok, why = znag.self_check(dm, {}, guard=ForwardGuard("test"))
    assert ok, why
    x, t, pos, neg = _inputs(**CASES["odd_15x13"])
    with torch.no_grad():
        host_out = torch.cat([dm(x[i : i + 1], t[i : i + 1], c[None], c.shape[0]) for i, c in enumerate(pos)])
        same = znag.nag_forward(dm, x, t, pos, pos, 5.0, 2.5, 0.25, {})
        neutral = znag.nag_forward(dm, x, t, pos, neg, 1.0, 2.5, 0.25, {})
    for out in (same, neutral):
        verdict = compare(out, host_out)
        print(
            f"{backend}: relative error vs the host's forward {verdict.error:.3g}, max {_max_diff(out, host_out):.3g}"
        )
        assert verdict.ok, verdict.reason
