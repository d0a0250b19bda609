"""docs/architecture.md's worked examples run as written, and a recipe uses what they add."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dmgd.guidance import get_term, unregister
from dmgd.sampling.samplers import SAMPLERS, unregister_sampler

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _blocks() -> dict[str, str]:
    """The ```python block of each `## ` section, by section title."""
    out = {}
    for section in re.split(r"^## ", DOC.read_text(), flags=re.M)[1:]:
        title = section.splitlines()[0].strip()
        found = re.findall(r"```python\n(.*?)```", section, flags=re.S)
        assert len(found) == 1, title
        out[title] = found[0]
    return out


@pytest.fixture
def examples():
    """Run both examples; remove what they registered afterwards, even on failure."""
    blocks = _blocks()
    try:
        for title in ("Adding an energy term", "Adding a sampler"):
            exec(compile(blocks[title], f"{DOC.name}: {title}", "exec"), {"__name__": "architecture_example"})
        yield
    finally:
        unregister("repel")
        unregister_sampler("euler_a")


def test_the_examples_register_and_leave_nothing_behind(examples):
    assert get_term("repel").kind.value == "energy" and "euler_a" in SAMPLERS


def test_a_recipe_uses_the_example_term_and_sampler(examples, tmp_path):
    import dmgd
    from dmgd.guidance import all_terms

    recipe = "steps = 6\nsampler = euler_a\ncfg = 2.0\n1..5: repel(rho=0.5)\n"
    assert not [d for d in dmgd.check(recipe) if d.severity == "error"]
    schedule = dmgd.compile(recipe, noise="auto")
    assert schedule.settings.sampler == "euler_a"
    assert [e.term for e in schedule.steps[2].energies] == ["repel"]
    assert "repel" in [t.name for t in all_terms()]
    result = dmgd.run(recipe, tmp_path / "out", ipc=2, seed=0)
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["status"] == "complete" and manifest["settings"]["sampler"] == "euler_a"
    assert all(len(paths) == 2 for paths in result.images.values())


def test_the_examples_are_gone_afterwards():
    assert get_term("repel") is None and "euler_a" not in SAMPLERS
