"""ComfyUI's Z-Image Fun ControlNet patch (ZImageFunControlnet: `noise_refiner` + `double_block`
model patches) through the pack's fast paths, on a tiny random 30-layer Z-Image (the patch maps
its control layers onto 30 main layers) and tiny random ZImage_Control models built with the
host's classes: the batched CFG forward against the host's per-sample forwards and ComfyUI's
CFGGuider, NAG against a reference that applies the control to the one image stream; and an
unknown patch, which takes the host's path and says so on the node."""

import pytest
import torch
from nag_reference import reference_forward

from zimage_nodes.tools import demo_weights
from zimage_nodes.tools.forward_spy import GuiderStepSpy, NagCallSpy
from zimage_nodes.tools.sampling_paths import custom_advanced

pytestmark = pytest.mark.host

TOL = 1e-5
# (control layers, refiner control, inpaint channels): Fun ControlNet Union 1.0 has 6 layers and no
# refiner control; 2.0/2.1 have 15 layers, refiner control and the inpaint input (17 channels).
VARIANTS = {
    "1_layer": (1, False, False),
    "1_layer_refiner_inpaint": (1, True, True),
    "15_layers": (15, False, False),
    "15_layers_refiner_inpaint": (15, True, True),
}


def _zimage_30(host):
    import comfy.model_patcher
    import comfy.supported_models

    # The released layout's depth (30 main layers, 2 noise refiner layers): the patch maps its control
    # layers onto both by index.
    cfg = demo_weights.unet_config(n_layers=30, n_refiner_layers=2)
    model_config = comfy.supported_models.ZImage(cfg)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    demo_weights.fill_random(model.diffusion_model, 0).eval().requires_grad_(False)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


@pytest.fixture(scope="module")
def zmodel(host):
    return _zimage_30(host)


@pytest.fixture(scope="module")
def dm(zmodel):
    return zmodel.model.diffusion_model


@pytest.fixture(scope="module")
def vae(host):
    import comfy.sd

    return comfy.sd.VAE(sd=demo_weights.flux_vae_state_dict(dtype=torch.float32))


def _control_model(n_layers: int, refiner: bool, inpaint: bool, seed: int = 4):
    import comfy.ldm.lumina.controlnet
    import comfy.model_patcher
    import comfy.ops

    size = demo_weights.TINY
    control = comfy.ldm.lumina.controlnet.ZImage_Control(
        dim=size["dim"],
        n_heads=size["n_heads"],
        n_kv_heads=size["n_heads"],
        n_control_layers=n_layers,
        additional_in_dim=17 if inpaint else 0,
        refiner_control=refiner,
        dtype=torch.float32,
        device="cpu",
        operations=comfy.ops.manual_cast,
    )
    # Gains near 1 and a larger scale than the DiT's, so the control visibly moves the output.
    demo_weights.fill_random(control, seed, scale=0.1).eval().requires_grad_(False)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(control, load_device=cpu, offload_device=cpu)


