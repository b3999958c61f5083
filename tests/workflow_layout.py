"""Layout rules for the editor-format graphs in example_workflows/, in graph units, shared by the
host-free workflow tests (saved sizes, tests/core/test_workflows.py) and the browser tests (sizes as
the editor computed them, tests/host/test_browser_editor.py). EVERY file in example_workflows/ must
follow them; `python tests/workflow_layout.py example_workflows/NAME.json` prints a file's numbers
and rewrites its saved view (`--save-view`).

The rules, and why:

1. Readable when opened from the templates panel. ComfyUI frontend 1.49 (ComfyUI v0.33) ignores the
   view saved in a template and fits the whole graph to the window (`fitted_view` mirrors its
   `fitView`: the nodes' boxes, title bars included, padded by 10 units, fill 75% of the window).
   The editor draws no text below zoom MinFontSizeForLOD / NODE_TEXT_SIZE = 8 / 14 = 0.571
   (LGraphCanvas.updateLowQualityThreshold, frontend 1.35.9 and 1.49.6, devicePixelRatio 1): every
   node is then a blank box. So the fitted zoom in a 1366x768 window must be >= READABLE_ZOOM
   (0.58, a little above the threshold). In practice: the nodes span at most ~1720 units wide and
   ~950 units tall (title bars included).
2. The saved view (`extra.ds`) is `saved_view(workflow)`: the same fitted view at 1366x768, so
   File > Open (and frontend 1.35, which uses the saved view for templates too) shows what the
   templates panel shows. Recompute it whenever a node moves (`--save-view`).
3. Notes are read by their heading at that zoom: every note starts with a Markdown heading
   (`## ...`) of at most NOTE_HEADING_CHARS characters; the body is read zoomed in.
4. Room for messages: the nodes that show a message after a run (MESSAGE_NODES: the loader, the
   Turbo sampler, the CFG guider, the NAG node, the LoRA node; a new node that returns ui text joins the list)
   have MESSAGE_ROOM units free below them, across their width, before the next node's badge
   (a node with nothing below it has unbounded room: put message nodes at a column's foot). web/js/node_messages.js grows a node only into free room (the box
   scrolls when the text needs more), so without it the message is a single scrolling line.
5. SaveImage nodes are at least SAVE_IMAGE_MIN_HEIGHT tall: the image preview shows in the node
   without growing it over its neighbours.
6. No two nodes overlap (badge and title bar included, `node_box`), and no node reaches into a
   group's title bar.
"""

from __future__ import annotations

import json
import sys

# A node's title bar is drawn above its `pos`; the editor's source badge ("zimage-nodes") sits
# above the title bar. Both belong to the node when checking what covers what.
TITLE_HEIGHT = 30
BADGE_HEIGHT = 24
# A group's title bar, at the top of its bounding box (font size 24 plus padding).
GROUP_TITLE_HEIGHT = 34

# Rule 1: LGraphCanvas.updateLowQualityThreshold: min_font_size_for_lod (setting
# LiteGraph.Canvas.MinFontSizeForLOD, default 8) / (LiteGraph.NODE_TEXT_SIZE 14 * sqrt(dpr)).
MIN_FONT_SIZE_FOR_LOD = 8
NODE_TEXT_SIZE = 14
TEXT_ZOOM_THRESHOLD = MIN_FONT_SIZE_FOR_LOD / NODE_TEXT_SIZE  # 0.5714
READABLE_ZOOM = 0.58
SMALL_WINDOW = (1366, 768)
LARGE_WINDOW = (1920, 1080)
# useLitegraphService().fitView -> createBounds(nodes, 10) -> DragAndScale.fitToBounds(zoom 0.75)
FIT_PADDING = 10
FIT_FILL = 0.75
FIT_MIN_EXTENT = 300
MAX_SCALE = 10

# Rule 3
NOTE_TYPES = ("MarkdownNote", "Note")
NOTE_HEADING_CHARS = 70
# Rule 4
MESSAGE_NODES = ("ZINodesLoader", "ZINodesTurboSampler", "ZINodesCFGGuider", "ZINodesNAG", "ZINodesLoRA")
MESSAGE_ROOM = 110
# Rule 5
SAVE_IMAGE_MIN_HEIGHT = 270


