"""Parity of the nodes with ComfyUI's own paths and with the diffusers reference, in a real host."""

import pytest
import torch

from zimage_nodes.tools.forward_spy import GuiderStepSpy
from zimage_nodes.tools.sampling_paths import (
    custom_advanced,
    reference_scheduler,
    template_ksampler,
    turbo_sampler,
    zimage_pipeline,
)

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def loaded(host, demo_models):
    _, names = demo_models

    def load(variant):
        model, clip, vae, steps, cfg = host.call(
            "ZINodesLoader",
            diffusion_model=names[variant],
            text_encoder=names["text_encoder"],
            vae=names["vae"],
            variant=variant,
            weight_dtype="default",
        )
        return model, clip, steps, cfg

    return load


def encode(host, clip, text):
    return host.call("CLIPTextEncode", clip=clip, text=text)[0]


def latent(host, batch=1, side=64):
    return host.call("EmptySD3LatentImage", width=side, height=side, batch_size=batch)[0]


def test_turbo_sampler_is_bit_identical_to_the_official_template_path(host, loaded):
    model, clip, steps, cfg = loaded("turbo")
    assert (steps, cfg) == (8, 1.0)
    positive = encode(host, clip, "a lighthouse at dusk")
    negative = encode(host, clip, "blurry, low quality")
    lat = latent(host, batch=2)

    ours = turbo_sampler(host, model, positive, lat, seed=42, steps=8, shift=3.0, negative=negative)["samples"]
    theirs = template_ksampler(host, model, positive, negative, lat, steps=8, cfg=1.0, seed=42, shift=3.0)["samples"]
    assert torch.equal(ours, theirs)


def _custom_sample(host, model, guider, sigmas, lat, seed=5):
    noise = host.call("RandomNoise", noise_seed=seed)[0]
    sampler = host.call("KSamplerSelect", sampler_name="euler")[0]
    return custom_advanced(host, guider, sigmas, lat, noise=noise, sampler=sampler)["samples"]


def _counted_sample(host, pack, model, guider, sigmas, lat, seed=5):
    """The samples, and how the pack's guider ran each step (tools/forward_spy.GuiderStepSpy)."""
    with GuiderStepSpy(pack.host.batched_cfg) as spy:
        out = _custom_sample(host, model, guider, sigmas, lat, seed)
    return out, spy.counts


@pytest.fixture
def fresh_guard(pack):
    """The batched forward's guard with no verdicts: its first guided step verifies again."""
    guard = pack.host.batched_cfg.GUARD
    guard.reset()
    yield guard
    guard.reset()


@pytest.fixture
def base_setup(host, loaded):
    model, clip, _, _ = loaded("base")
    positive = encode(host, clip, "portrait photo of an old fisherman, detailed skin")
    negative = encode(host, clip, "mustache")
    assert positive[0][0].shape[1] != negative[0][0].shape[1]  # caption lengths differ, as in real use
    sigmas = host.call("BasicScheduler", model=model, scheduler="simple", steps=6, denoise=1.0)[0]
    return model, positive, negative, latent(host, batch=2), sigmas


def _guided(pack, model, positive, negative, batched=True, cfg=4.0):
    guider = pack.host.cfg_guider.ZImageGuider(model, cfg, 0.0, 1.0, batched=batched)
    guider.set_conds(positive, negative)
    return guider


