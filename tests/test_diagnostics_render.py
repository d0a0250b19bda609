"""Rendering diagnostics: the exact text a user sees, and the JSON editors read."""

from __future__ import annotations

import json

import pytest

from dmgd.language import RecipeError, parse_recipe
from dmgd.language.ast import Span
from dmgd.language.diagnostics import Diagnostic, Note, did_you_mean, render_json, render_text

SOURCE = "steps = 50\ncfg = 4.0\n25..45: softlable(bs=0.01)\n30..45: softlabel\n"


def span_of(source: str, needle: str, occurrence: int = 0) -> Span:
    start = -1
    for _ in range(occurrence + 1):
        start = source.index(needle, start + 1)
    end = start + len(needle)
    line = source.count("\n", 0, start) + 1
    col = start - (source.rfind("\n", 0, start) + 1) + 1
    end_line = source.count("\n", 0, end) + 1
    end_col = end - (source.rfind("\n", 0, end) + 1) + 1
    return Span(line, col, end_line, end_col, start, end)


def test_unknown_term_exact():
    d = Diagnostic("error", "unknown term `softlable`", span_of(SOURCE, "softlable"), "unknown-term",
                   help="did you mean `softlabel`?")
    assert render_text([d], SOURCE, "recipes/x.dmgd") == """\
recipes/x.dmgd:3:9: error: unknown term `softlable`
  3 | 25..45: softlable(bs=0.01)
    |         ^^^^^^^^^
    = help: did you mean `softlabel`?
"""


def test_notes_with_and_without_spans_and_warnings():
    d = Diagnostic(
        "warning", "two conditioning terms hold at steps 30..44", span_of(SOURCE, "softlabel"), "conditioning-overlap",
        notes=(Note("steps are counted from 49 down to 0"), Note("the other rule", span_of(SOURCE, "softlable"))),
        help="make the windows disjoint",
    )
    assert render_text([d], SOURCE, "r.dmgd") == """\
r.dmgd:4:9: warning: two conditioning terms hold at steps 30..44
  4 | 30..45: softlabel
    |         ^^^^^^^^^
    = help: make the windows disjoint
    = note: steps are counted from 49 down to 0
r.dmgd:3:9: note: the other rule
  3 | 25..45: softlable(bs=0.01)
    |         ^^^^^^^^^
"""


def test_several_diagnostics_are_separated_by_a_blank_line():
    a = Diagnostic("error", "first", span_of(SOURCE, "steps"), "x")
    b = Diagnostic("error", "second", None, "y")
    assert render_text([a, b], SOURCE, "r") == """\
r:1:1: error: first
  1 | steps = 50
    | ^^^^^

r: error: second
"""
    assert render_text([], SOURCE, "r") == ""


def test_gutter_widens_for_two_digit_lines():
    source = "\n" * 11 + "t>=45: x\n"
    d = Diagnostic("error", "bad", span_of(source, "x"), "x", notes=(Note("here", span_of(source, "t>=45")),))
    assert render_text([d], source, "r") == """\
r:12:8: error: bad
  12 | t>=45: x
     |        ^
r:12:1: note: here
  12 | t>=45: x
     | ^^^^^
"""


def test_multi_line_span_is_clipped_to_its_first_line():
    d = Diagnostic("error", "spans two lines", span_of(SOURCE, "cfg = 4.0\n25"), "x")
    assert render_text([d], SOURCE, "r") == """\
r:2:1: error: spans two lines
  2 | cfg = 4.0
    | ^^^^^^^^^
"""


def test_zero_width_span_at_end_of_file_and_past_the_line():
    source = "t>=45: ot(K=1"
    d = Diagnostic("error", "expected `,` or `)`, found end of file", Span(1, 14, 1, 14, 13, 13), "syntax",
                   expected=("`,`", "`)`"))
    assert render_text([d], source, "r") == """\
r:1:14: error: expected `,` or `)`, found end of file
  1 | t>=45: ot(K=1
    |              ^
    = expected one of: `,`, `)`
"""


def test_tabs_and_control_characters_keep_carets_aligned():
    source = "\tx\x1b = @"
    d = Diagnostic("error", "bad", Span(1, 7, 1, 8, 6, 7), "x")
    out = render_text([d], source, "r")
    assert out == "r:1:7: error: bad\n  1 |     x\ufffd = @\n    |          ^\n"
    rows = out.splitlines()
    assert rows[1].index("@") == rows[2].index("^")


