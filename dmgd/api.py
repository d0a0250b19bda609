"""The public Python API of the recipe language: parse, check, compile, format.

    import dmgd
    recipe = dmgd.parse("recipes/dmgd.dmgd")          # a path, or the recipe's text
    problems = dmgd.check(recipe)                     # every Diagnostic, never raises
    schedule = dmgd.compile(recipe, steps=25, sampler="ddim", overrides={"ipc": 50})
    print(dmgd.format(recipe))

Bad input of any kind (a missing file, bytes that are not UTF-8, a syntax error, an
unknown term, a bad override) raises `RecipeError` carrying rendered-ready diagnostics;
nothing here imports torch or diffusers, except `compile` when it must resolve noise
levels (see its `noise` argument).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Literal, Mapping, Sequence, Union

from dmgd.language.ast import Recipe, Span
from dmgd.language.diagnostics import Diagnostic, RecipeError
from dmgd.language.schedule import NoiseLevels, Schedule

__all__ = ["parse", "check", "compile", "format", "read_recipe_text", "RecipeError"]

Source = Union[str, "os.PathLike[str]", Recipe]
NoiseArg = Union[NoiseLevels, Literal["auto", "always"], None]


def _looks_like_path(source: str) -> bool:
    return "\n" not in source and (source.endswith(".dmgd") or os.path.isfile(source))


def read_recipe_text(path: str | os.PathLike[str]) -> str:
    """A recipe file's text; a missing, unreadable or non-UTF-8 file is a RecipeError."""
    shown = os.fspath(path)
    try:
        data = open(path, "rb").read()  # noqa: SIM115 - closed by refcount at once
    except FileNotFoundError:
        raise RecipeError([Diagnostic("error", f"cannot read `{shown}`: no such file", None, "io")], "", shown) from None
    except IsADirectoryError:
        raise RecipeError([Diagnostic("error", f"cannot read `{shown}`: it is a directory", None, "io")], "", shown) from None
    except OSError as err:
        raise RecipeError([Diagnostic("error", f"cannot read `{shown}`: {err.strerror or err}", None, "io")], "",
                          shown) from None
    return decode_recipe_bytes(data, shown)


def decode_recipe_bytes(data: bytes, path: str) -> str:
    """UTF-8 text (a leading BOM dropped); invalid bytes are a diagnostic at their place."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[: err.start].decode("utf-8", errors="replace")
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        text = data.decode("utf-8", errors="replace")
        offset = len(before)
        span = Span(line, column, line, column + 1, offset, offset + 1)
        raise RecipeError(
            [Diagnostic("error", f"the file is not valid UTF-8: byte 0x{data[err.start]:02x} cannot start or continue "
                                 f"a character here", span, "encoding",
                        help="save the recipe as UTF-8")],
            text, path,
        ) from None


def parse(source: Source, *, path: str | None = None) -> Recipe:
    """A recipe from its text or from a file.

    source: a `Recipe` (returned as is), a path (an `os.PathLike`, or a one-line string
    that ends in `.dmgd` or names an existing file), or else the recipe's text. path:
    the name diagnostics show for text (default `<recipe>`). Raises RecipeError.
    """
    from dmgd.language.parser import parse_recipe

    if isinstance(source, Recipe):
        return source
    if isinstance(source, os.PathLike) or (isinstance(source, str) and _looks_like_path(source)):
        shown = os.fspath(source)
        return parse_recipe(read_recipe_text(shown), path or shown)
    if not isinstance(source, str):
        raise TypeError(f"parse() takes recipe text, a path or a Recipe, not {type(source).__name__}")
    return parse_recipe(source, path or "<recipe>")


def check(source: Source, *, path: str | None = None) -> list[Diagnostic]:
    """Every diagnostic of a recipe (errors and warnings), in source order; never raises.

    A recipe with a sigma window is also compiled at its own clock and sampler (this
    imports diffusers, to know the noise levels), so that a conflict between a sigma
    window and another conditioning window, or a sigma window that holds at no step, is
    reported too.
    """
    from dmgd.language.checker import check_recipe
    from dmgd.language.compiler import has_sigma_window

    try:
        recipe = parse(source, path=path)
    except RecipeError as err:
        return list(err.diagnostics)
    diagnostics = check_recipe(recipe)
    if has_sigma_window(recipe):
        try:
            diagnostics = _with_sigma_checks(recipe, diagnostics)
        except ImportError:
            pass  # no diffusers here: the sigma windows are checked when the recipe runs
        diagnostics.sort(key=lambda d: (d.span.start, d.span.end) if d.span is not None else (-1, -1))
    return diagnostics


def _with_sigma_checks(recipe: Recipe, diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """The diagnostics plus what placing the sigma windows finds: conflicts and windows that
    hold at no step. With errors elsewhere the recipe cannot compile; its empty sigma
    windows are still found, at the recipe's own clock and sampler."""
    from dmgd.language.timeline import window_steps
    from dmgd.language.compiler import empty_window_warning, resolve_settings
    from dmgd.language import ast

    known = {(d.code, d.span) for d in diagnostics}
    if not any(d.severity == "error" for d in diagnostics):
        try:
            schedule = compile(recipe, noise="auto")
        except RecipeError as err:
            return list(err.diagnostics) + [d for d in diagnostics if d.severity == "warning"]
        return diagnostics + [w for w in schedule.warnings if (w.code, w.span) not in known]
    try:
        settings = resolve_settings(recipe, None)
    except (RecipeError, ValueError):
        return diagnostics  # the settings themselves are wrong: nothing to place the windows with
    sigmas = _noise_resolver()(settings.sampler, settings.steps).sigmas
    found = [empty_window_warning(recipe, rule, settings.steps, settings.steps, sigmas)
             for rule in recipe.statements if isinstance(rule, ast.Rule) and isinstance(rule.window, ast.SigmaRange)
             and not window_steps(rule.window, settings.steps, settings.steps, sigmas)]
    return diagnostics + [w for w in found if (w.code, w.span) not in known]