def test_guider_equals_comfyui_cfg_guider_and_batched_equals_sequential(host, base_setup, pack, fresh_guard):
    model, positive, negative, lat, sigmas = base_setup
    native = host.call("CFGGuider", model=model, positive=positive, negative=negative, cfg=4.0)[0]
    reference = _custom_sample(host, model, native, sigmas, lat)

    first = _guided(pack, model, positive, negative)
    _, first_steps = _counted_sample(host, pack, model, first, sigmas, lat)
    assert first_steps == {"batched": 5, "sequential": 0, "verify": 1}  # verified once, on its first step
    batched = _guided(pack, model, positive, negative)
    sequential = _guided(pack, model, positive, negative, batched=False)
    out_batched, batched_steps = _counted_sample(host, pack, model, batched, sigmas, lat)
    out_sequential, sequential_steps = _counted_sample(host, pack, model, sequential, sigmas, lat)

    assert batched_steps == {"batched": 6, "sequential": 0, "verify": 0}  # the verdict is cached per model + shape
    assert sequential_steps == {"batched": 0, "sequential": 6, "verify": 0}
    assert fresh_guard.checks == 1
    assert torch.allclose(out_sequential, reference, atol=1e-5, rtol=0), (out_sequential - reference).abs().max()
    # fp32 reordering only: the latents reach |x| of a few units, where v0.33 (its own rope/norm
    # path) gave a max difference of 1.0014e-5 after 6 steps; hence 1e-5 relative on top of 1e-5.
    assert torch.allclose(out_batched, out_sequential, atol=1e-5, rtol=1e-5), (out_batched - out_sequential).abs().max()
    assert not torch.equal(
        out_batched, _custom_sample(host, model, batched, sigmas, lat, seed=6)
    )  # other noise, other result


def test_batched_forward_falls_back_when_the_host_structure_differs(
    host, loaded, base_setup, pack, fresh_guard, monkeypatch, caplog
):
    """A host whose transformer block depends on something the batched pass lays out differently
    (here: each sample's own sequence length, as a future NextDiT might): the first step's check
    fails, the reason is logged once, and every step runs ComfyUI's own sequential path."""
    import logging

    import comfy.ldm.lumina.model as lumina

    model, positive, _, lat, sigmas = base_setup
    clip = loaded("base")[1]
    negative = encode(host, clip, "blurry, " * 20)  # pads to 64 tokens, the positive to 32
    original = lumina.JointTransformerBlock.forward

    def length_aware(self, x, *args, **kwargs):
        return original(self, x, *args, **kwargs) * (1.0 + 16.0 / x.shape[1])

    monkeypatch.setattr(lumina.JointTransformerBlock, "forward", length_aware)
    caplog.set_level(logging.INFO, logger="zimage_nodes")
    guider = _guided(pack, model, positive, negative)
    out, steps = _counted_sample(host, pack, model, guider, sigmas, lat)
    again = _guided(pack, model, positive, negative)
    out_again, steps_again = _counted_sample(host, pack, model, again, sigmas, lat)
    sequential = _guided(pack, model, positive, negative, batched=False)
    expected = _custom_sample(host, model, sequential, sigmas, lat)

    assert steps == {"batched": 0, "sequential": 5, "verify": 1}
    assert steps_again == {"batched": 0, "sequential": 6, "verify": 0}  # the failed verdict is cached too
    assert fresh_guard.checks == 1
    logged = [r.getMessage() for r in caplog.records if "mirror differs from the host forward" in r.getMessage()]
    assert len(logged) == 1, logged
    assert "Z-Image CFG Guider batched forward" in logged[0]
    (verdict,) = [v for by_signature in fresh_guard._verdicts.values() for v in by_signature.values()]
    assert verdict.ok is False and verdict.error > 1e-4
    assert torch.equal(out, expected) and torch.equal(out_again, expected)


@pytest.mark.parametrize("free", ["low", "high"])
def test_batching_follows_comfyuis_free_memory_rule(host, base_setup, pack, fresh_guard, monkeypatch, caplog, free):
    """ComfyUI batches conds only when memory_required(batch) * 1.5 < free memory; so does the guider."""
    import logging

    import comfy.model_management as mm

    model, positive, negative, lat, sigmas = base_setup
    needed = model.model.memory_required([2 * lat["samples"].shape[0], 16, 8, 8]) * 1.5
    figure = needed / 2 if free == "low" else needed * 4
    monkeypatch.setattr(
        mm, "get_free_memory", lambda dev=None, torch_free_too=False: (figure, figure) if torch_free_too else figure
    )
    caplog.set_level(logging.INFO, logger="zimage_nodes")
    guider = _guided(pack, model, positive, negative)
    out, steps = _counted_sample(host, pack, model, guider, sigmas, lat)
    monkeypatch.undo()
    expected = _custom_sample(host, model, _guided(pack, model, positive, negative, batched=False), sigmas, lat)

    reasons = [r.getMessage() for r in caplog.records if "MiB free" in r.getMessage()]
    if free == "low":
        assert steps == {"batched": 0, "sequential": 6, "verify": 0}
        assert len(reasons) == 1 and "batch of 4 needs" in reasons[0], reasons
        assert torch.equal(out, expected)
    else:
        assert steps == {"batched": 5, "sequential": 0, "verify": 1}
        assert not reasons
        assert torch.allclose(out, expected, atol=1e-5, rtol=0), (out - expected).abs().max()


