"""The `dmgd` command line: a thin typer layer over the public API.

`dmgd check`, `fmt` and `terms` must start fast, so what would slow every command's
start-up (torch, diffusers, POT, matplotlib, rich, and the dmgd modules that import
them) is imported inside the commands that use it; the language itself is cheap.
"""

from __future__ import annotations

import contextlib as _contextlib
import enum as _enum
import json
import os as _os
import sys as _sys
from pathlib import Path as _Path
from typing import Any as _Any, Optional as _Optional

import typer

from dmgd.api import check as check_recipe
from dmgd.api import compile as compile_recipe
from dmgd.api import decode_recipe_bytes, read_recipe_text
from dmgd.data.atomic import atomic_write_text
from dmgd.errors import DmgdError
from dmgd.language.diagnostics import RecipeError, render_json, render_text
from dmgd.language.formatter import canonical_hash, format_recipe
from dmgd.language.overrides import parse_overrides
from dmgd.language.parser import parse_recipe
from dmgd.language.settings import SETTING_SPECS
from dmgd.guidance import FromSetting, RampDefault, all_terms

app = typer.Typer(
    name="dmgd",
    help="Train-free dataset distillation with diffusion models, driven by .dmgd recipes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    app()


@app.callback()
def _command_line(ctx: typer.Context) -> None:
    """Messages name options as this command line spells them (--resume, not resume=True),
    for the command's duration only (a script may call the API afterwards)."""
    from dmgd.errors import cli_spelling
    from dmgd.guidance.plugins import warnings_as_lines

    ctx.with_resource(cli_spelling())
    ctx.with_resource(warnings_as_lines())


# Commands are registered below, one section per family; keep each command short and
# delegate the work to the package.


# --- pretrain: train an embedded model (a tiny digits or corners DiT) -------------------


@app.command("pretrain")
def pretrain_cmd(
    out: _Optional[str] = typer.Option(None, "--out", help="Output folder (diffusers layout; default: "
                                       "runs/<data>_dit)."),
    data: str = typer.Option("digits", "--data", help="digits (8x8) | corners (the digits at the corners of "
                             "16x16, dmgd.data.corners)"),
    steps: int = typer.Option(2000, "--steps", min=1, help="Training steps."),
    seed: int = typer.Option(0, "--seed", help="Seed for init, data order, noise, labels."),
    batch_size: int = typer.Option(128, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr"),
    ema: float = typer.Option(0.999, "--ema", min=0.0, max=1.0),
    threads: int = typer.Option(0, "--threads", min=0, help="torch threads (0: torch's default)."),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate",
                                  help="Run the model card's sample quality check."),
) -> None:
    """Train an embedded DiT on its data's train split (digits, or the corners) and write
    OUT/transformer, OUT/scheduler, OUT/model_index.json and OUT/MODEL_CARD.md.
    Use it with `dmgd run ... --set model=OUT`."""
    from dmgd.pretrain import PRETRAIN_DATA, pretrain

    if data not in PRETRAIN_DATA:
        typer.echo(f"error: --data must be one of {', '.join(PRETRAIN_DATA)}, not {data!r}", err=True)
        raise typer.Exit(2)
    out = out or f"runs/{data}_dit"
    facts = pretrain(out, steps=steps, seed=seed, batch_size=batch_size, lr=lr, ema=ema,
                     progress=True, threads=threads or None, evaluate=evaluate, data=data)
    typer.echo(f"wrote {out} ({facts['wall_time_s']} s, loss {facts['final_loss_avg_last_100']})")
    q = facts.get("quality")
    if q:
        typer.echo(f"recognised {q['recognised']}/{q['samples']} samples (DDIM {q['ddim_steps']}, "
                   f"CFG {q['cfg']}); see {out}/MODEL_CARD.md")


# --- the recipe language: check, fmt, explain, plot, terms ------------------------------
# `check`, `fmt` and `terms` load only the language; `explain` asks the scheduler for
# timesteps (diffusers), `plot` draws with matplotlib.


class OutputFormat(str, _enum.Enum):
    text = "text"
    json = "json"


def _colour(err: bool) -> bool:
    stream = _sys.stderr if err else _sys.stdout
    return "NO_COLOR" not in _os.environ and hasattr(stream, "isatty") and stream.isatty()


def _print_diagnostics(diagnostics, source: str, path: str, *, err: bool = True) -> None:
    if diagnostics:
        text = render_text(list(diagnostics), source, path, color=_colour(err))
        typer.echo(text.rstrip("\n"), err=err)


def _load(file: str, resolve: bool = True):
    """(source, path, recipe or None, diagnostics): a file ("-" is stdin), parsed (its `use`
    lines resolved unless resolve=False)."""
    path = "<stdin>" if file == "-" else file
    source = ""
    try:
        source = decode_recipe_bytes(_sys.stdin.buffer.read(), path) if file == "-" else read_recipe_text(file)
        return source, path, parse_recipe(source, path, resolve=resolve), []
    except RecipeError as err:
        return err.source or source, path, None, list(err.diagnostics)


def _load_or_exit(file: str):
    source, path, recipe, diagnostics = _load(file)
    if recipe is None:
        _print_diagnostics(diagnostics, source, path)
        raise typer.Exit(1)
    return source, path, recipe


def _overrides_or_exit(sets: list[str]) -> dict[str, _Any]:
    try:
        return parse_overrides(sets)
    except RecipeError as err:
        _print_diagnostics(err.diagnostics, err.source, err.path)
        raise typer.Exit(2) from None


def _latent_or_exit(latent: str | None):
    if latent is None:
        return None
    from dmgd.language.settings import parse_shape

    try:
        return parse_shape(latent)
    except ValueError as err:
        typer.echo(f"error: --latent: {err}", err=True)
        raise typer.Exit(2) from None


def _compile_or_exit(recipe, *, steps, sampler, overrides, noise, latent=None):
    try:
        schedule = compile_recipe(recipe, steps=steps, sampler=sampler, overrides=overrides, noise=noise,
                                  latent_shape=_latent_or_exit(latent))
    except RecipeError as err:
        _print_diagnostics(err.diagnostics, err.source, err.path)
        raise typer.Exit(2 if err.path == "<command line>" else 1) from None
    except DmgdError as err:  # a term whose plugin failed to load, or that two packages declare
        _print_diagnostics([_whole_recipe_error(err)], recipe.source, recipe.path)
        raise typer.Exit(1) from None
    _print_diagnostics(schedule.warnings, recipe.source, recipe.path)
    return schedule


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


_FILES = typer.Argument(..., metavar="FILE", help="recipe files; `-` reads standard input")
_STEPS = typer.Option(None, "--steps", min=1, help="N, the real sampling steps (default: the recipe's clock)")
_SAMPLER = typer.Option(None, "--sampler", help="ddpm | ddim | dpm | euler (default: the recipe's)")
_SET = typer.Option([], "--set", metavar="NAME=VALUE", help="override a setting, e.g. --set ipc=50 (repeatable)")
_LATENT = typer.Option(None, "--latent", metavar="CxHxW",
                       help="the model's latent shape, e.g. 1x8x8: shifts the windows of a recipe with `reference`")


@app.command("check")
def check_command(
    files: list[str] = _FILES,
    output_format: OutputFormat = typer.Option(OutputFormat.text, "--format", help="text, or json for editors and CI"),
) -> None:
    """Check recipes: every diagnostic, and for a clean recipe its identity (sha256)."""
    reports = [_check_one(file, output_format) for file in files]
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(reports, indent=2))
    raise typer.Exit(1 if any(not report["ok"] for report in reports) else 0)


