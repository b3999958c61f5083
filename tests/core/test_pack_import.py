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


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports included)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_model_code_never_imports_the_node_api():
    # model/ mirrors ComfyUI's model code: torch and comfy.* model modules, never the node API.
    files = sorted((PACK_DIR / "model").glob("*.py"))
    assert len(files) >= 3
    for f in files:
        bad = {m for m in _imported_modules(f) if m.split(".")[0] in ("comfy_api", "comfy_extras", "nodes", "server")}
        assert not bad, (f.name, bad)


def test_nodes_folder_holds_only_nodes():
    # One ComfyNode per file (plus the extension list): helpers live in host/ and model/.
    import ast

    for f in sorted((PACK_DIR / "nodes").glob("*.py")):
        if f.name == "__init__.py":
            continue
        tree = ast.parse(f.read_text(encoding="utf-8"))
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
        functions = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        assert [ast.unparse(c.bases[0]) for c in classes] == ["io.ComfyNode"], f.name
        assert functions == [], (f.name, functions)
