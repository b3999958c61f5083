"""Parity with the reference: diffusers' ZImagePipeline vs. an Euler loop built on this pack's core.

The pipeline is run end to end (output_type="latent", tokenizer/text encoder/VAE absent, captions
given as embeddings) on a tiny random transformer; the loop below calls the *same* transformer
object, takes its sigmas from `zimage_sigmas` and its guidance from `effective_cfg` + `cfg_blend`.
If both agree, the schedule, the cfg convention (cfg = guidance + 1), normalization and truncation
are the reference's.
"""

import pytest
import torch
from diffusers.pipelines.z_image.pipeline_z_image import calculate_shift, get_default_z_image_sigmas
from diffusers_layout import guidance_to_cfg
from tiny_models import diffusers_transformer

from zimage_nodes.core.guidance import cfg_blend, effective_cfg
from zimage_nodes.core.schedule import zimage_sigmas
from zimage_nodes.tools.sampling_paths import reference_scheduler, zimage_pipeline

LATENT = 16  # latent side; image side = 8 * LATENT (the pipeline needs a multiple of 16)
CAP_DIM = 64
TOL = 1e-5


@pytest.mark.parametrize("shift", [3.0, 6.0])
@pytest.mark.parametrize("steps", [8, 9, 28, 50])
def test_sigmas_equal_pipeline_scheduler(steps, shift):
    sched = reference_scheduler(shift)
    # As the pipeline does it: default Z-Image grid plus mu (unused without dynamic shifting).
    mu = calculate_shift((LATENT // 2) ** 2)
    sched.set_timesteps(sigmas=get_default_z_image_sigmas(steps), mu=mu)
    ours = zimage_sigmas(steps, shift)
    assert ours.dtype == torch.float32
    assert torch.equal(ours, sched.sigmas), (ours - sched.sigmas).abs().max()


@pytest.fixture(scope="module")
def transformer():
    return diffusers_transformer(seed=0, cap_feat_dim=CAP_DIM)


def _inputs(batch: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 16, LATENT, LATENT, generator=g)
    # Different caption lengths per sample and between positive and negative, as real prompts have.
    pos = [torch.randn(11 + 3 * i, CAP_DIM, generator=g) for i in range(batch)]
    neg = [torch.randn(23 - 5 * i, CAP_DIM, generator=g) for i in range(batch)]
    return latents, pos, neg


def _velocity(transformer, x, model_t, captions):
    # The transformer takes one [C, F=1, H, W] tensor per sample and the "model time" 1 - sigma;
    # it predicts the flow velocity, whose sign the pipeline flips before the Euler step.
    out = transformer(list(x.unsqueeze(2).unbind(0)), model_t, captions, return_dict=False)[0]
    return torch.stack([o.float() for o in out]).squeeze(2)


@torch.no_grad()
def _our_loop(transformer, latents, pos, neg, steps, shift, cfg, normalization, truncation):
    sigmas = zimage_sigmas(steps, shift)
    x = latents.clone()
    batch = x.shape[0]
    for i in range(steps):
        sigma = float(sigmas[i])
        model_t = (1.0 - sigmas[i]).expand(batch)
        c = effective_cfg(sigma, cfg, truncation)
        v_pos = _velocity(transformer, x, model_t, pos)
        if c != 1.0:
            # Separate positive and negative forwards, as ComfyUI runs them for Z-Image.
            v = cfg_blend(v_pos, _velocity(transformer, x, model_t, neg), c, normalization)
        else:
            v = v_pos
        # Euler on the denoising direction -v (what scheduler.step does with the negated output).
        x = x + (sigmas[i + 1] - sigmas[i]) * (-v)
    return x


CASES = {
    "turbo": dict(batch=1, steps=8, shift=3.0, guidance=0.0, normalization=False, truncation=1.0),
    "base": dict(batch=1, steps=10, shift=6.0, guidance=4.0, normalization=True, truncation=0.5),
    "base_batch2": dict(batch=2, steps=10, shift=6.0, guidance=4.0, normalization=True, truncation=0.5),
    # More truncated steps and a fractional r, so both knobs are exercised beyond one step.
    "base_trunc08_r07": dict(batch=2, steps=10, shift=6.0, guidance=4.0, normalization=0.7, truncation=0.8),
}


@pytest.mark.parametrize("case", list(CASES))
def test_euler_loop_matches_pipeline(transformer, case):
    p = CASES[case]
    torch.manual_seed(0)
    latents, pos, neg = _inputs(p["batch"])
    ref = zimage_pipeline(
        transformer,
        pos,
        neg,
        latents,
        steps=p["steps"],
        shift=p["shift"],
        guidance=p["guidance"],
        cfg_normalization=p["normalization"],
        cfg_truncation=p["truncation"],
    )
    ours = _our_loop(
        transformer,
        latents,
        pos,
        neg,
        p["steps"],
        p["shift"],
        guidance_to_cfg(p["guidance"]),
        float(p["normalization"]),
        p["truncation"],
    )
    assert ref.shape == ours.shape == latents.shape
    assert ref.dtype == ours.dtype == torch.float32
    diff = (ref - ours).abs().max().item()
    assert diff <= TOL, f"{case}: max abs diff {diff:.3e}"
    # The sampler must actually have moved the latents, or agreement would say nothing.
    assert (ref - latents).abs().max().item() > 0.1


@torch.no_grad()
def test_parity_is_sensitive_to_each_knob(transformer):
    """Normalization and truncation each change the result by far more than TOL, so the parity above
    really checks them (and a pipeline run ignoring them would fail it)."""
    latents, pos, neg = _inputs(2)
    base = dict(steps=10, shift=6.0, cfg=5.0)
    full = _our_loop(transformer, latents, pos, neg, normalization=1.0, truncation=0.5, **base)
    no_norm = _our_loop(transformer, latents, pos, neg, normalization=0.0, truncation=0.5, **base)
    no_trunc = _our_loop(transformer, latents, pos, neg, normalization=1.0, truncation=1.0, **base)
    no_cfg = _our_loop(transformer, latents, pos, neg, normalization=1.0, truncation=0.5, steps=10, shift=6.0, cfg=1.0)
    for other in (no_norm, no_trunc, no_cfg):
        assert (full - other).abs().max().item() > 1000 * TOL
