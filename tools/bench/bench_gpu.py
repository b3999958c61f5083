"""Section 5: the full-size Z-Image DiT on a GPU, seconds per image and peak memory.

Random bf16 weights, built directly on the device (no file): ComfyUI's NextDiT through the
ComfyUI model classes the Z-Image Loader uses, and diffusers' ZImageTransformer2DModel (built on
the meta device, materialised on the GPU in bf16). Three paths per model:

* ours:      ZImageTurboSampler (Turbo) / ZImageCFGGuider + SamplerCustomAdvanced (Base)
* ComfyUI:   ModelSamplingAuraFlow(shift) + KSampler (cfg 1 / cfg 5, euler, simple)
* diffusers: ZImagePipeline with the random transformer, prompt_embeds given, output_type="latent"

Captions are random features of real-ish lengths (a long positive, a short negative). Text
encoding and VAE decoding are left out of every path: the time is sampling only. Peak memory is
torch.cuda.max_memory_allocated() over a run (PyTorch allocator; the CUDA context is extra), the
weights included.

`dry_run=True` runs the same code on the CPU with a tiny model, to check it without a GPU.
"""

from __future__ import annotations

import gc

import bench_common as bc
import bench_sampling as bs
import torch

from zimage_nodes.tools import sampling_paths


def comfy_model(size: dict, device, dtype=torch.bfloat16, seed: int = 0):
    """ComfyUI ModelPatcher of a random Z-Image DiT built on `device` (as the loader builds it,
    minus the file)."""
    import comfy.model_patcher
    import comfy.supported_models

    from zimage_nodes.tools import demo_weights

    model_config = comfy.supported_models.ZImage(demo_weights.unet_config(**size))
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({}, "", device=device)
    demo_weights.fill_random(model.diffusion_model, seed, scale=0.02)
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def diffusers_transformer(size: dict, device, dtype=torch.bfloat16, seed: int = 0):
    from diffusers import ZImageTransformer2DModel

    from zimage_nodes.core.model_configs import ZIMAGE_AXES_DIMS, ZIMAGE_AXES_LENS
    from zimage_nodes.tools import demo_weights

    with torch.device("meta"):
        tr = ZImageTransformer2DModel(
            **size,
            n_kv_heads=size["n_heads"],
            axes_dims=list(ZIMAGE_AXES_DIMS),
            axes_lens=list(ZIMAGE_AXES_LENS),
        )
    tr = tr.to(dtype=dtype).to_empty(device=device)
    demo_weights.fill_random(tr, seed, scale=0.02)
    return tr.eval()


def _on_cuda() -> bool:
    return bc.CUDA_SYNC


def _peak_reset():
    if _on_cuda():
        torch.cuda.reset_peak_memory_stats()


def _peak() -> int:
    return torch.cuda.max_memory_allocated() if _on_cuda() else 0


def _allocated() -> int:
    return torch.cuda.memory_allocated() if _on_cuda() else 0


def _free():
    gc.collect()
    if _on_cuda():
        torch.cuda.empty_cache()


def run(host, dry_run: bool = False, rounds: int = 3, seed: int = 42) -> dict:
    import comfy.model_management as mm

    from zimage_nodes.tools import demo_weights

    device = mm.get_torch_device()
    if dry_run:
        size, side, turbo_steps, base_steps, pos_len, neg_len = demo_weights.TINY, 128, 2, 3, 40, 12
    else:
        size, side, turbo_steps, base_steps, pos_len, neg_len = demo_weights.FULL, 1024, 8, 50, 160, 40
    latent_side = side // 8
    cap = size["cap_feat_dim"]
    pos = bs.caption(pos_len, cap, 1)
    neg = bs.caption(neg_len, cap, 2)
    latent = bs.empty_latent(latent_side)
    cfg, base_shift, turbo_shift = 5.0, 6.0, 3.0
    result = {
        "device": str(device),
        "size": size,
        "side": side,
        "turbo_steps": turbo_steps,
        "base_steps": base_steps,
        "captions": [pos_len, neg_len],
        "cfg": cfg,
        "base_shift": base_shift,
        "turbo_shift": turbo_shift,
        "rows": [],
    }

    # Each model lives only inside its helper: when the helper returns, the model and the
    # closures timing it are gone, so the next model has the device memory to itself.
    _free()
    result["rows"] += _comfy_rows(host, result, size, device, pos, neg, latent, rounds, seed)
    mm.unload_all_models()
    _free()
    result["rows"] += _diffusers_rows(result, size, device, pos, neg, rounds, seed)
    _free()
    return result


