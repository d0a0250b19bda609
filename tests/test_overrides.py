"""`--set name=value`: the language's value syntax, checked like a setting in a file."""

from __future__ import annotations

import pytest

from dmgd.language.diagnostics import RecipeError
from dmgd.language.overrides import parse_overrides, validate_overrides


def errors(args):
    with pytest.raises(RecipeError) as info:
        parse_overrides(args)
    assert info.value.path == "<command line>"
    return info.value


def test_values_in_the_language_syntax():
    got = parse_overrides(["ipc=50", "sampler=ddim", "cfg=3.5", "seed = 7", 'data="real images"', "matching=joint",
                           "steps=25"])
    assert got == {"ipc": 50, "sampler": "ddim", "cfg": 3.5, "seed": 7, "data": "real images",
                   "matching": "joint", "steps": 25}
    assert type(got["ipc"]) is int and type(got["cfg"]) is float


def test_string_settings_take_an_unquoted_value():
    assert parse_overrides(["model=/data/DiT-XL-2"]) == {"model": "/data/DiT-XL-2"}
    assert parse_overrides(["model=facebook/DiT-XL-2-256"]) == {"model": "facebook/DiT-XL-2-256"}


def test_the_last_of_two_wins():
    assert parse_overrides(["ipc=5", "ipc=50"]) == {"ipc": 50}


def test_unknown_setting():
    err = errors(["ipc=50", "stpes=5"])
    (d,) = err.diagnostics
    assert d.code == "unknown-setting" and d.message == "unknown setting `stpes`" and "steps" in d.help
    # The second argument is line 2 of the command line's source.
    assert (d.span.line, d.span.column, d.span.end_column) == (2, 1, 6)
    assert err.source.splitlines()[1] == "stpes=5"
    assert err.source[d.span.start:d.span.end] == "stpes"


def test_wrong_type_and_range():
    err = errors(["ipc=abc", "cfg=-1", "sampler=ddin"])
    assert [(d.code, d.span.line, d.span.column) for d in err.diagnostics] == [
        ("type-mismatch", 1, 5), ("out-of-range", 2, 5), ("invalid-choice", 3, 9)]
    assert err.diagnostics[0].message == "setting `ipc` expects a whole number, got the name `abc`"
    assert err.source[err.diagnostics[0].span.start:err.diagnostics[0].span.end] == "abc"


def test_ramps_are_not_settings():
    (d,) = errors(["cfg=1..4"]).diagnostics
    assert d.code == "ramp-in-setting"


def test_not_name_value():
    (d,) = errors(["ipc"]).diagnostics
    assert d.code == "override-syntax" and "name=value" in d.message
    (d,) = errors(["=5"]).diagnostics
    assert d.code == "override-syntax"


def test_one_setting_only():
    (d,) = errors(["ipc=5; seed=3"]).diagnostics
    assert d.code == "override-syntax"


def test_syntax_errors_point_into_the_argument():
    err = errors(["ipc=10", "cfg=(4"])
    (d,) = err.diagnostics
    assert d.code == "syntax" and d.span.line == 2


def test_validate_python_values():
    assert validate_overrides({"ipc": 50, "cfg": 3, "sampler": "dpm", "model": None}) == \
           {"ipc": 50, "cfg": 3.0, "sampler": "dpm", "model": None}
    assert validate_overrides({"ipc": "50", "seed": 4.0}) == {"ipc": 50, "seed": 4}
    with pytest.raises(RecipeError) as info:
        validate_overrides({"ipc": 2.5, "sampler": "foo", "bogus": 1, "cfg": True, "steps": 0})
    got = sorted((d.code, d.message) for d in info.value.diagnostics)
    assert [c for c, _ in got] == ["invalid-choice", "out-of-range", "type-mismatch", "type-mismatch",
                                   "unknown-setting"]
    assert info.value.path == "<command line>"
