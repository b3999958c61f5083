"""The one way tools and tests import the pack by name: `import zimage_nodes` with tools/site on
sys.path (pytest's pythonpath; scripts add it themselves).

Importing this stub replaces it with the pack root, loaded from its own `__init__.py` as the package
`zimage_nodes`, the way ComfyUI loads a custom node. The pack root itself never goes on sys.path:
its `nodes/` folder would shadow ComfyUI's top-level `nodes` module.
"""

import importlib.util
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[3]

_spec = importlib.util.spec_from_file_location(
    __name__, PACK_DIR / "__init__.py", submodule_search_locations=[str(PACK_DIR)]
)
_pack = importlib.util.module_from_spec(_spec)
sys.modules[__name__] = _pack  # the import statement returns what sys.modules holds when this file ends
try:
    _spec.loader.exec_module(_pack)
except BaseException:
    del sys.modules[__name__]
    raise
