"""Screenshots of each example workflow as a person first sees it when opening it from the
templates panel (Workflow > Browse Templates) in a 1366x768 window: the editor's panels, its own
fitted view (frontend 1.49) or the saved view (frontend 1.35), default settings. For a reviewer to
check that every node's text is drawn (tests/workflow_layout.py, rule 1).

    COMFYUI_PATH=/path/to/ComfyUI python tools/template_screenshots.py [OUT_DIR] [WIDTHxHEIGHT]

Writes OUT_DIR/NAME.png (default: template_views/ in the current folder) and prints each zoom.
Needs what the browser tests need (tools/browser_deps.sh).
"""

from __future__ import annotations

import sys
from pathlib import Path

from editor_session import editor_helpers, editor_session


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "template_views")
    if len(argv) > 1:
        editor_helpers().VIEWPORT = tuple(int(v) for v in argv[1].split("x"))
    out.mkdir(parents=True, exist_ok=True)
    with editor_session("zinodes_template_views_") as (editor, server, driver):
        for name in editor.WORKFLOWS:
            editor.open_workflow(driver, server, name, "template")
            editor.close_dialogs(driver)
            geo = driver.execute_script(editor.GEOMETRY)
            driver.execute_script("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            path = out / f"{name}.png"
            driver.save_screenshot(str(path))
            text = "no text drawn" if geo["lowQuality"] else "text drawn"
            print(f"{path}: frontend {geo['frontend']}, zoom {geo['scale']:.3f}, {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
