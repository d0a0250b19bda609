"""`dmgd sweep`: every variant of a sweep recipe run, scored, tabulated, plotted, chosen.

    result = run_sweep("recipes/sweeps/tune-digits-1-cfg.dmgd", "runs/cfg", evaluate=True,
                       real="val", gen_seeds=[0, 1], eval_options={"seeds": 2}, select=True)

Each variant (dmgd/language/sweep.py) at each generation seed is one `dmgd run` into
OUT/<label>[/gen<seed>], resumed where it stopped and skipped when finished; each is then
scored by `dmgd eval`'s protocol on the chosen real images, its scores kept beside it
(sweep-eval.json), so a rerun does only what is missing. OUT/sweep.json records every
variant, its scores (mean and standard error over generation x classifier seeds), the
protocol and the selection rule; OUT/sweep.md is the table, OUT/sweep.png the score
against each swept parameter. With `select`, OUT/selected.dmgd is the chosen variant as a
plain recipe.

Under torchrun the variants run one after another, each sharded by classes across the
ranks as `dmgd run` shards them; rank 0 alone evaluates and reports (other ranks return
None once the runs are written).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from attrs import frozen

from dmgd.language.sweep import Variant
from dmgd.sweep.plan import PlannedRun, Split, SweepError, SweepPlan, make_plan
from dmgd.sweep.scores import SELECTION_RULE, VariantScore, select

__all__ = ["run_sweep", "SweepResult", "SweepReporter", "SweepError", "SELECTION_RULE"]

EVAL_RECORD = "sweep-eval.json"


class SweepReporter:
    """Progress of a sweep; the CLI draws it, scripts may ignore it."""

    def planned(self, plan: SweepPlan) -> None:
        """The sweep's runs are known."""

    def run_started(self, run: PlannedRun, what: str) -> None:
        """`what` ("sampling", "evaluating") starts for one run."""

    def run_done(self, run: PlannedRun, what: str) -> None:
        """`what` ("sampled", "kept", "evaluated", "scores kept") is done for one run."""

    def run_reporter(self) -> Any:
        """The `dmgd.pipeline.Reporter` a run draws its own progress with (None: none)."""
        return None

    def eval_reporter(self) -> Any:
        """The `EvalReporter` an evaluation draws its progress with (None: none)."""
        return None


@frozen
class SweepResult:
    out: Path
    plan: SweepPlan
    scores: tuple[VariantScore, ...]  # empty without evaluation
    selected: Variant | None
    files: Mapping[str, Path]  # "json", "table", and "plot" / "selected" when written


def _finished(run: PlannedRun) -> bool:
    """Whether run.out holds this very run, complete (so it is not loaded again)."""
    try:
        manifest = json.loads((run.out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    identity = manifest.get("identity") or {}
    return (manifest.get("status") == "complete" and identity.get("recipe_hash") == run.variant.hash
            and manifest.get("settings") == run.settings and manifest.get("num_steps") == run.num_steps)


def _generate(run: PlannedRun, steps: int | None, sampler: str | None, device: str | None,
              reporter: SweepReporter) -> None:
    from dmgd.pipeline import run as dmgd_run

    if _finished(run):
        reporter.run_done(run, "kept")
        return
    reporter.run_started(run, "sampling")
    (run.out / EVAL_RECORD).unlink(missing_ok=True)  # the set changes: its old scores go
    dmgd_run(run.variant.recipe, run.out, steps=steps, sampler=sampler, device=device,
             resume=(run.out / "manifest.json").is_file(), overrides=dict(run.overrides),
             reporter=reporter.run_reporter())
    reporter.run_done(run, "sampled")


def _evaluate(run: PlannedRun, split: Split, options: Mapping[str, Any], reporter: SweepReporter) -> tuple[float, ...]:
    """The run's accuracies (last epoch, one per classifier seed), kept in run.out/sweep-eval.json."""
    import attrs
    import torch

    from dmgd.data.atomic import atomic_write_json
    from dmgd.evaluation.protocol import EvalConfig, evaluate

    config = EvalConfig(**options)
    # a classifier's accuracy depends on the thread count on the CPU (the order of its sums)
    key = {"split": split.name, "real": str(split.folder) if split.folder else None,
           "config": attrs.asdict(config), "recipe_hash": run.variant.hash, "threads": torch.get_num_threads()}
    record_path = run.out / EVAL_RECORD
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("key") == json.loads(json.dumps(key)):
            reporter.run_done(run, "scores kept")
            return tuple(float(x) for x in record["scores"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    reporter.run_started(run, "evaluating")
    result = evaluate(run.out, split.folder, config, reporter=reporter.eval_reporter(),
                      eval_json=run.out / f"eval-{_file_part(split.name)}.json")
    scores = tuple(float(s.last) for s in result.seeds)
    atomic_write_json(record_path, {"key": key, "scores": list(scores), "eval_json": str(result.eval_json)})
    reporter.run_done(run, "evaluated")
    return scores


def _file_part(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def run_sweep(recipe: Any, out: str | os.PathLike[str], *, evaluate: bool = False,
              real: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | Sequence[str] | None = None,
              gen_seeds: Sequence[int] | None = None, eval_options: Mapping[str, Any] | None = None,
              select_best: bool = False, steps: int | None = None, sampler: str | None = None,
              device: str | None = None, reporter: SweepReporter | None = None) -> SweepResult | None:
    """Run (and with `evaluate`, score) every variant of a sweep recipe into `out`.

    real: the images that score the variants: "test" (default: an embedded test split),
    "val" (an embedded val split; the runs then take their real data from the fit split) or
    a folder. overrides: settings for every run (`{"ipc": 10}` or `["ipc=10"]`).
    gen_seeds: run each variant once per seed (default: once, at the recipe's seed).
    eval_options: `EvalConfig` fields (`{"seeds": 2, "model": "convnet"}`). select_best:
    apply SELECTION_RULE and write OUT/selected.dmgd (needs `evaluate`). Raises
    RecipeError, SweepError and what `dmgd run` and `dmgd eval` raise."""
    from dmgd.api import parse
    from dmgd.distributed import env_world
    from dmgd.language.overrides import as_overrides

    if select_best and not evaluate:
        raise SweepError("choosing a variant (--select) needs scores: add --eval")
    reporter = reporter or SweepReporter()
    plan = make_plan(parse(recipe), out, overrides=as_overrides(overrides), gen_seeds=gen_seeds, steps=steps,
                     sampler=sampler, real=real, evaluate=evaluate)
    reporter.planned(plan)
    for run in plan.runs:
        _generate(run, steps, sampler, device, reporter)
    if env_world()[0] != 0:
        return None
    options = {**dict(eval_options or {}), **({"device": device} if device else {})}
    scores: list[VariantScore] = []
    if evaluate:
        for variant in plan.variants():
            found = [s for run in plan.runs_of(variant) for s in _evaluate(run, plan.split, options, reporter)]
            scores.append(VariantScore(variant.index, variant.label, tuple(found)))
    best = select(scores) if select_best else None
    chosen = next((v for v in plan.variants() if best is not None and v.index == best.index), None)
    from dmgd.sweep.report import write_report

    files = write_report(plan, scores, chosen, options, gen_seeds, select_best)
    return SweepResult(plan.out, plan, tuple(scores), chosen, files)
