"""`dmgd sweep`: every variant run, scored, tabulated, plotted and chosen; resumable."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dmgd.cli import app
from dmgd.language.parser import parse_recipe
from dmgd.sweep import SweepError, SweepReporter, run_sweep
from dmgd.sweep.scores import VariantScore, select

SWEEP = "cfg = {1.0, 3.0}\nsteps = {2, 3, 4}\nipc = 1\n*: refine\n"


class Events(SweepReporter):
    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []

    def run_done(self, run, what: str) -> None:
        self.done.append((run.variant.label, what))


def test_the_selection_rule_takes_the_best_mean_and_the_first_of_a_tie():
    scores = [VariantScore(1, "a", (90.0, 92.0)), VariantScore(2, "b", (93.0, 91.0)),
              VariantScore(3, "c", (91.0, 93.0)), VariantScore(4, "d", ())]
    assert select(scores).label == "b"  # b and c tie at 92: the first wins
    assert math.isclose(scores[1].se, 1.0) and math.isnan(VariantScore(5, "e", (1.0,)).se)
    assert select([VariantScore(1, "a", ())]) is None


@pytest.mark.slow
def test_a_2_x_3_sweep_runs_scores_tabulates_plots_and_resumes(tiny_pixel_model, tmp_path):
    recipe = tmp_path / "grid.dmgd"
    recipe.write_text(SWEEP)
    out = tmp_path / "sweep"
    options = {"seeds": 1, "epochs": 1, "device": "cpu"}
    events = Events()
    result = run_sweep(str(recipe), out, evaluate=True, real="val", overrides=[f"model={tiny_pixel_model}"],
                       eval_options=options, select_best=True, reporter=events)
    labels = ["cfg=1.0_steps=2", "cfg=1.0_steps=3", "cfg=1.0_steps=4",
              "cfg=3.0_steps=2", "cfg=3.0_steps=3", "cfg=3.0_steps=4"]
    assert [v.label for v in result.plan.variants()] == labels
    assert events.done == [(label, "sampled") for label in labels] + [(label, "evaluated") for label in labels]
    record = json.loads((out / "sweep.json").read_text())
    assert record["split"] == "digits val" and record["selected"] == result.selected.label
    assert [v["n"] for v in record["variants"]] == [1] * 6
    best = max(record["variants"], key=lambda v: v["mean"])  # max() keeps the first of equal means
    assert result.selected.label == best["label"]
    manifest = json.loads((out / labels[4] / "manifest.json").read_text())
    assert manifest["settings"]["cfg"] == 3.0 and manifest["num_steps"] == 3
    assert manifest["settings"]["data"] == str(out / "real" / "digits-fit")  # val is never seen by generation
    assert manifest["recipe"]["resolved"] == "cfg = 3.0\nsteps = 3\nipc = 1\n*: refine\n"
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 6 | cfg=3.0_steps=4" in (out / "sweep.md").read_text()
    chosen = parse_recipe((out / "selected.dmgd").read_text(), str(out / "selected.dmgd"))
    assert record["variants"][result.selected.index - 1]["hash"] == result.selected.hash
    from dmgd.language.formatter import canonical_hash

    assert canonical_hash(chosen) == result.selected.hash
    images = {p: p.stat().st_mtime_ns for p in out.rglob("*.png") if p.name != "sweep.png"}

    cli = CliRunner().invoke(app, ["sweep", str(recipe), "--out", str(out), "--eval", "--real", "val", "--set",
                                   f"model={tiny_pixel_model}", "--seeds", "1", "--epochs", "1", "--device", "cpu",
                                   "--select"], env={"COLUMNS": "300"})
    assert cli.exit_code == 0, cli.output
    lines = cli.output.splitlines()  # nothing is done again: every set and every score is kept
    assert sum(line.startswith("kept:") for line in lines) == 6
    assert sum(line.startswith("scores kept:") for line in lines) == 6
    # the table (its title wraps to the table's width) and the files
    assert "cfg=3.0_steps=4" in cli.output and f"wrote {out / 'selected.dmgd'}" in cli.output
    assert {p: p.stat().st_mtime_ns for p in images} == images

    # a score is kept per CPU thread count: another count trains the classifiers again
    import torch

    threads = torch.get_num_threads()
    assert record["protocol"]["threads"] == threads
    torch.set_num_threads(2 if threads == 1 else 1)
    try:
        again = Events()
        run_sweep(str(recipe), out, evaluate=True, real="val", overrides=[f"model={tiny_pixel_model}"],
                  eval_options=options, select_best=True, reporter=again)
    finally:
        torch.set_num_threads(threads)
    assert again.done == [(label, "kept") for label in labels] + [(label, "evaluated") for label in labels]
    assert json.loads((out / "sweep.json").read_text())["protocol"]["threads"] == (2 if threads == 1 else 1)


@pytest.mark.slow
def test_a_recipe_without_alternatives_is_a_sweep_of_one_variant(tiny_pixel_model, tmp_path):
    """benchmarks/tune_digits.py scores plain recipes (the IPC-50 baseline) the same way."""
    recipe = tmp_path / "plain.dmgd"
    recipe.write_text("steps = 2\nipc = 1\n*: refine\n")
    result = run_sweep(str(recipe), tmp_path / "one", evaluate=True, real="val", select_best=True,
                       overrides=[f"model={tiny_pixel_model}"], eval_options={"seeds": 1, "epochs": 1, "device": "cpu"})
    record = json.loads((tmp_path / "one" / "sweep.json").read_text())
    assert [v["n"] for v in record["variants"]] == [1] and record["swept"] == []
    assert result.selected.index == 1 and (tmp_path / "one" / "selected.dmgd").is_file()
    assert not (tmp_path / "one" / "sweep.png").exists()  # nothing is swept: no axis to plot
    table = (tmp_path / "one" / "sweep.md").read_text().splitlines()
    assert table[0].startswith("Sweep ") and ": 1 variant; score on digits val" in table[0]
    assert table[2:4] == ["| # | label | sha256 | score | n |", "| --- | --- | --- | --- | --- |"]
    assert table[4].startswith(f"| 1 | {result.selected.label} **(selected)** | {result.selected.hash[:12]} | ")


def test_refusals_before_anything_runs(tmp_path):
    recipe = tmp_path / "grid.dmgd"
    recipe.write_text("cfg = {1.0, 2.0}\n*: refine\n")
    with pytest.raises(SweepError, match="needs scores"):
        run_sweep(str(recipe), tmp_path / "a", select_best=True)
    with pytest.raises(SweepError, match="no such folder"):
        run_sweep(str(recipe), tmp_path / "a", evaluate=True, real=str(tmp_path / "missing"))
    with pytest.raises(SweepError, match="generation must not see"):
        run_sweep(str(recipe), tmp_path / "a", evaluate=True, real="val", overrides=["data=digits"])
    assert not (tmp_path / "a").exists()


def test_a_bad_variant_stops_the_sweep_before_it_starts(tmp_path):
    recipe = tmp_path / "grid.dmgd"
    recipe.write_text("steps = {50, 20}\n30..45: ot\n")
    result = CliRunner().invoke(app, ["sweep", str(recipe), "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "window-outside-clock" not in result.output
    assert "lies outside the recipe clock" in result.output
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_under_torchrun_each_variant_is_sharded_by_classes(tiny_pixel_model, tmp_path):
    """Two ranks: every variant's classes split across them, as `dmgd run` splits them, and
    the same bytes as one process writes; rank 0 alone prints the table."""
    import subprocess
    import sys

    recipe = tmp_path / "grid.dmgd"
    recipe.write_text("steps = 2\nipc = 1\ncfg = {1.0, 3.0}\n*: refine\n")
    single = run_sweep(str(recipe), tmp_path / "one", overrides=[f"model={tiny_pixel_model}"])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dmgd",
               "sweep", str(recipe), "--out", str(tmp_path / "two"), "--set", f"model={tiny_pixel_model}"]
    import os

    done = subprocess.run(command, env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("2 variants") == 1
    for variant in single.plan.variants():
        manifest = json.loads((tmp_path / "two" / variant.label / "manifest.json").read_text())
        assert manifest["sharding"]["world_size"] == 2 and manifest["status"] == "complete"
        one = sorted((tmp_path / "one" / variant.label).rglob("*.png"))
        assert [p.read_bytes() for p in one] == [
            (tmp_path / "two" / p.relative_to(tmp_path / "one")).read_bytes() for p in one]
