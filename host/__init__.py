"""ComfyUI-facing helpers of the nodes: model loading and patching, the guider and NAG patch, finiteness watch."""