def test_inputs_the_batched_forward_does_not_reproduce_take_the_sequential_path(
    host, base_setup, pack, fresh_guard, caplog
):
    """Omni reference latents (on hosts whose Z-Image reads them: `ref_latents`, which brings
    `timestep_zero_index`) and unknown transformer_options entries: ComfyUI's path, reason logged."""
    import logging

    model, positive, negative, _, _ = base_setup
    lat = latent(host)
    sigmas = host.call("BasicScheduler", model=model, scheduler="simple", steps=2, denoise=1.0)[0]
    caplog.set_level(logging.INFO, logger="zimage_nodes")

    with_ref = host.call("ReferenceLatent", conditioning=positive, latent=lat)[0]
    host_reads_it = "ref_latents" in model.model.extra_conds(
        reference_latents=[lat["samples"]], cross_attn=positive[0][0]
    )
    guider = _guided(pack, model, with_ref, negative)
    out, steps = _counted_sample(host, pack, model, guider, sigmas, lat)
    expected = _custom_sample(host, model, _guided(pack, model, with_ref, negative, batched=False), sigmas, lat)
    messages = " ".join(r.getMessage() for r in caplog.records)
    if host_reads_it:  # v0.33
        assert steps == {"batched": 0, "sequential": 2, "verify": 0}
        assert "ref_latents" in messages
        assert torch.equal(out, expected)
    else:  # v0.8.0: the host's Z-Image ignores reference latents, so there is nothing to reproduce
        assert steps["sequential"] == 0
        assert torch.allclose(out, expected, atol=1e-5, rtol=0)

    patched = model.clone()
    patched.model_options.setdefault("transformer_options", {})["zimage_test_feature"] = True
    guider = _guided(pack, patched, positive, negative)
    _, steps = _counted_sample(host, pack, patched, guider, sigmas, lat)
    assert steps == {"batched": 0, "sequential": 2, "verify": 0}
    assert "zimage_test_feature" in " ".join(r.getMessage() for r in caplog.records)


def _inf_from_step(model, sigmas, step):
    """A model patch whose output is inf from the given (0-based) sampling step on."""
    patched = model.clone()
    schedule = [float(s) for s in sigmas]

    def wrapper(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        sigma = float(args["timestep"].flatten()[0])
        index = min(range(len(schedule)), key=lambda i: abs(schedule[i] - sigma))
        return out + float("inf") if index >= step else out

    patched.set_model_unet_function_wrapper(wrapper)
    return patched


def test_guider_stops_with_the_step_and_the_fix_when_sampling_goes_non_finite(host, base_setup, pack):
    model, positive, negative, lat, sigmas = base_setup
    patched = _inf_from_step(model, sigmas, step=3)
    guider = _guided(pack, patched, positive, negative)
    with pytest.raises(pack.host.finite_watch.NonFiniteLatentError) as error:
        _custom_sample(host, patched, guider, sigmas, lat)
    message = str(error.value)
    assert "Z-Image CFG Guider" in message and "step 4 of 6" in message and "bf16" in message, message


def test_turbo_sampler_stops_with_the_step_and_the_fix_when_sampling_goes_non_finite(host, loaded, pack):
    model, clip, _, _ = loaded("turbo")
    shifted = host.call("ModelSamplingAuraFlow", model=model, shift=3.0)[0]
    sigmas = pack.host.host_model.turbo_sigmas(shifted, 8, "euler", 1.0)
    patched = _inf_from_step(model, sigmas, step=5)
    with pytest.raises(pack.host.finite_watch.NonFiniteLatentError) as error:
        turbo_sampler(host, patched, encode(host, clip, "a lighthouse"), latent(host), seed=1, steps=8, shift=3.0)
    message = str(error.value)
    assert "Z-Image Turbo Sampler" in message and "step 6 of 8" in message and "bf16" in message, message


def test_no_device_to_host_read_per_step(host, base_setup, pack, monkeypatch):
    """The pack's own code reads tensors back to the host a fixed number of times per sampling run
    (the schedule copy at the start, the finiteness check at the end), whatever the step count: it
    never adds a per-step sync. Counted by spying on Tensor's read methods, called from the pack's code."""
    import sys
    from pathlib import Path

    model, positive, negative, lat, _ = base_setup
    root = Path(pack.__file__).parent
    pack_dirs = tuple(str(root / d) + "/" for d in ("core", "model", "host", "nodes"))
    reads = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_globals.get("__file__") or ""
            if caller.startswith(pack_dirs):
                reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)

    counts = {}
    for steps in (2, 5):
        sigmas = host.call("BasicScheduler", model=model, scheduler="simple", steps=steps, denoise=1.0)[0]
        _custom_sample(host, model, _guided(pack, model, positive, negative), sigmas, lat)  # verified here
        reads.clear()
        guider = _guided(pack, model, positive, negative)
        _, ran = _counted_sample(host, pack, model, guider, sigmas, lat)
        assert ran["batched"] == steps
        counts[steps] = list(reads)
    assert counts[2] == counts[5], counts
    assert len(counts[5]) <= 2, counts  # the schedule's host copy + the one check at the end


