"""The pack imports outside ComfyUI, and its core never pulls the host in."""

import subprocess
import sys
import textwrap
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[2]
CORE_MODULES = sorted(p.stem for p in (PACK_DIR / "core").glob("*.py") if p.stem != "__init__")


def test_pack_and_core_import_without_comfyui():
    # A fresh interpreter: this test session may already have booted ComfyUI.
    script = textwrap.dedent(f"""
        import importlib, sys
        sys.path.append({str(PACK_DIR / "tools" / "site")!r})
        import zimage_nodes as pack
        for name in {CORE_MODULES!r}:
            importlib.import_module("zimage_nodes.core." + name)
        host = sorted(m for m in sys.modules if m.split(".")[0] in ("comfy", "comfy_api", "folder_paths", "nodes"))
        assert not host, host
        assert callable(pack.comfy_entrypoint)
        print("ok", len({CORE_MODULES!r}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ok {len(CORE_MODULES)}"
    assert len(CORE_MODULES) >= 6
