"""recipes/digits.dmgd is what benchmarks/retarget_digits.py chose on the validation split."""

from __future__ import annotations

import json
from pathlib import Path

from dmgd.language.formatter import canonical_text
from dmgd.language.parser import parse_recipe

ROOT = Path(__file__).resolve().parents[1]


# Every candidate the tuning tries is a variant of a sweep recipe in recipes/sweeps/ (run by
# benchmarks/tune_digits.py); tests/test_sweep_language.py checks each is clean and equals the
# candidate the script wrote by hand before.


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
