"""ZImageNAG: a negative prompt that acts on Z-Image-Turbo at cfg 1, through normalized attention
guidance (NAG), without CFG's second forward. The patch it installs: host/nag_patch.py."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..core.nag import DEFAULTS, NagParams
from ..host import node_text
from ..host.nag_patch import apply_nag
from ..host.node_messages import SCHEMA_OPTIONS


class ZImageNAG(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZINodesNAG",
            display_name="Z-Image NAG (negative prompt for Z-Image)",
            category="Z-Image",
            description=(
                "The negative prompt for Z-Image (Turbo and base): makes a negative act on Z-Image-Turbo at cfg 1. "
                "This pack's own Normalized Attention Guidance, written for Z-Image's NextDiT; ComfyUI's core "
                "'Normalized Attention Guidance' node patches other model families' attention and has no effect on "
                "Z-Image. "
                "In every main transformer layer the image attends once to the positive and once to the negative "
                "caption, and the two attention outputs are combined; the image itself still runs once per step, "
                "so a step costs one forward plus the negative caption and one extra attention pass (CFG costs two "
                "forwards). Works with the Z-Image Turbo Sampler and any sampler at cfg 1; with cfg > 1 it guides the "
                "positive branch only. Defaults: the NAG authors' ComfyUI-NAG settings for few-step models."
            ),
            inputs=[
                io.Model.Input("model", tooltip="A Z-Image or Z-Image-Turbo model (e.g. from the Z-Image Loader)."),
                io.Conditioning.Input(
                    "negative",
                    tooltip="The negative prompt, encoded with the same Z-Image text encoder as the positive. NAG steers "
                    "the image's attention away from it.",
                ),
                io.Float.Input(
                    "nag_scale",
                    default=DEFAULTS.scale,
                    min=0.0,
                    max=50.0,
                    step=0.1,
                    round=0.01,
                    tooltip="How far the attention output is pushed from the negative: z+ * s - z- * (s - 1). 1 = off. "
                    "Default 5 (the NAG authors' default and their few-step workflows; ComfyUI's NAG node uses 5 too).",
                ),
                io.Float.Input(
                    "nag_tau",
                    default=DEFAULTS.tau,
                    min=1.0,
                    max=10.0,
                    step=0.05,
                    round=0.01,
                    tooltip="Cap on how much longer (L1, per token) the guided attention output may get than the "
                    "positive one; larger lets NAG act harder. Default 2.5 (NAG authors; ComfyUI's node uses 1.5).",
                ),
                io.Float.Input(
                    "nag_alpha",
                    default=DEFAULTS.alpha,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Blend of the guided output with the positive one: 1 = fully guided, 0 = off. Default 0.25 "
                    "(NAG authors' default and few-step workflows; ComfyUI's node uses 0.5).",
                ),
                io.Float.Input(
                    "nag_sigma_end",
                    default=DEFAULTS.sigma_end,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="NAG runs only on steps whose sigma is >= this; later, low-noise steps run plain (cheaper, "
                    "fewer artefacts in fine detail). 0 = every step; 1.0 (the maximum) = off. Default 0.75, the NAG authors' value for few-step "
                    "flow models (Flux-Schnell, SD3.5-Turbo): on Turbo's 8-step grid that is the first 5 steps.",
                ),
            ],
            outputs=[io.Model.Output(tooltip="The model with NAG; sample it at cfg 1 (e.g. Z-Image Turbo Sampler).")],
            **SCHEMA_OPTIONS,
        )

    @classmethod
    def execute(cls, model, negative, nag_scale, nag_tau, nag_alpha, nag_sigma_end) -> io.NodeOutput:
        params = NagParams(scale=nag_scale, tau=nag_tau, alpha=nag_alpha, sigma_end=nag_sigma_end)
        patched = apply_nag(model, negative, params)
        why = node_text.nag_blocker(patched)
        return io.NodeOutput(patched, ui=ui.PreviewText(node_text.nag_off(why)) if why is not None else None)
