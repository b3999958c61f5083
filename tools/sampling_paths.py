"""The sampling paths that tests and benchmarks run side by side, each written once with all its
inputs: the pack's Turbo sampler, NAG and CFG guider, ComfyUI's own Z-Image template path
(ModelSamplingAuraFlow + KSampler) and SamplerCustomAdvanced, and diffusers' ZImagePipeline on
caption embeddings (the reference). Nodes run through `Host.call` (tools/headless.py), their inputs
written as links first, then widget values; diffusers is imported only when its path runs, so
host-free tests can use this module too."""

from __future__ import annotations

from dataclasses import replace

from ..core.nag import DEFAULTS as NAG_DEFAULTS


def turbo_sampler(
    host, model, positive, latent, *, seed: int, steps: int, shift: float = 3.0, negative=None, sampler_name="euler"
) -> dict:
    """ZINodesTurboSampler at full denoise; returns the LATENT. `negative` is the node's optional
    input (ignored at cfg 1; given only to check that it is)."""
    optional = {} if negative is None else {"negative": negative}
    return host.call(
        "ZINodesTurboSampler", model=model, positive=positive, latent_image=latent, **optional,
        seed=seed, steps=steps, sampler_name=sampler_name, shift=shift, denoise=1.0,
    )[0]  # fmt: skip


def template_ksampler(
    host, model, positive, negative, latent, *, steps: int, cfg: float, seed: int, shift: float, sampler_name="euler"
) -> dict:
    """ComfyUI's own path, as its Z-Image templates wire it: ModelSamplingAuraFlow(shift) + KSampler
    (simple scheduler, full denoise); returns the LATENT."""
    shifted = host.call("ModelSamplingAuraFlow", model=model, shift=shift)[0]
    return host.call(
        "KSampler", model=shifted, positive=positive, negative=negative, latent_image=latent,
        seed=seed, steps=steps, cfg=cfg, sampler_name=sampler_name, scheduler="simple", denoise=1.0,
    )[0]  # fmt: skip


def nag_model(host, model, negative, **settings):
    """ZINodesNAG; returns the patched MODEL. `settings` (scale, tau, alpha, sigma_end) override the
    node's defaults, core.nag.DEFAULTS (unchecked here: the node checks them)."""
    nag = replace(NAG_DEFAULTS, **settings)
    return host.call(
        "ZINodesNAG", model=model, negative=negative,
        nag_scale=nag.scale, nag_tau=nag.tau, nag_alpha=nag.alpha, nag_sigma_end=nag.sigma_end,
    )[0]  # fmt: skip


def cfg_guider(host, model, positive, negative, *, cfg: float, normalization: float = 0.0, truncation: float = 1.0):
    """ZINodesCFGGuider; returns the GUIDER."""
    return host.call(
        "ZINodesCFGGuider", model=model, positive=positive, negative=negative,
        cfg=cfg, cfg_normalization=normalization, cfg_truncation=truncation,
    )[0]  # fmt: skip


def custom_advanced(host, guider, sigmas, latent, *, noise, sampler) -> dict:
    """SamplerCustomAdvanced, noise and sampler made by the caller (RandomNoise, KSamplerSelect), so
    a timed run holds nothing else; returns the LATENT."""
    return host.call(
        "SamplerCustomAdvanced", noise=noise, guider=guider, sampler=sampler, sigmas=sigmas, latent_image=latent
    )[0]


def reference_scheduler(shift: float):
    """diffusers' scheduler as Z-Image's pipeline config sets it, with a fixed shift (no dynamic
    shifting)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift, use_dynamic_shifting=False)


def zimage_pipeline(transformer, positive, negative, latents, *, steps: int, shift: float, guidance: float, **cfg):
    """diffusers' ZImagePipeline end to end without tokenizer, text encoder or VAE: captions given as
    embeddings (one [L, D] tensor per sample), `latents` [B, 16, h, w] as the start noise, latents
    out, on `reference_scheduler(shift)`. `cfg`: the pipeline's cfg_normalization / cfg_truncation.
    Inputs are copied, so a caller can reuse them run after run."""
    from diffusers import ZImagePipeline

    pipe = ZImagePipeline(
        scheduler=reference_scheduler(shift), vae=None, text_encoder=None, tokenizer=None, transformer=transformer
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt_embeds=[p.clone() for p in positive],
        negative_prompt_embeds=[n.clone() for n in negative],
        latents=latents.clone(),
        height=8 * latents.shape[-2],
        width=8 * latents.shape[-1],
        num_inference_steps=steps,
        guidance_scale=guidance,
        output_type="latent",
        return_dict=False,
        **cfg,
    )[0]
