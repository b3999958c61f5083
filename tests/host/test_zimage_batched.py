"""batched_forward (one pass, captions of different lengths) against ComfyUI's own per-sample
NextDiT forwards on a tiny random Z-Image model built with ComfyUI's classes."""

import pytest
import torch
from tiny_models import lumina2_comfy_dit

from zimage_nodes.tools import demo_weights
from zimage_nodes.tools.demo_weights import fill_random

pytestmark = pytest.mark.host

TOL = 1e-5

# What comfy.model_detection's dim == 3840 branch produces, at the demo models' width 256.
UNET_CONFIG = demo_weights.unet_config()


def _build(host, seed=0, **overrides):
    import comfy.supported_models

    cfg = dict(UNET_CONFIG, **overrides)
    model_config = comfy.supported_models.ZImage(cfg)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    return model, fill_random(model.diffusion_model, seed).eval()


@pytest.fixture(scope="module")
def zimage(host):
    return _build(host)


@pytest.fixture(scope="module")
def mod(host):
    # model/ imports no comfy_api (ComfyUI's model code lazily), so the module is tested on its own.
    from zimage_nodes.model import zimage_batched

    return zimage_batched


def _per_sample(dm, x, t, contexts, transformer_options=None):
    outs = []
    for i, c in enumerate(contexts):
        to = dict(transformer_options or {})
        outs.append(dm(x[i : i + 1], t[i : i + 1], c[None], num_tokens=c.shape[0], transformer_options=to))
    return torch.cat(outs)


def _inputs(lengths, hw=(16, 16), seed=1):
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    x = torch.randn((B, 16, *hw), generator=g)
    t = torch.rand((B,), generator=g) * 0.9 + 0.05
    contexts = [torch.randn((L, 64), generator=g) for L in lengths]
    return x, t, contexts


CASES = {
    "7_and_40": dict(lengths=[7, 40]),  # padded to 32 and 64
    "32_and_32": dict(lengths=[32, 32]),  # same padded length: no mask
    "40_and_7": dict(lengths=[40, 7]),
    "batch4_mixed": dict(lengths=[7, 40, 32, 70]),
    "non_square_16x24": dict(lengths=[12, 45], hw=(16, 24)),
    "odd_15x13": dict(lengths=[9, 33], hw=(15, 13)),  # pad_to_patch_size + image pad tokens
}


@pytest.mark.parametrize("case", list(CASES))
def test_batched_matches_per_sample(zimage, mod, case):
    _, dm = zimage
    x, t, contexts = _inputs(**CASES[case])
    ok, why = mod.can_batch(dm, {})
    assert ok, why
    with torch.no_grad():
        ref = _per_sample(dm, x, t, contexts)
        out = mod.batched_forward(dm, x, t, contexts, {})
    assert out.shape == ref.shape == x.shape
    diff = (out - ref).abs().max().item()
    print(f"{case}: max abs diff {diff:.3g}")
    assert diff <= TOL, f"{case}: max abs diff {diff}"


def test_contexts_with_batch_dim_rope_options_and_trivial_masks(zimage, mod):
    _, dm = zimage
    x, t, contexts = _inputs([5, 37], hw=(16, 16), seed=3)
    opts = {"rope_options": {"scale_y": 0.5, "scale_x": 2.0, "shift_y": 1.0, "shift_x": 3.0}}
    with torch.no_grad():
        ref = _per_sample(dm, x, t, contexts, opts)
        out = mod.batched_forward(
            dm,
            x,
            t,
            [c[None] for c in contexts],
            dict(opts),
            attention_masks=[None, torch.ones((1, 37), dtype=torch.long)],
        )
    diff = (out - ref).abs().max().item()
    assert diff <= TOL, diff
    # rope_options must actually matter, otherwise the check above proves nothing
    with torch.no_grad():
        plain = mod.batched_forward(dm, x, t, contexts, {})
    assert (plain - out).abs().max().item() > 1e-3


