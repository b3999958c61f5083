"""A ComfyUI server with the pack and a headless browser on its editor, for the tools that take
pictures of the example workflows (template_screenshots.py, make_thumbnails.py). The browser
tests' helpers (tests/host/test_browser_editor.py) do the work; this only starts and stops them.
Needs what the browser tests need (tools/browser_deps.sh)."""

from __future__ import annotations

import importlib
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
TESTS = PACK_DIR / "tests"


def editor_helpers():
    """tests/host/test_browser_editor.py as a module (and the pack importable as `zimage_nodes`)."""
    for path in (str(TESTS), str(TESTS / "host"), str(PACK_DIR / "tools" / "site")):
        if path not in sys.path:
            sys.path.insert(0, path)
    return importlib.import_module("test_browser_editor")


@contextmanager
def editor_session(prefix: str, settings: dict | None = None):
    """(helpers, server, driver): the server on demo models in a temporary folder, `settings`
    posted to it before the browser opens, both stopped on exit. Set helpers.VIEWPORT before."""
    editor = editor_helpers()
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    server = editor.start_server(editor.write_models(tmp / "models"), tmp / "output")
    driver = None
    try:
        for key, value in (settings or {}).items():
            editor.post_setting(server, key, value)
        driver = editor.start_browser(server.url, tmp / "profile")
        yield editor, server, driver
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
