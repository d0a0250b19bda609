"""recipes/digits.dmgd is what benchmarks/retarget_digits.py chose on the validation split, and every
candidate the tuning scripts try is a clean recipe."""

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


def test_the_shipped_digits_recipe_is_the_best_confirmed_retarget_candidate():
    """The rule: the best ConvNet-6 val mean among the generated candidates confirmed."""
    found = json.loads((ROOT / "docs" / "benchmarks" / "retarget_digits.json").read_text())
    confirmed = {name: row for name, row in found["confirm_summary"].items()
                 if name in found["candidates"] and found["candidates"][name]["params"]}
    best = max(confirmed, key=lambda name: confirmed[name]["mean"])
    shipped = ROOT / "recipes" / "digits.dmgd"  # it uses dmgd.dmgd: parsed from its own path
    chosen = found["candidates"][best]["text"]
    assert canonical_text(parse_recipe(shipped.read_text(encoding="utf-8"), str(shipped))) == \
        canonical_text(parse_recipe(chosen, best))


def test_the_shipped_digits_recipe_beats_the_plain_sampler_on_val():
    summary = json.loads((ROOT / "docs" / "benchmarks" / "retarget_digits.json").read_text())["confirm_summary"]
    best = max(summary.values(), key=lambda row: row["mean"])
    plain = summary["digits-baseline.dmgd"]
    assert best["mean"] - plain["mean"] > 2 * (best["se"] ** 2 + plain["se"] ** 2) ** 0.5
