"""Stop with a clear error instead of saving a black image when sampling ends non-finite.

Z-Image's activations overflow fp16: with fp16 weights (or `--fp16-unet`) the model can return
inf/NaN, the sampler carries it to the end and the VAE decodes a black image. `FiniteWatch`
records, in the sampler's per-step callback, whether each step's denoised prediction was finite
into a small tensor on the sampling device (no device-to-host read per step), and reads it once,
together with the final latent's check, when sampling ends.
"""

from __future__ import annotations

import torch

FIX = (
    "Z-Image overflows in fp16: load the model with weight_dtype bf16 in the Z-Image Loader (or run "
    "ComfyUI with --bf16-unet or --fp32-unet), and check that no model patch or LoRA injects NaN/inf."
)


class NonFiniteLatentError(RuntimeError):
    """Sampling produced NaN/inf: the image would be black."""


class FiniteWatch:
    def __init__(self, node: str):
        self.node = node
        self._flags: torch.Tensor | None = None  # [steps] bool, on the sampling device
        self.reads = 0  # device-to-host reads made (one per check)

    def wrap(self, callback):
        """A sampler callback (step, x0, x, total_steps) that records finiteness, then calls `callback`."""

        def record(step, x0, x, total_steps):
            if self._flags is None or self._flags.device != x0.device or self._flags.shape[0] < total_steps:
                self._flags = torch.ones(max(total_steps, step + 1), dtype=torch.bool, device=x0.device)
            if step < self._flags.shape[0]:
                self._flags[step] = torch.isfinite(x0).all()
            if callback is not None:
                callback(step, x0, x, total_steps)

        return record

    def check(self, samples: torch.Tensor) -> torch.Tensor:
        """Raise NonFiniteLatentError if `samples` holds NaN/inf (one read); return `samples`."""
        final = torch.isfinite(samples).all().reshape(1).to(torch.bool)
        flags = self._flags.to(final.device) if self._flags is not None else final.new_ones(0)
        values = torch.cat((flags, final)).tolist()
        self.reads += 1
        self._flags = None
        if values[-1]:
            return samples
        steps = values[:-1]
        first = next((i for i, ok in enumerate(steps) if not ok), None)
        where = (
            f"non-finite values first appeared at step {first + 1} of {len(steps)}"
            if first is not None
            else "the step where it started is unknown"
        )
        raise NonFiniteLatentError(
            f"{self.node}: sampling produced NaN/inf values ({where}); the image would be black. {FIX}"
        )
