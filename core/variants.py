"""Z-Image variants (Turbo, Base) with their sampling defaults, and detection of which one a file is.

Both variants share one architecture, so the weights' shapes cannot tell them apart; a wrong guess
is costly (Turbo sampled like Base burns 3.5x the steps, Base sampled like Turbo gives mush). So
detection says where its answer came from, and the user can always override it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Variant", "TURBO", "BASE", "VARIANTS", "CHOICES", "Detection", "detect_variant"]


@dataclass(frozen=True)
class Variant:
    """Sampling defaults for one Z-Image variant; ``cfg`` is ComfyUI's (diffusers guidance + 1).
    ``cfg_normalization`` and ``cfg_truncation`` default to the reference pipeline's (both off)."""

    name: str
    display_name: str
    steps: int
    cfg: float
    shift: float
    negative_has_effect: bool
    cfg_normalization: float = 0.0
    cfg_truncation: float = 1.0


# Distilled: 8 steps without guidance, so the negative prompt is never evaluated.
TURBO = Variant("turbo", "Z-Image-Turbo", steps=8, cfg=1.0, shift=3.0, negative_has_effect=False)
# Undistilled: 28-50 steps with CFG (cfg 5 = diffusers guidance 4), so a negative prompt acts.
# ComfyUI's default shift of 3.0 is too low for it.
BASE = Variant("base", "Z-Image (base)", steps=28, cfg=5.0, shift=6.0, negative_has_effect=True)

VARIANTS: dict[str, Variant] = {"turbo": TURBO, "base": BASE}
CHOICES = ("auto", "turbo", "base")

# Keys where model cards / converters put a model's identity; values are matched case-insensitively.
METADATA_KEYS = (
    "zimage.variant",
    "variant",
    "modelspec.title",
    "modelspec.architecture",
    "modelspec.description",
    "model_type",
    "name",
)
_TURBO_WORDS = ("turbo", "distill")
_BASE_MARKERS = ("z-image-base", "z_image_base", "zimage-base", "zimage_base", "z-image base")
_FAMILY_WORDS = ("z-image", "z_image", "zimage")


@dataclass(frozen=True)
class Detection:
    """Which variant, how it was decided (``explicit``/``metadata``/``filename``/``default``), and why in words."""

    variant: Variant
    source: str
    reason: str


def _from_metadata(metadata: dict | None) -> Detection | None:
    if not metadata:
        return None
    found = [(k, metadata[k]) for k in METADATA_KEYS if isinstance(metadata.get(k), str)]
    # Turbo first: a Turbo card often also says "Z-Image", never the reverse.
    for key, value in found:
        low = value.lower()
        for word in _TURBO_WORDS:
            if word in low:
                return Detection(TURBO, "metadata", f"metadata {key}={value!r} contains {word!r}")
    for key, value in found:
        low = value.strip().lower()
        if key in ("zimage.variant", "variant") and low == "base":
            return Detection(BASE, "metadata", f"metadata {key}={value!r}")
        for marker in _BASE_MARKERS:
            if marker in low:
                return Detection(BASE, "metadata", f"metadata {key}={value!r} contains {marker!r}")
    return None


def _basename(filename: str) -> str:
    # ComfyUI passes names relative to the models folder, with either separator on Windows.
    return re.split(r"[\\/]", filename or "")[-1]


def _from_filename(filename: str) -> Detection | None:
    name = _basename(filename)
    low = name.lower()
    for word in _TURBO_WORDS:
        if word in low:
            return Detection(TURBO, "filename", f"file name {name!r} contains {word!r}")
    # "base" as a word of the name ("z_image_base", "zimage-base-v1"), not inside "database".
    if re.search(r"(^|[^a-z])base([^a-z]|$)", low):
        return Detection(BASE, "filename", f"file name {name!r} contains 'base'")
    for word in _FAMILY_WORDS:
        if word in low:
            return Detection(
                BASE,
                "filename",
                f"file name {name!r} mentions {word!r} without 'turbo', so it is taken for the base model",
            )
    return None


def detect_variant(choice: str, metadata: dict | None, filename: str) -> Detection:
    """Decide the variant: explicit ``choice`` > safetensors ``metadata`` > ``filename`` > Turbo.

    ``choice`` is ``"auto"`` (detect), ``"turbo"`` or ``"base"``. Turbo is the fallback because it
    is the published single-file checkpoint most users have; the reason then says how to override.
    """
    if not isinstance(choice, str) or choice.strip().lower() not in CHOICES:
        raise ValueError(f"variant must be one of {', '.join(CHOICES)}; got {choice!r}")
    choice = choice.strip().lower()
    if choice != "auto":
        return Detection(VARIANTS[choice], "explicit", f"variant set to {choice!r} explicitly")
    detected = _from_metadata(metadata) or _from_filename(filename)
    if detected is not None:
        return detected
    name = _basename(filename) or "(no file name)"
    return Detection(
        TURBO,
        "default",
        f"could not tell the variant from the metadata or the file name {name!r}; assuming Turbo. "
        "Set variant to 'base' or 'turbo' to choose explicitly",
    )