def _check_one(file: str, output_format: OutputFormat) -> dict[str, _Any]:
    """Checks one file: prints its report as text, or returns it for the JSON list."""
    from dmgd.language.sweep import variant_count

    source, path, recipe, diagnostics = _load(file)
    identity = None
    count = variant_count(recipe) if recipe is not None else 0
    if recipe is not None:
        try:
            diagnostics = check_recipe(recipe)
        except DmgdError as err:  # a term whose plugin failed to load, or that two packages declare
            diagnostics = [_whole_recipe_error(err)]
        identity = f"sha256:{canonical_hash(recipe)}"
    errors = sum(d.severity == "error" for d in diagnostics)
    warnings = len(diagnostics) - errors
    if errors:
        identity = None
    report = {"path": path, "ok": not errors, "identity": identity, "variants": count}
    if output_format is OutputFormat.json:
        report["diagnostics"] = json.loads(render_json(list(diagnostics), path))
        return report
    _print_diagnostics(diagnostics, source, path, err=False)
    if errors:
        typer.echo(f"{path}: {_plural(errors, 'error')}" + (f", {_plural(warnings, 'warning')}" if warnings else ""))
    else:
        typer.echo(f"{path}: ok {identity}" + (f", a sweep of {_plural(count, 'variant')}" if count > 1 else "")
                   + (f" ({_plural(warnings, 'warning')})" if warnings else ""))
    return report


def _whole_recipe_error(err: DmgdError):
    from dmgd.language.diagnostics import Diagnostic

    return Diagnostic("error", str(err), None, "plugin")


@app.command("fmt")
def fmt_command(
    files: list[str] = _FILES,
    check: bool = typer.Option(False, "--check", help="change nothing; exit 1 if a file is not formatted"),
) -> None:
    """Rewrite recipes in the one canonical layout (comments and rule order kept)."""
    outcomes = [_fmt_one(file, check) for file in files]
    if any(f != "-" for f in files):
        changed, unchanged = outcomes.count("changed"), outcomes.count("unchanged")
        verb = "would be reformatted" if check else "reformatted"
        typer.echo(f"{_plural(changed, 'file')} {verb}, {unchanged} unchanged", err=True)
    failed = "error" in outcomes or (check and ("changed" in outcomes or "unformatted stdin" in outcomes))
    raise typer.Exit(1 if failed else 0)