def _noise_resolver(scheduler_config: dict | None = None) -> Callable[[str, int], NoiseLevels]:
    def resolve(sampler: str, num_steps: int) -> NoiseLevels:
        from dmgd.sampling.schedulers import noise_levels  # imports diffusers: only when needed

        return noise_levels(sampler, num_steps, scheduler_config=scheduler_config)

    return resolve


def compile(  # noqa: A001 - the public name is dmgd.compile
    recipe: Source,
    steps: int | None = None,
    sampler: str | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    noise: NoiseArg = "auto",
    latent_shape: Sequence[int] | str | None = None,
) -> Schedule:
    """Compile a recipe into the per-step `Schedule` the sampler executes.

    recipe: a Recipe, a path or text (as `parse`). steps: N, the real sampling steps
    (default: the recipe's clock `steps`). sampler: replaces the recipe's `sampler`.
    overrides: settings to replace, as a dict (`{"ipc": 50}`) or `--set` strings
    (`["ipc=50"]`). noise: where each step's timestep and sigma come from:
    - "auto" (default): resolved from the sampler with
      `dmgd.sampling.schedulers.noise_levels` (DDPM, 1000 linear betas; imports diffusers)
      only when the recipe has a sigma window; otherwise Step.timestep/sigma are None and
      nothing heavy is imported;
    - "always": resolved that way in every case (`dmgd explain` and `dmgd plot` show them);
    - a NoiseLevels: used as is (e.g. from a model with another noise schedule);
    - None: never resolved (a sigma window, `reference` or `push = "total"` is then an error).
    "auto" also resolves them when the recipe sets `reference` or `push = "total"`.
    latent_shape: the model's latent shape, (C, H, W) or "CxHxW". With a `reference`
    setting the windows are placed by noise level, shifted by sqrt(D_model / D_reference);
    None: the model is taken to have the reference's shape (no shift). The reference's
    own noise levels (the recipe's sampler at its clock `steps`, default scheduler config)
    are resolved here when the recipe needs them.

    Raises RecipeError with every error; warnings are in `schedule.warnings`.
    """
    from dmgd.language.compiler import compile_schedule, needs_noise_levels
    from dmgd.language.overrides import as_overrides

    parsed = parse(recipe)
    overrides = as_overrides(overrides) or None
    if isinstance(noise, str) and noise == "auto":
        noise_arg: Any = _noise_resolver() if needs_noise_levels(parsed, overrides if sampler is None else
                                                                  {**(overrides or {}), "sampler": sampler}) else None
    elif isinstance(noise, str) and noise == "always":
        noise_arg = _noise_resolver()
    elif noise is None or isinstance(noise, NoiseLevels):
        noise_arg = noise
    else:
        raise ValueError(f"noise must be 'auto', 'always', None or a NoiseLevels, not {noise!r}")
    return compile_schedule(parsed, steps=steps, sampler=sampler, overrides=overrides, noise=noise_arg,
                            reference_noise=_noise_resolver(), latent_shape=latent_shape)


def format(source: Source, *, path: str | None = None) -> str:  # noqa: A001 - the public name is dmgd.format
    """The canonical text of a recipe (comments and rule order kept). Raises RecipeError."""
    from dmgd.language.formatter import format_recipe

    return format_recipe(parse(source, path=path))

