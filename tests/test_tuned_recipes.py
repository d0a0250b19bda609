"""recipes/digits.dmgd is what benchmarks/tune_digits.py chose, and every candidate it tries is a clean recipe."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from dmgd.language.checker import check_recipe
from dmgd.language.formatter import canonical_text
from dmgd.language.parser import parse_recipe

ROOT = Path(__file__).resolve().parents[1]


def _tune_digits():
    spec = importlib.util.spec_from_file_location("tune_digits", ROOT / "benchmarks" / "tune_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _candidates():
    t = _tune_digits()
    yield from (t.baseline(c) for c in t.CFGS)
    yield from (t.guided(2.0, s) for s in t.RHO_SCALES)
    yield from (t.guided(2.0, 1, w) for w in t.WINDOWS)
    yield from (t.guided(2.0, 1, t.WINDOWS[0], k) for k in t.KS)
    yield from (t.guided(2.0, s, grad="full") for s in (1, 100))


@pytest.mark.parametrize("name_and_text", list(_candidates()), ids=lambda c: c[0])
def test_every_tuning_candidate_is_a_clean_recipe(name_and_text):
    name, text = name_and_text
    assert check_recipe(parse_recipe(text, name)) == []


def test_the_shipped_digits_recipe_is_the_one_the_tuning_chose():
    chosen = json.loads((ROOT / "docs" / "benchmarks" / "tune_digits.json").read_text())["chosen_text"]
    shipped = (ROOT / "recipes" / "digits.dmgd").read_text(encoding="utf-8")
    assert canonical_text(parse_recipe(shipped, "digits.dmgd")) == canonical_text(parse_recipe(chosen, "chosen"))
