"""The checker: every problem of a parsed recipe, all at once.

`check_recipe(recipe)` validates settings against `SETTING_SPECS`, term calls against the
term registry, values against their `ParamSpec` (type, range, ramps) and windows against
the recipe clock, and reports two conditioning terms that hold on one step. It never
stops at the first problem and never raises: it returns diagnostics (the compiler
raises). The value conventions and the diagnostic codes are in docs/language.md.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from dmgd.language import ast
from dmgd.language.timeline import clock_interval, exact, is_bounded, window_interval
from dmgd.language.diagnostics import Diagnostic, Note, did_you_mean, source_order
from dmgd.language.settings import SETTING_NAMES, setting_spec
from dmgd.language.sweep import has_sweep, sweep_problems, variants
from dmgd.guidance import Kind, ParamSpec, PluginError, TermSpec, all_terms, get_term

__all__ = ["check_recipe", "check_value", "convert_value", "describe_value", "clock_of"]

DEFAULT_CLOCK = 50


def _did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    return did_you_mean(name, list(candidates))


def _help(name: str, candidates: Iterable[str]) -> str | None:
    suggestion = _did_you_mean(name, candidates)
    if not suggestion:
        return None
    if suggestion.startswith("did you mean"):
        return suggestion
    return f"did you mean `{suggestion}`?"


def _error(message: str, span: ast.Span | None, code: str, *, notes=(), help: str | None = None) -> Diagnostic:
    return Diagnostic("error", message, span, code, tuple(notes), help)


def _fmt(x: float) -> str:
    return f"{x:g}"


# --- values ---------------------------------------------------------------------------

_TYPE_WORDS = {"float": "a number", "int": "a whole number", "bool": "`true` or `false`", "str": "a string"}


def expected_text(spec: ParamSpec) -> str:
    if spec.type == "choice":
        return "one of " + " | ".join(spec.choices)
    return _TYPE_WORDS[spec.type]


def describe_value(value: ast.Value | Any) -> str:
    """How a value is named in messages: `the string "abc"`, `the number 1e-3`, ..."""
    if isinstance(value, ast.Number):
        return f"the number {value.text}"
    if isinstance(value, ast.Percent):
        return f"the percent {_fmt(value.value)}%"
    if isinstance(value, ast.String):
        return f'the string "{value.value}"'
    if isinstance(value, ast.Boolean):
        return f"`{'true' if value.value else 'false'}`"
    if isinstance(value, ast.Name):
        return f"the name `{value.value}`"
    if isinstance(value, ast.Ramp):
        return "a ramp"
    if isinstance(value, ast.Sweep):
        return "a sweep"
    return repr(value)


def _not_finite(value: ast.Number | ast.Percent, what: str) -> Diagnostic:
    text = value.text if isinstance(value, ast.Number) else f"{value.value:g}"
    return _error(f"{what} = {text} is not a finite number", value.span, "out-of-range")


def _range_message(spec: ParamSpec, what: str, shown: str) -> str:
    return f"{what} = {shown} is out of range: {spec.range_text()}"


def check_value(
    value: ast.Value,
    spec: ParamSpec,
    *,
    what: str,
    window: ast.Window | None = None,
    setting: bool = False,
) -> list[Diagnostic]:
    """Diagnostics for one value against its declaration.

    what: how the value is named, e.g. "`rho`" or "setting `cfg`"; window: the rule's
    window (for ramps); setting: the value is a setting's (settings never ramp).
    """
    span = value.span
    if isinstance(value, ast.Ramp):
        return _check_ramp(value, spec, what=what, window=window, setting=setting)
    if isinstance(value, (ast.Number, ast.Percent)) and not math.isfinite(value.value):
        return [_not_finite(value, what)]
    t = spec.type
    if t in ("float", "int"):
        if isinstance(value, ast.Number):
            if t == "int" and float(value.value) != int(value.value):
                return [_error(f"{what} expects a whole number, got {describe_value(value)}", span, "type-mismatch",
                               help=f"allowed: {spec.range_text()}")]
            if not spec.admits(float(value.value)):
                return [_error(_range_message(spec, what, value.text), span, "out-of-range")]
            return []
        if isinstance(value, ast.Percent) and t == "float":
            v = float(exact(value.value) / 100)
            if not spec.admits(v):
                return [_error(_range_message(spec, what, f"{_fmt(value.value)}% ({_fmt(v)})"), span, "out-of-range")]
            return []
        return [_error(f"{what} expects {expected_text(spec)}, got {describe_value(value)}", span, "type-mismatch",
                       help=f"allowed: {spec.range_text()}")]
    if t == "bool":
        if isinstance(value, ast.Boolean):
            return []
        return [_error(f"{what} expects {expected_text(spec)}, got {describe_value(value)}", span, "type-mismatch")]
    if t == "choice":
        if isinstance(value, (ast.Name, ast.String)):
            if value.value in spec.choices:
                return []
            return [_error(f"{what} has no choice `{value.value}`: expected one of {' | '.join(spec.choices)}",
                           span, "invalid-choice", help=_help(value.value, spec.choices))]
        return [_error(f"{what} expects {expected_text(spec)}, got {describe_value(value)}", span, "type-mismatch")]
    if t == "str":
        if isinstance(value, (ast.String, ast.Name)):
            problem = spec.form(value.value) if spec.form is not None else None
            if problem is not None:
                return [_error(f"{what} {problem}", span, "invalid-value")]
            return []
        return [_error(f"{what} expects {expected_text(spec)}, got {describe_value(value)}", span, "type-mismatch",
                       help='write it in double quotes, e.g. "path/to/dir"')]
    raise AssertionError(f"unknown parameter type {t!r}")


def _check_ramp(ramp: ast.Ramp, spec: ParamSpec, *, what: str, window: ast.Window | None, setting: bool) -> list[Diagnostic]:
    if setting:
        return [_error(f"{what} cannot ramp: a setting has one value for the whole run", ramp.span, "ramp-in-setting")]
    if spec.type not in ("float", "int"):
        return [_error(f"{what} cannot ramp: it takes {expected_text(spec)}", ramp.span, "ramp-not-allowed")]
    if not spec.rampable:
        return [_error(f"{what} cannot ramp: it keeps one value over its window", ramp.span, "ramp-not-allowed",
                       help=f"give one value, e.g. {spec.name}={_fmt(ramp.start.value)}")]
    out = [_not_finite(end, f"ramp end for {what}") for end in (ramp.start, ramp.end) if not math.isfinite(end.value)]
    if out:
        return out
    if window is not None and not is_bounded(window):
        out.append(_error(
            f"a ramp needs a bounded window (`a..b`, `a..=b` or `sigma a..b`)", ramp.span, "ramp-unbounded-window",
            notes=(Note("the rule's window is open-ended here", window.span),),
            help="give the window both ends, or a constant value",
        ))
    for end in (ramp.start, ramp.end):
        v = float(end.value)
        if spec.type == "int" and v != int(v):
            out.append(_error(f"ramp end for {what} must be a whole number, got {end.text}", end.span, "type-mismatch"))
        elif not spec.admits(v):
            out.append(_error(f"ramp end {end.text} for {what} is out of range: {spec.range_text()}", end.span,
                              "out-of-range"))
        elif ramp.shape == "exp" and v <= 0:
            out.append(_error(f"an exp ramp needs both ends > 0, got {end.text}", end.span, "out-of-range",
                              help="use a linear or cos ramp to reach 0"))
    return out


def convert_value(value: ast.Value, spec: ParamSpec) -> Any:
    """The Python value of a checked constant (not a ramp): int, float, bool or str."""
    if isinstance(value, ast.Percent):
        return float(exact(value.value) / 100)
    if isinstance(value, ast.Number):
        return int(value.value) if spec.type == "int" else float(value.value)
    if isinstance(value, (ast.Boolean, ast.Name, ast.String)):
        return value.value
    raise TypeError(f"not a constant: {value!r}")


# --- the recipe -----------------------------------------------------------------------


def clock_of(recipe: ast.Recipe, overrides: Mapping[str, Any] | None = None) -> int | None:
    """The recipe clock: `--set steps=` if given, else the recipe's `steps`, else 50.

    None when the recipe's `steps` is itself wrong (its own diagnostic says so).
    """
    if overrides and "steps" in overrides:
        return int(overrides["steps"])
    spec = setting_spec("steps")
    for st in recipe.statements:
        if isinstance(st, ast.Setting) and st.name == "steps":
            if check_value(st.value, spec, what="setting `steps`", setting=True):
                return None
            return int(st.value.value)
    return DEFAULT_CLOCK


def _src(recipe: ast.Recipe, span: ast.Span) -> str:
    return ast.span_text(recipe, span)


def rule_place(rule: ast.Rule) -> str:
    """How a message names a rule's place: `line 12`, or `recipes/dmgd.dmgd:12` in a used file."""
    origin = rule.span.origin
    return f"line {rule.span.line}" if origin is None else f"{origin.path}:{rule.span.line}"


