"""ZImageLoRA: any published Z-Image LoRA, whole and exact, through ComfyUI's own patches."""

from __future__ import annotations

import logging

import folder_paths
from comfy_api.latest import io, ui

from ..core.lora_formats import LoraFileError
from ..host import lora_patches
from ..host.node_messages import SCHEMA_OPTIONS

log = logging.getLogger("zimage_nodes")


class ZImageLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZINodesLoRA",
            display_name="Z-Image LoRA",
            category="Z-Image",
            description=(
                "Applies a Z-Image LoRA in any trainer's layout (ai-toolkit, musubi-tuner/kohya, DiffSynth-Studio, "
                "OneTrainer, diffusers/SimpleTuner, LyCORIS LoKr/LoHa, DoRA in every naming) through ComfyUI's own "
                "patches. Says which format it found, how many modules it patched and every key it could not place; "
                "refuses LoRAs of other model families."
            ),
            inputs=[
                io.Model.Input("model", tooltip="A Z-Image model (from the Z-Image Loader or Load Diffusion Model)."),
                io.Clip.Input(
                    "clip", optional=True, tooltip="Optional: the text encoder, for LoRAs that carry text-encoder keys."
                ),
                io.Combo.Input(
                    "lora_name", options=folder_paths.get_filename_list("loras"), tooltip="A file from models/loras."
                ),
                *(
                    io.Float.Input(name, default=1.0, min=-100.0, max=100.0, step=0.01, tooltip=tooltip)
                    for name, tooltip in (
                        (
                            "strength_model",
                            "Multiplier of the LoRA's change to the diffusion model (DoRA: W + strength * (merged - W)).",
                        ),
                        ("strength_clip", "The same for the text encoder."),
                    )
                ),
                io.Boolean.Input(
                    "strict",
                    default=False,
                    tooltip="On: any key of the file that cannot be placed is an error instead of a note.",
                ),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The model with the LoRA patched in."),
                io.Clip.Output(
                    display_name="CLIP", tooltip="The text encoder (patched if the LoRA has text-encoder keys)."
                ),
            ],
            **SCHEMA_OPTIONS,
        )

    @classmethod
    def execute(cls, model, lora_name, strength_model, strict, clip=None, strength_clip=1.0) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise("loras", lora_name)
        try:
            metadata, tensors = lora_patches.read_lora(path)
            plan = lora_patches.plan(path, metadata, tensors, model)
            unplaced = sum(len(v) for v in plan.unplaced.values())
            if strict and unplaced:
                raise LoraFileError(
                    path, f"{unplaced} keys cannot be placed:\n{plan.summary()}", "Turn strict off to apply the rest"
                )
            patches = lora_patches.model_patches(plan, tensors)
        except LoraFileError as e:
            raise ValueError(str(e)) from None
        patched = lora_patches.apply(model, patches, strength_model)
        clip_out, te_count = clip, 0
        if clip is not None:
            te_patches, te_count = lora_patches.clip_patches(plan, tensors, clip)
            if te_patches:
                clip_out = clip.clone()
                clip_out.add_patches(te_patches, strength_clip)
        text = f"{lora_name}: {plan.summary()}"
        if te_count:
            text += f"\ntext encoder: {te_count} modules patched"
        log.info("Z-Image LoRA: %s", text)
        return io.NodeOutput(patched, clip_out, ui=ui.PreviewText(text))
