"""Composition: `use "other.dmgd"` and `drop NAME` (dmgd/language/sources.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dmgd.cli import app
from dmgd.language import render_json, render_text
from dmgd.language.checker import check_recipe
from dmgd.language.diagnostics import RecipeError
from dmgd.language.formatter import canonical_hash, canonical_text, format_recipe
from dmgd.language.parser import parse_recipe

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
# Each shipped recipe's hash and compiled schedule (`dmgd explain --format json`) as they
# were when the recipes were flat files, before they were written with `use` and `drop`.
COMPILED = json.loads((Path(__file__).resolve().parent / "data" / "compiled_recipes.json").read_text())


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path):
    return parse_recipe(path.read_text(encoding="utf-8"), str(path))


def errors(path: Path):
    with pytest.raises(RecipeError) as err:
        load(path)
    return err.value


@pytest.mark.parametrize("name", sorted(COMPILED))
def test_shipped_recipes_compile_to_the_schedules_of_their_flat_versions(name):
    import dmgd

    schedule = dmgd.compile(str(RECIPES / name), noise="always")
    assert schedule.recipe_hash == COMPILED[name]["hash"]  # same identity: old runs still resume
    assert json.loads(json.dumps(schedule.to_dict())) == COMPILED[name]["schedule"]


def test_the_ablations_are_written_over_the_reference():
    for name, base in (("sm-only.dmgd", "dmgd.dmgd"), ("mean.dmgd", "dmgd.dmgd"), ("digits.dmgd", "dmgd.dmgd"),
                       ("dm-only.dmgd", "baseline.dmgd"), ("digits-baseline.dmgd", "baseline.dmgd")):
        recipe = load(RECIPES / name)
        assert [origin.path for origin in recipe.sources] == [str(RECIPES / base)], name


def test_use_and_drop_explain_like_the_flat_recipe(tmp_path):
    """The issue's check: `dmgd explain --format json` of use + drop equals the flat file's."""
    write(tmp_path, "base.dmgd", "steps = 40\ncfg = 4.0\nt>=30: explore\n20..30: softlabel(bs=0.02)\n"
                                 "5..30: ot(K=3, rho=0.1..1.0)\n")
    composed = write(tmp_path, "sm.dmgd", 'use "base.dmgd"\ncfg = 2.0\ndrop ot\n')
    flat = write(tmp_path, "flat.dmgd", "steps = 40\ncfg = 2.0\nt>=30: explore\n20..30: softlabel(bs=0.02)\n")
    runner = CliRunner()
    a = runner.invoke(app, ["explain", str(composed), "--format", "json"])
    b = runner.invoke(app, ["explain", str(flat), "--format", "json"])
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert json.loads(a.output) == json.loads(b.output)
    assert canonical_hash(load(composed)) == canonical_hash(load(flat))


def test_settings_override_in_place_and_rules_add_after(tmp_path):
    write(tmp_path, "a.dmgd", "steps = 50\ncfg = 4.0\nipc = 10\n*: refine\n")
    write(tmp_path, "b.dmgd", "ipc = 20\n10..20: ot\n")
    top = write(tmp_path, "top.dmgd", 'use "a.dmgd"\nuse "b.dmgd"\nseed = 3\ncfg = 1.5\n30..40: mean\n')
    assert canonical_text(load(top)) == ("steps = 50\ncfg = 1.5\nipc = 20\n*: refine\n10..20: ot\nseed = 3\n"
                                         "30..40: mean\n")
    assert check_recipe(load(top)) == []


def test_drop_removes_a_term_from_every_used_rule_and_keeps_the_others(tmp_path):
    write(tmp_path, "a.dmgd", "*: refine\n10..20: ot, mode\n25..30: ot(K=2)\n")
    top = write(tmp_path, "top.dmgd", 'use "a.dmgd"\ndrop ot\n30..40: ot\n')
    assert canonical_text(load(top)) == "*: refine\n10..20: mode\n30..40: ot\n"


def test_a_duplicate_setting_in_one_file_is_still_an_error(tmp_path):
    write(tmp_path, "a.dmgd", "cfg = 4.0\n")
    top = write(tmp_path, "top.dmgd", 'use "a.dmgd"\ncfg = 2.0\ncfg = 3.0\n')
    (d,) = check_recipe(load(top))
    assert d.code == "duplicate-setting" and d.span.line == 3 and d.span.origin is None


def test_dropping_a_term_no_used_rule_has_is_an_error_with_did_you_mean(tmp_path):
    write(tmp_path, "a.dmgd", "*: refine\n30..45: ot\n")
    err = errors(write(tmp_path, "top.dmgd", 'use "a.dmgd"\ndrop ott\n20..30: mean\ndrop mean\n'))
    assert [(d.code, d.span.line, d.span.column) for d in err.diagnostics] == [("drop-unknown", 2, 6),
                                                                               ("drop-unknown", 4, 6)]
    assert err.diagnostics[0].message == "no rule brought in by `use` has the term `ott`"
    assert err.diagnostics[0].help == "did you mean `ot`?"


@pytest.mark.parametrize("files, top, code, message", [
    ({}, 'use "missing.dmgd"\ndrop ot\n', "use-missing", "cannot use `{d}/missing.dmgd`: no such file"),
    ({"a.dmgd": 'use "top.dmgd"\n'}, 'use "a.dmgd"\n', "use-cycle",
     "`top.dmgd` is used in a cycle: top.dmgd -> a.dmgd -> top.dmgd"),
    ({}, 'use "top.dmgd"\n', "use-cycle", "`top.dmgd` is used in a cycle: top.dmgd -> top.dmgd"),
    ({"a.txt": "cfg = 2.0\n"}, 'use "a.txt"\n', "use-not-recipe", "`use` reads recipes: `a.txt` is not a .dmgd file"),
    ({"a.dmgd": "cfg = 2.0\n"}, 'cfg = 1.0\nuse "a.dmgd"\n', "use-order",
     "`use` must come before the recipe's own statements"),
])
def test_composition_errors_point_at_the_use_line(tmp_path, files, top, code, message):
    for name, text in files.items():
        write(tmp_path, name, text)
    err = errors(write(tmp_path, "top.dmgd", top))
    assert [(d.code, d.message) for d in err.diagnostics] == [(code, message.format(d=tmp_path))]
    assert "Traceback" not in render_text(err.diagnostics, err.source, err.path)


def test_files_outside_the_tree_are_refused(tmp_path, monkeypatch):
    outside = write(tmp_path, "outside/secret.dmgd", "cfg = 2.0\n")
    top = write(tmp_path, "project/top.dmgd", f'use "../outside/secret.dmgd"\nuse "{outside}"\n')
    monkeypatch.chdir(tmp_path / "project")
    err = errors(top)
    assert [d.code for d in err.diagnostics] == ["use-outside-tree", "use-outside-tree"]
    assert "lies outside the recipe's tree" in err.diagnostics[0].message
    monkeypatch.chdir(tmp_path)  # run from a folder above both: the current directory's tree admits it
    assert canonical_text(load(top)) == "cfg = 2.0\n"  # the second use overrides the first


def test_a_symbolic_link_out_of_the_tree_is_refused(tmp_path, monkeypatch):
    write(tmp_path, "outside/a.dmgd", "cfg = 2.0\n")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "a.dmgd").symlink_to(tmp_path / "outside" / "a.dmgd")
    monkeypatch.chdir(tmp_path / "project")
    err = errors(write(tmp_path, "project/top.dmgd", 'use "a.dmgd"\n'))
    assert [d.code for d in err.diagnostics] == ["use-outside-tree"]


def test_a_diagnostic_in_a_used_file_points_into_it(tmp_path):
    base = write(tmp_path, "lib/base.dmgd", "steps = 50\n*: refin\n")
    write(tmp_path, "lib/mid.dmgd", 'use "base.dmgd"\n')
    top = write(tmp_path, "top.dmgd", 'use "lib/mid.dmgd"\ncfg = 2.0\n')
    recipe = load(top)
    (d,) = check_recipe(recipe)
    assert (d.code, d.span.line, d.span.column, d.span.origin.path) == ("unknown-term", 2, 4, str(base))
    text = render_text([d], recipe.source, recipe.path)
    assert text.splitlines()[:4] == [
        f"{base}:2:4: error: unknown term `refin`",
        "  2 | *: refin",
        "    |    ^^^^^",
        f"    = note: used by {tmp_path}/lib/mid.dmgd:1, used by {top}:1",
    ]
    (item,) = json.loads(render_json([d], recipe.path))
    assert item["path"] == str(base) and item["used_by"] == [f"{tmp_path}/lib/mid.dmgd:1", f"{top}:1"]


def test_a_syntax_error_in_a_used_file_points_into_it(tmp_path):
    base = write(tmp_path, "base.dmgd", "cfg = \n")
    err = errors(write(tmp_path, "top.dmgd", 'use "base.dmgd"\n'))
    (d,) = err.diagnostics
    assert d.code == "syntax" and d.span.origin.path == str(base) and d.span.line == 1
    assert f"{base}:1:6: error: expected a value" in render_text(err.diagnostics, err.source, err.path)


def test_fmt_keeps_use_and_drop(tmp_path):
    write(tmp_path, "a.dmgd", "*: refine\n30..45: ot\n")
    top = write(tmp_path, "top.dmgd", '# over a\nuse   "a.dmgd"\n\ncfg=2.0;drop  ot\n')
    result = CliRunner().invoke(app, ["fmt", str(top)])
    assert result.exit_code == 0, result.output
    text = top.read_text()
    assert text == '# over a\nuse "a.dmgd"\n\ncfg = 2.0\ndrop ot\n'
    assert format_recipe(parse_recipe(text, str(top), resolve=False)) == text


def test_explain_sources_tells_where_each_statement_came_from(tmp_path):
    base = write(tmp_path, "base.dmgd", "steps = 50\ncfg = 4.0\n*: refine\n30..45: ot\n")
    top = write(tmp_path, "top.dmgd", 'use "base.dmgd"\ncfg = 2.0\ndrop ot\n10..20: mean\n')
    result = CliRunner().invoke(app, ["explain", str(top), "--sources", "--format", "json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["files"] == [str(top), str(base)]
    assert record["statements"] == [
        {"statement": "steps = 50", "from": f"{base}:1", "note": None},
        {"statement": "cfg = 2.0", "from": f"{top}:2", "note": f"overrides {base}:2 (cfg = 4.0)"},
        {"statement": "*: refine", "from": f"{base}:3", "note": None},
        {"statement": "10..20: mean", "from": f"{top}:4", "note": None},
        {"statement": "30..45: ot", "from": f"{base}:4", "note": f"`ot` dropped by {top}:3"},
    ]


def test_text_without_a_file_uses_paths_from_the_current_directory(tmp_path, monkeypatch):
    write(tmp_path, "a.dmgd", "cfg = 2.0\n")
    monkeypatch.chdir(tmp_path)
    assert canonical_text(parse_recipe('use "a.dmgd"\nipc = 3\n')) == "cfg = 2.0\nipc = 3\n"


def test_set_does_not_read_files():
    from dmgd.language.overrides import parse_overrides

    with pytest.raises(RecipeError) as err:
        parse_overrides(['use "x.dmgd"'])
    assert err.value.diagnostics[0].code in ("override-syntax", "unknown-setting")


@pytest.mark.parametrize("name", ["a\x00b.dmgd", "x" * 5000 + ".dmgd", "", "."])
def test_hostile_use_paths_are_one_line_errors(tmp_path, name):
    err = errors(write(tmp_path, "top.dmgd", f'use "{name}"\n'))
    assert len(err.diagnostics) == 1 and err.diagnostics[0].code.startswith("use-")
    assert "\n" not in err.diagnostics[0].message