def _check_settings(recipe: ast.Recipe) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    first: dict[str, ast.Setting] = {}
    for st in recipe.statements:
        if not isinstance(st, ast.Setting):
            continue
        spec = setting_spec(st.name)
        if spec is None:
            out.append(_error(f"unknown setting `{st.name}`", st.name_span, "unknown-setting",
                              help=_help(st.name, SETTING_NAMES) or f"settings: {', '.join(SETTING_NAMES)}"))
            continue
        if st.name in first:
            out.append(_error(f"setting `{st.name}` is given twice", st.name_span, "duplicate-setting",
                              notes=(Note(f"`{st.name}` is first given here", first[st.name].name_span),),
                              help="each setting may be given at most once"))
        else:
            first[st.name] = st
        out.extend(check_value(st.value, spec, what=f"setting `{st.name}`", setting=True))
    return out


def _check_window(recipe: ast.Recipe, window: ast.Window, clock: int | None) -> list[Diagnostic]:
    text = _src(recipe, window.span) or "this window"
    ends = ([window.lo, window.hi] if isinstance(window, (ast.Range, ast.SigmaRange)) else
            [window.bound] if isinstance(window, ast.OneSided) else [])
    infinite = [_error(f"bound {_src(recipe, end.span) or end.value} is not a finite number", end.span, "out-of-range")
                for end in ends if not math.isfinite(end.value)]
    if infinite:
        return infinite
    if isinstance(window, ast.SigmaRange):
        out = []
        for end in (window.lo, window.hi):
            if float(end.value) < 0:
                out.append(_error(f"sigma bound {end.text} is out of range: 0 <= sigma", end.span, "out-of-range"))
        if not out and float(window.lo.value) > float(window.hi.value):
            out.append(_error(f"window `{text}` is empty: `sigma a..b` holds for a <= sigma <= b", window.span,
                              "empty-window", help=f"did you mean `sigma {window.hi.text}..{window.lo.text}`?"))
        return out
    if isinstance(window, ast.Always):
        return []
    bounds = [window.lo, window.hi] if isinstance(window, ast.Range) else [window.bound]
    # Empty whatever the clock: a..b with a >= b, a..=b with a > b (percent and plain
    # bounds compare on the clock, so that case waits for it).
    if isinstance(window, ast.Range) and window.lo.percent == window.hi.percent:
        lo, hi = exact(window.lo.value), exact(window.hi.value)
        if lo > hi or (lo == hi and not window.inclusive):
            form = "a..=b` holds for a <= t <= b" if window.inclusive else "a..b` holds for a <= t < b"
            return [_error(f"window `{text}` is empty: `{form}", window.span, "empty-window",
                           help=f"did you mean `{_src(recipe, window.lo.span)}..={_src(recipe, window.hi.span)}`?"
                           if lo == hi else None)]
    if clock is None:
        return []
    interval = window_interval(window, clock)
    if interval.is_empty():
        return [_error(f"window `{text}` is empty", window.span, "empty-window")]
    if interval.intersect(clock_interval(clock)).is_empty():
        return [_error(f"window `{text}` lies outside the recipe clock: t runs from 0 to {clock - 1} "
                       f"(steps = {clock})", window.span, "window-outside-clock")]
    out = []
    for b in bounds:
        if b.percent:
            if not 0 <= b.value <= 100:
                out.append(_error(f"bound {_src(recipe, b.span) or _fmt(b.value) + '%'} is outside the recipe clock: "
                                  f"a percent runs from 0% to 100%", b.span, "window-outside-clock"))
        elif not 0 <= exact(b.value) <= clock:
            out.append(_error(f"bound {_src(recipe, b.span) or _fmt(b.value)} is outside the recipe clock: "
                              f"t runs from 0 to {clock - 1} (steps = {clock})", b.span, "window-outside-clock"))
    if out:
        return out
    if not interval.intersect(clock_interval(clock)).whole_steps(clock):
        return [_error(f"window `{text}` holds at no step of the recipe clock: t runs from 0 to {clock - 1} "
                       f"(steps = {clock})", window.span, "empty-window")]
    return []


