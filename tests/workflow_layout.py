"""Layout checks for editor-format graphs, in graph units, shared by the host-free workflow tests
(saved sizes) and the browser tests (sizes as the editor computed them)."""

from __future__ import annotations

# A node's title bar is drawn above its `pos`; the editor's source badge ("zimage-nodes") sits
# above the title bar. Both belong to the node when checking what covers what.
TITLE_HEIGHT = 30
BADGE_HEIGHT = 24
# A group's title bar, at the top of its bounding box (font size 24 plus padding).
GROUP_TITLE_HEIGHT = 34


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
