"""Test bootstrap: load the pack as the package `zimage_nodes`, and the ComfyUI host harness.

The pack root is never put on sys.path: its `nodes/` folder would shadow ComfyUI's top-level
`nodes` module. It is loaded the way ComfyUI loads it, as a package from its `__init__.py`.
"""

import importlib.util
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent


def _load_pack_as(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, PACK_DIR / "__init__.py", submodule_search_locations=[str(PACK_DIR)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_load_pack_as("zimage_nodes")

pytest_plugins = ["comfy_host"]