def _check_term(recipe: ast.Recipe, term: ast.Term, window: ast.Window) -> tuple[list[Diagnostic], TermSpec | None]:
    try:
        spec = get_term(term.name)
    except PluginError as e:  # a clash, or the plugin declaring the term failed to load
        return [_error(str(e), term.name_span, "plugin-error")], None
    if spec is None:
        names = [t.name for t in all_terms()]
        return [_error(f"unknown term `{term.name}`", term.name_span, "unknown-term",
                       help=_help(term.name, names) or f"terms: {', '.join(names)} (see `dmgd terms`)")], None
    out: list[Diagnostic] = []
    first: dict[str, ast.Param] = {}
    for param in term.params:
        pspec = spec.param(param.name)
        if pspec is None:
            names = [p.name for p in spec.params]
            listing = f"`{term.name}` takes " + (", ".join(names) if names else "no parameters")
            retired = dict(spec.retired).get(param.name)
            out.append(_error(f"unknown parameter `{param.name}` for `{term.name}`", param.name_span, "unknown-param",
                              help=retired or _help(param.name, names) or listing))
            continue
        if param.name in first:
            out.append(_error(f"parameter `{param.name}` is given twice", param.name_span, "duplicate-param",
                              notes=(Note(f"`{param.name}` is first given here", first[param.name].name_span),)))
        else:
            first[param.name] = param
        out.extend(check_value(param.value, pspec, what=f"`{param.name}`", window=window))
    return out, spec


