"""The recipe parser: exact trees and spans, every form of the language, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dmgd.language import Diagnostic, RecipeError, parse_recipe, render_text
from dmgd.language.ast import (
    Always,
    Boolean,
    Bound,
    Comment,
    Name,
    Number,
    OneSided,
    Param,
    Percent,
    Ramp,
    Range,
    Rule,
    Setting,
    SigmaRange,
    Span,
    String,
    Term,
)
from dmgd.language.grammar import grammar_path, grammar_text
from dmgd.language.parser import MAX_ERRORS, parse_raw
from language_helpers import ONE_LINE, REFERENCE, meaning, parse_with_grammar

REPO = Path(__file__).resolve().parent.parent


def errors_of(text: str) -> tuple[Diagnostic, ...]:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, "x.dmgd")
    assert info.value.diagnostics, "a RecipeError always carries diagnostics"
    assert info.value.source == text and info.value.path == "x.dmgd"
    return info.value.diagnostics


def rendered(text: str) -> str:
    return render_text(errors_of(text), text, "x.dmgd")


# --- the reference recipe -------------------------------------------------------------


def test_reference_recipe_tree_and_spans():
    r = parse_recipe(REFERENCE, "recipes/dmgd.dmgd")
    assert r.path == "recipes/dmgd.dmgd" and r.source == REFERENCE
    assert r.comments == (
        Comment("# DMGD reference schedule (CVPR 2026): DiT-XL/2, 50 respaced DDPM steps",
                Span(1, 1, 1, 72, 0, 71)),
    )
    assert [type(s).__name__ for s in r.statements] == ["Setting"] * 3 + ["Rule"] * 4

    steps = r.statements[0]
    assert steps == Setting("steps", Number(50.0, "50", Span(2, 11, 2, 13, 82, 84)),
                            Span(2, 1, 2, 13, 72, 84), Span(2, 1, 2, 6, 72, 77))
    assert r.statements[1].value == Name("ddpm", Span(3, 11, 3, 15, 95, 99))
    assert r.statements[2].value == Number(4.0, "4.0", Span(4, 11, 4, 14, 110, 113))

    explore = r.statements[3]
    assert explore.window == OneSided(">=", Bound(45.0, False, Span(6, 4, 6, 6, 118, 120)), Span(6, 1, 6, 6, 115, 120))
    assert explore.terms == (Term("explore", (), Span(6, 9, 6, 16, 123, 130), Span(6, 9, 6, 16, 123, 130)),)
    assert explore.span == Span(6, 1, 6, 16, 115, 130)

    soft = r.statements[4]
    assert soft.window == Range(Bound(25.0, False, Span(7, 1, 7, 3, 131, 133)),
                                Bound(45.0, False, Span(7, 5, 7, 7, 135, 137)), False, Span(7, 1, 7, 7, 131, 137))
    (term,) = soft.terms
    assert term.name == "softlabel" and term.name_span == Span(7, 9, 7, 18, 139, 148)
    assert term.span == Span(7, 9, 7, 36, 139, 166)  # up to and including `)`
    assert term.params == (
        Param("bs", Number(0.01, "0.01", Span(7, 22, 7, 26, 152, 156)), Span(7, 19, 7, 26, 149, 156),
              Span(7, 19, 7, 21, 149, 151)),
        Param("bn", Number(0.06, "0.06", Span(7, 31, 7, 35, 161, 165)), Span(7, 28, 7, 35, 158, 165),
              Span(7, 28, 7, 30, 158, 160)),
    )
    assert REFERENCE[term.span.start:term.span.end] == "softlabel(bs=0.01, bn=0.06)"

    refine = r.statements[5]
    assert refine.window.op == "<" and refine.window.bound.value == 25.0
    ot = r.statements[6].terms[0]
    rho = ot.params[1]
    assert rho.value == Ramp(Number(0.05, "0.05", Span(9, 22, 9, 26, 203, 207)),
                             Number(0.5, "0.5", Span(9, 28, 9, 31, 209, 212)), "linear",
                             Span(9, 22, 9, 31, 203, 212))
    assert ot.params[0].value.text == "10"


def test_one_line_form_equals_multi_line_form():
    multi = parse_recipe(REFERENCE)
    one = parse_recipe("steps=50; sampler=ddpm; cfg=4.0; t>=45: explore; 25..45: softlabel(bs=0.01,bn=0.06); "
                       "t<25: refine; 30..45: ot(K=10,rho=0.05..0.5)")
    assert meaning(one.statements) == meaning(multi.statements)
    assert one.statements != multi.statements  # the spans differ
    assert one.comments == ()


def test_spec_one_line_form():
    one = parse_recipe(ONE_LINE)
    multi = parse_recipe(REFERENCE)
    # The spec's one-line form leaves out the settings (all defaults) and `t<25: refine`
    # (implicit): the rules it has are the reference recipe's.
    rules = [s for i, s in enumerate(multi.statements) if isinstance(s, Rule) and i != 5]
    assert meaning(one.statements) == meaning(tuple(rules))
    assert [s.span.line for s in one.statements] == [1, 1, 1]
    assert ONE_LINE[one.statements[1].span.start:one.statements[1].span.end] == \
        "25..45: softlabel(bs=0.01,bn=0.06)"


def test_spec_one_line_form_compiles_to_the_same_schedule():
    compiler = pytest.importorskip("dmgd.language.compiler")
    multi = compiler.compile_schedule(parse_recipe(REFERENCE))
    one = compiler.compile_schedule(parse_recipe(ONE_LINE))
    assert len(one.steps) == 50
    assert one.steps == multi.steps


def test_reference_recipes_of_the_repo_parse():
    found = sorted((REPO / "recipes").glob("*.dmgd"))
    if not found:
        pytest.skip("no recipes/ in this checkout")
    for path in found:
        r = parse_recipe(path.read_text(encoding="utf-8"), str(path))
        assert r.statements, path


# --- every form ---------------------------------------------------------------------


@pytest.mark.parametrize("text, window", [
    ("25..45: x", Range(Bound(25, False, Span(1, 1, 1, 3, 0, 2)), Bound(45, False, Span(1, 5, 1, 7, 4, 6)), False,
                        Span(1, 1, 1, 7, 0, 6))),
    ("25..=45: x", Range(Bound(25, False, Span(1, 1, 1, 3, 0, 2)), Bound(45, False, Span(1, 6, 1, 8, 5, 7)), True,
                         Span(1, 1, 1, 8, 0, 7))),
    ("90%..100%: x", Range(Bound(90, True, Span(1, 1, 1, 4, 0, 3)), Bound(100, True, Span(1, 6, 1, 10, 5, 9)),
                           False, Span(1, 1, 1, 10, 0, 9))),
    ("t>=45: x", OneSided(">=", Bound(45, False, Span(1, 4, 1, 6, 3, 5)), Span(1, 1, 1, 6, 0, 5))),
    ("t > 45: x", OneSided(">", Bound(45, False, Span(1, 5, 1, 7, 4, 6)), Span(1, 1, 1, 7, 0, 6))),
    ("t<=2.5: x", OneSided("<=", Bound(2.5, False, Span(1, 4, 1, 7, 3, 6)), Span(1, 1, 1, 7, 0, 6))),
    ("t<25: x", OneSided("<", Bound(25, False, Span(1, 3, 1, 5, 2, 4)), Span(1, 1, 1, 5, 0, 4))),
    ("t>=90%: x", OneSided(">=", Bound(90, True, Span(1, 4, 1, 7, 3, 6)), Span(1, 1, 1, 7, 0, 6))),
    ("*: x", Always(Span(1, 1, 1, 2, 0, 1))),
    ("sigma 0.28..5.42: x", SigmaRange(Number(0.28, "0.28", Span(1, 7, 1, 11, 6, 10)),
                                       Number(5.42, "5.42", Span(1, 13, 1, 17, 12, 16)), Span(1, 1, 1, 17, 0, 16))),
    ("sigma 1e-2..80: x", SigmaRange(Number(0.01, "1e-2", Span(1, 7, 1, 11, 6, 10)),
                                     Number(80, "80", Span(1, 13, 1, 15, 12, 14)), Span(1, 1, 1, 15, 0, 14))),
    ("-5..-1: x", Range(Bound(-5, False, Span(1, 1, 1, 3, 0, 2)), Bound(-1, False, Span(1, 5, 1, 7, 4, 6)), False,
                        Span(1, 1, 1, 7, 0, 6))),
])
def test_windows(text, window):
    (rule,) = parse_recipe(text).statements
    assert rule.window == window
    assert rule.terms[0].name == "x"


def test_values_of_every_type():
    text = 'a = 12; b = 0.05; c = 1e-3; d = -0.5; e = 90%; f = "s"; g = true; h = false; i = ddim; j = 1E+2'
    values = [s.value for s in parse_recipe(text).statements]
    assert [meaning(v) for v in values] == [
        ("Number", ("value", 12.0)), ("Number", ("value", 0.05)), ("Number", ("value", 0.001)),
        ("Number", ("value", -0.5)), ("Percent", ("value", 90.0)), ("String", ("value", "s")),
        ("Boolean", ("value", True)), ("Boolean", ("value", False)), ("Name", ("value", "ddim")),
        ("Number", ("value", 100.0)),
    ]
    assert [v.text for v in values if isinstance(v, Number)] == ["12", "0.05", "1e-3", "-0.5", "1E+2"]
    i = text.index("true")
    assert values[6] == Boolean(True, Span(1, i + 1, 1, i + 5, i, i + 4))


def test_strings_unescape():
    text = r'model = "with \" and \\ and # and ; inside"  # a comment'
    r = parse_recipe(text)
    (s,) = r.statements
    end = text.index("  #")
    assert s.value == String('with " and \\ and # and ; inside', Span(1, 9, 1, end + 1, 8, end))
    assert r.comments == (Comment("# a comment", Span(1, end + 3, 1, len(text) + 1, end + 2, len(text))),)


def test_ramps():
    r = parse_recipe("0..10: ot(rho=0.05..0.5, a=cos(0..1), b=exp(1e-2..1), c=-1..-2)")
    params = r.statements[0].terms[0].params
    assert [(p.name, p.value.shape, p.value.start.value, p.value.end.value) for p in params] == [
        ("rho", "linear", 0.05, 0.5), ("a", "cos", 0.0, 1.0), ("b", "exp", 0.01, 1.0), ("c", "linear", -1.0, -2.0)]
    assert params[1].value.span == Span(1, 28, 1, 37, 27, 36)  # `cos(0..1)`, both parentheses


def test_terms_and_params():
    r = parse_recipe("*: a, b(), c(x=1), d(x=1, y=2,)")
    terms = r.statements[0].terms
    assert [t.name for t in terms] == ["a", "b", "c", "d"]
    assert [len(t.params) for t in terms] == [0, 0, 1, 2]
    assert terms[1].span == Span(1, 7, 1, 10, 6, 9)  # `b()`
    assert terms[3].params[1].name_span == Span(1, 27, 1, 28, 26, 27)


def test_names_are_not_keywords():
    r = parse_recipe("*: ot(grad=exp, shape=cos, sigma=t)\nt = 5\nsigma = 1\ncos = true")
    assert [p.value for p in r.statements[0].terms[0].params] == [
        Name("exp", Span(1, 12, 1, 15, 11, 14)), Name("cos", Span(1, 23, 1, 26, 22, 25)),
        Name("t", Span(1, 34, 1, 35, 33, 34))]
    assert [s.name for s in r.statements[1:]] == ["t", "sigma", "cos"]


def test_dots_and_numbers():
    r = parse_recipe("30..45: a(x=0..1, y=1.5..2.5)\n0..=1: b")
    w = r.statements[0].window
    assert (w.lo.value, w.hi.value) == (30, 45)
    ramps = [p.value for p in r.statements[0].terms[0].params]
    assert [(v.start.text, v.end.text) for v in ramps] == [("0", "1"), ("1.5", "2.5")]
    assert r.statements[1].window.inclusive


def test_separators_comments_blank_lines():
    text = "\n\n# one\n  steps = 5 ;; ; cfg = 2 # two\n;\n\n\t# three\r\n*: x\r\n"
    r = parse_recipe(text)
    assert [s.name if isinstance(s, Setting) else "rule" for s in r.statements] == ["steps", "cfg", "rule"]
    assert [c.text for c in r.comments] == ["# one", "# two", "# three"]
    assert [c.span.line for c in r.comments] == [3, 4, 7]
    assert r.statements[2].span.line == 8


@pytest.mark.parametrize("text", ["", "\n", "   \n\t\n", "# only a comment", ";;;", "\r\n\r\n"])
def test_empty_recipes_are_valid(text):
    r = parse_recipe(text)
    assert r.statements == ()


def test_comment_only_recipe_keeps_comments():
    r = parse_recipe("# a\n\n# b")
    assert [(c.text, c.span.line) for c in r.comments] == [("# a", 1), ("# b", 3)]


def test_generated_parser_and_the_grammar_agree_on_the_reference():
    for text in (REFERENCE, ONE_LINE, "", "# c\n*: x(a=\"s\")"):
        fast = parse_raw(text)
        slow = parse_with_grammar(text)
        assert [meaning(x) if not hasattr(x, "type") else (x.type, x.value) for x in fast] == \
               [meaning(x) if not hasattr(x, "type") else (x.type, x.value) for x in slow]
        assert [x.span for x in fast if hasattr(x, "span")] == [x.span for x in slow if hasattr(x, "span")]


# --- errors -------------------------------------------------------------------------


def test_syntax_error_rendering_exact():
    assert rendered("steps = 50\n25..45: ot(K=10 rho=1)\n") == """\
