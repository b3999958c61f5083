"""Parity of the nodes with ComfyUI's own paths and with the diffusers reference, in a real host."""

import pytest
import torch

pytestmark = pytest.mark.host


def call(host, node_id, **inputs):
    """Run one node's function as the executor would (V1 FUNCTION or V3 execute)."""
    cls = host.node_class(node_id)
    if hasattr(cls, "FUNCTION") and not hasattr(cls, "GET_SCHEMA"):
        return getattr(cls(), cls.FUNCTION)(**inputs)
    return cls.execute(**inputs).args


@pytest.fixture(scope="module")
def loaded(host, demo_models):
    _, names = demo_models

    def load(variant):
        model, clip, vae, steps, cfg = call(
            host,
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
    return call(host, "CLIPTextEncode", clip=clip, text=text)[0]


def latent(host, batch=1, side=64):
    return call(host, "EmptySD3LatentImage", width=side, height=side, batch_size=batch)[0]


def test_turbo_sampler_is_bit_identical_to_the_official_template_path(host, loaded):
    model, clip, steps, cfg = loaded("turbo")
    assert (steps, cfg) == (8, 1.0)
    positive = encode(host, clip, "a lighthouse at dusk")
    negative = encode(host, clip, "blurry, low quality")
    lat = latent(host, batch=2)

    ours = call(
        host,
        "ZINodesTurboSampler",
        model=model,
        positive=positive,
        negative=negative,
        latent_image=lat,
        seed=42,
        steps=8,
        sampler_name="euler",
        shift=3.0,
        denoise=1.0,
    )[0]["samples"]
    template_model = call(host, "ModelSamplingAuraFlow", model=model, shift=3.0)[0]
    theirs = call(
        host,
        "KSampler",
        model=template_model,
        seed=42,
        steps=8,
        cfg=1.0,
        sampler_name="euler",
        scheduler="simple",
        positive=positive,
        negative=negative,
        latent_image=lat,
        denoise=1.0,
    )[0]["samples"]
    assert torch.equal(ours, theirs)


def _custom_sample(host, model, guider, sigmas, lat, seed=5):
    noise = call(host, "RandomNoise", noise_seed=seed)[0]
    sampler = call(host, "KSamplerSelect", sampler_name="euler")[0]
    return call(
        host, "SamplerCustomAdvanced", noise=noise, guider=guider, sampler=sampler, sigmas=sigmas, latent_image=lat
    )[0]["samples"]


def test_guider_equals_comfyui_cfg_guider_and_batched_equals_sequential(host, loaded, pack_nodes):
    guider_module = pack_nodes.guider
    model, clip, _, _ = loaded("base")
    positive = encode(host, clip, "portrait photo of an old fisherman, detailed skin")
    negative = encode(host, clip, "mustache")
    assert positive[0][0].shape[1] != negative[0][0].shape[1]  # caption lengths differ, as in real use
    lat = latent(host, batch=2)
    sigmas = call(host, "BasicScheduler", model=model, scheduler="simple", steps=6, denoise=1.0)[0]

    native = call(host, "CFGGuider", model=model, positive=positive, negative=negative, cfg=4.0)[0]
    reference = _custom_sample(host, model, native, sigmas, lat)

    batched = guider_module.ZImageGuider(model, 4.0, 0.0, 1.0, batched=True)
    batched.set_conds(positive, negative)
    sequential = guider_module.ZImageGuider(model, 4.0, 0.0, 1.0, batched=False)
    sequential.set_conds(positive, negative)
    out_batched = _custom_sample(host, model, batched, sigmas, lat)
    out_sequential = _custom_sample(host, model, sequential, sigmas, lat)

    assert batched.calls == {"batched": 6, "sequential": 0}
    assert sequential.calls == {"batched": 0, "sequential": 6}
    assert torch.allclose(out_sequential, reference, atol=1e-5, rtol=0), (out_sequential - reference).abs().max()
    assert torch.allclose(out_batched, out_sequential, atol=1e-5, rtol=0), (out_batched - out_sequential).abs().max()
    assert not torch.equal(
        out_batched,
        call(
            host,
            "SamplerCustomAdvanced",
            noise=call(host, "RandomNoise", noise_seed=6)[0],
            guider=batched,
            sampler=call(host, "KSamplerSelect", sampler_name="euler")[0],
            sigmas=sigmas,
            latent_image=lat,
        )[0]["samples"],
    )


def test_guider_with_normalization_and_truncation_equals_diffusers_pipeline(host, demo_models, pack_nodes):
    """Same weights in both implementations: a diffusers-format DiT (sizes where diffusers and
    ComfyUI build the same function) loaded by ZImageLoader, sampled through our guider with the
    reference's sigma grid, against ZImagePipeline with the same caption embeddings and noise."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline
    from tiny_models import CROSS, diffusers_transformer, save_safetensors

    from zimage_nodes.core.guidance import cfg_to_guidance
    from zimage_nodes.core.schedule import zimage_sigmas

    guider_module = pack_nodes.guider
    models_root, names = demo_models
    transformer = diffusers_transformer(seed=3, **CROSS)
    folder = models_root / "diffusion_models" / "zimage_cross_test" / "transformer"
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(folder / "diffusion_pytorch_model.safetensors", transformer.state_dict())
    model = call(
        host,
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
    ours = _custom_sample(host, model, guider, zimage_sigmas(steps, 6.0), lat, seed=11)
    noise = call(host, "RandomNoise", noise_seed=11)[0].generate_noise(lat)

    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=6.0, use_dynamic_shifting=False),
        vae=None,
        text_encoder=None,
        tokenizer=None,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(
        prompt_embeds=[pos[0]],
        negative_prompt_embeds=[neg[0]],
        latents=noise.clone(),
        height=64,
        width=64,
        num_inference_steps=steps,
        guidance_scale=cfg_to_guidance(cfg),
        cfg_normalization=normalization,
        cfg_truncation=truncation,
        output_type="latent",
        return_dict=False,
    )[0]
    # ComfyUI hands back latents in the VAE's space; undo the Flux latent format to compare.
    ours_raw = (ours - 0.1159) * 0.3611
    assert 0 < guider.calls["batched"] < steps  # truncation really switched guidance off late
    assert torch.allclose(ours_raw, reference, atol=2e-5, rtol=0), (ours_raw - reference).abs().max()


def test_cfg_1_never_evaluates_the_negative_and_comfyui_cfg_hooks_still_run(host, loaded, pack_nodes, forward_spy):
    model, clip, _, _ = loaded("base")
    positive, negative = encode(host, clip, "a teapot"), encode(host, clip, "blurry")
    lat = latent(host)
    sigmas = call(host, "BasicScheduler", model=model, scheduler="simple", steps=4, denoise=1.0)[0]
    seen = {"pre": [], "post": []}
    patched = model.clone()
    patched.set_model_sampler_pre_cfg_function(
        lambda args: (seen["pre"].append(args["cond_scale"]), args["conds_out"])[1]
    )
    patched.set_model_sampler_post_cfg_function(
        lambda args: (seen["post"].append(args["cond_scale"]), args["denoised"])[1]
    )

    guider = pack_nodes.guider.ZImageGuider(patched, 1.0, 0.0, 1.0)
    guider.set_conds(positive, negative)
    _custom_sample(host, patched, guider, sigmas, lat)
    assert forward_spy == [1] * 4  # the positive alone, every step
    assert seen == {"pre": [1.0] * 4, "post": [1.0] * 4}

    forward_spy.clear()
    guided = pack_nodes.guider.ZImageGuider(patched, 4.0, 0.0, 1.0)
    guided.set_conds(positive, negative)
    _custom_sample(host, patched, guided, sigmas, lat)
    assert forward_spy == [2] * 4
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
            call(
                host,
                "ZINodesTurboSampler",
                model=model,
                positive=positive,
                latent_image=latent(host),
                seed=1,
                steps=8,
                sampler_name="euler",
                shift=3.0,
                denoise=1.0,
            )
    finally:
        mm.interrupt_current_processing(False)
    assert len(calls) == 2


def test_fp8_weight_dtype_loads_and_samples(host, demo_models):
    _, names = demo_models
    model, clip, _, steps, _ = call(
        host,
        "ZINodesLoader",
        diffusion_model=names["turbo"],
        text_encoder=names["text_encoder"],
        vae=names["vae"],
        variant="auto",
        weight_dtype="fp8_e4m3fn",
    )
    assert model.model.diffusion_model.layers[0].attention.qkv.weight.dtype == torch.float8_e4m3fn
    out = call(
        host,
        "ZINodesTurboSampler",
        model=model,
        positive=encode(host, clip, "a boat"),
        latent_image=latent(host),
        seed=1,
        steps=2,
        sampler_name="euler",
        shift=3.0,
        denoise=1.0,
    )[0]["samples"]
    assert out.shape == (1, 16, 8, 8) and torch.isfinite(out).all()


def test_scheduler_gives_the_reference_grid_where_comfyui_simple_does_not(host, loaded):
    from diffusers import FlowMatchEulerDiscreteScheduler

    model, _, _, _ = loaded("base")
    reference = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=6.0, use_dynamic_shifting=False)
    reference.set_timesteps(sigmas=torch.linspace(1.0, 1 / 28, 28).tolist())
    ours = call(host, "ZINodesScheduler", model=model, steps=28, denoise=1.0)[0]
    simple = call(host, "BasicScheduler", model=model, scheduler="simple", steps=28, denoise=1.0)[0]
    assert torch.equal(ours, reference.sigmas)
    assert (simple - ours).abs().max() > 1e-3  # why the node exists
    eight = call(host, "ZINodesScheduler", model=model, steps=8, denoise=1.0)[0]
    assert torch.allclose(
        eight, call(host, "BasicScheduler", model=model, scheduler="simple", steps=8, denoise=1.0)[0], atol=1e-6
    )
    half = call(host, "ZINodesScheduler", model=model, steps=4, denoise=0.5)[0]
    assert torch.equal(half, call(host, "ZINodesScheduler", model=model, steps=8, denoise=1.0)[0][-5:])


def test_scheduler_refuses_a_model_without_flow_shift(host, loaded):
    import comfy.model_sampling

    model, _, _, _ = loaded("base")
    eps = model.clone()

    class EpsSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
        pass

    eps.add_object_patch("model_sampling", EpsSampling(model.model.model_config))
    with pytest.raises(ValueError, match="BasicScheduler"):
        call(host, "ZINodesScheduler", model=eps, steps=8, denoise=1.0)
