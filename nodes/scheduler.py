"""ZImageScheduler: the reference sigma grid of diffusers' ZImagePipeline, for SamplerCustomAdvanced.

ComfyUI's `simple` scheduler picks sigmas from a 1000-entry table, which lands on the reference
grid only when 1000 is divisible by the step count (8 steps: yes; Base's 28: up to 2e-3 higher)."""

from __future__ import annotations

import math

from comfy_api.latest import io

from ..core.schedule import zimage_sigmas
from ..core.variants import BASE
from ..host import host_model


class ZImageScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZINodesScheduler",
            display_name="Z-Image Scheduler",
            category="Z-Image",
            description=(
                "Sigmas exactly as the reference Z-Image pipeline computes them: linspace(1, 1/n, n), flow-shifted "
                "by the model's shift, then 0. A drop-in for BasicScheduler (simple) that matches the reference at "
                "every step count, e.g. Base's 28."
            ),
            inputs=[
                io.Model.Input(
                    "model", tooltip="A Z-Image model; its flow shift (set by the Z-Image Loader) shapes the grid."
                ),
                io.Int.Input("steps", default=BASE.steps, min=1, max=10000, tooltip="Number of sampling steps."),
                io.Float.Input(
                    "denoise",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="1.0 for text-to-image; lower keeps the tail of a longer schedule, as BasicScheduler does.",
                ),
            ],
            outputs=[io.Sigmas.Output(tooltip="Sigmas for SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, model, steps, denoise) -> io.NodeOutput:
        shift = host_model.current_shift(model)
        if not math.isfinite(shift) or shift <= 0:
            raise ValueError(
                "Z-Image Scheduler: this model has no flow shift, so it is not a flow-matching model like Z-Image. "
                "Use BasicScheduler for it."
            )
        return io.NodeOutput(zimage_sigmas(steps, shift, denoise))