def _comfy_rows(host, result: dict, size: dict, device, pos, neg, latent, rounds: int, seed: int) -> list[dict]:
    """Ours and ComfyUI's native paths on one ComfyUI model built on the device."""
    turbo_steps, base_steps, cfg = result["turbo_steps"], result["base_steps"], result["cfg"]
    base_shift, turbo_shift = result["base_shift"], result["turbo_shift"]
    before = _allocated()
    model = comfy_model(size, device)
    result["weights_bytes"] = _allocated() - before
    hm = bs.host_model_module(host)
    base_model = hm.with_flow_shift(model, base_shift)
    sampler = host.call("KSamplerSelect", sampler_name="euler")[0]
    noise = host.call("RandomNoise", noise_seed=seed)[0]
    base_sigmas = host.call("BasicScheduler", model=base_model, scheduler="simple", steps=base_steps, denoise=1.0)[0]
    zero_neg = bs.zero_out(pos)

    def turbo_ours():
        return sampling_paths.turbo_sampler(host, model, pos, latent, seed=seed, steps=turbo_steps, shift=turbo_shift)

    def turbo_native():
        return sampling_paths.template_ksampler(
            host, model, pos, zero_neg, latent, steps=turbo_steps, cfg=1.0, seed=seed, shift=turbo_shift
        )

    def base_ours():
        g = sampling_paths.cfg_guider(host, base_model, pos, neg, cfg=cfg)
        return sampling_paths.custom_advanced(host, g, base_sigmas, latent, noise=noise, sampler=sampler)

    def base_native():
        return sampling_paths.template_ksampler(
            host, model, pos, neg, latent, steps=base_steps, cfg=cfg, seed=seed, shift=base_shift
        )

    comfy_paths = {
        ("Turbo", "ours: ZImageTurboSampler"): turbo_ours,
        ("Turbo", "ComfyUI: ModelSamplingAuraFlow + KSampler"): turbo_native,
        ("Base", "ours: ZImageCFGGuider + SamplerCustomAdvanced"): base_ours,
        ("Base", "ComfyUI: ModelSamplingAuraFlow + KSampler"): base_native,
    }
    return _measure(comfy_paths, rounds, counter="comfy")


def _diffusers_rows(result: dict, size: dict, device, pos, neg, rounds: int, seed: int) -> list[dict]:
    """diffusers' ZImagePipeline on a diffusers transformer of the same size."""
    turbo_steps, base_steps, cfg, side = result["turbo_steps"], result["base_steps"], result["cfg"], result["side"]
    base_shift, turbo_shift = result["base_shift"], result["turbo_shift"]
    latent_side = side // 8
    tr = diffusers_transformer(size, device)
    dpos = [pos[0][0][0].to(device=device, dtype=torch.bfloat16)]
    dneg = [neg[0][0][0].to(device=device, dtype=torch.bfloat16)]
    g = torch.Generator(device="cpu").manual_seed(seed)
    dlatents = torch.randn(1, 16, latent_side, latent_side, generator=g).to(device)

    def pipe_run(steps, guidance, shift):
        def fn():
            return sampling_paths.zimage_pipeline(tr, dpos, dneg, dlatents, steps=steps, shift=shift, guidance=guidance)

        return fn

    diffusers_paths = {
        ("Turbo", "diffusers: ZImagePipeline (guidance 0)"): pipe_run(turbo_steps, 0.0, turbo_shift),
        ("Base", "diffusers: ZImagePipeline (guidance 4 = cfg 5)"): pipe_run(base_steps, cfg - 1.0, base_shift),
    }
    return _measure(diffusers_paths, rounds, counter=("diffusers", tr))


class _DiffusersCounter(bc.ForwardCounter):
    """bench_common's forward counter (same summary), hooked on one diffusers transformer."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def __enter__(self):
        def hook(mod, args):
            x = args[0]
            self.batches.append(len(x) if isinstance(x, (list, tuple)) else int(x.shape[0]))

        self.handle = self.module.register_forward_pre_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()
        return False


def _measure(paths: dict, rounds: int, counter) -> list[dict]:
    """Warm-up run of each (forwards counted, peak memory taken), then interleaved timed rounds
    grouped by model so Turbo and Base paths alternate only with each other."""
    rows = []
    by_model = {}
    for (model_name, label), fn in paths.items():
        by_model.setdefault(model_name, {})[label] = fn
    for model_name, fns in by_model.items():
        counts, peaks = {}, {}
        with bc.no_grad():
            for label, fn in fns.items():
                c = bc.ForwardCounter() if counter == "comfy" else _DiffusersCounter(counter[1])
                _peak_reset()
                with c:
                    fn()
                bc.sync()
                peaks[label] = _peak()
                counts[label] = c.summary()
            times = bc.interleaved(fns, rounds, warmup=0)
        for label in fns:
            rows.append(
                {
                    "model": model_name,
                    "path": label,
                    "times": times[label],
                    "median": bc.median(times[label]),
                    "spread": bc.spread(times[label]),
                    "peak": peaks[label],
                    "counts": counts[label],
                }
            )
    return rows
