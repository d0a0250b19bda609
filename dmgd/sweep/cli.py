"""The body of `dmgd sweep` (registered in dmgd/cli.py). rich, torch and the pipeline are
imported when the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from dmgd.sweep import SweepReporter

__all__ = ["sweep_command"]


class _RichSweepReporter(SweepReporter):
    """One bar for the sweep's work (each run sampled, then each scored), one for the current
    run's images or the current evaluation's epochs, and a line per finished piece."""

    def __init__(self, console: Any, evaluate: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console, self.evaluate = console, evaluate
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True)
        self.work = self.inner = None

    def planned(self, plan: Any) -> None:
        self.progress.start()
        total = len(plan.runs) * (2 if self.evaluate else 1)
        self.work = self.progress.add_task("sweep", total=total)
        self.inner = self.progress.add_task("", total=1, visible=False)

    def _name(self, run: Any) -> str:
        from rich.markup import escape

        return escape(run.variant.label + ("" if run.gen_seed is None else f" gen {run.gen_seed}"))

    def run_started(self, run: Any, what: str) -> None:
        self.progress.update(self.inner, description=f"{what} {self._name(run)}", completed=0, total=None,
                             visible=True)

    def run_done(self, run: Any, what: str) -> None:
        self.progress.advance(self.work)
        self.progress.update(self.inner, visible=False)
        self.console.print(f"{what}: {self._name(run)} [dim]{run.out}[/dim]")

    def run_reporter(self) -> Any:
        return _InnerBar(self.progress, self.inner, "images")

    def eval_reporter(self) -> Any:
        return _InnerBar(self.progress, self.inner, "epochs")

    def close(self) -> None:
        self.progress.stop()


class _InnerBar:
    """Both a run's Reporter and an evaluation's EvalReporter, drawn on one bar."""

    def __init__(self, progress: Any, task: Any, unit: str) -> None:
        self.progress, self.task, self.unit = progress, task, unit

    def stage(self, text: str) -> None: ...
    def batch_started(self, classes: Any, samples: Any, ipc: int) -> None: ...
    def step_done(self) -> None: ...
    def seed_started(self, seed: int) -> None: ...
    def seed_done(self, result: Any) -> None: ...
    def close(self) -> None: ...

    def sampling_started(self, total_images: int, done: int, steps_per_batch: int) -> None:
        self.progress.update(self.task, total=total_images, completed=done)

    def images_done(self, count: int) -> None:
        self.progress.advance(self.task, count)

    def started(self, seeds: Any, epochs: int) -> None:
        self.progress.update(self.task, total=len(seeds) * epochs, completed=0)

    def epoch_done(self, seed: int, epoch: int, accuracy: Any) -> None:
        self.progress.advance(self.task)


def sweep_command(
    file: str = typer.Argument(..., metavar="RECIPE", help="a .dmgd recipe with sweeps ({a, b} values or windows)"),
    out: Path = typer.Option(..., "--out", "-o", help="the sweep's folder: one run per variant, OUT/<label>"),
    evaluate: bool = typer.Option(False, "--eval", help="score every variant with dmgd eval's protocol"),
    real: Optional[str] = typer.Option(None, "--real", help="what scores them: test (an embedded test split, the "
                                       "default), val (an embedded val split; the runs then build their targets "
                                       "from the fit split), or a folder of real held-out images"),
    sets: list[str] = typer.Option([], "--set", metavar="NAME=VALUE", help="a setting for every run (repeatable)"),
    select: bool = typer.Option(False, "--select", help="choose the best mean (ties: the first variant) and write "
                                "OUT/selected.dmgd"),
    gen_seeds: list[int] = typer.Option([], "--gen-seed", help="run each variant at this seed (repeatable; "
                                        "default: the recipe's seed, once)"),
    seeds: int = typer.Option(5, "--seeds", min=1, help="classifiers trained per set (seeds 0..N-1)"),
    model: Optional[str] = typer.Option(None, "--model", help="convnet | resnet10ap | resnet18 (default: the "
                                        "preset's)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="training epochs (default: the preset's)"),
    preset: str = typer.Option("auto", "--preset", help="auto | imagenet | digits"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="N, the real sampling steps"),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="ddpm | ddim | dpm | euler"),
    device: Optional[str] = typer.Option(None, "--device", help="auto (CUDA when present), cpu, cuda, ..."),
) -> None:
    """Run every variant of a sweep recipe, score each, and write OUT/sweep.json, a table
    (OUT/sweep.md), a plot of the score against each swept parameter (OUT/sweep.png) and,
    with --select, the chosen variant (OUT/selected.dmgd). Rerun to resume."""
    from rich.console import Console

    options = {"seeds": seeds, "preset": preset, **({"model": model} if model else {}),
               **({"epochs": epochs} if epochs else {})}
    console = Console(stderr=True, highlight=False)
    reporter = _RichSweepReporter(console, evaluate)
    try:
        result = _sweep_or_exit(file, out, evaluate, real, sets, select, gen_seeds, options, steps, sampler, device,
                                reporter, console)
    finally:
        reporter.close()
    if result is None:
        return
    from dmgd.sweep.report import summary_table

    Console(highlight=False).print(summary_table(result.plan, result.scores, result.selected))
    for name, path in result.files.items():
        typer.echo(f"wrote {path}")


def _sweep_or_exit(file: str, out: Path, evaluate: bool, real: Optional[str], sets: list[str], select: bool,
                   gen_seeds: list[int], options: dict[str, Any], steps: Optional[int], sampler: Optional[str],
                   device: Optional[str], reporter: Any, console: Any) -> Any:
    from rich.markup import escape

    from dmgd.errors import DmgdError
    from dmgd.language.diagnostics import RecipeError, render_text
    from dmgd.sampling.backbones import BackboneError
    from dmgd.sampling.step import GuidanceError
    from dmgd.sweep import run_sweep

    try:
        return run_sweep(file, out, evaluate=evaluate, real=real, overrides=sets, gen_seeds=gen_seeds or None,
                         eval_options=options, select_best=select, steps=steps, sampler=sampler, device=device,
                         reporter=reporter)
    except RecipeError as err:
        reporter.close()
        typer.echo(render_text(err.diagnostics, err.source, err.path).rstrip("\n"), err=True)
        raise typer.Exit(2 if err.path == "<command line>" else 1) from None
    except (DmgdError, BackboneError, GuidanceError) as err:
        reporter.close()
        console.print(f"[bold red]error:[/bold red] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        reporter.close()
        console.print(f"interrupted; finished runs and scores are kept: `dmgd sweep {file} --out {out} ...` "
                      "again goes on")
        raise typer.Exit(130) from None
