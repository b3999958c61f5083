"""ZImageCFGGuider: classifier-free guidance with Z-Image's normalization and truncation, for any
ComfyUI model, with the positive and negative of a Z-Image model run as one batched forward."""

from __future__ import annotations

import logging

from comfy_api.latest import io, ui

from ..core.variants import BASE
from ..host import host_model, node_text
from ..host.cfg_guider import NODE_NAME, ZImageGuider
from ..host.node_messages import SCHEMA_OPTIONS

log = logging.getLogger("zimage_nodes")

TURBO_WARNING = (
    "this model is Z-Image-Turbo, which is CFG-distilled: negative prompts have no effect on it at its "
    "intended cfg 1, and cfg > 1 degrades its images. Use the Z-Image Turbo Sampler (with the Z-Image NAG "
    "node for a negative that acts), or the base model here."
)


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
            **SCHEMA_OPTIONS,
        )

    @classmethod
    def execute(cls, model, positive, negative, cfg, cfg_normalization, cfg_truncation) -> io.NodeOutput:
        tag = host_model.variant_of(model)
        notes = []
        if tag is not None and tag["name"] == "turbo":
            log.warning("%s: %s", NODE_NAME, TURBO_WARNING)
            notes.append(TURBO_WARNING)
        why = node_text.batched_blocker(model)
        if why is not None:
            notes.append(node_text.batched_off(why))
        guider = ZImageGuider(model, cfg, cfg_normalization, cfg_truncation)
        guider.set_conds(positive, negative)
        return io.NodeOutput(guider, ui=ui.PreviewText("\n".join(notes)) if notes else None)