def test_matches_through_comfy_model_sampling(zimage, mod):
    """Inputs as BaseModel._apply_model prepares them (calculate_input, timestep(sigma))."""
    model, dm = zimage
    x, _, contexts = _inputs([7, 40], seed=4)
    sigma = torch.tensor([0.8, 0.8])
    ms = model.model_sampling
    xc = ms.calculate_input(sigma, x)
    ts = ms.timestep(sigma).float()
    with torch.no_grad():
        ref = torch.cat(
            [
                model.apply_model(x[i : i + 1], sigma[i : i + 1], c_crossattn=c[None], num_tokens=c.shape[0])
                for i, c in enumerate(contexts)
            ]
        )
        out = ms.calculate_denoised(sigma, mod.batched_forward(dm, xc, ts, contexts, {}).float(), x)
    assert (out - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("backend", ["pytorch", "basic", "split", "sub_quad"])
def test_mask_format_with_each_attention_backend(zimage, mod, backend):
    """The batch-padding mask works with ComfyUI's attention functions (CPU default: sub_quad)."""
    import comfy.ldm.modules.attention as attention

    func = {
        "pytorch": attention.attention_pytorch,
        "basic": attention.attention_basic,
        "split": attention.attention_split,
        "sub_quad": attention.attention_sub_quad,
    }[backend]
    calls = []

    def override(original, *args, **kwargs):
        calls.append(kwargs.get("mask", args[4] if len(args) > 4 else None) is not None)
        return func(*args, **kwargs)

    _, dm = zimage
    x, t, contexts = _inputs([7, 40, 70], seed=5)
    opts = {"optimized_attention_override": override}
    with torch.no_grad():
        ref = _per_sample(dm, x, t, contexts, opts)
        n_ref = len(calls)
        out = mod.batched_forward(dm, x, t, contexts, dict(opts))
    assert any(calls[n_ref:]), "the batched call used no mask: the test would prove nothing"
    assert (out - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model(host, mod, dtype):
    """Weights and inputs in half precision, as ComfyUI runs them: dtypes flow through unchanged."""
    import comfy.supported_models

    model_config = comfy.supported_models.ZImage(dict(UNET_CONFIG))
    model_config.set_inference_dtype(dtype, None)
    dm = fill_random(model_config.get_model({}).diffusion_model, 0).eval()
    x, t, contexts = _inputs([7, 40], hw=(8, 8))  # half-precision matmuls are slow on CPU
    x = x.to(dtype)
    contexts = [c.to(dtype) for c in contexts]
    with torch.no_grad():
        ref = _per_sample(dm, x, t, contexts)
        out = mod.batched_forward(dm, x, t, contexts, {})
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    assert (out.float() - ref.float()).abs().max().item() <= 2e-2


def test_can_batch_rejections(host, zimage, mod):
    _, dm = zimage
    ok, why = mod.can_batch(dm, {"patches": {"double_block": [lambda a: a]}})
    assert not ok and "double_block" in why
    ok, why = mod.can_batch(dm, {"patches": {"noise_refiner": [lambda a: a]}})
    assert not ok and "noise_refiner" in why
    ok, why = mod.can_batch(dm, {"wrappers": {"diffusion_model": {"x": [lambda *a, **k: None]}}})
    assert not ok and "wrapper" in why.lower()
    masks = [None, torch.tensor([[1, 1, 0]])]
    ok, why = mod.can_batch(dm, {}, attention_masks=masks)
    assert not ok and "mask" in why
    x, t, contexts = _inputs([4, 3])
    with pytest.raises(NotImplementedError):
        mod.batched_forward(dm, x, t, contexts, {}, attention_masks=masks)
    ok, why = mod.can_batch(torch.nn.Linear(2, 2), {})
    assert not ok and "NextDiT" in why

    # Lumina 2 like: no pad tokens, classic modulation
    ok, why = mod.can_batch(lumina2_comfy_dit(), {})
    assert not ok and "pad_tokens_multiple" in why


def test_host_embedding_step_is_used_where_the_host_has_one(zimage, mod, monkeypatch):
    """On hosts with NextDiT.embed_all (v0.33+) the caption/image embedding, pad tokens and rope
    positions come from the host itself, once per sample; v0.8.0 has no such step and is mirrored."""
    import comfy.ldm.lumina.model as lumina

    _, dm = zimage
    x, t, contexts = _inputs([7, 40, 33])
    calls = []
    if hasattr(lumina.NextDiT, "embed_all"):
        original = lumina.NextDiT.embed_all

        def spy(self, *args, **kwargs):
            calls.append(args[0].shape[0])
            return original(self, *args, **kwargs)

        monkeypatch.setattr(lumina.NextDiT, "embed_all", spy)
    with torch.no_grad():
        ref = _per_sample(dm, x, t, contexts)
        calls.clear()
        out = mod.batched_forward(dm, x, t, contexts, {})
    assert (out - ref).abs().max().item() <= TOL
    assert calls == ([1, 1, 1] if hasattr(lumina.NextDiT, "embed_all") else [])


def test_subclass_with_its_own_forward_is_refused(host, zimage, mod):
    import comfy.ldm.lumina.model as lumina

    class Changed(lumina.NextDiT):
        def _forward(self, *args, **kwargs):
            return super()._forward(*args, **kwargs)

    _, dm = zimage
    changed = Changed.__new__(Changed)
    changed.__dict__ = dm.__dict__
    ok, why = mod.can_batch(changed, {})
    assert not ok and "overrides" in why


@pytest.fixture(scope="module")
def guard_mod(host):
    from zimage_nodes.model import forward_guard

    return forward_guard


def test_forward_guard_verifies_once_caches_and_falls_back_with_a_logged_reason(zimage, mod, guard_mod, caplog):
    """The guard on the real batched forward: a correct mirror is verified once and then runs
    alone; a wrong one (position ids off by one) is caught, logged once, and the host result used."""
    import logging

    _, dm = zimage
    x, t, contexts = _inputs([7, 40])
    runs = []

    def reference():
        runs.append("host")
        return _per_sample(dm, x, t, contexts)

    def mirror():
        runs.append("mirror")
        return mod.batched_forward(dm, x, t, contexts, {})

    def wrong():
        runs.append("wrong")
        return mod.batched_forward(dm, x, t, contexts, {"rope_options": {"shift_x": 1.0}})

    caplog.set_level(logging.INFO, logger="zimage_nodes")
    guard = guard_mod.ForwardGuard("test forward")
    with torch.no_grad():
        first = guard.run(dm, "a", mirror, reference)
        second = guard.run(dm, "a", mirror, reference)
        assert runs == ["mirror", "host", "mirror"] and guard.checks == 1
        assert guard.verdict(dm, "a").ok and guard.verdict(dm, "a").error < 1e-5
        assert (first - second).abs().max().item() <= TOL

        runs.clear()
        out = guard.run(dm, "b", wrong, reference)
        out_again = guard.run(dm, "b", wrong, reference)
    assert runs == ["wrong", "host", "host"]
    assert torch.equal(out, out_again)
    verdict = guard.verdict(dm, "b")
    assert not verdict.ok and "relative error" in verdict.reason
    logged = [r.getMessage() for r in caplog.records if "test forward" in r.getMessage()]
    assert logged == [f"test forward: host path ({verdict.reason})"]

    # A mirror that fails on an unknown structure, and a reference that is not finite (undecided).
    def broken():
        raise KeyError("siglip_feats")

    assert guard.run(dm, "c", broken, lambda: x) is x and "KeyError" in guard.verdict(dm, "c").reason
    nan = torch.full_like(x, float("nan"))
    assert guard.run(dm, "d", lambda: x, lambda: nan) is nan and guard.verdict(dm, "d") is None
    guard.reset()
    assert guard.verdict(dm, "a") is None and guard.checks == 0


def test_forward_guard_baseline_keeps_a_large_common_term_from_hiding_a_divergence(guard_mod):
    x = torch.full((2, 4), 100.0)
    reference = x - 0.01 * torch.ones(2, 4)
    mirror = x - 0.02 * torch.ones(2, 4)  # what the model adds is off by 2x
    assert guard_mod.compare(mirror, reference).ok  # hidden under x
    assert not guard_mod.compare(mirror, reference, baseline=x).ok
    assert guard_mod.compare([reference, reference], [reference, reference], baseline=x).ok
