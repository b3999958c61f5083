"""Writes the template thumbnails (example_workflows/NAME.jpg): a screenshot of each example graph
as the real ComfyUI editor draws it, fitted into a square, without the editor's panels. ComfyUI's
template browser shows NAME.jpg beside NAME.json as the workflow's card image.

    COMFYUI_PATH=/path/to/ComfyUI python tools/make_thumbnails.py

Needs what the browser tests need (tools/browser_deps.sh). Re-run it after changing a layout.
"""

from __future__ import annotations

import base64

from editor_session import PACK_DIR, editor_helpers, editor_session

SIDE = 1000  # px of canvas captured
OUTPUT_SCALE = 0.6  # the card shows ~300 px; 600 px stays sharp on dense screens
LEFT, TOP, BOTTOM = 60, 95, 60  # the editor's sidebar, top bars and bottom-right controls


FIT = """
const app = window.comfyAPI.app.app, ds = app.canvas.ds;
const [left, top, side] = arguments;
const xs = [], ys = [];
for (const n of app.graph._nodes) { xs.push(n.pos[0], n.pos[0] + n.size[0]); ys.push(n.pos[1] - 54, n.pos[1] + n.size[1]); }
for (const g of app.graph._groups ?? app.graph.groups ?? []) { const b = g._bounding ?? g.bounding; xs.push(b[0], b[0] + b[2]); ys.push(b[1], b[1] + b[3]); }
const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
const scale = 0.94 * Math.min(side / (x1 - x0), side / (y1 - y0));
ds.scale = scale;
ds.offset[0] = (left + (side - (x1 - x0) * scale) / 2) / scale - x0;
ds.offset[1] = (top + (side - (y1 - y0) * scale) / 2) / scale - y0;
app.canvas.show_info = false;
app.canvas.setDirty(true, true);
return scale;
"""


def main() -> int:
    editor_helpers().VIEWPORT = (LEFT + SIDE, TOP + SIDE + BOTTOM)
    # The picture is of the graph: no minimap, no source badge (it names the folder the pack was
    # cloned into), and text drawn at any zoom so a large graph shows its labels too.
    settings = {
        "Comfy.Minimap.Visible": False,
        "Comfy.NodeBadge.NodeSourceBadgeMode": "None",
        "LiteGraph.Canvas.MinFontSizeForLOD": 0,
    }
    with editor_session("zinodes_thumbnails_", settings) as (editor, server, driver):
        for name in editor.WORKFLOWS:
            editor.open_workflow(driver, server, name)
            editor.close_dialogs(driver)
            scale = driver.execute_script(FIT, LEFT, TOP, SIDE)
            driver.execute_script("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            shot = driver.execute_cdp_cmd(
                "Page.captureScreenshot",
                {
                    "format": "jpeg",
                    "quality": 85,
                    "clip": {"x": LEFT, "y": TOP, "width": SIDE, "height": SIDE, "scale": OUTPUT_SCALE},
                },
            )
            out = PACK_DIR / "example_workflows" / f"{name}.jpg"
            out.write_bytes(base64.b64decode(shot["data"]))
            print(f"{out.name}: graph at zoom {scale:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