def _fmt_one(file: str, check: bool) -> str:
    """Formats one file, or stdin to stdout for `-`; says what it found: "error",
    "unchanged", "changed" (or would be, with --check), "stdin", "unformatted stdin"."""
    source, path, recipe, diagnostics = _load(file, resolve=False)  # `use` and `drop` kept as written
    if recipe is None:
        _print_diagnostics(diagnostics, source, path)
        return "error"
    formatted = format_recipe(recipe)
    if file == "-":
        if not check:
            typer.echo(formatted, nl=False)
        elif formatted != source:
            typer.echo(f"would reformat {path}", err=True)
            return "unformatted stdin"
        return "stdin"
    if formatted == source:
        return "unchanged"
    if check:
        typer.echo(f"would reformat {path}")
    else:
        atomic_write_text(_Path(file), formatted)
        typer.echo(f"reformatted {path}")
    return "changed"


def _fmt_value(value: _Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _quiet(term: str, name: str, value: _Any) -> bool:
    """Not shown: flags that are off, and parameters at a default declared quiet (null=keep, units=grad)."""
    if value is False:
        return True
    from dmgd.guidance import get_term

    spec = get_term(term)
    param = spec.param(name) if spec is not None else None
    return param is not None and not param.shown_at_default and value == param.default


def _use_text(use, first: str | None = None) -> str:
    values = [(k, v) for k, v in use.values if not _quiet(use.term, k, v)]
    if getattr(use, "push", 1.0) != 1.0:
        values.append(("push", f"x{use.push:.4g}"))
    if first is not None:
        values.sort(key=lambda kv: kv[0] != first)
    inner = " ".join(f"{k}={_fmt_value(v)}" for k, v in values)
    return f"[bold]{use.term}[/bold] {inner}".rstrip()


def _noise_for_explain() -> str:
    try:
        import dmgd.sampling.schedulers  # noqa: F401 - imports diffusers, for the timesteps
    except ImportError:
        return "auto"
    return "always"


@app.command("explain")
def explain_command(
    file: str = typer.Argument(..., metavar="FILE", help="a recipe file; `-` reads standard input"),
    steps: _Optional[int] = _STEPS,
    sampler: _Optional[str] = _SAMPLER,
    sets: list[str] = _SET,
    output_format: OutputFormat = typer.Option(OutputFormat.text, "--format", help="text (a table) or json"),
    latent: _Optional[str] = _LATENT,
    sources: bool = typer.Option(False, "--sources", help="where each setting and rule came from (`use`, "
                                 "`drop`, overrides) instead of the schedule"),
    variant: _Optional[str] = typer.Option(None, "--variant", metavar="N|LABEL",
                                           help="a sweep's variant to explain (default: list the variants)"),
) -> None:
    """The compiled schedule, one row a step: time, timestep, sigma, conditioning, energies.
    For a sweep: its variants, or one of them with --variant."""
    from rich.console import Console
    from rich.table import Table

    overrides = _overrides_or_exit(sets)
    _, path, recipe = _load_or_exit(file)
    recipe = _explained_recipe(recipe, sources, variant, output_format is OutputFormat.json)
    if recipe is None:
        return
    schedule = _compile_or_exit(recipe, steps=steps, sampler=sampler, overrides=overrides,
                                noise=_noise_for_explain(), latent=latent)
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(schedule.to_dict(), indent=2))
        return
    carried = schedule.transfer
    table = Table(
        title=_explain_title(path, schedule),
        caption="rows in sampling order; i: the run's step (N-1 first); t: recipe time i*steps/N; "
                "flags that are off, null=keep and units=grad are not shown"
                + ("; ref sigma: the step's sigma on the reference" if carried is not None
                   and carried.reference is not None else ""),
    )
    shifted = carried is not None and carried.reference is not None
    columns = (("#", "right"), ("i", "right"), ("t", "right"), ("timestep", "right"), ("sigma", "right"),
               *((("ref sigma", "right"),) if shifted else ()), ("conditioning", "left"), ("energies", "left"))
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=name in ("#", "i", "t"))
    previous = None
    for step in schedule.steps:
        stage = (step.conditioning.term, step.conditioning.rule)
        if previous is not None and stage != previous:
            table.add_section()
        previous = stage
        conditioning = _use_text(step.conditioning)
        if step.conditioning.rule is None:
            conditioning += " [dim](default)[/dim]"
        table.add_row(
            str(step.index), str(step.i), f"{step.tau:g}",
            "-" if step.timestep is None else f"{step.timestep:g}",
            "-" if step.sigma is None else f"{step.sigma:.4g}",
            *((("-" if step.reference_sigma is None else f"{step.reference_sigma:.4g}"),) if shifted else ()),
            conditioning,
            "\n".join(_use_text(e, first="rho") for e in step.energies) or "[dim]-[/dim]",
        )
    Console(highlight=False).print(table)


def _explain_title(path: str, schedule) -> str:
    s = schedule.settings
    carried = schedule.transfer
    title = (f"{path}  sha256:{schedule.recipe_hash[:16]}\n"
             f"{schedule.num_steps} steps of {s.sampler} on a {s.steps}-step recipe clock, cfg {s.cfg:g}")
    if carried is not None and carried.reference is not None:
        model = "x".join(map(str, carried.latent_shape)) if carried.latent_shape else f"{s.reference} (assumed)"
        title += (f"\nwindows placed by noise level: reference {s.reference}, model {model}, "
                  f"sigma x{carried.sigma_scale:.4g}")
    if carried is not None and carried.push == "total":
        title += "\npush = total: each energy's rho rescaled to the reference's total push"
    return title


