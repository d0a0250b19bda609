"""Sweeps in the language: `{a, b}` values and windows, variants, labels, checks, listing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dmgd.cli import app
from dmgd.language.checker import check_recipe
from dmgd.language.compiler import compile_schedule
from dmgd.language.diagnostics import RecipeError
from dmgd.language.formatter import canonical_hash, canonical_text, format_recipe
from dmgd.language.parser import parse_recipe
from dmgd.language.sweep import sweep_points, variant_count, variants

ROOT = Path(__file__).resolve().parent.parent
SWEEP = "steps = 50\ncfg = {2.0, 4.0}\n*: refine\n30..45: ot(K=10, rho={0.05..0.5, 5.0..50.0, cos(1..2)})\n"


def test_a_sweep_of_2_x_3_values_has_6_plain_variants_in_order():
    recipe = parse_recipe(SWEEP)
    found = variants(recipe)
    assert variant_count(recipe) == 6 and [v.index for v in found] == [1, 2, 3, 4, 5, 6]
    assert [v.label for v in found] == [
        "cfg=2.0_rho=0.05..0.5", "cfg=2.0_rho=5.0..50.0", "cfg=2.0_rho=cos1..2",
        "cfg=4.0_rho=0.05..0.5", "cfg=4.0_rho=5.0..50.0", "cfg=4.0_rho=cos1..2",
    ]
    plain = "steps = 50\ncfg = 4.0\n*: refine\n30..45: ot(K=10, rho=5.0..50.0)\n"
    assert canonical_text(found[4].recipe) == plain
    assert found[4].hash == canonical_hash(parse_recipe(plain))  # its own identity: the plain recipe's
    assert len({v.hash for v in found}) == 6
    assert all(check_recipe(v.recipe) == [] for v in found)


def test_window_sweeps_and_keys_that_tell_places_apart():
    recipe = parse_recipe("{25..45, t>=10}: ot(rho={1.0, 2.0})\n10..20: mode(rho={0.1, 0.2})\n")
    assert [p.key for p in sweep_points(recipe)] == ["window", "ot.rho", "mode.rho"]
    assert variants(recipe)[1].label == "window=25..45_ot.rho=1.0_mode.rho=0.2"
    assert variants(recipe)[4].label == "window=tge10_ot.rho=1.0_mode.rho=0.1"
    assert canonical_text(variants(recipe)[4].recipe) == "t>=10: ot(rho=1.0)\n10..20: mode(rho=0.1)\n"


def test_sweeps_format_and_parse_back():
    text = "cfg={2.0,4.0}\n{25..45 , 10..30}: ot(rho={0.05..0.5, exp(1..2),})\n"
    formatted = format_recipe(parse_recipe(text))
    assert formatted == "cfg = {2.0, 4.0}\n{25..45, 10..30}: ot(rho={0.05..0.5, exp(1..2)})\n"
    assert format_recipe(parse_recipe(formatted)) == formatted


@pytest.mark.parametrize("text, message", [
    ("cfg = {1.0, {2.0, 3.0}}\n", "a sweep inside a sweep: each alternative is one value"),
    ("{1..2, {3..4}}: ot\n", "a sweep inside a sweep: each alternative is one window"),
    ("cfg = {}\n", "expected a value, found `}`"),
])
def test_malformed_sweeps_are_syntax_errors(text, message):
    with pytest.raises(RecipeError) as err:
        parse_recipe(text)
    assert [d.message for d in err.value.diagnostics] == [message]


def test_an_alternative_listed_twice_is_an_error():
    (d,) = check_recipe(parse_recipe("cfg = {2.0, 4.0, 2.0}\n"))
    assert (d.code, d.span.column, d.message) == ("sweep-duplicate", 18, "the sweep lists `2.0` twice")


def test_too_many_variants_is_an_error():
    values = "{" + ", ".join(str(i) for i in range(1, 101)) + "}"
    recipe = parse_recipe(f"ipc = {values}\nseed = {values}\nsteps = {{10, 20}}\n")
    assert [d.code for d in check_recipe(recipe)] == ["sweep-too-large"]


def test_every_variant_is_checked_and_each_problem_reported_once():
    recipe = parse_recipe("steps = {50, 20}\ncfg = {2.0, 4.0}\n30..45: ot(K={0, 10})\n")
    found = [(d.code, d.span.line) for d in check_recipe(recipe)]
    assert found == [("window-outside-clock", 3), ("out-of-range", 3)]  # steps = 20 and K = 0, once each


def test_a_sweep_does_not_compile_as_one_schedule():
    with pytest.raises(RecipeError) as err:
        compile_schedule(parse_recipe(SWEEP))
    (d,) = err.value.diagnostics
    assert d.code == "sweep-not-compiled" and "a sweep of 6 variants" in d.message and "dmgd sweep" in d.help


def test_an_override_replaces_a_used_sweep(tmp_path):
    (tmp_path / "grid.dmgd").write_text("cfg = {1.0, 2.0, 4.0}\n*: refine\n")
    top = tmp_path / "one.dmgd"
    top.write_text('use "grid.dmgd"\ncfg = 2.0\n')
    assert variant_count(parse_recipe(top.read_text(), str(top))) == 1


def test_check_counts_and_explain_lists_the_variants(tmp_path):
    path = tmp_path / "s.dmgd"
    path.write_text(SWEEP)
    runner = CliRunner()
    checked = runner.invoke(app, ["check", str(path)])
    assert checked.exit_code == 0 and checked.output.strip().endswith("a sweep of 6 variants")
    (report,) = json.loads(runner.invoke(app, ["check", str(path), "--format", "json"]).output)
    assert report["ok"] and report["variants"] == 6
    listed = runner.invoke(app, ["explain", str(path), "--format", "json"])
    assert listed.exit_code == 0, listed.output
    record = json.loads(listed.output)
    assert [v["label"] for v in record["variants"]] == [v.label for v in variants(parse_recipe(SWEEP))]
    assert record["swept"] == [{"key": "cfg", "alternatives": ["2.0", "4.0"]},
                               {"key": "rho", "alternatives": ["0.05..0.5", "5.0..50.0", "cos(1..2)"]}]
    text = runner.invoke(app, ["explain", str(path)])
    assert "a sweep of 6 variants over cfg, rho" in text.output


def test_explain_variant_is_the_plain_recipe(tmp_path):
    path, plain = tmp_path / "s.dmgd", tmp_path / "p.dmgd"
    path.write_text(SWEEP)
    plain.write_text("steps = 50\ncfg = 4.0\n*: refine\n30..45: ot(K=10, rho=0.05..0.5)\n")
    runner = CliRunner()
    for which in ("4", "cfg=4.0_rho=0.05..0.5"):
        a = runner.invoke(app, ["explain", str(path), "--variant", which, "--format", "json"])
        b = runner.invoke(app, ["explain", str(plain), "--format", "json"])
        assert a.exit_code == 0 and json.loads(a.output) == json.loads(b.output)
    bad = runner.invoke(app, ["explain", str(path), "--variant", "7"])
    assert bad.exit_code == 2 and "has no variant '7'" in bad.output


# --- the tuning's stages as sweep recipes -----------------------------------------------

SWEEPS = sorted((ROOT / "recipes" / "sweeps").glob("*.dmgd"))


def _load(path: Path):
    return parse_recipe(path.read_text(encoding="utf-8"), str(path))


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_every_variant_of_the_shipped_sweeps_is_clean(path):
    recipe = _load(path)
    assert check_recipe(recipe) == []
    assert all(check_recipe(v.recipe) == [] for v in variants(recipe))


# The candidates benchmarks/tune_digits.py wrote out by hand before its stages were sweeps.
_HEADER = "steps = 50\nsampler = ddpm\ncfg = {cfg}\n\n"
_GUIDED = _HEADER + ("t>=45: explore\n25..45: softlabel(bs=0.01, bn=0.06)\nt<25: refine\n"
                     "{w0}..{w1}: ot(K={k}, rho={r0:g}..{r1:g}{extra})\n")


def _guided(scale: float, window=(30, 45), k: int = 10, extra: str = "") -> str:
    return _GUIDED.format(cfg=2.0, w0=window[0], w1=window[1], k=k, r0=0.05 * scale, r1=0.5 * scale, extra=extra)


@pytest.mark.parametrize("name, candidates", [
    ("tune-digits-1-cfg.dmgd", [_HEADER.format(cfg=c) + "*: refine\n" for c in (1.0, 1.5, 2.0, 3.0, 4.0)]),
    ("tune-digits-2-rho.dmgd", [_guided(s) for s in (1, 10, 30, 100, 300, 1000)]),
    ("tune-digits-3-window-k.dmgd", [_guided(1, w, k) for w in ((30, 45), (25, 45), (15, 45)) for k in (10, 5, 20)]),
    ("tune-digits-5-grad-full.dmgd", [_guided(s, extra=", grad=full") for s in (1, 100)]),
])
def test_the_stage_sweeps_are_the_candidates_the_tuning_wrote_by_hand(name, candidates):
    """Same canonical texts, so the same identities: a set the old script made is the set its
    sweep variant makes."""
    found = variants(_load(ROOT / "recipes" / "sweeps" / name))
    assert [canonical_text(v.recipe) for v in found] == [canonical_text(parse_recipe(c)) for c in candidates]