def _controlled(host, zmodel, vae, variant: str, side: int = 64):
    """zmodel with ComfyUI's ZImageFunControlnet applied (the host's own node)."""
    n_layers, refiner, inpaint = VARIANTS[variant]
    g = torch.Generator().manual_seed(7)
    image = torch.rand((1, side, side, 3), generator=g)
    inputs = dict(model=zmodel, model_patch=_control_model(n_layers, refiner, inpaint), vae=vae, strength=0.8)
    if inpaint:
        mask = torch.zeros((1, side, side))
        mask[:, side // 4 : side // 2, side // 4 :] = 1.0
        inputs.update(image=image, inpaint_image=torch.rand((1, side, side, 3), generator=g), mask=mask)
    else:
        inputs.update(image=image)
    with torch.no_grad():  # as ComfyUI's executor runs a node (inference mode): no autograd state in the patch
        return host.call("ZImageFunControlnet", **inputs)[0]


def _options(model) -> dict:
    options = dict(model.model_options["transformer_options"])
    options["patches"] = {k: list(v) for k, v in options["patches"].items()}
    return options


def _inputs(lens, hw=(8, 8), seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((len(lens), 16, *hw), generator=g)
    t = torch.rand((len(lens),), generator=g) * 0.9 + 0.05
    return x, t, [torch.randn((n, 64), generator=g) for n in lens]


def _max_diff(a, b):
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------
# Forward level


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_batched_forward_with_control_equals_the_hosts_per_sample_forwards(host, zmodel, dm, vae, pack, variant):
    patched = _controlled(host, zmodel, vae, variant)
    x, t, contexts = _inputs([7, 40])  # two caption lengths: image rows at different offsets, masked
    with torch.no_grad():
        ref = torch.cat(
            [
                dm(x[i : i + 1], t[i : i + 1], c[None], c.shape[0], transformer_options=_options(patched))
                for i, c in enumerate(contexts)
            ]
        )
        out = pack.model.zimage_batched.batched_forward(dm, x, t, contexts, _options(patched))
        plain = pack.model.zimage_batched.batched_forward(dm, x, t, contexts, {})
    print(f"{host.version} {variant}: batched forward with control, max |batched - host| = {_max_diff(out, ref):.3g}")
    assert _max_diff(out, ref) <= TOL
    assert _max_diff(out, plain) > 1e-3  # the control acts


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_nag_forward_with_control_equals_the_one_stream_reference(host, zmodel, dm, vae, pack, variant):
    patched = _controlled(host, zmodel, vae, variant)
    x, t, (pos, neg) = _inputs([9, 50], hw=(8, 8), seed=2)
    x, t = x[:1], t[:1]
    znag = pack.model.zimage_nag
    with torch.no_grad():
        out = znag.nag_forward(dm, x, t, [pos], [neg], 5.0, 2.5, 0.25, _options(patched))
        ref = reference_forward(dm, x, t, pos, neg, 5.0, 2.5, 0.25, patches=_options(patched)["patches"])
        nag_only = znag.nag_forward(dm, x, t, [pos], [neg], 5.0, 2.5, 0.25, {})
        control_only = dm(x, t, pos[None], pos.shape[0], transformer_options=_options(patched))
        neutral = znag.nag_forward(dm, x, t, [pos], [neg], 1.0, 2.5, 0.25, _options(patched))
    print(f"{host.version} {variant}: NAG + control, max |one stream - reference| = {_max_diff(out, ref):.3g}")
    assert _max_diff(out, ref) <= TOL
    assert _max_diff(neutral, control_only) <= TOL  # NAG neutral: the host's controlled forward
    assert _max_diff(out, control_only) > 1e-3  # NAG acts with the control on
    assert _max_diff(out, nag_only) > 1e-3  # the control acts under NAG


def test_a_forward_stopped_half_way_leaves_no_control_state_behind(host, zmodel, dm, vae, pack):
    """The control patch carries its stream from layer to layer; a skeleton forward that fails after
    the refiners (as a mirror may, before its caller falls back to the host) must not leave it there."""
    patched = _controlled(host, zmodel, vae, "15_layers_refiner_inpaint")
    options = _options(patched)
    x, t, contexts = _inputs([7])
    with torch.no_grad():
        expected = dm(x, t, contexts[0][None], 7, transformer_options=dict(options))

        class StopsAfterTheRefiners(pack.model.zimage_batched.BatchedLayout):
            def join(self, *args, **kwargs):
                raise RuntimeError("stopped")

        with pytest.raises(RuntimeError):
            pack.model.skeleton.forward(dm, x, t, contexts, StopsAfterTheRefiners(), dict(options))
        assert options["patches"]["double_block"][0].temp_data is None
        assert torch.equal(dm(x, t, contexts[0][None], 7, transformer_options=dict(options)), expected)


# ---------------------------------------------------------------------------------------------
# Sampling


def _sample(host, guider, lat, steps=4, seed=3):
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    noise = host.call("RandomNoise", noise_seed=seed)[0]
    sampler = host.call("KSamplerSelect", sampler_name="euler")[0]
    return custom_advanced(host, guider, sigmas, lat, noise=noise, sampler=sampler)["samples"]


def test_batched_cfg_with_control_equals_comfyuis_cfg_guider(host, zmodel, vae, pack, forward_spy):
    patched = _controlled(host, zmodel, vae, "15_layers_refiner_inpaint")
    g = torch.Generator().manual_seed(5)
    positive = [[torch.randn((1, 11, 64), generator=g), {}]]
    negative = [[torch.randn((1, 37, 64), generator=g), {}]]  # other padded length: one batched forward, masked
    lat = {"samples": torch.zeros((1, 16, 8, 8))}
    pack.host.batched_cfg.GUARD.reset()

    native = host.call("CFGGuider", model=patched, positive=positive, negative=negative, cfg=4.0)[0]
    forward_spy.clear()
    reference = _sample(host, native, lat)
    native_forwards = list(forward_spy)

    ours = pack.host.cfg_guider.ZImageGuider(patched, 4.0, 0.0, 1.0)
    ours.set_conds(positive, negative)
    forward_spy.clear()
    with GuiderStepSpy(pack.host.batched_cfg) as steps:
        out = _sample(host, ours, lat)
    our_forwards = list(forward_spy)
    error = _max_diff(out, reference)
    print(
        f"{host.version}: batched CFG + control: forwards per call {our_forwards}, steps {steps.counts}; "
        f"CFGGuider {native_forwards}; max |ours - CFGGuider| = {error:.3g} (max |ref| {reference.abs().max():.3g})"
    )
    assert steps.counts == {"batched": 3, "sequential": 0, "verify": 1}
    assert our_forwards == [2, 1, 1] + [2] * 3  # the check: batched + ComfyUI's pair, then one batch-2 per step
    assert native_forwards == [1, 1] * 4
    # fp32 reordering only; the latent grows to a few units over the steps, hence relative to it.
    assert error <= TOL * max(1.0, reference.abs().max().item())
    plain = pack.host.cfg_guider.ZImageGuider(zmodel, 4.0, 0.0, 1.0)
    plain.set_conds(positive, negative)
    assert _max_diff(_sample(host, plain, lat), out) > 1e-3  # the control acts


def test_turbo_with_nag_and_control_runs_one_forward_per_step(host, zmodel, vae, pack, forward_spy):
    from zimage_nodes.tools.sampling_paths import nag_model, turbo_sampler

    patched = _controlled(host, zmodel, vae, "15_layers")
    g = torch.Generator().manual_seed(6)
    positive = [[torch.randn((1, 13, 64), generator=g), {}]]
    negative = [[torch.randn((1, 29, 64), generator=g), {}]]
    nag = nag_model(host, patched, negative, sigma_end=0.0)
    lat = {"samples": torch.zeros((1, 16, 8, 8))}
    turbo_sampler(host, nag, positive, lat, seed=0, steps=4)  # the first NAG call self-checks (host forwards, once)
    forward_spy.clear()
    with NagCallSpy(pack.host.nag_patch) as calls:
        out = turbo_sampler(host, nag, positive, lat, seed=0, steps=4)["samples"]
    print(f"{host.version}: Turbo + NAG + control: forwards per call {list(forward_spy)}, NAG calls {calls.counts}")
    assert list(forward_spy) == [1] * 4
    assert calls.counts == {"nag": 4, "off": 0, "fallback": 0}
    assert _max_diff(out, turbo_sampler(host, patched, positive, lat, seed=0, steps=4)["samples"]) > 1e-3


# ---------------------------------------------------------------------------------------------
# An unknown patch: the host's path, and the reason on the node


def _unknown_patch(kwargs):
    kwargs["img"] = kwargs["img"] * 1.01
    return kwargs


def test_an_unknown_patch_takes_the_hosts_path_and_the_nodes_say_why(host, zmodel, vae, pack):
    from zimage_nodes.tools.sampling_paths import turbo_sampler

    patched = zmodel.clone()
    patched.set_model_double_block_patch(_unknown_patch)
    g = torch.Generator().manual_seed(8)
    positive = [[torch.randn((1, 13, 64), generator=g), {}]]
    negative = [[torch.randn((1, 29, 64), generator=g), {}]]

    out = host.node_class("ZINodesNAG").execute(
        model=patched, negative=negative, nag_scale=5.0, nag_tau=2.5, nag_alpha=0.25, nag_sigma_end=0.0
    )
    (text,) = out.ui.as_dict()["text"]
    print(f"{host.version}: NAG node says: {text}")
    assert text.startswith("NAG is off for this run: ") and "double_block" in text and "_unknown_patch" in text
    nag = out.args[0]
    lat = {"samples": torch.zeros((1, 16, 8, 8))}
    with NagCallSpy(pack.host.nag_patch) as calls:
        sampled = turbo_sampler(host, nag, positive, lat, seed=0, steps=2)["samples"]
    assert calls.counts == {"nag": 0, "off": 0, "fallback": 2}
    assert torch.equal(sampled, turbo_sampler(host, patched, positive, lat, seed=0, steps=2)["samples"])

    # The Turbo sampler node, which samples the model, says it too.
    sampler_out = host.node_class("ZINodesTurboSampler").execute(
        model=nag, positive=positive, latent_image=lat, seed=0, steps=2, sampler_name="euler", shift=3.0, denoise=1.0
    )
    assert any(line.startswith("NAG is off for this run: ") for line in sampler_out.ui.as_dict()["text"][0].split("\n"))

    guider_out = host.node_class("ZINodesCFGGuider").execute(
        model=patched, positive=positive, negative=negative, cfg=4.0, cfg_normalization=0.0, cfg_truncation=1.0
    )
    (text,) = guider_out.ui.as_dict()["text"]
    print(f"{host.version}: CFG Guider node says: {text}")
    assert text.startswith("Batched CFG is off for this run: ") and "double_block" in text

    # The Fun ControlNet's patch: no message on either node.
    controlled = _controlled(host, zmodel, vae, "1_layer")
    known = host.node_class("ZINodesNAG").execute(
        model=controlled, negative=negative, nag_scale=5.0, nag_tau=2.5, nag_alpha=0.25, nag_sigma_end=0.0
    )
    assert known.ui is None
    known = host.node_class("ZINodesCFGGuider").execute(
        model=controlled, positive=positive, negative=negative, cfg=4.0, cfg_normalization=0.0, cfg_truncation=1.0
    )
    assert known.ui is None
