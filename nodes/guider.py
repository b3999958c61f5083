"""ZImageCFGGuider: classifier-free guidance with Z-Image's normalization and truncation, for any
ComfyUI model, with the positive and negative of a Z-Image model run as one batched forward."""

from __future__ import annotations

import logging
import math

import comfy.patcher_extension as pe
import comfy.samplers
import comfy.utils
import torch
from comfy_api.latest import io, ui

from ..core.guidance import cfg_blend, effective_cfg
from ..core.variants import BASE
from . import host_model, zimage_batched

log = logging.getLogger("zimage_nodes")

TURBO_WARNING = (
    "this model is Z-Image-Turbo, which is CFG-distilled: negative prompts have no effect on it at its "
    "intended cfg 1, and cfg > 1 degrades its images. Use the Z-Image Turbo Sampler, or the base model here."
)

# Cond entries with any of these need ComfyUI's general (sequential) path.
_UNBATCHABLE_COND_KEYS = ("area", "mask", "control", "gligen", "hooks", "timestep_start", "timestep_end", "patches")
_WRAPPER_KEY = "zimage_nodes.batched_cfg"


class ZImageGuider(comfy.samplers.CFGGuider):
    """CFGGuider whose blend is the core's fused Z-Image guidance.

    Which steps are guided is decided from a host copy of the schedule and the step counter the
    sampler's callback advances, so deciding never reads the device's sigma back to the host."""

    def __init__(self, model_patcher, cfg: float, normalization: float, truncation: float, batched: bool = True):
        super().__init__(model_patcher)
        self.batched = batched
        self.set_cfg(cfg)
        self.normalization = float(normalization)
        self.truncation = float(truncation)
        # Steps run as one batched forward vs through ComfyUI's calc_cond_batch (which includes
        # the steps where only the positive is evaluated).
        self.calls = {"batched": 0, "sequential": 0}
        self.fallback_reason: str | None = None
        self._host_sigmas: list[float] = []
        self._step = 0

    def sample(
        self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False, seed=None
    ):
        self._host_sigmas = sigmas.detach().to("cpu", torch.float64).tolist()
        self._step = 0

        def advance(step, x0, x, total_steps):
            self._step = step + 1
            if callback is not None:
                callback(step, x0, x, total_steps)

        return super().sample(noise, latent_image, sampler, sigmas, denoise_mask, advance, disable_pbar, seed)

    def step_cfg(self) -> float:
        if self.truncation > 1.0 or not self._host_sigmas:
            return self.cfg
        sigma = self._host_sigmas[min(self._step, len(self._host_sigmas) - 1)]
        return effective_cfg(sigma, self.cfg, self.truncation)

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        cfg = self.step_cfg()
        positive = self.conds.get("positive")
        negative = self.conds.get("negative")
        if math.isclose(cfg, 1.0) and not model_options.get("disable_cfg1_optimization", False):
            negative = None
        conds = [positive, negative]
        if "sampler_calc_cond_batch_function" in model_options:
            args = {
                "conds": conds,
                "input": x,
                "sigma": timestep,
                "model": self.inner_model,
                "model_options": model_options,
            }
            out = model_options["sampler_calc_cond_batch_function"](args)
        else:
            out = self.calc_conds(conds, x, timestep, model_options)
        for fn in model_options.get("sampler_pre_cfg_function", []):
            args = {
                "conds": conds,
                "conds_out": out,
                "cond_scale": cfg,
                "timestep": timestep,
                "input": x,
                "sigma": timestep,
                "model": self.inner_model,
                "model_options": model_options,
            }
            out = fn(args)
        return self.blend(
            out[0], out[1] if negative is not None else None, cfg, x, timestep, model_options, positive, negative
        )

    def blend(self, cond_pred, uncond_pred, cfg, x, timestep, model_options, cond, uncond):
        if "sampler_cfg_function" in model_options:
            # A model patch (RescaleCFG and the like) owns the blend; ComfyUI's cfg_function applies it.
            return comfy.samplers.cfg_function(
                self.inner_model,
                cond_pred,
                uncond_pred if uncond_pred is not None else torch.zeros_like(cond_pred),
                cfg,
                x,
                timestep,
                model_options=model_options,
                cond=cond,
                uncond=uncond,
            )
        if uncond_pred is None:
            result = cond_pred
        elif self.normalization > 0:
            # Z-Image normalises the velocity; x - denoised is sigma * velocity, and the per-sample
            # norm ratio the rule compares is the same for both.
            result = x - cfg_blend(x - cond_pred, x - uncond_pred, cfg, self.normalization)
        else:
            result = cfg_blend(cond_pred, uncond_pred, cfg)
        for fn in model_options.get("sampler_post_cfg_function", []):
            args = {
                "denoised": result,
                "cond": cond,
                "uncond": uncond,
                "cond_scale": cfg,
                "model": self.inner_model,
                "uncond_denoised": uncond_pred,
                "cond_denoised": cond_pred,
                "sigma": timestep,
                "model_options": model_options,
                "input": x,
            }
            result = fn(args)
        return result

    # -- one batched forward for positive + negative ------------------------------------------------

    def batch_blocker(self, conds, model_options) -> str | None:
        """Why the positive and negative cannot run as one exact batched forward (None if they can)."""
        if conds[1] is None:
            return "negative not evaluated this step"
        if not self.batched:
            return "batching switched off"
        ok, reason = zimage_batched.can_batch(
            self.inner_model.diffusion_model, model_options.get("transformer_options", {})
        )
        if not ok:
            return reason
        if pe.get_all_wrappers(pe.WrappersMP.CALC_COND_BATCH, model_options, is_model_options=True):
            return "a calc_cond_batch wrapper is installed"
        for cond in conds:
            if cond is None or len(cond) != 1:
                return "conditioning combines several entries"
            entry = cond[0]
            if any(k in entry for k in _UNBATCHABLE_COND_KEYS) or entry.get("strength", 1.0) != 1.0:
                return "conditioning uses areas, masks, hooks, timestep ranges or control"
            if set(entry["model_conds"]) - {"c_crossattn", "num_tokens"}:
                return "conditioning carries extra model inputs (e.g. an attention mask)"
        return None

    def calc_conds(self, conds, x, timestep, model_options):
        blocker = self.batch_blocker(conds, model_options)
        if blocker is not None:
            if blocker != "negative not evaluated this step" and blocker != self.fallback_reason:
                log.info("Z-Image CFG Guider: sequential forwards (%s)", blocker)
                self.fallback_reason = blocker
            self.calls["sequential"] += 1
            return comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, model_options)
        self.calls["batched"] += 1
        return self.batched_conds(conds, x, timestep, model_options)

    def batched_conds(self, conds, x, timestep, model_options):
        batch = x.shape[0]
        captions = []
        for cond in conds:
            c = cond[0]["model_conds"]["c_crossattn"].cond
            c = comfy.utils.repeat_to_batch_size(c, batch)
            captions.extend(c[i] for i in range(batch))

        x_in = torch.cat([x, x])
        t_in = torch.cat([timestep, timestep])
        transformer_options = dict(model_options.get("transformer_options", {}))
        transformer_options["cond_or_uncond"] = [0, 1]
        transformer_options["uuids"] = [conds[0][0].get("uuid"), conds[1][0].get("uuid")]
        transformer_options["sigmas"] = t_in
        wrappers = {
            k: {kk: list(vv) for kk, vv in v.items()} for k, v in transformer_options.get("wrappers", {}).items()
        }
        wrappers.setdefault(pe.WrappersMP.DIFFUSION_MODEL, {})[_WRAPPER_KEY] = [_batched_diffusion_model(captions)]
        transformer_options["wrappers"] = wrappers

        # The padded stack only carries the batch through apply_model's casts; the wrapper reads
        # the captions at their own lengths.
        longest = max(c.shape[0] for c in captions)
        stacked = torch.zeros((len(captions), longest, captions[0].shape[-1]), dtype=captions[0].dtype, device=x.device)
        kwargs = {"c_crossattn": stacked, "num_tokens": longest, "transformer_options": transformer_options}
        if "model_function_wrapper" in model_options:
            output = model_options["model_function_wrapper"](
                self.inner_model.apply_model, {"input": x_in, "timestep": t_in, "c": kwargs, "cond_or_uncond": [0, 1]}
            )
        else:
            output = self.inner_model.apply_model(x_in, t_in, **kwargs)
        return list(output.chunk(2))