def test_crlf_line_endings_are_not_shown():
    source = "steps = 50\r\nt>=45: softlable\r\n"
    d = Diagnostic("error", "unknown term `softlable`", Span(2, 8, 2, 17, 19, 28), "unknown-term")
    assert render_text([d], source, "r") == """\
r:2:8: error: unknown term `softlable`
  2 | t>=45: softlable
    |        ^^^^^^^^^
"""


def test_long_lines_are_excerpted_around_the_caret():
    source = "a = " + "x" * 5000 + " @ " + "y" * 5000
    at = source.index("@")
    d = Diagnostic("error", "bad", Span(1, at + 1, 1, at + 2, at, at + 1), "x")
    out = render_text([d], source, "r")
    lines = out.splitlines()
    assert lines[0] == f"r:1:{at + 1}: error: bad"
    assert len(lines[1]) < 120 and lines[1].startswith("  1 | ...x") and lines[1].endswith("y...")
    assert lines[1].index("@") == lines[2].index("^")
    assert lines[2].count("^") == 1


def test_long_span_carets_are_clipped_to_the_excerpt():
    source = "a = " + "x" * 500
    d = Diagnostic("error", "bad", Span(1, 5, 1, 505, 4, 504), "x")
    lines = render_text([d], source, "r").splitlines()
    assert lines[2] == "    | " + " " * 4 + "^" * 96 and lines[1].endswith("...")


def test_color_adds_ansi_only_when_asked():
    d = Diagnostic("error", "bad", span_of(SOURCE, "cfg"), "x", help="h")
    plain = render_text([d], SOURCE, "r")
    colored = render_text([d], SOURCE, "r", color=True)
    assert "\x1b[" not in plain and "\x1b[1;31m" in colored
    import re

    assert re.sub(r"\x1b\[[0-9;]*m", "", colored) == plain


def test_real_syntax_errors_render():
    source = "steps = 50\nt>=45 explore\n25..45: softlabel(bs=0.01,\n"
    with pytest.raises(RecipeError) as info:
        parse_recipe(source, "r.dmgd")
    assert render_text(info.value.diagnostics, source, "r.dmgd") == """\
r.dmgd:2:7: error: expected `:`, found `explore`
  2 | t>=45 explore
    |       ^^^^^^^

r.dmgd:3:27: error: expected a parameter or `)`, found end of line
  3 | 25..45: softlabel(bs=0.01,
    |                           ^
    = expected one of: a parameter, `)`
"""


def test_render_json():
    d = Diagnostic("error", "unknown term `softlable`", span_of(SOURCE, "softlable"), "unknown-term",
                   notes=(Note("see", span_of(SOURCE, "cfg")), Note("no place")), help="did you mean `softlabel`?")
    e = Diagnostic("warning", "empty", None, "empty-window", expected=("a", "b"))
    data = json.loads(render_json([d, e], "r.dmgd"))
    assert data == [
        {"path": "r.dmgd", "line": 3, "column": 9, "end_line": 3, "end_column": 18, "severity": "error",
         "code": "unknown-term", "message": "unknown term `softlable`", "help": "did you mean `softlabel`?",
         "expected": [],
         "notes": [{"message": "see", "line": 2, "column": 1, "end_line": 2, "end_column": 4},
                   {"message": "no place", "line": None, "column": None, "end_line": None, "end_column": None}]},
        {"path": "r.dmgd", "line": None, "column": None, "end_line": None, "end_column": None,
         "severity": "warning", "code": "empty-window", "message": "empty", "help": None, "expected": ["a", "b"],
         "notes": []},
    ]
    assert json.loads(render_json([], "r")) == []


def test_render_json_is_ascii_safe():
    d = Diagnostic("error", "bad \udcff \x00 é", None, "x")
    out = render_json([d], "r")
    assert out.isascii()
    assert json.loads(out)[0]["message"] == "bad \udcff \x00 é"


@pytest.mark.parametrize("name, candidates, expected", [
    ("softlable", ["softlabel", "explore", "refine"], "did you mean `softlabel`?"),
    ("stpes", ["steps", "sampler", "seed"], "did you mean `steps`?"),
    ("Steps", ["steps", "seed"], "did you mean `steps`?"),
    ("zzzz", ["steps", "seed"], None),
    ("steps", ["steps"], None),
    ("", ["steps"], None),
    ("x", [], None),
])
def test_did_you_mean(name, candidates, expected):
    assert did_you_mean(name, candidates) == expected
