"""ZImageLoader: diffusion model + Qwen3 text encoder + Flux VAE in one node, variant-aware."""

from __future__ import annotations

import logging
import os

import folder_paths
from comfy_api.latest import io, ui

from ..core.model_configs import QWEN3_4B_HIDDEN
from ..core.variants import BASE, CHOICES, TURBO, detect_variant
from ..host import host_model
from ..host.model_choices import inspect_choice, model_choices, resolve_model_path
from ..host.node_messages import SCHEMA_OPTIONS

log = logging.getLogger("zimage_nodes")


class ZImageLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZINodesLoader",
            display_name="Z-Image Loader",
            category="Z-Image",
            description=(
                "Loads a Z-Image or Z-Image-Turbo diffusion model (ComfyUI single file, full checkpoint, or "
                "diffusers folder, sharded or not), the Qwen3 text encoder and the Flux VAE. Detects Turbo vs "
                "Base, applies that variant's flow shift, and outputs its recommended steps and cfg."
            ),
            inputs=[
                io.Combo.Input(
                    "diffusion_model",
                    # "diffusion_model" is cut to "diffusion_ ..." beside a file name at the node's width.
                    display_name="model",
                    options=model_choices(),
                    tooltip=(
                        "Z-Image DiT: a file from models/diffusion_models, a diffusers folder found there, or a "
                        "full checkpoint ([checkpoint] entries, from models/checkpoints)."
                    ),
                ),
                io.Combo.Input(
                    "text_encoder",
                    options=folder_paths.get_filename_list("text_encoders"),
                    tooltip="Qwen3 text encoder (qwen_3_4b.safetensors) from models/text_encoders.",
                ),
                io.Combo.Input(
                    "vae",
                    options=folder_paths.get_filename_list("vae"),
                    tooltip="Flux VAE (ae.safetensors) from models/vae.",
                ),
                io.Combo.Input(
                    "variant",
                    options=list(CHOICES),
                    default="auto",
                    tooltip=(
                        f"auto: read the file's metadata, then its name. turbo: the distilled model ({TURBO.steps} "
                        f"steps, cfg {TURBO.cfg:g}, shift {TURBO.shift:g}, negative prompt has no effect). base: the "
                        f"undistilled model (CFG with a negative prompt, shift {BASE.shift:g})."
                    ),
                ),
                io.Combo.Input(
                    "weight_dtype",
                    options=list(host_model.WEIGHT_DTYPES),
                    default="default",
                    tooltip="Weight storage type, as in Load Diffusion Model. fp8 halves memory at some quality cost.",
                ),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The diffusion model, flow shift set for its variant."),
                io.Clip.Output(display_name="CLIP", tooltip="The Qwen3 text encoder; wire into CLIP Text Encode."),
                io.Vae.Output(display_name="VAE", tooltip="The Flux VAE; wire into VAE Decode."),
                io.Int.Output(display_name="steps", tooltip="Recommended steps for the detected variant."),
                io.Float.Output(display_name="cfg", tooltip="Recommended cfg (ComfyUI convention) for the variant."),
            ],
            **SCHEMA_OPTIONS,
        )

    @classmethod
    def execute(cls, diffusion_model, text_encoder, vae, variant, weight_dtype) -> io.NodeOutput:
        model_path = resolve_model_path(diffusion_model)
        te_path = folder_paths.get_full_path_or_raise("text_encoders", text_encoder)
        vae_path = folder_paths.get_full_path_or_raise("vae", vae)

        dit = inspect_choice(
            model_path,
            "diffusion model",
            diffusion_model,
            "zimage_dit",
            "a Z-Image diffusion model",
            "Choose a Z-Image file (e.g. z_image_turbo_bf16.safetensors), or load this one with the loader for its type.",
        )
        te = inspect_choice(
            te_path,
            "text encoder",
            text_encoder,
            "qwen3_text_encoder",
            "a Qwen3 text encoder",
            "Z-Image needs qwen_3_4b.safetensors.",
        )
        if te.config.hidden_size != dit.config.cap_feat_dim:
            raise ValueError(
                f"Z-Image Loader: text encoder '{text_encoder}' produces {te.config.hidden_size}-wide features but "
                f"'{diffusion_model}' expects {dit.config.cap_feat_dim}-wide captions. Use the text encoder made for "
                "this model (qwen_3_4b.safetensors for Z-Image)."
            )
        inspect_choice(
            vae_path, "VAE", vae, "flux_vae", "the Flux VAE (16 latent channels)", "Z-Image needs ae.safetensors."
        )

        detection = detect_variant(variant, dit.metadata, os.path.basename(model_path.rstrip("/")))
        chosen = detection.variant

        sd, metadata = host_model.load_dit_state_dict(dit)
        try:
            model = host_model.build_zimage_model(sd, dit.config.comfy_unet_config(), metadata, weight_dtype)
        except ValueError as e:
            raise ValueError(f"Z-Image Loader: '{diffusion_model}': {e}") from None
        model = host_model.with_flow_shift(model, chosen.shift)
        host_model.tag_variant(model, chosen.name, detection.reason)

        te_config = None if te.config.hidden_size == QWEN3_4B_HIDDEN else te.config.comfy_model_config()
        clip = host_model.load_text_encoder(te, te_config)
        vae_obj = host_model.load_vae(vae_path)

        negative = (
            "negative prompts work through CFG"
            if chosen.negative_has_effect
            else "negative prompts have no effect through CFG (CFG-distilled, runs at cfg 1): the Z-Image NAG node makes one act"
        )
        summary = (
            f"{chosen.display_name}: {detection.reason}. Steps {chosen.steps}, cfg {chosen.cfg:g}, "
            f"shift {chosen.shift:g}; {negative}."
        )
        log.info("Z-Image Loader: %s", summary)
        return io.NodeOutput(model, clip, vae_obj, chosen.steps, float(chosen.cfg), ui=ui.PreviewText(summary))
