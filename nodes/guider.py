"""ZImageCFGGuider: classifier-free guidance with Z-Image's normalization and truncation, for any
ComfyUI model, with the positive and negative of a Z-Image model run as one batched forward."""

from __future__ import annotations

import logging
import math

import comfy.samplers
import torch
from comfy_api.latest import io, ui

from ..core.guidance import cfg_blend, effective_cfg
from ..core.variants import BASE
from . import batched_cfg, host_model
from .finite_watch import FiniteWatch

log = logging.getLogger("zimage_nodes")

NODE_NAME = "Z-Image CFG Guider"
TURBO_WARNING = (
    "this model is Z-Image-Turbo, which is CFG-distilled: negative prompts have no effect on it at its "
    "intended cfg 1, and cfg > 1 degrades its images. Use the Z-Image Turbo Sampler (with the Z-Image NAG "
    "node for a negative that acts), or the base model here."
)


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
        # Steps run as one batched forward, through ComfyUI's calc_cond_batch (which includes the
        # steps where only the positive is evaluated), or both (first step of a new shape: verify).
        self.calls = {"batched": 0, "sequential": 0, "verify": 0}
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
            args["model"], args["conds"], args["input"], args["sigma"], args["model_options"], self.calls, self.batched
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


class ZImageCFGGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZINodesCFGGuider",
            display_name="Z-Image CFG Guider",
            category="Z-Image",
            description=(
                "Classifier-free guidance (neg + cfg * (pos - neg)) computed where the latents live, with Z-Image's "
                "cfg normalization and truncation. For Z-Image base and any ComfyUI model run at cfg > 1; plug into "
                "SamplerCustomAdvanced. On Z-Image the positive and negative run as one batched forward per step."
            ),
            inputs=[
                io.Model.Input("model", tooltip="Any ComfyUI model; Z-Image base is what the options are for."),
                io.Conditioning.Input("positive", tooltip="What the image should show."),
                io.Conditioning.Input("negative", tooltip="What to steer away from; it only acts where cfg > 1."),
                io.Float.Input(
                    "cfg",
                    default=BASE.cfg,
                    min=0.0,
                    max=100.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Guidance scale, ComfyUI convention (= diffusers guidance_scale + 1). Z-Image base: 4-6. 1 turns guidance off.",
                ),
                io.Float.Input(
                    "cfg_normalization",
                    default=BASE.cfg_normalization,
                    min=0.0,
                    max=10.0,
                    step=0.05,
                    tooltip="Z-Image's CFG renormalisation: caps the guided prediction's norm at this multiple of the "
                    "positive's (per image). 0 = off (stylised work); 1.0 for realism.",
                ),
                io.Float.Input(
                    "cfg_truncation",
                    default=BASE.cfg_truncation,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Switch guidance off once 1 - sigma exceeds this, skipping the negative on late, low-noise "
                    "steps (faster). 1.0 = never truncate. At Base's shift 6 and 28 steps 1 - sigma never exceeds "
                    "about 0.82, so only lower values take effect there.",
                ),
            ],
            outputs=[io.Guider.Output(tooltip="Guider for SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, cfg, cfg_normalization, cfg_truncation) -> io.NodeOutput:
        tag = host_model.variant_of(model)
        notes = []
        if tag is not None and tag["name"] == "turbo":
            log.warning("%s: %s", NODE_NAME, TURBO_WARNING)
            notes.append(TURBO_WARNING)
        guider = ZImageGuider(model, cfg, cfg_normalization, cfg_truncation)
        guider.set_conds(positive, negative)
        return io.NodeOutput(guider, ui=ui.PreviewText("\n".join(notes)) if notes else None)
