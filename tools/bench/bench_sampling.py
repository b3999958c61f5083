"""Sections 1 and 2: the pack's sampling nodes against ComfyUI's own, on the same model, latent,
noise and sigmas. Nodes are called the way ComfyUI's executor calls them (V3 `execute`, V1
FUNCTION: `Host.call`), without the executor's caching around them; the paths compared are those
of tools/sampling_paths.py, which the parity tests run too."""

from __future__ import annotations

import bench_common as bc
import torch

from zimage_nodes.tools import sampling_paths


def host_model_module(host):
    return bc.pack_module(host, "host.host_model")


def build_model(host, size: dict, seed: int = 0, dtype: str = "default"):
    """A random-weight Z-Image DiT as a ComfyUI ModelPatcher, built by the same function the
    Z-Image Loader uses (no flow-shift patch: each path applies its own)."""
    from zimage_nodes.tools import demo_weights

    hm = host_model_module(host)
    sd = demo_weights.dit_state_dict(seed, **size)
    return hm.build_zimage_model(sd, demo_weights.unet_config(**size), {}, dtype)


def caption(length: int, width: int, seed: int, dtype=torch.float32):
    """CONDITIONING holding one caption of `length` tokens (random features, text-encoder scale)."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, length, width, generator=g, dtype=torch.float32).to(dtype), {}]]


def zero_out(cond):
    return [[torch.zeros_like(c), dict(o)] for c, o in cond]


def empty_latent(latent_side: int, batch: int = 1, device="cpu"):
    return {"samples": torch.zeros(batch, 16, latent_side, latent_side, device=device)}


def _max_diff(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


# ---------------------------------------------------------------------------------------------
# 1. Turbo


def turbo(host, model, pos, latent, steps: int, rounds: int, seed: int = 42, shift: float = 3.0) -> dict:
    """ZImageTurboSampler vs ModelSamplingAuraFlow(shift) + KSampler(cfg 1, euler, simple)."""
    neg = zero_out(pos)  # the official template wires ConditioningZeroOut(positive) as negative
    out = {}

    def ours():
        out["ours"] = sampling_paths.turbo_sampler(host, model, pos, latent, seed=seed, steps=steps, shift=shift)[
            "samples"
        ]

    def official():
        out["official"] = sampling_paths.template_ksampler(
            host, model, pos, neg, latent, steps=steps, cfg=1.0, seed=seed, shift=shift
        )["samples"]

    fns = {"official": official, "ours": ours}
    counts = _count_calls(fns)
    with bc.no_grad():
        times = bc.interleaved(fns, rounds, warmup=0)  # _count_calls was the warm-up
    return {
        "times": times,
        "counts": counts,
        "steps": steps,
        "max_diff": _max_diff(out["ours"], out["official"]),
    }


def _count_calls(fns: dict) -> dict:
    """One untimed run of each, with NextDiT.forward counted (also serves as the warm-up)."""
    counts = {}
    with bc.no_grad():
        for name, fn in fns.items():
            with bc.ForwardCounter() as fc:
                fn()
            counts[name] = fc.summary()
    return counts


# ---------------------------------------------------------------------------------------------
# 2. Guided base


GUIDED_VARIANTS = [
    # name, label, kind, truncation, batched
    ("comfy", "ComfyUI CFGGuider", "comfy", 1.0, None),
    ("ours", "ZINodesCFGGuider", "node", 1.0, True),
    ("ours_seq", "ZImageGuider batched=False", "class", 1.0, False),
    ("ours_t09", "ZImageCFGGuider trunc 0.9", "node", 0.9, True),
    ("ours_t05", "ZImageCFGGuider trunc 0.5", "node", 0.5, True),
]


def guided(
    host,
    model,
    pos,
    neg,
    latent,
    steps: int,
    cfg: float,
    rounds: int,
    seed: int = 42,
    shift: float = 6.0,
    variants=GUIDED_VARIANTS,
) -> dict:
    """Guiders through SamplerCustomAdvanced with the same noise, sigmas and sampler."""
    hm = host_model_module(host)
    guider_mod = bc.pack_module(host, "host.cfg_guider")
    base = hm.with_flow_shift(model, shift)  # what the Z-Image Loader outputs for Base
    sigmas = host.call("BasicScheduler", model=base, scheduler="simple", steps=steps, denoise=1.0)[0]
    sampler = host.call("KSamplerSelect", sampler_name="euler")[0]
    noise = host.call("RandomNoise", noise_seed=seed)[0]
    out = {}

    def make(name, kind, truncation, batched):
        def run():
            if kind == "comfy":
                g = host.call("CFGGuider", model=base, positive=pos, negative=neg, cfg=cfg)[0]
            elif kind == "node":
                g = sampling_paths.cfg_guider(host, base, pos, neg, cfg=cfg, truncation=truncation)
            else:
                g = guider_mod.ZImageGuider(base, cfg, 0.0, truncation, batched=batched)
                g.set_conds(pos, neg)
            out[name] = sampling_paths.custom_advanced(host, g, sigmas, latent, noise=noise, sampler=sampler)["samples"]

        return run

    fns = {name: make(name, kind, t, b) for name, _, kind, t, b in variants}
    counts = _count_calls(fns)
    with bc.no_grad():
        times = bc.interleaved(fns, rounds, warmup=0)  # _count_calls was the warm-up
    diffs = {n: _max_diff(out[n], out["comfy"]) for n in fns}
    ref_scale = float(out["comfy"].float().abs().max())
    return {
        "times": times,
        "counts": counts,
        "steps": steps,
        "cfg": cfg,
        "shift": shift,
        "diffs": diffs,
        "ref_scale": ref_scale,
        "labels": {n: lbl for n, lbl, *_ in variants},
        "sigmas": [float(s) for s in sigmas],
    }
