"""Load this pack as an importable package, the way ComfyUI loads a custom node: from its
`__init__.py` by file path, under a package name, never by putting the pack root on sys.path
(its `nodes/` folder would shadow ComfyUI's top-level `nodes` module).

Stdlib only and importable by file path, so scripts, the test bootstrap and the benchmark can all
use it before the pack itself is loaded:

    spec = importlib.util.spec_from_file_location("zimage_pack_loader", TOOLS_DIR / "pack_loader.py")
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent
PACKAGE = "zimage_nodes"


def load_pack(name: str = PACKAGE, pack_dir: str | os.PathLike = PACK_DIR):
    """The pack as package `name` (loaded once per process; the pack's __init__ imports no ComfyUI)."""
    if name in sys.modules:
        return sys.modules[name]
    pack_dir = Path(pack_dir)
    spec = importlib.util.spec_from_file_location(
        name, pack_dir / "__init__.py", submodule_search_locations=[str(pack_dir)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_tool(tool: str, name: str = PACKAGE):
    """A module of the pack's tools/ (e.g. "headless"), with the pack loaded as `name`."""
    load_pack(name)
    return importlib.import_module(f"{name}.tools.{tool}")


def keep_pack_root_off_sys_path(*also: str | os.PathLike):
    """Drop the pack root (and `also`, e.g. a script's own folder, which Python puts first) from
    sys.path, so that `import nodes` finds ComfyUI's module."""
    bad = {PACK_DIR.resolve(), *(Path(p).resolve() for p in also)}
    keep = []
    for entry in sys.path:
        try:
            resolved = Path(entry or os.getcwd()).resolve()
        except OSError:
            resolved = None
        if resolved not in bad:
            keep.append(entry)
    sys.path[:] = keep