def _batched_diffusion_model(captions):
    def wrapper(executor, x, timesteps, context, num_tokens, attention_mask=None, **kwargs):
        device, dtype = x.device, context.dtype
        contexts = [c.to(device=device, dtype=dtype) for c in captions]
        options = dict(kwargs.get("transformer_options") or {})
        # This wrapper is the batched forward itself: the model below must not see it again.
        wrappers = {}
        for kind, by_key in options.get("wrappers", {}).items():
            kept = {key: fns for key, fns in by_key.items() if key != _WRAPPER_KEY}
            if kept:
                wrappers[kind] = kept
        options["wrappers"] = wrappers
        return zimage_batched.batched_forward(executor.class_obj, x, timesteps, contexts, options)

    return wrapper


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
                    default=0.0,
                    min=0.0,
                    max=10.0,
                    step=0.05,
                    tooltip="Z-Image's CFG renormalisation: caps the guided prediction's norm at this multiple of the "
                    "positive's (per image). 0 = off (stylised work); 1.0 for realism.",
                ),
                io.Float.Input(
                    "cfg_truncation",
                    default=1.0,
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
            log.warning("Z-Image CFG Guider: %s", TURBO_WARNING)
            notes.append(TURBO_WARNING)
        guider = ZImageGuider(model, cfg, cfg_normalization, cfg_truncation)
        guider.set_conds(positive, negative)
        return io.NodeOutput(guider, ui=ui.PreviewText("\n".join(notes)) if notes else None)
