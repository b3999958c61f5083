"""Test bootstrap: load the pack as the package `zimage_nodes` (tools/pack_loader.py), and the
ComfyUI host harness.

The pack root is never put on sys.path: its `nodes/` folder would shadow ComfyUI's top-level
`nodes` module. It is loaded the way ComfyUI loads it, as a package from its `__init__.py`.
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "zimage_pack_loader", Path(__file__).resolve().parent.parent / "tools" / "pack_loader.py"
)
pack_loader = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pack_loader)
pack_loader.load_pack("zimage_nodes")

pytest_plugins = ["comfy_host"]
