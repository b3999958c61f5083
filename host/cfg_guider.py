"""The guider behind the Z-Image CFG Guider node: ComfyUI's CFGGuider with Z-Image's fused blend,
its truncation schedule, and the positive and negative of a Z-Image model run as one batched forward."""

from __future__ import annotations

import math

import comfy.samplers
import torch

from ..core.guidance import cfg_blend, effective_cfg
from . import batched_cfg
from .finite_watch import FiniteWatch

NODE_NAME = "Z-Image CFG Guider"


class ZImageGuider(comfy.samplers.CFGGuider):
    """CFGGuider whose blend is the core's fused Z-Image guidance.

    Everything but the blend is ComfyUI's: `sampling_function` (cfg-1 shortcut, calc-cond hook,
    pre-cfg hooks, `cfg_function` with a model's own cfg function and the post-cfg hooks) runs each
    step, with `batched_cfg.calc_conds` plugged in as its calc-cond hook. The one step it does not
    run is the plain blend: `cfg_function` writes `uncond + (cond - uncond) * cfg` (two temporaries)
    and hands a custom blend only `x - denoised` differences, which would cost three more; the fused
    `cfg_blend` is one kernel and no temporary. Where normalization is on, the blend works on
    `x - denoised` anyway, so it goes in as a `sampler_cfg_function` and ComfyUI runs the rest.

    Which steps are guided is decided from a host copy of the schedule and the step counter the
    sampler's callback advances, so deciding never reads the device's sigma back to the host."""

    def __init__(self, model_patcher, cfg: float, normalization: float, truncation: float, batched: bool = True):
        super().__init__(model_patcher)
        self.batched = batched
        self.set_cfg(cfg)
        self.normalization = float(normalization)
        self.truncation = float(truncation)
        self._host_sigmas: list[float] = []
        self._step = 0
        self.watch = FiniteWatch(NODE_NAME)

    def sample(
        self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False, seed=None
    ):
        self._host_sigmas = sigmas.detach().to("cpu", torch.float64).tolist()
        self._step = 0

        def advance(step, x0, x, total_steps):
            self._step = step + 1
            if callback is not None:
                callback(step, x0, x, total_steps)

        out = super().sample(
            noise, latent_image, sampler, sigmas, denoise_mask, self.watch.wrap(advance), disable_pbar, seed
        )
        return self.watch.check(out)

    def step_cfg(self) -> float:
        if self.truncation > 1.0 or not self._host_sigmas:
            return self.cfg
        sigma = self._host_sigmas[min(self._step, len(self._host_sigmas) - 1)]
        return effective_cfg(sigma, self.cfg, self.truncation)

    def predict_noise(self, x, timestep, model_options=None, seed=None):
        cfg = self.step_cfg()
        options = dict(model_options or {})
        options.setdefault("sampler_calc_cond_batch_function", self._calc_conds)
        guided = not math.isclose(cfg, 1.0) or options.get("disable_cfg1_optimization", False)
        # Unguided steps, and a model patch that owns the blend (RescaleCFG and the like), are all ComfyUI's.
        if guided and "sampler_cfg_function" not in options:
            if self.normalization == 0:
                return self._fused_step(x, timestep, cfg, options)
            options["sampler_cfg_function"] = self._normalized_blend
        positive, negative = self.conds.get("positive"), self.conds.get("negative")
        return comfy.samplers.sampling_function(self.inner_model, x, timestep, negative, positive, cfg, options, seed)

    def _calc_conds(self, args):
        return batched_cfg.calc_conds(
            args["model"], args["conds"], args["input"], args["sigma"], args["model_options"], self.batched
        )

    def _normalized_blend(self, args):
        # Z-Image normalises the velocity; x - denoised is sigma * velocity, and the per-sample
        # norm ratio the rule compares is the same for both.
        return cfg_blend(args["cond"], args["uncond"], args["cond_scale"], self.normalization)

    def _fused_step(self, x, timestep, cfg, options):
        """sampling_function + cfg_function with the blend fused (see the class docstring)."""
        positive, negative = self.conds.get("positive"), self.conds.get("negative")
        conds = [positive, negative]
        args = {"conds": conds, "input": x, "sigma": timestep, "model": self.inner_model, "model_options": options}
        out = options["sampler_calc_cond_batch_function"](args)
        for fn in options.get("sampler_pre_cfg_function", []):
            out = fn(dict(args, conds_out=out, cond_scale=cfg, timestep=timestep))
        cond_pred, uncond_pred = out[0], out[1]
        result = cfg_blend(cond_pred, uncond_pred, cfg)
        for fn in options.get("sampler_post_cfg_function", []):
            result = fn(
                {
                    "denoised": result,
                    "cond": positive,
                    "uncond": negative,
                    "cond_scale": cfg,
                    "model": self.inner_model,
                    "uncond_denoised": uncond_pred,
                    "cond_denoised": cond_pred,
                    "sigma": timestep,
                    "model_options": options,
                    "input": x,
                }
            )
        return result