def _explained_recipe(recipe, sources: bool, variant: _Optional[str], as_json: bool):
    """The recipe `dmgd explain` compiles, or None when it printed a listing instead."""
    from dmgd.language.listing import print_sources, print_variants
    from dmgd.language.sweep import find_variant, has_sweep, variants

    if sources:
        print_sources(recipe, as_json)
        return None
    if not has_sweep(recipe):
        if variant is not None:
            typer.echo(f"error: --variant: {recipe.path} sweeps nothing: it has one variant, itself", err=True)
            raise typer.Exit(2)
        return recipe
    if variant is None:
        try:
            print_variants(recipe, as_json)
        except RecipeError as err:
            _print_diagnostics(err.diagnostics, err.source, err.path)
            raise typer.Exit(1) from None
        return None
    found = variants(recipe)
    chosen = find_variant(found, variant)
    if chosen is None:
        typer.echo(f"error: --variant: {recipe.path} has no variant {variant!r}: give 1..{len(found)} or a "
                   f"label, e.g. {found[0].label}", err=True)
        raise typer.Exit(2)
    return chosen.recipe


@app.command("plot")
def plot_command(
    file: str = typer.Argument(..., metavar="FILE", help="a recipe file; `-` reads standard input"),
    output: _Path = typer.Option(..., "-o", "--output", help="the image to write (.png, .svg, .pdf)"),
    steps: _Optional[int] = _STEPS,
    sampler: _Optional[str] = _SAMPLER,
    sets: list[str] = _SET,
    latent: _Optional[str] = _LATENT,
) -> None:
    """Draw the schedule as a timeline: stages as bands, ramps as curves, one lane per term."""
    from dmgd.plotting import plot_schedule

    overrides = _overrides_or_exit(sets)
    _, path, recipe = _load_or_exit(file)
    schedule = _compile_or_exit(recipe, steps=steps, sampler=sampler, overrides=overrides, noise="auto",
                                latent=latent)
    try:
        plot_schedule(schedule, output, title=_Path(path).name)
    except OSError as err:
        typer.echo(f"error: cannot write {output}: {err.strerror or err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {output}")


def _default_text(spec) -> str:
    default = spec.default
    if isinstance(default, RampDefault):
        shape = "" if default.shape == "linear" else default.shape
        ramp = f"{default.start:g}..{default.end:g}"
        return f"{shape}({ramp}) ramp" if shape else f"{ramp} ramp"
    if isinstance(default, FromSetting):
        return f"the `{default.setting}` setting"
    return _fmt_value(default)


