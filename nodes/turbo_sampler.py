"""ZImageTurboSampler: the few-step sampler for the CFG-distilled Z-Image-Turbo.

It is KSampler at cfg 1 with the positive alone: the same noise, sigmas, sampler and callbacks
(so the result is bit-identical to the official template's ModelSamplingAuraFlow + KSampler path),
minus any chance of the negative being evaluated: the guider is ComfyUI's own Guider_Basic (the
BasicGuider node's), which holds no negative at all, so even a model patch that disables ComfyUI's
cfg-1 shortcut cannot add a second forward per step.
"""

from __future__ import annotations

import logging

import comfy.model_management as mm
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io, ui
from comfy_extras.nodes_custom_sampler import Guider_Basic

from ..core.variants import TURBO
from ..host import host_model, node_text
from ..host.finite_watch import FiniteWatch
from ..host.host_model import turbo_sigmas
from ..host.node_messages import SCHEMA_OPTIONS

log = logging.getLogger("zimage_nodes")

NODE_NAME = "Z-Image Turbo Sampler"

NEGATIVE_IGNORED = (
    "negative conditioning ignored: Z-Image-Turbo is CFG-distilled and runs at cfg 1, where the negative "
    "prompt is never evaluated. For a negative that acts at cfg 1, wire it into the Z-Image NAG node and "
    "that node's MODEL into this sampler; or use the Z-Image base model with the Z-Image CFG Guider."
)


class ZImageTurboSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZINodesTurboSampler",
            display_name="Z-Image Turbo Sampler",
            category="Z-Image",
            description=(
                "Few-step sampler for Z-Image-Turbo: one model evaluation per step at cfg 1 with the 'simple' "
                "schedule and the given flow shift. A wired negative is accepted but never evaluated."
            ),
            inputs=[
                io.Model.Input("model", tooltip="Z-Image-Turbo, e.g. from the Z-Image Loader."),
                io.Conditioning.Input("positive", tooltip="What the image should show."),
                io.Conditioning.Input(
                    "negative",
                    optional=True,
                    tooltip="Accepted so existing graphs connect; never evaluated (Turbo runs at cfg 1).",
                ),
                io.Latent.Input(
                    "latent_image", tooltip="Empty latent (EmptySD3LatentImage) or an image latent with denoise < 1."
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFFFFFFFFFF,
                    control_after_generate=True,
                    tooltip="Noise seed; same seed gives the same image as KSampler at cfg 1.",
                ),
                io.Int.Input(
                    "steps", default=TURBO.steps, min=1, max=100, tooltip="Model evaluations; Turbo is trained for 8."
                ),
                io.Combo.Input(
                    "sampler_name",
                    options=comfy.samplers.KSampler.SAMPLERS,
                    default="euler",
                    tooltip="Any ComfyUI sampler; euler is what Turbo was distilled for.",
                ),
                io.Float.Input(
                    "shift",
                    default=TURBO.shift,
                    min=0.0,
                    max=100.0,
                    step=0.01,
                    tooltip="Flow shift of the sigma schedule (Turbo 3.0). Higher spends more steps at high noise.",
                ),
                io.Float.Input(
                    "denoise",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="1.0 for text-to-image; lower keeps more of the input latent (image-to-image).",
                ),
            ],
            outputs=[io.Latent.Output(display_name="LATENT", tooltip="The denoised latent; wire into VAE Decode.")],
            **SCHEMA_OPTIONS,
        )

    @classmethod
    def execute(
        cls, model, positive, latent_image, seed, steps, sampler_name, shift, denoise, negative=None
    ) -> io.NodeOutput:
        notes = []
        if negative is not None:
            log.warning("%s: %s", NODE_NAME, NEGATIVE_IGNORED)
            notes.append(NEGATIVE_IGNORED)
        tag = host_model.variant_of(model)
        if tag is not None and tag["name"] != "turbo":
            notes.append(
                f"this model was loaded as Z-Image {tag['name']} ({tag['reason']}): it needs CFG; use the Z-Image CFG Guider."
            )
            log.warning("%s: %s", NODE_NAME, notes[-1])

        why = node_text.nag_blocker(model)
        if why is not None:
            notes.append(node_text.nag_off(why))
            log.warning("%s: %s", NODE_NAME, notes[-1])

        model = host_model.with_flow_shift(model, shift)
        latent = latent_image
        samples_in = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
        noise = comfy.sample.prepare_noise(samples_in, seed, latent.get("batch_index"))
        sigmas = turbo_sigmas(model, steps, sampler_name, denoise)

        guider = Guider_Basic(model)
        guider.set_conds(positive)
        watch = FiniteWatch(NODE_NAME)
        samples = guider.sample(
            noise,
            samples_in,
            comfy.samplers.sampler_object(sampler_name),
            sigmas,
            denoise_mask=latent.get("noise_mask"),
            callback=watch.wrap(latent_preview.prepare_callback(model, steps)),
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
            seed=seed,
        )
        watch.check(samples)
        out = latent.copy()
        out["samples"] = samples.to(mm.intermediate_device())
        return io.NodeOutput(out, ui=ui.PreviewText("\n".join(notes)) if notes else None)
