"""Test bootstrap: the ComfyUI host harness. The pack is imported by name, `zimage_nodes`, through
the stub in tools/site (on pytest's pythonpath)."""

pytest_plugins = ["comfy_host"]