def test_guider_with_normalization_and_truncation_equals_diffusers_pipeline(host, demo_models, pack):
    """Same weights in both implementations: a diffusers-format DiT (sizes where diffusers and
    ComfyUI build the same function) loaded by ZImageLoader, sampled through our guider with the
    reference's sigma grid, against ZImagePipeline with the same caption embeddings and noise."""
    from diffusers_layout import cfg_to_guidance
    from tiny_models import CROSS, diffusers_transformer, save_safetensors

    from zimage_nodes.core.schedule import zimage_sigmas

    guider_module = pack.host.cfg_guider
    models_root, names = demo_models
    transformer = diffusers_transformer(seed=3, **CROSS)
    folder = models_root / "diffusion_models" / "zimage_cross_test" / "transformer"
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(folder / "diffusion_pytorch_model.safetensors", transformer.state_dict())
    model = host.call(
        "ZINodesLoader",
        diffusion_model="zimage_cross_test/",
        text_encoder=names["text_encoder"],
        vae=names["vae"],
        variant="base",
        weight_dtype="default",
    )[0]

    g = torch.Generator().manual_seed(0)
    pos = torch.randn(1, 13, CROSS["cap_feat_dim"], generator=g)
    neg = torch.randn(1, 37, CROSS["cap_feat_dim"], generator=g)
    steps, cfg, normalization, truncation = 8, 5.0, 1.0, 0.5
    lat = latent(host, batch=1, side=64)

    guider = guider_module.ZImageGuider(model, cfg, normalization, truncation)
    guider.set_conds([[pos, {}]], [[neg, {}]])
    ours, ran = _counted_sample(host, pack, model, guider, zimage_sigmas(steps, 6.0), lat, seed=11)
    noise = host.call("RandomNoise", noise_seed=11)[0].generate_noise(lat)

    reference = zimage_pipeline(
        transformer,
        [pos[0]],
        [neg[0]],
        noise,
        steps=steps,
        shift=6.0,
        guidance=cfg_to_guidance(cfg),
        cfg_normalization=normalization,
        cfg_truncation=truncation,
    )
    # ComfyUI hands back latents in the VAE's space; undo the Flux latent format to compare.
    ours_raw = (ours - 0.1159) * 0.3611
    assert 0 < ran["batched"] < steps  # truncation really switched guidance off late
    assert torch.allclose(ours_raw, reference, atol=2e-5, rtol=0), (ours_raw - reference).abs().max()


