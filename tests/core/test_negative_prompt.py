"""Negative prompt builder: both targets, priority order, weights, dedupe, emphasis stripping."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zimage_nodes.core.negative_prompt import (
    CATEGORIES,
    DEFAULT_ENABLED,
    WEIGHTS,
    build_negative_prompt,
    strip_emphasis,
)


def phrases(text: str) -> list[str]:
    return [p.strip() for p in text.split(",")] if text else []


def test_categories_and_weights_are_the_documented_ones():
    assert list(CATEGORIES) == ["quality", "body", "composition", "text_and_watermarks", "style"]
    assert CATEGORIES["quality"][:2] == ("worst quality", "low quality")
    assert "mutated hands" in CATEGORIES["body"] and "watermark" in CATEGORIES["text_and_watermarks"]
    assert WEIGHTS == {"quality": 1.4, "body": 1.3, "composition": 1.0, "text_and_watermarks": 1.0, "style": 1.0}
    assert "style" not in DEFAULT_ENABLED


def test_zimage_target_is_plain_phrases_in_priority_order():
    out = build_negative_prompt({"text_and_watermarks": True, "quality": True, "body": False}, target="zimage")
    assert "(" not in out and ":" not in out
    assert phrases(out) == list(CATEGORIES["quality"]) + list(CATEGORIES["text_and_watermarks"])


def test_clip_target_weights_quality_and_body_only():
    out = build_negative_prompt(["quality", "body", "composition"], target="clip")
    got = phrases(out)
    assert got[0] == "(worst quality:1.4)"
    assert got[len(CATEGORIES["quality"])] == "(deformed:1.3)"
    assert "cropped" in got and "(cropped:1)" not in out and "(cropped)" not in out
    n_weighted = len(CATEGORIES["quality"]) + len(CATEGORIES["body"])
    assert all(re.fullmatch(r"\(.+:1\.[34]\)", p) for p in got[:n_weighted])
    assert all("(" not in p for p in got[n_weighted:])


def test_order_given_does_not_change_priority():
    a = build_negative_prompt(["style", "text_and_watermarks", "quality"], target="zimage")
    b = build_negative_prompt({"quality": True, "text_and_watermarks": True, "style": True}, target="zimage")
    assert a == b
    assert phrases(a)[0] == "worst quality" and phrases(a)[-1] == "overexposed"


def test_extra_comes_last_verbatim_for_clip():
    out = build_negative_prompt(["quality"], extra="(mustache:1.2), red eyes", target="clip")
    assert out.endswith(", (mustache:1.2), red eyes")


def test_extra_emphasis_is_stripped_for_zimage():
    out = build_negative_prompt(
        ["text_and_watermarks"], extra="((mustache)), (red eyes:1.2), (a, b:0.8)", target="zimage"
    )
    assert phrases(out)[-4:] == ["mustache", "red eyes", "a", "b"]
    assert "(" not in out and "1.2" not in out


def test_dedupe_is_case_insensitive_and_keeps_first():
    out = build_negative_prompt(["quality"], extra="Blurry, WATERMARK, watermark, (blurry:1.5)", target="zimage")
    got = phrases(out)
    assert [p.lower() for p in got].count("blurry") == 1
    assert got.count("WATERMARK") == 1 and "watermark" not in got
    clip = build_negative_prompt(["quality"], extra="(BLURRY:1.5), new", target="clip")
    assert "(BLURRY:1.5)" not in clip and phrases(clip)[-1] == "new"


def test_empty_and_defaults():
    assert build_negative_prompt([], target="zimage") == ""
    assert build_negative_prompt([], extra="  ,  ", target="clip") == ""
    default = phrases(build_negative_prompt())
    assert default[0] == "worst quality" and "cartoon" not in default


def test_escaped_parentheses_are_literal_and_kept():
    assert strip_emphasis(r"logo \(brand\)") == r"logo \(brand\)"
    assert strip_emphasis("(x:1.2)") == "x"
    assert strip_emphasis("(x)") == "x"
    assert strip_emphasis("((x:1.1) y)") == "x y"
    assert strip_emphasis("(x:.5)") == "x"
    assert strip_emphasis("a (b") == "a (b"


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown target"):
        build_negative_prompt(["quality"], target="t5")
    with pytest.raises(ValueError, match="anatomy"):
        build_negative_prompt(["anatomy"])


@given(
    enabled=st.sets(st.sampled_from(list(CATEGORIES))),
    extra=st.lists(st.sampled_from(["blurry", "Text", "(hat:1.3)", "hat", "((scarf))", "odd hands"]), max_size=5),
)
def test_properties(enabled, extra):
    extra_text = ", ".join(extra)
    z = build_negative_prompt(enabled, extra=extra_text, target="zimage")
    c = build_negative_prompt(enabled, extra=extra_text, target="clip")
    zp = phrases(z)
    assert "(" not in z
    assert len({p.casefold() for p in zp}) == len(zp)
    # Same phrases, same order, whatever the target; only the decoration differs.
    assert [p.casefold() for p in zp] == [strip_emphasis(p).casefold() for p in phrases(c)]
    # Category phrases precede free text, in priority order.
    expected = [p for name in CATEGORIES if name in enabled for p in CATEGORIES[name]]
    assert zp[: len(expected)] == expected
