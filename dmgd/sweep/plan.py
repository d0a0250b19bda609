"""What a sweep will do, decided before anything heavy is loaded: its variants (each one
checked with the caller's settings), where each run goes, which real images score them, and
the settings each run records. No torch here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from attrs import frozen

from dmgd.errors import DmgdError
from dmgd.language.ast import Recipe
from dmgd.language.sweep import Variant, variants

EMBEDDED_SPLITS = ("val", "test")
_REAL = "--real (real=)"


class SweepError(DmgdError):
    """A sweep that cannot start; the message says what to do."""


@frozen
class PlannedRun:
    """One variant at one generation seed: where it is written, and what it must record."""

    variant: Variant
    gen_seed: int | None  # None: the recipe's own seed
    out: Path
    overrides: Mapping[str, Any]
    settings: dict[str, Any]  # the resolved settings its manifest must hold
    num_steps: int


@frozen
class Split:
    """The real images a sweep is scored on: a name for reports, a folder (None: dmgd eval's
    default, an embedded test split), and the folder generation must take its real data from
    (the fit part of the train split when scoring on val, so val is never seen)."""

    name: str
    folder: Path | None
    generation_data: Path | None


@frozen
class SweepPlan:
    recipe: Recipe
    out: Path
    runs: tuple[PlannedRun, ...]
    split: Split | None

    def variants(self) -> list[Variant]:
        return list(dict.fromkeys(r.variant for r in self.runs))

    def runs_of(self, variant: Variant) -> list[PlannedRun]:
        return [r for r in self.runs if r.variant == variant]


def _embedded_name(settings: Any) -> str:
    """The embedded data set whose val/test split scores a sweep: its `data`, or with none
    the model's default data (the corners' for the corners model, else the digits)."""
    from dmgd.data.embedded import DEFAULT_DATA, is_embedded_name

    if is_embedded_name(settings.data):
        return settings.data
    if settings.data is None:
        return "corners" if settings.model == "corners" else DEFAULT_DATA
    raise SweepError(f"{_REAL} val/test name the embedded data sets' splits, and this sweep's data is "
                     f"{settings.data}: give {_REAL} PATH, a folder of real held-out images")


def resolve_split(real: str | os.PathLike[str] | None, out: Path, first_settings: Any,
                  overrides: Mapping[str, Any]) -> Split:
    """`--real`: None or "test" (an embedded test split), "val" (an embedded val split; the runs
    then build their targets from the fit split), or a folder."""
    if real is not None and str(real) not in EMBEDDED_SPLITS:
        if not Path(real).is_dir():
            raise SweepError(f"{_REAL} {real}: no such folder (give val, test or a folder of real images)")
        return Split(str(real), Path(real), None)
    name = str(real or "test")
    data = _embedded_name(first_settings)
    if name == "test":
        return Split(f"{data} test", None, None)
    if "data" in overrides:
        raise SweepError(f"{_REAL} val scores on the embedded {data} val split, which generation must not "
                         f"see: leave `data` to the sweep (it uses the fit split), or give {_REAL} PATH")
    folder = _split_folder(data, out / "real" / f"{data}-val", "val")
    fit = _split_folder(data, out / "real" / f"{data}-fit", "fit")
    return Split(f"{data} val", folder, fit)


def _split_folder(data: str, root: Path, split: str) -> Path:
    """An embedded split as an ImageFolder at `root`, written once: under a temporary name,
    then renamed, so an existing `root` is whole and a rerun keeps it as it is."""
    import shutil

    from dmgd.data.embedded import write_image_folder

    if root.is_dir():
        return root
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write_image_folder(data, tmp, split)
    try:
        os.replace(tmp, root)
    except OSError:  # another process renamed its own copy first: the same images
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _run_folder(out: Path, variant: Variant, gen_seed: int | None) -> Path:
    folder = out / variant.label
    return folder if gen_seed is None else folder / f"gen{gen_seed}"


def make_plan(recipe: Recipe, out: str | os.PathLike[str], *, overrides: Mapping[str, Any],
              gen_seeds: Sequence[int] | None, steps: int | None, sampler: str | None,
              real: str | os.PathLike[str] | None, evaluate: bool) -> SweepPlan:
    """Every run of the sweep, each variant checked (RecipeError) before any is started."""
    from dmgd.language.compiler import checked_settings

    out = Path(out)
    found = variants(recipe)
    first, _ = checked_settings(found[0].recipe, steps=steps, sampler=sampler, overrides=overrides)
    split = resolve_split(real, out, first, overrides) if evaluate else None
    given = dict(overrides)
    if split is not None and split.generation_data is not None:
        given["data"] = str(split.generation_data)
    runs = []
    for variant in found:
        for seed in (gen_seeds or [None]):
            run_overrides = given if seed is None else {**given, "seed": int(seed)}
            settings, num_steps = checked_settings(variant.recipe, steps=steps, sampler=sampler,
                                                   overrides=run_overrides)
            runs.append(PlannedRun(variant, seed, _run_folder(out, variant, seed), run_overrides,
                                   settings.to_dict(), num_steps))
    return SweepPlan(recipe, out, tuple(runs), split)