def test_cfg_1_never_evaluates_the_negative_and_comfyui_cfg_hooks_still_run(
    host, loaded, pack, forward_spy, fresh_guard
):
    model, clip, _, _ = loaded("base")
    positive, negative = encode(host, clip, "a teapot"), encode(host, clip, "blurry")
    lat = latent(host)
    sigmas = host.call("BasicScheduler", model=model, scheduler="simple", steps=4, denoise=1.0)[0]
    seen = {"pre": [], "post": []}
    patched = model.clone()
    patched.set_model_sampler_pre_cfg_function(
        lambda args: (seen["pre"].append(args["cond_scale"]), args["conds_out"])[1]
    )
    patched.set_model_sampler_post_cfg_function(
        lambda args: (seen["post"].append(args["cond_scale"]), args["denoised"])[1]
    )

    guider = pack.host.cfg_guider.ZImageGuider(patched, 1.0, 0.0, 1.0)
    guider.set_conds(positive, negative)
    _custom_sample(host, patched, guider, sigmas, lat)
    assert forward_spy == [1] * 4  # the positive alone, every step
    assert seen == {"pre": [1.0] * 4, "post": [1.0] * 4}

    forward_spy.clear()
    guided = pack.host.cfg_guider.ZImageGuider(patched, 4.0, 0.0, 1.0)
    guided.set_conds(positive, negative)
    _custom_sample(host, patched, guided, sigmas, lat)
    assert forward_spy == [2, 1, 1] + [2] * 3  # the first guided step verifies the batched forward
    assert seen["post"][4:] == [4.0] * 4


def test_turbo_sampler_stops_on_interrupt_like_ksampler(host, loaded, monkeypatch):
    import comfy.ldm.lumina.model as lumina
    import comfy.model_management as mm

    model, clip, _, _ = loaded("turbo")
    positive = encode(host, clip, "a lighthouse")
    calls = []
    original = lumina.NextDiT.forward

    def interrupt_after_two(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            mm.interrupt_current_processing(True)  # what the UI's Cancel button does
        return original(self, *args, **kwargs)

    monkeypatch.setattr(lumina.NextDiT, "forward", interrupt_after_two)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            turbo_sampler(host, model, positive, latent(host), seed=1, steps=8, shift=3.0)
    finally:
        mm.interrupt_current_processing(False)
    assert len(calls) == 2


def test_fp8_weight_dtype_loads_and_samples(host, demo_models):
    _, names = demo_models
    model, clip, _, steps, _ = host.call(
        "ZINodesLoader",
        diffusion_model=names["turbo"],
        text_encoder=names["text_encoder"],
        vae=names["vae"],
        variant="auto",
        weight_dtype="fp8_e4m3fn",
    )
    assert model.model.diffusion_model.layers[0].attention.qkv.weight.dtype == torch.float8_e4m3fn
    out = turbo_sampler(host, model, encode(host, clip, "a boat"), latent(host), seed=1, steps=2, shift=3.0)["samples"]
    assert out.shape == (1, 16, 8, 8) and torch.isfinite(out).all()


def test_scheduler_gives_the_reference_grid_where_comfyui_simple_does_not(host, loaded):
    model, _, _, _ = loaded("base")
    reference = reference_scheduler(6.0)
    reference.set_timesteps(sigmas=torch.linspace(1.0, 1 / 28, 28).tolist())
    ours = host.call("ZINodesScheduler", model=model, steps=28, denoise=1.0)[0]
    simple = host.call("BasicScheduler", model=model, scheduler="simple", steps=28, denoise=1.0)[0]
    assert torch.equal(ours, reference.sigmas)
    assert (simple - ours).abs().max() > 1e-3  # why the node exists
    eight = host.call("ZINodesScheduler", model=model, steps=8, denoise=1.0)[0]
    assert torch.allclose(
        eight, host.call("BasicScheduler", model=model, scheduler="simple", steps=8, denoise=1.0)[0], atol=1e-6
    )
    half = host.call("ZINodesScheduler", model=model, steps=4, denoise=0.5)[0]
    assert torch.equal(half, host.call("ZINodesScheduler", model=model, steps=8, denoise=1.0)[0][-5:])


def test_scheduler_refuses_a_model_without_flow_shift(host, loaded):
    import comfy.model_sampling

    model, _, _, _ = loaded("base")
    eps = model.clone()

    class EpsSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
        pass

    eps.add_object_patch("model_sampling", EpsSampling(model.model.model_config))
    with pytest.raises(ValueError, match="BasicScheduler"):
        host.call("ZINodesScheduler", model=eps, steps=8, denoise=1.0)
