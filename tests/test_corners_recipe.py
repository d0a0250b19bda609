"""recipes/corners.dmgd is what benchmarks/corners.py chose on the corners' validation split,
and every set the corners benchmark makes is a clean recipe."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from dmgd.language.checker import check_recipe
import dmgd
from dmgd.language.parser import parse_recipe

ROOT = Path(__file__).resolve().parents[1]


def _corners_benchmark():
    spec = importlib.util.spec_from_file_location("corners_bench", ROOT / "benchmarks" / "corners.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _texts():
    b = _corners_benchmark()
    yield from ((n, t) for n, t, _ in b.tune_candidates() if t != "random-real")
    yield from ((n, t) for n, t in b.test_sets(None) if t != "random-real")


@pytest.mark.parametrize("name_and_text", list(_texts()), ids=lambda c: c[0])
def test_every_corners_set_is_a_clean_recipe(name_and_text):
    name, text = name_and_text
    assert check_recipe(parse_recipe(text, name)) == []


def _schedule(source, **settings):
    return dmgd.compile(source, overrides=settings, noise="always")


def test_recipes_corners_is_the_choice_recorded_on_the_validation_split():
    report = json.loads((ROOT / "docs" / "benchmarks" / "corners.json").read_text())
    chosen = report["tune"]["summary"][report["tune"]["chosen"]]["text"]
    shipped = (ROOT / "recipes" / "corners.dmgd").read_text()
    assert _schedule(shipped).steps == _schedule(chosen, model="corners").steps
    assert _schedule(shipped).settings == _schedule(chosen, model="corners").settings


def test_the_transferred_digits_recipe_is_digits_dmgd_with_its_reference():
    b = _corners_benchmark()
    transferred = dict(b.test_sets(None))["digits.dmgd transferred"]
    assert transferred == b.digits_variant().replace("cfg = 2.0\n", "cfg = 2.0\n" + b.TRANSFER_LINE)
    assert _schedule(b.digits_variant()).steps == _schedule(ROOT / "recipes" / "digits.dmgd").steps
    assert _schedule(transferred).settings.reference == "1x8x8"
