"""ZImageNegativePrompt: a negative prompt from standard phrase categories, written for the text
encoder that will read it (emphasis for CLIP, plain phrases for Z-Image's Qwen3)."""

from __future__ import annotations

from comfy_api.latest import io

from ..core.negative_prompt import CATEGORIES, DEFAULT_ENABLED, TARGETS, build_negative_prompt

_CATEGORY_TOOLTIPS = {name: ", ".join(phrases) for name, phrases in CATEGORIES.items()}


class ZImageNegativePrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZINodesNegativePrompt",
            display_name="Z-Image Negative Prompt",
            category="Z-Image",
            description=(
                "Builds a negative prompt from standard phrase categories plus free text. For classic Stable "
                "Diffusion (CLIP) it writes emphasis like (worst quality:1.4); for Z-Image it writes plain phrases "
                "in priority order, because Z-Image's text encoder would read the emphasis as literal text. "
                "Wire the result into a text encode, then into a CFG guider (Z-Image base, or SD with cfg > 1) or into "
                "the Z-Image NAG node (Z-Image-Turbo at cfg 1). A Turbo sampler's own negative input is ignored."
            ),
            inputs=[
                io.Combo.Input(
                    "target",
                    options=list(TARGETS),
                    default=TARGETS[0],
                    tooltip="zimage: plain phrases (Z-Image base). clip: weighted emphasis for CLIP text encoders (SD 1.x, SDXL).",
                ),
                *[
                    io.Boolean.Input(
                        name, default=name in DEFAULT_ENABLED, tooltip=f"Include: {_CATEGORY_TOOLTIPS[name]}"
                    )
                    for name in CATEGORIES
                ],
                io.String.Input(
                    "extra",
                    default="",
                    multiline=True,
                    tooltip="Your own phrases, appended last (e.g. 'mustache'). Emphasis is stripped for the zimage target.",
                ),
            ],
            outputs=[io.String.Output(display_name="negative", tooltip="Wire into a CLIP Text Encode's text input.")],
        )

    @classmethod
    def execute(cls, target, extra, **enabled) -> io.NodeOutput:
        return io.NodeOutput(
            build_negative_prompt({k: bool(v) for k, v in enabled.items()}, extra=extra, target=target)
        )