@app.command("terms")
def terms_command() -> None:
    """Every guidance term, its parameters (type, default, range, doc), and the settings."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from dmgd.guidance import plugin_problems, term_package

    console = Console(highlight=False)

    def table(title: str, first: str) -> Table:
        t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, expand=True, pad_edge=False)
        for name in (first, "type", "default", "range"):
            t.add_column(name, no_wrap=True)
        t.add_column("doc", ratio=1, overflow="fold")
        return t

    console.print("[bold]Terms[/bold]: a rule is `window: term(param=value, ...), ...`; a number may "
                  "ramp over a bounded window: `a..b`, `cos(a..b)`, `exp(a..b)`.\n")
    for term in all_terms():
        t = table(f"[bold]{term.name}[/bold] ({term.kind.value}, from {escape(term_package(term.name))}): "
                  f"{escape(term.doc)}", "parameter")
        for p in term.params:
            kind = p.type if p.rampable or p.type not in ("float", "int") else f"{p.type}, fixed"
            t.add_row(p.name, kind, _default_text(p), p.range_text(), p.doc)
        if not term.params:
            t.add_row("[dim]none[/dim]", "", "", "", "")
        console.print(t)
    t = table("[bold]Settings[/bold]: `name = value` in a recipe, or `--set name=value`", "setting")
    for p in SETTING_SPECS:
        t.add_row(p.name, p.type, _default_text(p), p.range_text(), p.doc)
    console.print(t)
    if plugin_problems():
        console.print("[bold red]Plugin problems[/bold red] (terms from other packages, docs/extending.md):")
        for problem in plugin_problems():
            console.print(f"  {escape(problem.message())}", soft_wrap=True)


# --- run and grid: distil an image set, look at it ------------------------------------


def _user_errors() -> tuple[type[BaseException], ...]:
    import sys

    from dmgd.errors import DmgdError

    # GuidanceError only where its module (which imports torch) is loaded: an error of it
    # exists only then, and a run refused at once (OUT in use) never pays torch's import
    step = sys.modules.get("dmgd.sampling.step")
    return (DmgdError, step.GuidanceError) if step is not None else (DmgdError,)


def batch_label(classes, samples: range, ipc: int) -> str:
    """What a batch samples, in words: `sample 10/10 · classes 5-9 · step`."""
    first, last = samples[0] + 1, samples[-1] + 1
    which = f"sample {first}/{ipc}" if first == last else f"samples {first}-{last}/{ipc}"
    names = f"class {classes[0]}" if len(classes) == 1 else f"classes {classes[0]}-{classes[-1]}"
    return f"{which} · {names} · step"


class _RichReporter:
    """Draws a run's progress: one bar for the images (with ETA), one for the batch's steps."""

    def __init__(self, console) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 console=console, transient=False)
        self.images = self.steps = None

    def stage(self, text: str) -> None:
        self.console.print(f"[dim]{text}...[/dim]")

    def sampling_started(self, total_images: int, done: int, steps_per_batch: int) -> None:
        self.progress.start()
        self.images = self.progress.add_task("images", total=total_images, completed=done)
        self.steps = self.progress.add_task("step", total=steps_per_batch)
        self.steps_per_batch = steps_per_batch

    def batch_started(self, classes, samples: range, ipc: int) -> None:
        from rich.markup import escape

        self.progress.reset(self.steps, total=self.steps_per_batch,
                            description=escape(batch_label(classes, samples, ipc)))

    def step_done(self) -> None:
        self.progress.advance(self.steps)

    def images_done(self, count: int) -> None:
        self.progress.advance(self.images, count)

    def close(self) -> None:
        self.progress.stop()


class _LineReporter:
    """Progress under torchrun: plain lines prefixed with the rank (live bars of several
    processes would overwrite each other in one terminal)."""

    def __init__(self, console, rank: int, world: int) -> None:
        from rich.markup import escape

        self.console, self.prefix = console, escape(f"[rank {rank}/{world}]")
        self.total = self.done = 0
        self.started = None

    def stage(self, text: str) -> None:
        self.console.print(f"[dim]{self.prefix} {text}...[/dim]")

    def sampling_started(self, total_images: int, done: int, steps_per_batch: int) -> None:
        import time

        self.total, self.done, self.started = total_images, done, time.perf_counter()
        self.console.print(f"{self.prefix} {total_images} images to sample here, {done} already finished")

    def batch_started(self, classes, samples: range, ipc: int) -> None: ...

    def step_done(self) -> None: ...

    def images_done(self, count: int) -> None:
        import time

        self.done += count
        elapsed = time.perf_counter() - (self.started or time.perf_counter())
        self.console.print(f"{self.prefix} {self.done}/{self.total} images ({elapsed:.1f} s)")

    def close(self) -> None: ...


def _summary_table(result) -> _Any:
    from rich.table import Table

    table = Table(title=f"{result.out}: {len(result.class_names)} classes x {result.settings.ipc} images")
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column(f"OT distance to real (K={result.manifest['ot_distance']['k']})", justify="right")
    for name in result.class_names:
        table.add_row(name, str(len(result.images[name])), f"{result.ot_distance[name]:.4f}")
    t = result.timings
    table.caption = (f"targets {t['targets_seconds']:.2f} s, sampling {t['sampling_seconds']:.1f} s, "
                     f"total {t['total_seconds']:.1f} s; recipe sha256:{result.schedule.recipe_hash[:16]}")
    return table


def _resume_hint(console, out, err: BaseException) -> None:
    """After a failed run: say that its finished images are kept, when it had started (not
    when OUT itself was refused: that message already says what to do)."""
    from dmgd.data.store import StoreError

    if isinstance(err, StoreError):
        return
    try:
        started = (_Path(out) / "manifest.json").is_file()
    except OSError:
        started = False
    if started:
        console.print(f"[dim]images finished so far are kept in {out}; fix the cause and rerun with "
                      "--resume[/dim]", soft_wrap=True)


@app.command("run")
def run_command(
    file: str = typer.Argument(..., metavar="RECIPE", help="a .dmgd recipe"),
    out: _Path = typer.Option(..., "--out", "-o", help="output directory (an ImageFolder + manifest.json)"),
    sets: list[str] = _SET,
    steps: _Optional[int] = _STEPS,
    sampler: _Optional[str] = _SAMPLER,
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:1, ..."),
    resume: bool = typer.Option(False, "--resume", help="finish the run already in --out"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the run already in --out"),
    batch: _Optional[int] = typer.Option(None, "--batch", min=1,
                                         help="classes in a block: sampled together, the unit split across "
                                              "torchrun's ranks, part of the run's identity (default: the "
                                              "classes in max(2, C/64) equal blocks)"),
    no_lock: bool = typer.Option(False, "--no-lock",
                                 help="run without the lock on --out that stops a second run writing it "
                                      "meanwhile: only where its file system cannot lock"),
) -> None:
    """Distil an image set: sample the frozen DiT under the recipe's guidance schedule.

    Under torchrun (`torchrun --nproc_per_node=N -m dmgd run ...`) the classes are split
    across the ranks; see docs/running.md."""
    from rich.console import Console

    from dmgd.pipeline import run

    console = Console(stderr=True, highlight=False)
    rank, world = _rank_or_exit(console)
    recipe, overrides = _run_inputs_or_exit(file, sets, rank)
    reporter = _LineReporter(console, rank, world) if world > 1 else _RichReporter(console)
    with _sigterm_as_interrupt():
        try:
            result = run(recipe, out, steps=steps, sampler=sampler, device=device, resume=resume,
                         overwrite=overwrite, batch_size=batch, reporter=reporter, overrides=overrides,
                         lock=not no_lock)
        except BaseException as err:
            reporter.close()
            raise typer.Exit(_run_failure(console, err, file, out, rank, world)) from None
    reporter.close()
    if rank == 0:
        Console(highlight=False).print(_summary_table(result))


def _rank_or_exit(console) -> tuple[int, int]:
    from rich.markup import escape

    from dmgd.distributed import env_world

    try:
        rank, world, _ = env_world()
    except _user_errors() as err:
        console.print(f"[bold red]error:[/bold red] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(1) from None
    return rank, world


def _run_inputs_or_exit(file: str, sets: list[str], rank: int) -> tuple[_Any, dict[str, _Any]]:
    """The recipe and the --set values; rank 0 alone prints their diagnostics, every rank
    exits the same way."""
    if rank == 0:
        overrides = _overrides_or_exit(sets)
        return _load_or_exit(file)[2], overrides
    try:
        overrides = parse_overrides(sets)
    except RecipeError:
        raise typer.Exit(2) from None
    recipe = _load(file)[2]
    if recipe is None:
        raise typer.Exit(1)
    return recipe, overrides


@_contextlib.contextmanager
def _sigterm_as_interrupt():
    """torchrun stops the other ranks with SIGTERM when one fails: treat it as Ctrl-C."""
    import signal

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run_failure(console, err: BaseException, file: str, out, rank: int, world: int) -> int:
    """Say what stopped a run (one message, where it belongs) and return the exit code."""
    from rich.markup import escape

    where = escape(f"[rank {rank}/{world}] ") if world > 1 else ""
    if isinstance(err, RecipeError):
        if rank == 0:
            _print_diagnostics(err.diagnostics, err.source, err.path)
        return 2 if err.path == "<command line>" else 1
    if isinstance(err, _user_errors()):
        if not getattr(err, "echo", False):  # a PeerError repeats rank 0's error: printed there
            console.print(f"{where}[bold red]error:[/bold red] {escape(str(err))}", soft_wrap=True)
            _resume_hint(console, out, err)
        return 1
    if isinstance(err, OSError):
        target = f" {err.filename}" if getattr(err, "filename", None) else ""
        console.print(f"{where}[bold red]error:[/bold red] cannot read or write{escape(target)}: "
                      f"{escape(err.strerror or str(err))}", soft_wrap=True)
        _resume_hint(console, out, err)
        return 1
    if isinstance(err, KeyboardInterrupt):
        console.print(f"{where}interrupted; finished images are kept: "
                      f"`dmgd run {file} --out {out} --resume` goes on")
        return 130
    raise err


# `dmgd sweep`: every variant of a sweep recipe run, scored, tabulated, plotted (dmgd/sweep/)
from dmgd.sweep.cli import sweep_command  # noqa: E402 - registered here, its body lives in its package

app.command("sweep")(sweep_command)


@app.command("grid")
def grid_command(
    out: _Path = typer.Argument(..., metavar="OUT", help="a `dmgd run` output directory (or any ImageFolder)"),
    output: _Path = typer.Option(..., "-o", "--output", help="the contact sheet to write (.png)"),
    per_class: _Optional[int] = typer.Option(None, "--per-class", min=1, help="at most this many images a row"),
    cell: int = typer.Option(64, "--cell", min=8, help="pixels per image in the sheet"),
) -> None:
    """A contact sheet of a distilled set: one row a class."""
    from dmgd.data.contact_sheet import contact_sheet

    try:
        sheet = contact_sheet(out, max_per_class=per_class, cell=cell)
        sheet.save(output)
    except DmgdError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    except OSError as err:
        typer.echo(f"error: cannot write {output}: {err.strerror or err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {output}")


# --- eval and sample-real: what a distilled set is worth ---------------------------------


class _EvalProgress:
    """Draws an evaluation's progress: one bar for the seeds, one for the current seed's epochs."""

    def __init__(self, console) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[note]}"), console=console, transient=True)
        self.seeds_task = self.epochs_task = None
        self.epochs = 0

    def started(self, seeds, epochs: int) -> None:
        self.epochs = epochs
        self.progress.start()
        self.seeds_task = self.progress.add_task("seeds ", total=len(seeds), note="")
        self.epochs_task = self.progress.add_task("epochs", total=epochs, note="")

    def seed_started(self, seed: int) -> None:
        self.progress.reset(self.epochs_task, total=self.epochs, description=f"epochs [dim]seed {seed}[/dim]",
                            note="")

    def epoch_done(self, seed: int, epoch: int, accuracy) -> None:
        if accuracy is None:
            self.progress.advance(self.epochs_task)
        else:
            self.progress.update(self.epochs_task, advance=1, note=f"test {accuracy:.1f}%")

    def seed_done(self, result) -> None:
        self.progress.advance(self.seeds_task)
        self.progress.console.print(f"seed {result.seed}: last epoch {result.last:.2f}%, best {result.best:.2f}% "
                                    f"(epoch {result.best_epoch}), {result.seconds:.1f} s")

    def close(self) -> None:
        self.progress.stop()


@app.command("eval")
def eval_command(
    out: _Path = typer.Argument(..., metavar="OUT", help="a `dmgd run` or `dmgd sample-real` output directory"),
    real: _Optional[_Path] = typer.Option(None, "--real", help="held-out images: an ImageFolder with the set's "
                                          "classes (only those are read); default: the embedded digits' or "
                                          "corners' test split"),
    model: _Optional[str] = typer.Option(None, "--model", help="convnet | resnet10ap | resnet18 (default: the "
                                         "preset's: resnet10ap for ImageNet-size images, convnet for digits)"),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw (DMGD's harness) | sgd (Minimax's)"),
    epochs: _Optional[int] = typer.Option(None, "--epochs", min=1, help="training epochs (default: by IPC, "
                                          "the preset's rule)"),
    seeds: int = typer.Option(5, "--seeds", min=1, help="classifiers trained, seeds 0..N-1"),
    lr: _Optional[float] = typer.Option(None, "--lr", help="learning rate (default: 1e-3 adamw, 0.01 sgd)"),
    weight_decay: _Optional[float] = typer.Option(None, "--weight-decay", help="default: 0.01 adamw, 5e-4 sgd"),
    momentum: float = typer.Option(0.9, "--momentum", help="SGD momentum"),
    schedule: _Optional[str] = typer.Option(None, "--schedule", help="multistep (x0.2 at 2/3 and 5/6) | cosine | "
                                            "half-cosine (RDED's) (default: multistep; soft: half-cosine)"),
    batch_size: _Optional[int] = typer.Option(None, "--batch-size", min=1, help="default: 64 (soft ImageNet: 100)"),
    eval_every: _Optional[int] = typer.Option(None, "--eval-every", min=1, help="epochs between test "
                                              "evaluations (default: epochs/100, digits epochs/20)"),
    ipc: _Optional[int] = typer.Option(None, "--ipc", min=1, help="images per class used: the first N files "
                                       "(default: the manifest's ipc, else the smallest class)"),
    image_size: _Optional[int] = typer.Option(None, "--image-size", min=2, help="default: 224 for images of "
                                              ">= 64 px, else their own size"),
    preset: str = typer.Option("auto", "--preset", help="auto | imagenet | digits: the defaults used"),
    crop: bool = typer.Option(True, "--crop/--no-crop", help="RandomResizedCrop, scale 0.5-1"),
    flip: _Optional[bool] = typer.Option(None, "--flip/--no-flip", help="horizontal flip (default: on, off "
                                         "for digits)", show_default=False),
    jitter: _Optional[float] = typer.Option(None, "--jitter", min=0.0, help="colour jitter strength (0: off; "
                                            "default 0.4, soft 0)"),
    lighting: _Optional[float] = typer.Option(None, "--lighting", min=0.0, help="PCA lighting std, RGB only (0: "
                                              "off; default 0.1, soft 0)"),
    cutmix: bool = typer.Option(True, "--cutmix/--no-cutmix", help="CutMix, Beta(1, 1), hard labels mixed"),
    cutmix_prob: _Optional[float] = typer.Option(None, "--cutmix-prob", min=0.0, max=1.0,
                                                 help="CutMix probability per batch (default: 1, digits 0.5)"),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:1, ..."),
    output: _Optional[_Path] = typer.Option(None, "--output", "-o", help="where to write the results "
                                            "(default: OUT/eval.json)"),
    protocol: str = typer.Option("hard", "--protocol", help="hard (class labels) | soft (a teacher's labels of "
                                 "each augmented batch, RDED's protocol)"),
    teacher: _Optional[str] = typer.Option(None, "--teacher", help="soft: a .safetensors / .pth state dict, or "
                                           "digits / corners (trained once, cached); default: the embedded set's"),
    temperature: float = typer.Option(20.0, "--temperature", min=0.0, help="soft: the distillation temperature T"),
    shuffle_patches: _Optional[int] = typer.Option(None, "--shuffle-patches", min=1, help="soft: ShufflePatches "
                                                   "factor (default: 2 ImageNet, 1 = off digits)"),
) -> None:
    """Score a distilled set: classifiers trained on it, tested on real held-out images, over seeds."""
    from rich.console import Console

    options = dict(model=model, optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                   schedule=schedule, batch_size=batch_size, epochs=epochs, eval_every=eval_every, seeds=seeds,
                   crop=crop, flip=flip, jitter=jitter, lighting=lighting, cutmix=cutmix, cutmix_prob=cutmix_prob,
                   image_size=image_size, ipc=ipc, preset=preset, device=device, protocol=protocol,
                   teacher=teacher, temperature=temperature, shuffle_patches=shuffle_patches)
    if protocol == "soft" and teacher in ("digits", "corners"):
        _teacher_or_exit(lambda reporter: _ensure_teacher(teacher, reporter))
    result = _evaluate_or_exit(out, real, output, options)
    from dmgd.evaluation.report import summary_table

    Console(highlight=False).print(summary_table(result))
    typer.echo(f"wrote {result.eval_json}")


def _evaluate_or_exit(out: _Path, real: _Optional[_Path], output: _Optional[_Path], options: dict[str, _Any]):
    """The evaluation's result, its progress drawn on stderr; exits on an error or ^C."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False)
    progress = None
    try:
        from dmgd.evaluation.protocol import EvalConfig, evaluate

        config = EvalConfig(**options)
        progress = _EvalProgress(console)
        result = evaluate(out, real, config, reporter=progress, eval_json=output)
    except DmgdError as err:
        if progress is not None:
            progress.close()
        # One unwrapped line: a path in the message must stay whole to be copied.
        console.print(f"[bold red]error:[/bold red] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        console.print("interrupted; nothing was written")
        raise typer.Exit(130) from None
    progress.close()
    return result


def _ensure_teacher(name: str, reporter) -> None:
    from dmgd.evaluation.teacher import embedded_teacher_path, ensure_embedded_teacher

    if not embedded_teacher_path(name).is_file():
        reporter.console.print(f"training the {name} teacher (once per machine): {embedded_teacher_path(name)}")
        ensure_embedded_teacher(name, reporter=reporter)


def _teacher_or_exit(work):
    """Run `work(progress)` with a progress display; exits on an error or ^C."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False)
    progress = _EvalProgress(console)
    try:
        return work(progress)
    except DmgdError as err:
        console.print(f"[bold red]error:[/bold red] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("interrupted; nothing was written")
        raise typer.Exit(130) from None
    finally:
        progress.close()


teacher_app = typer.Typer(help="Teachers of the soft-label protocol (`dmgd eval --protocol soft`).",
                          no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")


@teacher_app.command("train")
def teacher_train_command(
    out: _Path = typer.Option(..., "--out", "-o", help="the teacher file to write (.safetensors)"),
    arch: str = typer.Option("convnet", "--arch", help="convnet | resnet18bn (torchvision's ResNet-18)"),
    data: str = typer.Option("digits", "--data", help="digits / corners (an embedded set's whole train split) "
                             "or an ImageFolder of real training images"),
    test: _Optional[str] = typer.Option(None, "--test", help="an ImageFolder's held-out images (needed with one)"),
    epochs: int = typer.Option(30, "--epochs", min=1),
    seed: int = typer.Option(0, "--seed"),
    image_size: _Optional[int] = typer.Option(None, "--image-size", min=2, help="centre-crop folder images"),
    channels: int = typer.Option(3, "--channels", min=1, max=3, help="folder images read as 1 (grey) or 3 (RGB)"),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, ..."),
) -> None:
    """Train a teacher on a real train split; prints and records its test accuracy."""
    from dmgd.device import pick_device
    from dmgd.evaluation.teacher import train_teacher

    teacher = _teacher_or_exit(lambda reporter: train_teacher(
        arch, data, out, test=test, epochs=epochs, seed=seed, device=pick_device(device), image_size=image_size,
        channels=channels, reporter=reporter))
    typer.echo(f"wrote {teacher.path}: {teacher.arch}, trained on {teacher.metadata['train_data']}; "
               f"test accuracy {float(teacher.metadata['test_accuracy']):.2f}% on {teacher.metadata['test_data']}")


@app.command("sample-real")
def sample_real_command(
    ipc: int = typer.Option(..., "--ipc", min=1, help="images per class"),
    out: _Path = typer.Option(..., "--out", "-o", help="output directory (an ImageFolder + manifest.json)"),
    seed: int = typer.Option(0, "--seed", help="which random images"),
    data: _Optional[str] = typer.Option(None, "--data", help="an ImageFolder of real TRAINING images, or "
                                         "digits / corners: an embedded set's train split (default: digits)"),
    image_size: _Optional[int] = typer.Option(None, "--image-size", min=1, help="centre-crop folder images to "
                                              "this size (default: keep their size)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the set already in --out"),
) -> None:
    """The random-real baseline: N random real training images per class, in a run's layout."""
    from dmgd.data.sample_real import sample_real

    try:
        result = sample_real(out, ipc, seed, data=data, image_size=image_size, overwrite=overwrite)
    except DmgdError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    except OSError as err:
        typer.echo(f"error: cannot write {out}: {err.strerror or err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {result.out}: {len(result.class_names)} classes x {result.ipc} random real images "
               f"(seed {result.seed})")


# --- import-dit: an original DiT or Minimax checkpoint -> a model folder ------------------


@app.command("import-dit")
def import_dit_command(
    checkpoint: _Path = typer.Argument(..., metavar="CKPT", help="DiT-XL-2-256x256.pt, or a DiT / Minimax "
                                       "training checkpoint (.pt / .pth)"),
    out: _Path = typer.Option(..., "--out", "-o", help="the model folder to write (diffusers layout; new or empty)"),
    weights: str = typer.Option("ema", "--weights", help="ema | model: which weights of a training checkpoint"),
    vae: str = typer.Option("stabilityai/sd-vae-ft-mse", "--vae", help="a VAE folder or a hub id in the local "
                            "Hugging Face cache, copied in; none: a pixel-space DiT"),
    heads: _Optional[int] = typer.Option(None, "--heads", min=1, help="attention heads (DiT's named widths "
                                         "384/768/1024/1152 need none)"),
) -> None:
    """Import a DiT checkpoint (tensors only: no pickle code runs) as a folder `--set model=DIR` runs."""
    from dmgd.checkpoints.cli_import import import_command

    raise typer.Exit(import_command(checkpoint, out, weights=weights, vae=vae, heads=heads))
