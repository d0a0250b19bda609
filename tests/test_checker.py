"""The checker: each check fires with its code, its place (line:col) and its message."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmgd.language.checker import check_recipe
from dmgd.language.parser import parse_recipe

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.dmgd"))


def check(text: str):
    return check_recipe(parse_recipe(text, "<test>"))


def one(text: str):
    diagnostics = check(text)
    assert len(diagnostics) == 1, [(d.code, d.message) for d in diagnostics]
    return diagnostics[0]


def at(d) -> tuple[int, int]:
    return d.span.line, d.span.column


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipes_are_clean(path):
    assert check_recipe(parse_recipe(path.read_text(encoding="utf-8"), str(path))) == []


def test_the_shipped_recipes_are_there():
    assert {p.name for p in RECIPES} >= {"dmgd.dmgd", "baseline.dmgd", "sm-only.dmgd", "dm-only.dmgd",
                                         "mean.dmgd", "mgd3.dmgd", "digits.dmgd", "digits-baseline.dmgd"}


def test_digits_recipes_differ_from_the_paper_only_where_their_comments_say():
    """digits-baseline.dmgd is baseline.dmgd at CFG 2; digits.dmgd is dmgd.dmgd at CFG 2 with
    the OT rule retargeted (5..25, K = 5, rho 15..150): composition states it, so the test
    reads what each file writes of its own."""
    from dmgd.language.formatter import format_statement

    def own(name: str) -> list[str]:
        path = RECIPES[0].parent / name
        recipe = parse_recipe(path.read_text(encoding="utf-8"), str(path), resolve=False)
        return [format_statement(st) for st in recipe.own_statements]

    assert own("digits-baseline.dmgd") == ['use "baseline.dmgd"', "cfg = 2.0"]
    assert own("digits.dmgd") == ['use "dmgd.dmgd"', "cfg = 2.0", "drop ot", "5..25: ot(K=5, rho=15..150)"]


# --- names ------------------------------------------------------------------------------


def test_unknown_setting_with_did_you_mean():
    d = one("cfg = 4\nstpes = 50\n")
    assert d.code == "unknown-setting" and d.severity == "error"
    assert at(d) == (2, 1) and d.span.end_column == 6
    assert d.message == "unknown setting `stpes`"
    assert "steps" in d.help


def test_unknown_term_with_did_you_mean():
    d = one("t>=45: explor\n")
    assert (d.code, at(d), d.message) == ("unknown-term", (1, 8), "unknown term `explor`")
    assert "explore" in d.help


def test_unknown_term_far_from_any_lists_the_terms():
    d = one("*: zzzzzz\n")
    assert d.code == "unknown-term" and "softlabel" in d.help


def test_unknown_parameter_with_did_you_mean():
    d = one("30..45: ot(K=10, gard=full)\n")
    assert (d.code, at(d), d.message) == ("unknown-param", (1, 18), "unknown parameter `gard` for `ot`")
    assert "grad" in d.help


def test_parameter_of_a_term_without_parameters():
    d = one("*: uncond(cfg=2)\n")
    assert d.code == "unknown-param" and "no parameters" in d.help


# --- types ------------------------------------------------------------------------------


def test_string_for_a_number():
    d = one('30..45: ot(rho="abc")\n')
    assert (d.code, at(d)) == ("type-mismatch", (1, 16))
    assert d.message == '`rho` expects a number, got the string "abc"'


def test_fraction_for_an_integer():
    d = one("30..45: ot(K=2.5)\n")
    assert (d.code, at(d)) == ("type-mismatch", (1, 14))
    assert d.message == "`K` expects a whole number, got the number 2.5"


def test_number_for_a_bool():
    d = one("t>=45: explore(bn=true)\n")
    assert d.code == "type-mismatch" and "a number" in d.message


def test_string_for_an_integer_setting():
    d = one('steps = "50"\n')
    assert (d.code, at(d)) == ("type-mismatch", (1, 9))
    assert d.message == 'setting `steps` expects a whole number, got the string "50"'


def test_choice_not_among_the_choices():
    d = one("30..45: ot(grad=ful)\n")
    assert (d.code, at(d)) == ("invalid-choice", (1, 17))
    assert d.message == "`grad` has no choice `ful`: expected one of tweedie | full"
    assert "full" in d.help


def test_unknown_sampler():
    d = one("sampler = ddin\n")
    assert d.code == "invalid-choice" and "ddpm | ddim | dpm | euler" in d.message and "ddim" in d.help


def test_ramp_on_a_parameter_that_cannot_ramp():
    d = one("30..45: ot(K=1..10)\n")
    assert (d.code, at(d)) == ("ramp-not-allowed", (1, 14))
    assert d.message == "`K` cannot ramp: it keeps one value over its window"


def test_ramp_on_a_choice():
    d = one("30..45: ot(grad=0..1)\n")
    assert d.code == "ramp-not-allowed" and "tweedie | full" in d.message


def test_ramp_in_a_setting():
    d = one("cfg = 1..4\n")
    assert (d.code, at(d)) == ("ramp-in-setting", (1, 7))


def test_ramp_needs_a_bounded_window():
    d = one("t>=30: ot(rho=0.05..0.5)\n")
    assert (d.code, at(d)) == ("ramp-unbounded-window", (1, 15))
    assert "bounded window" in d.message
    assert d.notes and (d.notes[0].span.line, d.notes[0].span.column) == (1, 1)
    assert one("*: mode(rho=cos(0.1..0.2))\n").code == "ramp-unbounded-window"
    assert check("30..=45: ot(rho=0.05..0.5)\nsigma 1..2: mode(rho=0.1..0.2)\n") == []


# --- ranges -----------------------------------------------------------------------------


def test_negative_rho():
    d = one("30..45: ot(rho=-0.1)\n")
    assert (d.code, at(d)) == ("out-of-range", (1, 16))
    assert d.message == "`rho` = -0.1 is out of range: 0 <= rho"


def test_k_below_one():
    d = one("30..45: ot(K=0)\n")
    assert d.message == "`K` = 0 is out of range: 1 <= K"


def test_eps_must_be_positive():
    d = one("30..45: ot(eps=0)\n")
    assert d.code == "out-of-range" and d.message == "`eps` = 0 is out of range: 0 < eps"


def test_setting_out_of_range():
    d = one("ipc = 0\n")
    assert d.message == "setting `ipc` = 0 is out of range: 1 <= ipc <= 100000"


def test_percent_value_means_a_fraction():
    assert check("25..45: softlabel(lam=50%)\n") == []
    d = one("25..45: softlabel(lam=150%)\n")
    assert d.code == "out-of-range" and "150% (1.5)" in d.message and "0 <= lam <= 1" in d.message


def test_ramp_ends_must_be_in_range():
    d = one("25..45: softlabel(lam=0..2)\n")
    assert (d.code, at(d)) == ("out-of-range", (1, 26))
    assert d.message == "ramp end 2 for `lam` is out of range: 0 <= lam <= 1"
    diagnostics = check("30..45: ot(rho=-1..-2)\n")
    assert [(d.code, at(d)) for d in diagnostics] == [("out-of-range", (1, 16)), ("out-of-range", (1, 20))]


def test_exp_ramp_needs_positive_ends():
    d = one("30..45: ot(rho=exp(0..0.5))\n")
    assert (d.code, at(d)) == ("out-of-range", (1, 20))
    assert d.message == "an exp ramp needs both ends > 0, got 0"


# --- windows ----------------------------------------------------------------------------


def test_empty_range():
    d = one("45..45: explore\n")
    assert (d.code, at(d)) == ("empty-window", (1, 1))
    assert d.message == "window `45..45` is empty: `a..b` holds for a <= t < b"
    assert "45..=45" in d.help
    assert one("46..45: explore\n").code == "empty-window"
    assert check("45..=45: explore\n") == []


def test_window_below_the_clock():
    d = one("t<0: explore\n")
    assert (d.code, at(d)) == ("window-outside-clock", (1, 1))
    assert d.message == "window `t<0` lies outside the recipe clock: t runs from 0 to 49 (steps = 50)"


def test_window_above_the_clock():
    d = one("steps = 50\n60..70: explore\n")
    assert (d.code, at(d)) == ("window-outside-clock", (2, 1))
    assert "t runs from 0 to 49 (steps = 50)" in d.message


def test_bound_beyond_the_clock():
    d = one("40..60: explore\n")
    assert (d.code, at(d)) == ("window-outside-clock", (1, 5))
    assert d.message == "bound 60 is outside the recipe clock: t runs from 0 to 49 (steps = 50)"
    assert check("45..50: explore\n") == []  # the clock's end is a fine upper bound
    assert one("90%..110%: explore\n").code == "window-outside-clock"


def test_window_with_no_whole_step():
    d = one("t>49: explore\n")
    assert d.code == "empty-window" and "holds at no step of the recipe clock" in d.message
    assert one("steps = 10\n3.2..3.8: explore\n").code == "empty-window"


def test_windows_follow_the_recipes_clock():
    assert check("steps = 100\n60..70: explore\n") == []
    assert one("steps = 20\nt>=45: explore\n").code == "window-outside-clock"


def test_empty_sigma_window():
    d = one("sigma 5.0..1.0: explore\n")
    assert (d.code, at(d)) == ("empty-window", (1, 1))


# --- conflicts and duplicates -----------------------------------------------------------


def test_two_conditioning_terms_on_one_step():
    d = one("t>=40: explore\n25..45: softlabel\n")
    assert (d.code, at(d)) == ("conditioning-overlap", (2, 9))
    assert d.message == ("two conditioning terms on one step: `explore` (rule at line 1) and `softlabel` "
                         "(rule at line 2) both hold at steps 40..=44 (5 steps)")
    (note,) = d.notes
    assert (note.span.line, note.span.column) == (1, 8)


def test_conditioning_overlap_of_one_step():
    d = one("t>=45: explore\n25..=45: softlabel\n")
    assert "both hold at step 45 (1 step)" in d.message


def test_conditioning_overlap_between_whole_steps():
    d = one("t<25.5: explore\n25.2..30: softlabel\n")
    assert d.code == "conditioning-overlap" and "25.2 <= t < 25.5" in d.message


def test_touching_windows_do_not_overlap():
    assert check("t>=45: explore\n25..45: softlabel\nt<25: refine\n") == []


def test_energies_may_overlap():
    assert check("*: refine\n0..30: ot\n20..40: mode\n20..40: ot\n") == []


def test_two_conditioning_terms_in_one_rule():
    d = one("25..45: softlabel, ot, explore\n")
    assert (d.code, at(d)) == ("conditioning-in-rule", (1, 24))
    assert d.message == "two conditioning terms in one rule: `softlabel` and `explore`"
    assert (d.notes[0].span.line, d.notes[0].span.column) == (1, 9)


def test_setting_given_twice():
    d = one("cfg = 4\nsteps = 50\ncfg = 5\n")
    assert (d.code, at(d)) == ("duplicate-setting", (3, 1))
    assert d.message == "setting `cfg` is given twice"
    assert (d.notes[0].span.line, d.notes[0].span.column) == (1, 1)


def test_parameter_given_twice():
    d = one("30..45: ot(rho=0.1, K=3, rho=0.2)\n")
    assert (d.code, at(d)) == ("duplicate-param", (1, 26))
    assert (d.notes[0].span.line, d.notes[0].span.column) == (1, 12)


# --- all at once --------------------------------------------------------------------------


def test_every_problem_is_reported_in_source_order():
    text = (
        "stpes = 50\n"                              # unknown setting
        "cfg = -1\n"                                # out of range
        "t>=45: explor\n"                           # unknown term
        "t>=40: explore(bn=\"x\")\n"                # type
        "25..45: softlabel(lam=0..2)\n"             # ramp end; overlap with line 4
        "45..45: refine\n"                          # empty window
        "t>=30: ot(K=0, rho=0.1..0.2, gard=full)\n"  # K, unbounded ramp, unknown param
        "cfg = 3\n"                                 # twice
    )
    got = [(d.code, at(d)) for d in check(text)]
    assert got == [
        ("unknown-setting", (1, 1)),
        ("out-of-range", (2, 7)),
        ("unknown-term", (3, 8)),
        ("type-mismatch", (4, 19)),
        ("conditioning-overlap", (5, 9)),
        ("out-of-range", (5, 26)),
        ("empty-window", (6, 1)),
        ("out-of-range", (7, 13)),
        ("ramp-unbounded-window", (7, 20)),
        ("unknown-param", (7, 30)),
        ("duplicate-setting", (8, 1)),
    ]


def test_a_bad_clock_skips_the_window_checks_but_nothing_else():
    got = [d.code for d in check("steps = 0\n60..70: explore\n*: ot(K=0)\n")]
    assert got == ["out-of-range", "out-of-range"]


def test_checker_never_raises_on_odd_input():
    assert check("") == []
    assert check("# only a comment\n") == []


def test_numbers_too_large_for_a_float_are_errors_not_crashes():
    from dmgd.language import ast
    from dmgd.language.diagnostics import RecipeError

    for text in ("steps = 1e999\n", "*: ot(rho=1e999)\n", "*: ot(K=1e999)\n", "t>=1e999: explore\n",
                 "sigma 0..1e999: explore\n", "0..5: ot(rho=0..1e999)\n", "0..5: softlabel(lam=1e999%)\n"):
        try:
            recipe = parse_recipe(text, "<test>")
        except RecipeError:
            continue  # the parser may reject it first; either way, no crash
        assert [d.code for d in check_recipe(recipe)] == ["out-of-range"], text
    # Built by hand, past whatever the parser rejects.
    span = ast.Span(1, 1, 1, 2, 0, 1)
    inf = ast.Number(float("inf"), "1e999", span)
    recipe = ast.Recipe((ast.Rule(ast.Range(ast.Bound(float("inf"), False, span), ast.Bound(5.0, False, span), False,
                                            span),
                                  (ast.Term("ot", (ast.Param("rho", ast.Ramp(inf, inf, "exp", span), span, span),),
                                            span, span),), span),), (), "", "<test>")
    assert {d.code for d in check_recipe(recipe)} == {"out-of-range"}
