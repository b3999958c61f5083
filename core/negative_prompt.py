"""Negative prompt builder: standard phrases by category, formatted for the text encoder in use.

Why two targets: classic Stable Diffusion CLIP encoders in ComfyUI parse emphasis, so
"(worst quality:1.4)" up-weights those tokens. ComfyUI's Z-Image tokenizer (Qwen3) calls the
tokenizer with weights disabled: "(worst quality:1.4)" reaches the encoder as literal text,
parentheses and number included, which only adds noise to the conditioning. So the "zimage"
target emits plain phrases, ordered by priority (position is the only emphasis an LLM encoder
honours), and strips emphasis syntax from the user's free text.

A negative prompt only matters when it is evaluated: Z-Image-Turbo runs without CFG (cfg 1.0), so
its negative prompt is never used; the base model (cfg 4-6) benefits from one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# Priority order = dict order: earlier categories are the ones users most often want suppressed.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "quality": ("worst quality", "low quality", "blurry", "jpeg artifacts", "noise", "grainy"),
    "body": (
        "deformed",
        "bad anatomy",
        "bad proportions",
        "extra limbs",
        "extra fingers",
        "missing fingers",
        "fused fingers",
        "mutated hands",
    ),
    "composition": ("cropped", "out of frame", "cut off", "bad framing", "duplicate"),
    # Named for what it removes: a toggle called just "text" reads like a text field in the node.
    "text_and_watermarks": ("text", "watermark", "signature", "logo", "username"),
    # For photographic targets: these push away from illustration and blown-out looks, so leave the
    # category off when an illustration, render or painting is what is wanted.
    "style": ("cartoon", "3d render", "painting", "oversaturated", "overexposed"),
}

# Emphasis for the "clip" target; 1.0 is written without parentheses.
WEIGHTS: dict[str, float] = {
    "quality": 1.4,
    "body": 1.3,
    "composition": 1.0,
    "text_and_watermarks": 1.0,
    "style": 1.0,
}

# Style is off by default because it assumes a photographic target.
DEFAULT_ENABLED: tuple[str, ...] = ("quality", "body", "composition", "text_and_watermarks")

# The first is the default.
TARGETS = ("zimage", "clip")

# ComfyUI's escapes for literal parentheses (sd1_clip.escape_important); kept as written.
_ESC_OPEN, _ESC_CLOSE = "\0\2", "\0\1"
_INNER_GROUP = re.compile(r"\(([^()]*)\)")
_WEIGHT_SUFFIX = re.compile(r"\s*:\s*[-+]?(?:\d+\.?\d*|\.\d+)\s*$")


def strip_emphasis(text: str) -> str:
    """Remove ComfyUI emphasis syntax: "(x:1.2)" -> "x", "(x)" -> "x", nested groups too.

    Escaped parentheses ("\\(", "\\)") are literal in ComfyUI and are left untouched; unbalanced
    parentheses are left as written rather than guessed at."""
    s = text.replace("\\(", _ESC_OPEN).replace("\\)", _ESC_CLOSE)
    while True:
        new = _INNER_GROUP.sub(lambda m: _WEIGHT_SUFFIX.sub("", m.group(1)), s)
        if new == s:
            break
        s = new
    return s.replace(_ESC_OPEN, "\\(").replace(_ESC_CLOSE, "\\)")


def _split_free_text(extra: str) -> list[str]:
    """Split on commas and newlines outside parentheses, so "(a, b:1.2)" stays one piece."""
    pieces, depth, current, i = [], 0, [], 0
    while i < len(extra):
        ch = extra[i]
        if ch == "\\" and i + 1 < len(extra) and extra[i + 1] in "()":
            current.append(extra[i : i + 2])
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch in ",\n" and depth == 0:
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    pieces.append("".join(current))
    return [p.strip() for p in pieces if p.strip()]


def _dedupe_key(phrase: str) -> str:
    return " ".join(strip_emphasis(phrase).split()).casefold()


def _enabled(categories: Mapping[str, bool] | Iterable[str] | None) -> list[str]:
    if categories is None:
        names = list(DEFAULT_ENABLED)
    elif isinstance(categories, Mapping):
        names = [name for name, on in categories.items() if on]
    elif isinstance(categories, str):
        names = [categories]
    else:
        names = list(categories)
    unknown = [n for n in names if n not in CATEGORIES]
    if unknown:
        raise ValueError(f"unknown negative-prompt categories {unknown}; known: {', '.join(CATEGORIES)}")
    # Priority order regardless of the order given.
    return [name for name in CATEGORIES if name in names]


def _format_weighted(phrase: str, weight: float) -> str:
    if weight == 1.0:
        return phrase
    return f"({phrase}:{weight:g})"


def build_negative_prompt(
    categories: Mapping[str, bool] | Iterable[str] | None = None,
    extra: str = "",
    target: str = "zimage",
) -> str:
    """Build a comma-separated negative prompt.

    categories: {name: enabled} or the enabled names (None: DEFAULT_ENABLED); emitted in the
        priority order of CATEGORIES whatever order they are given in.
    extra: free text appended after the categories. Pieces (split on commas/newlines outside
        parentheses) are kept verbatim for "clip"; for "zimage" their emphasis syntax is stripped
        because the Z-Image tokenizer would read it as literal text.
    target: "zimage" (plain phrases) or "clip" ("(phrase:weight)" from WEIGHTS).
    Phrases are deduplicated case-insensitively (ignoring emphasis); the first occurrence wins.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; use one of {TARGETS}")
    out: list[str] = []
    seen: set[str] = set()

    def add(key_source: str, rendered: str) -> None:
        key = _dedupe_key(key_source)
        if key and key not in seen:
            seen.add(key)
            out.append(rendered)

    for name in _enabled(categories):
        for phrase in CATEGORIES[name]:
            add(phrase, _format_weighted(phrase, WEIGHTS[name]) if target == "clip" else phrase)
    # For zimage the emphasis goes first, so "(a, b:1.2)" yields the two phrases "a" and "b".
    free = (extra or "") if target == "clip" else strip_emphasis(extra or "")
    for piece in _split_free_text(free):
        add(piece, piece if target == "clip" else " ".join(piece.split()))
    return ", ".join(out)