def _steps_text(steps: range) -> str:
    n = len(steps)
    if n == 1:
        return f"step {steps[0]} (1 step)"
    return f"steps {steps[0]}..={steps[-1]} ({n} steps)"


def _check_overlaps(recipe: ast.Recipe, conditioning: list[tuple[ast.Rule, ast.Term]], clock: int) -> list[Diagnostic]:
    out = []
    whole = clock_interval(clock)
    for j, (rule_b, term_b) in enumerate(conditioning):
        ib = window_interval(rule_b.window, clock)
        if ib is None:
            continue  # sigma windows: checked at compile time, where noise levels are known
        for rule_a, term_a in conditioning[:j]:
            ia = window_interval(rule_a.window, clock)
            if ia is None:
                continue
            shared = ia.intersect(ib).intersect(whole)
            if shared.is_empty():
                continue
            steps = shared.whole_steps(clock)
            where = (_steps_text(steps) if steps else
                     f"recipe time {shared.describe()} (no whole step of the recipe clock, but runs with more steps "
                     f"reach it)")
            out.append(_error(
                f"two conditioning terms on one step: `{term_a.name}` (rule at {rule_place(rule_a)}) and "
                f"`{term_b.name}` (rule at {rule_place(rule_b)}) both hold at {where}",
                term_b.span, "conditioning-overlap",
                notes=(Note(f"`{term_a.name}` conditions those steps too, by this rule", term_a.span),),
                help="at most one conditioning term holds at a step; make the windows disjoint",
            ))
    return out


def check_recipe(recipe: ast.Recipe, *, overrides: Mapping[str, Any] | None = None) -> list[Diagnostic]:
    """Every diagnostic of a parsed recipe, in source order.

    overrides: already-validated setting overrides (`--set`); only `steps` matters here,
    as the clock the windows are checked against. A recipe with sweeps is checked variant
    by variant (each diagnostic once).
    """
    if has_sweep(recipe):
        return _check_sweep(recipe, overrides)
    return _check_plain(recipe, overrides)


def _check_sweep(recipe: ast.Recipe, overrides: Mapping[str, Any] | None) -> list[Diagnostic]:
    out = sweep_problems(recipe)
    if out:
        return out
    seen: set[tuple[Any, ...]] = set()
    for variant in variants(recipe):
        for d in _check_plain(variant.recipe, overrides):
            key = (d.severity, d.code, d.span, d.message)
            if key not in seen:
                seen.add(key)
                out.append(d)
    out.sort(key=source_order)
    return out


def _check_plain(recipe: ast.Recipe, overrides: Mapping[str, Any] | None) -> list[Diagnostic]:
    out = _check_settings(recipe)
    clock = clock_of(recipe, overrides)
    conditioning: list[tuple[ast.Rule, ast.Term]] = []
    for st in recipe.statements:
        if not isinstance(st, ast.Rule):
            continue
        window_diags = _check_window(recipe, st.window, clock)
        out.extend(window_diags)
        first_cond: ast.Term | None = None
        for term in st.terms:
            diags, spec = _check_term(recipe, term, st.window)
            out.extend(diags)
            if spec is None or spec.kind is not Kind.CONDITIONING:
                continue
            if first_cond is None:
                first_cond = term
                if not window_diags:
                    conditioning.append((st, term))
            else:
                out.append(_error(
                    f"two conditioning terms in one rule: `{first_cond.name}` and `{term.name}`", term.span,
                    "conditioning-in-rule",
                    notes=(Note(f"`{first_cond.name}` already conditions this rule's steps", first_cond.span),),
                    help="at most one conditioning term holds at a step; give each its own window",
                ))
    if clock is not None:
        out.extend(_check_overlaps(recipe, conditioning, clock))
    out.sort(key=source_order)
    return out
