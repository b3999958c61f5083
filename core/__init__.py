"""Host-free core of Z-Image Nodes: nothing under this package imports ComfyUI."""
