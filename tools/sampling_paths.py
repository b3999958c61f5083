"""The sampling paths that tests and benchmarks run side by side, each written once with all its
inputs: the pack's Turbo sampler, ComfyUI's own Z-Image template path (ModelSamplingAuraFlow +
KSampler), and diffusers' ZImagePipeline on caption embeddings (the reference). Nodes run through
`Host.call` (tools/headless.py); diffusers is imported only when its path runs, so host-free tests
can use this module too."""

from __future__ import annotations


def turbo_sampler(
    host, model, positive, latent, *, seed: int, steps: int, shift: float = 3.0, negative=None, sampler_name="euler"
) -> dict:
    """ZINodesTurboSampler at full denoise; returns the LATENT. `negative` is the node's optional
    input (ignored at cfg 1; given only to check that it is)."""
    optional = {} if negative is None else {"negative": negative}
    return host.call(
        "ZINodesTurboSampler",
        model=model,
        positive=positive,
        latent_image=latent,
        seed=seed,
        steps=steps,
        sampler_name=sampler_name,
        shift=shift,
        denoise=1.0,
        **optional,
    )[0]


def template_ksampler(
    host, model, positive, negative, latent, *, steps: int, cfg: float, seed: int, shift: float, sampler_name="euler"
) -> dict:
    """ComfyUI's own path, as its Z-Image templates wire it: ModelSamplingAuraFlow(shift) + KSampler
    (simple scheduler, full denoise); returns the LATENT."""
    shifted = host.call("ModelSamplingAuraFlow", model=model, shift=shift)[0]
    return host.call(
        "KSampler",
        model=shifted,
        seed=seed,
        steps=steps,
        cfg=cfg,
        sampler_name=sampler_name,
        scheduler="simple",
        positive=positive,
        negative=negative,
        latent_image=latent,
        denoise=1.0,
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
