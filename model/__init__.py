"""The mirrored Z-Image (NextDiT) forward code and the guard that checks it against the host. Imports torch,
and ComfyUI model code lazily; never comfy_api."""