def node_box(node: dict) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of what the editor draws for a node: badge, title bar and body."""
    x, y = node["pos"]
    w, h = node["size"]
    return (x, y - TITLE_HEIGHT - BADGE_HEIGHT, x + w, y + h)


def _intersect(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def overlapping_nodes(nodes: list[dict]) -> list[tuple]:
    """Pairs of nodes (ids and types) whose drawn boxes overlap."""
    found = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            if _intersect(node_box(a), node_box(b)):
                found.append(((a["id"], a["type"]), (b["id"], b["type"])))
    return found


def group_title_clashes(nodes: list[dict], groups: list[dict]) -> list[tuple]:
    """(group title, node id) where a node's box reaches into a group's title bar."""
    found = []
    for g in groups:
        x, y, w, _ = g["bounding"]
        title_bar = (x, y, x + w, y + GROUP_TITLE_HEIGHT)
        found += [(g["title"], n["id"]) for n in nodes if _intersect(node_box(n), title_bar)]
    return found


def bounds(nodes: list[dict], groups: list[dict] = ()) -> tuple[float, float, float, float]:
    boxes = [node_box(n) for n in nodes] + [
        (g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2], g["bounding"][1] + g["bounding"][3])
        for g in groups
    ]
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def to_screen(point, ds: dict) -> tuple[float, float]:
    """Canvas pixels of a graph point at a saved view (`extra.ds`): (p + offset) * scale."""
    return ((point[0] + ds["offset"][0]) * ds["scale"], (point[1] + ds["offset"][1]) * ds["scale"])


def fitted_view(nodes: list[dict], window: tuple[int, int] = SMALL_WINDOW) -> dict:
    """The view the templates panel opens a graph at (frontend 1.49 fitView) in a window of that
    size: {"scale", "offset"} as in `extra.ds`. Groups do not count, only nodes with title bars."""
    x0 = min(n["pos"][0] for n in nodes) - FIT_PADDING
    y0 = min(n["pos"][1] - TITLE_HEIGHT for n in nodes) - FIT_PADDING
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes) + FIT_PADDING
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes) + FIT_PADDING
    w, h = x1 - x0, y1 - y0
    width, height = window
    scale = min(FIT_FILL * width / max(w, FIT_MIN_EXTENT), FIT_FILL * height / max(h, FIT_MIN_EXTENT), MAX_SCALE)
    offset = [-x0 - w / 2 + width / scale / 2, -y0 - h / 2 + height / scale / 2]
    return {"scale": scale, "offset": offset}


def saved_view(workflow: dict) -> dict:
    """What `extra.ds` must hold (rule 2), rounded as saved."""
    view = fitted_view(workflow["nodes"], SMALL_WINDOW)
    return {"scale": round(view["scale"], 4), "offset": [round(v, 1) for v in view["offset"]]}


def note_heading_problems(workflow: dict) -> list[str]:
    problems = []
    for n in workflow["nodes"]:
        if n["type"] in NOTE_TYPES:
            first = str(n["widgets_values"][0]).lstrip().split("\n", 1)[0]
            if not first.startswith("#") or len(first.lstrip("# ")) > NOTE_HEADING_CHARS:
                problems.append(f"note {n['id']} does not start with a short Markdown heading: {first[:80]!r}")
    return problems


def message_room(node: dict, nodes: list[dict]) -> float:
    """Free units below a node, across its width, before the next node's box (badge included);
    unbounded (inf) when nothing is below."""
    x0, _, x1, bottom = node_box(node)
    tops = [
        node_box(n)[1]
        for n in nodes
        if n is not node and node_box(n)[1] >= bottom - 1e-6 and node_box(n)[0] < x1 and x0 < node_box(n)[2]
    ]
    return min(tops) - bottom if tops else float("inf")


def message_room_problems(workflow: dict) -> list[str]:
    nodes = workflow["nodes"]
    return [
        f"{n['type']} #{n['id']}: {message_room(n, nodes):.0f} units free below it, rule 4 wants {MESSAGE_ROOM}"
        for n in nodes
        if n["type"] in MESSAGE_NODES and message_room(n, nodes) < MESSAGE_ROOM
    ]


def save_image_problems(workflow: dict) -> list[str]:
    return [
        f"SaveImage #{n['id']} is {n['size'][1]} tall, rule 5 wants {SAVE_IMAGE_MIN_HEIGHT}"
        for n in workflow["nodes"]
        if n["type"] == "SaveImage" and n["size"][1] < SAVE_IMAGE_MIN_HEIGHT
    ]


def layout_problems(workflow: dict) -> list[str]:
    """Every broken rule of a workflow, in words (empty when it follows them all)."""
    problems = []
    zoom = fitted_view(workflow["nodes"], SMALL_WINDOW)["scale"]
    if zoom < READABLE_ZOOM:
        problems.append(f"fitted zoom at 1366x768 is {zoom:.3f}, rule 1 wants >= {READABLE_ZOOM}")
    ds = workflow.get("extra", {}).get("ds")
    want = saved_view(workflow)
    if (
        not ds
        or abs(ds["scale"] - want["scale"]) > 1e-3
        or any(abs(a - b) > 1 for a, b in zip(ds["offset"], want["offset"]))
    ):
        problems.append(f"extra.ds is {ds}, rule 2 wants {want} (run with --save-view)")
    problems += note_heading_problems(workflow)
    problems += message_room_problems(workflow)
    problems += save_image_problems(workflow)
    problems += [f"nodes overlap: {pair}" for pair in overlapping_nodes(workflow["nodes"])]
    problems += [
        f"node in a group's title bar: {c}" for c in group_title_clashes(workflow["nodes"], workflow["groups"])
    ]
    return problems


def main(argv: list[str]) -> int:
    save = "--save-view" in argv
    failed = 0
    for path in [a for a in argv if not a.startswith("--")]:
        with open(path, encoding="utf-8") as f:
            workflow = json.load(f)
        if save:
            workflow.setdefault("extra", {})["ds"] = saved_view(workflow)
            with open(path, "w", encoding="utf-8") as f:
                json.dump(workflow, f, indent=2, ensure_ascii=False)
                f.write("\n")
        zooms = [fitted_view(workflow["nodes"], w)["scale"] for w in (SMALL_WINDOW, LARGE_WINDOW)]
        problems = layout_problems(workflow)
        failed += bool(problems)
        print(f"{path}: fitted zoom {zooms[0]:.3f} at 1366x768, {zooms[1]:.3f} at 1920x1080")
        for p in problems:
            print("  -", p)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