x.dmgd:2:17: error: expected `..`, `,` or `)`, found `rho`
  2 | 25..45: ot(K=10 rho=1)
    |                 ^^^
    = expected one of: `..`, `,`, `)`
"""


def test_statement_start_error():
    (d,) = errors_of(") = 5")
    assert d == Diagnostic("error", "expected a window, a setting or a comment, found `)`", Span(1, 1, 1, 2, 0, 1),
                           "syntax", expected=("a window", "a setting", "a comment"))


def test_missing_closing_parenthesis():
    (d,) = errors_of("t>=45: ot(K=1\n")
    assert d.message == "expected `,` or `)`, found end of line"
    assert d.span == Span(1, 14, 1, 14, 13, 13)
    assert d.expected == ("`,`", "`)`")
    (d,) = errors_of("t>=45: ot(K=1")
    assert d.message == "expected `,` or `)`, found end of file"
    (d,) = errors_of("t>=45: ot(K=1; x = 2")
    assert d.message == "expected `,` or `)`, found `;`"


def test_every_broken_statement_reported():
    text = "steps = 50\nt>=45 explore\ncfg = \n25..45: softlabel(bs=0.01,\nx = 1; = 2; y = 3\n*: ok\n"
    ds = errors_of(text)
    assert [(d.span.line, d.span.column, d.message) for d in ds] == [
        (2, 7, "expected `:`, found `explore`"),
        (3, 6, "expected a value, found end of line"),  # just after the `=`
        (4, 27, "expected a parameter or `)`, found end of line"),
        (5, 8, "expected a window, a setting or a comment, found `=`"),
    ]
    assert all(d.code == "syntax" and d.severity == "error" for d in ds)


def test_recovery_positions_after_strings_and_comments():
    text = 'a = "x;y" ; b = # c; d\n  e f\n'
    ds = errors_of(text)
    assert [(d.span.line, d.span.column, d.message) for d in ds] == [
        (1, 16, "expected a value, found a comment"),
        (2, 5, "expected `=`, a comparison (`>=`, `>`, `<=`, `<`) or a number, found `f`"),
    ]
    assert ds[1].help == "a setting is written `e = value`"


def test_helpful_errors():
    cases = {
        "steps 50": ("expected `..`, found end of file", "a setting is written `steps = value`"),
        ".5..1: x": ("expected a window, a setting or a comment, found `.`", "write a digit before the point: `0.5`"),
        "t>=4.: x": ("expected `:`, found `.`", "write a digit after the point: `4.0`"),
        'model = "abc': ("unterminated string", 'close the string with `"` on the same line'),
        "all: x": ("expected `=`, a comparison (`>=`, `>`, `<=`, `<`) or a number, found `:`",
                   "a window is `a..b`, `a..=b`, `t>=a`, `t>a`, `t<=b`, `t<b`, `*` or `sigma a..b`"),
        "ot(K=1)": ("expected `=`, a comparison (`>=`, `>`, `<=`, `<`) or a number, found `(`",
                    "a rule starts with its window: `*: term(...)` holds at every step"),
        "x>=4: a": ("expected `t`, found `x`", "a one-sided window is written `t>=4`"),
        "sgima 1..2: a": ("expected `sigma` before a noise-level range, found `sgima`", "did you mean `sigma`?"),
        "*: a(r=lin(0..1))": ("unknown ramp shape `lin`",
                              "a ramp is written `a..b` (linear), `cos(a..b)` or `exp(a..b)`"),
        "*: a(r=cso(0..1))": ("unknown ramp shape `cso`", "did you mean `cos`?"),
        'm = "a\\nb"': ("unknown escape `\\n` in a string",
                        'the only escapes are `\\"` and `\\\\`; write `\\\\` for a backslash'),
        "sigma 1..=2: x": ("expected a number, found `=`",
                           "a sigma window holds at both of its ends: write `sigma a..b`"),
    }
    for text, (message, help) in cases.items():
        (d,) = errors_of(text)
        assert (d.message, d.help) == (message, help), text


def test_numbers_beyond_a_float_are_errors():
    ds = errors_of("x = 1e999\nt>=1e400%: a\nsigma 1..-1e309: a\n*: a(r=cos(0..1E999), q=" + "9" * 400 + ")")
    assert [(d.span.line, d.span.column, d.message) for d in ds] == [
        (1, 5, "number too large: `1e999`"),
        (2, 4, "number too large: `1e400%`"),
        (3, 10, "number too large: `-1e309`"),
        (4, 15, "number too large: `1E999`"),
        (4, 25, "number too large: `" + "9" * 30 + "...`"),
    ]
    assert ds[0].help == "numbers must fit a double-precision float (at most about 1.8e308)"
    assert parse_recipe("x = 1.7e308; y = 1e-999").statements[1].value.value == 0.0


def test_unknown_escape_span():
    (d,) = errors_of('m = "ab\\qc"')
    assert d.span == Span(1, 8, 1, 10, 7, 9)


def test_error_in_window_name_and_value_both_reported():
    ds = errors_of("x>=4: a(r=lin(0..1))\nsigma 1..2: b(s=\"\\z\")")
    assert [d.message for d in ds] == ["expected `t`, found `x`", "unknown ramp shape `lin`",
                                       "unknown escape `\\z` in a string"]


def test_too_many_errors_stop():
    text = "@\n" * (MAX_ERRORS + 50)
    ds = errors_of(text)
    assert len(ds) == MAX_ERRORS + 1
    assert ds[-1].code == "too-many-errors"
    assert ds[-1].message == f"too many errors: stopped after {MAX_ERRORS}"


# --- robustness -----------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "\x00", "a\x00b = 1", "\ufffd\ufffd", b"\xff\xfe\x00steps".decode("utf-8", errors="replace"),
    "(" * 10_000, "*: a" + "(" * 10_000, "t>=" + "9" * 5000 + ": x(y=" + "[" * 100,
    '"' * 1001, "\\", "#" * 10, "..", "..=", "%", "1e999..2: x", "\u2028", "\x0b", "\r", "t>=1:\r\nx",
])
def test_broken_inputs_raise_recipe_error_only(text):
    try:
        r = parse_recipe(text)
    except RecipeError as e:
        assert all(isinstance(d, Diagnostic) for d in e.diagnostics)
        out = render_text(e.diagnostics, text, "x.dmgd")
        assert out.startswith("x.dmgd:")
    else:
        assert r.source == text


def test_ten_megabyte_line():
    text = "steps = " + "x" * 10_000_000 + " y"
    ds = errors_of(text)  # no time limit: a test must not depend on the machine's speed
    assert ds[0].message.startswith("expected ") and ds[0].span.column == 10_000_010
    out = render_text(ds, text, "x.dmgd")
    assert len(out) < 1000  # an excerpt, not the line


def test_long_valid_line_parses():
    text = "; ".join(f"{i}..{i + 1}: x(a={i})" for i in range(2000))
    r = parse_recipe(text)
    assert len(r.statements) == 2000 and r.statements[-1].span.line == 1


def test_non_str_input_is_a_type_error():
    with pytest.raises(TypeError):
        parse_recipe(b"steps = 1")  # type: ignore[arg-type]


# --- the grammar file and its packaging ---------------------------------------------------


def test_grammar_is_strict_lalr():
    pytest.importorskip("interegular", reason="lark's strict mode needs interegular")
    from dmgd.language.grammar import build_lark

    parser = build_lark(strict=True)  # raises on any conflict or terminal collision
    assert parser.options.parser == "lalr"
    assert len(parser.parse(ONE_LINE).children) == 3


def test_grammar_location_in_checkout():
    assert grammar_path() == REPO / "grammar" / "dmgd.lark"
    assert "start:" in grammar_text()


def test_generated_parser_is_current():
    """The committed `_standalone_parser.py` is what `python -m dmgd.language.generate`
    makes from the grammar now (regenerated here and compared, up to lark's numbering of
    the LALR states, which changes from one run to the next)."""
    import lark

    from dmgd.language import _standalone_parser, generate

    committed = generate.MODULE.read_text(encoding="utf-8")
    stale = "stale: run `python -m dmgd.language.generate` and commit the result"
    assert generate.recorded_hash(committed) == generate.grammar_hash(), stale
    if lark.__version__ != _standalone_parser.__version__:
        pytest.skip(f"generated with lark {_standalone_parser.__version__}, lark {lark.__version__} is installed")
    assert generate.is_current(committed, generate.generate()), stale


def test_parsing_needs_neither_lark_nor_a_cache(tmp_path):
    env = {**os.environ, "DMGD_CACHE_DIR": str(tmp_path / "cache")}
    code = ("import sys; from dmgd.language import parse_recipe; "
            "print(len(parse_recipe('t>=45: explore; *: ot(K=1)').statements), 'lark' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2 False"
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_wheel_ships_the_grammar(tmp_path):
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "wheels")], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheels").glob("dmgd-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert "dmgd/grammar/dmgd.lark" in names
        assert z.read("dmgd/grammar/dmgd.lark").decode() == grammar_text()
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import dmgd.language as L; from dmgd.language.grammar import grammar_path; "
            "r = L.parse_recipe('t>=45: explore; 25..45: softlabel(bs=0.01)'); "
            "print(grammar_path()); print(L.format_recipe(r), end='')")
    env = {**os.environ, "PYTHONPATH": str(target), "DMGD_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == str(target / "dmgd" / "grammar" / "dmgd.lark")
    assert lines[1:] == ["t>=45: explore", "25..45: softlabel(bs=0.01)"]


def test_import_is_light():
    code = "import sys, dmgd.language; print(sorted(m for m in ('torch', 'numpy', 'diffusers', 'lark') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
