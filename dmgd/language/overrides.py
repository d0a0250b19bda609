"""Setting overrides: `--set name=value` on the command line, or a dict from Python.

A `--set` string is read with the recipe language's own value syntax (it is parsed as a
one-statement recipe, `name=value`), then checked against the setting's declaration like
a setting in a file. One convenience: a `str` setting (`model`, `data`) also takes its
value unquoted (`--set model=/data/DiT-XL-2`), since the shell strips quotes.

Diagnostics point into the `--set` strings, one per line of a source named
`<command line>`, so they render like any other.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from attrs import evolve

from dmgd.language import ast
from dmgd.language.checker import check_value, convert_value, expected_text
from dmgd.language.diagnostics import Diagnostic, RecipeError, did_you_mean
from dmgd.language.parser import parse_recipe
from dmgd.language.settings import SETTING_NAMES, setting_spec

__all__ = ["COMMAND_LINE", "parse_overrides", "validate_overrides"]

COMMAND_LINE = "<command line>"


def _did_you_mean(name: str) -> str | None:
    s = did_you_mean(name, list(SETTING_NAMES))
    if s and not s.startswith("did you mean"):
        s = f"did you mean `{s}`?"
    return s


def _span(line: int, col: int, end_col: int, offset: int) -> ast.Span:
    return ast.Span(line, col, line, end_col, offset + col - 1, offset + end_col - 1)


def _shift(span: ast.Span | None, line: int, offset: int) -> ast.Span | None:
    if span is None:
        return None
    return evolve(span, line=span.line + line - 1, end_line=span.end_line + line - 1,
                  start=span.start + offset, end=span.end + offset)


def _shift_diag(d: Diagnostic, line: int, offset: int) -> Diagnostic:
    return evolve(d, span=_shift(d.span, line, offset),
                  notes=tuple(evolve(n, span=_shift(n.span, line, offset)) for n in d.notes))


def _parse_one(arg: str, line: int, offset: int) -> tuple[str | None, Any, list[Diagnostic]]:
    """One `name=value`: (name, value, diagnostics), spans in the combined source."""
    whole = _span(line, 1, len(arg) + 1, offset)
    if "\n" in arg:
        return None, None, [Diagnostic("error", "a --set value is one `name=value`", whole, "override-syntax")]
    name, eq, raw = arg.partition("=")
    stripped = name.strip()
    if not eq or not stripped:
        return None, None, [Diagnostic("error", f"expected `name=value`, got `{arg}`", whole, "override-syntax",
                                       help="e.g. --set ipc=50")]
    lead = len(name) - len(name.lstrip())
    name_span = _span(line, 1 + lead, 1 + lead + len(stripped), offset)
    spec = setting_spec(stripped)
    if spec is None:
        return None, None, [Diagnostic("error", f"unknown setting `{stripped}`", name_span, "unknown-setting",
                                       help=_did_you_mean(stripped) or f"settings: {', '.join(SETTING_NAMES)}")]
    if spec.type == "str" and not raw.strip().startswith('"'):
        if not raw.strip():
            return None, None, [Diagnostic("error", f"setting `{stripped}` needs a value", whole, "override-syntax")]
        return stripped, raw.strip(), []
    try:
        recipe = parse_recipe(arg, COMMAND_LINE, resolve=False)
    except RecipeError as err:
        return None, None, [_shift_diag(d, line, offset) for d in err.diagnostics]
    statements = recipe.own_statements
    if len(statements) != 1 or not isinstance(statements[0], ast.Setting):
        return None, None, [Diagnostic("error", "a --set value is one `name=value`, not a rule or several statements",
                                       whole, "override-syntax", help="e.g. --set ipc=50")]
    setting = statements[0]
    diags = check_value(setting.value, spec, what=f"setting `{stripped}`", setting=True)
    if diags:
        return None, None, [_shift_diag(d, line, offset) for d in diags]
    return stripped, convert_value(setting.value, spec), []


def parse_overrides(args: Iterable[str]) -> dict[str, Any]:
    """`["ipc=50", "sampler=ddim"]` -> `{"ipc": 50, "sampler": "ddim"}`.

    Raises RecipeError (path `<command line>`, one line of source per argument) with a
    diagnostic for every bad argument. A setting given twice: the last one wins, as on
    most command lines.
    """
    args = list(args)
    out: dict[str, Any] = {}
    diagnostics: list[Diagnostic] = []
    offset = 0
    for line, arg in enumerate(args, start=1):
        name, value, diags = _parse_one(arg, line, offset)
        diagnostics.extend(diags)
        if name is not None:
            out[name] = value
        offset += len(arg) + 1
    if diagnostics:
        raise RecipeError(diagnostics, "\n".join(args), COMMAND_LINE)
    return out


def validate_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Check a dict of Python setting values (`{"ipc": 50}`); returns them normalised.

    Strings are read as `--set` strings would be (`{"ipc": "50"}` is 50). Raises
    RecipeError with path `<command line>` (no spans: the values have no source text).
    """
    out: dict[str, Any] = {}
    diagnostics: list[Diagnostic] = []
    for name, value in overrides.items():
        spec = setting_spec(name)
        if spec is None:
            diagnostics.append(Diagnostic("error", f"unknown setting `{name}`", None, "unknown-setting",
                                          help=_did_you_mean(name) or f"settings: {', '.join(SETTING_NAMES)}"))
            continue
        problem = _python_value_problem(spec, value)
        if problem is not None:
            if isinstance(value, str) and spec.type not in ("str", "choice"):
                try:
                    out.update(parse_overrides([f"{name}={value}"]))
                    continue
                except RecipeError as err:
                    diagnostics.extend(evolve(d, span=None, notes=()) for d in err.diagnostics)
                    continue
            diagnostics.append(Diagnostic("error", problem, None, _problem_code(spec, value)))
            continue
        if spec.type == "int":
            value = int(value)
        elif spec.type == "float":
            value = float(value)
        out[name] = value
    if diagnostics:
        raise RecipeError(diagnostics, "", COMMAND_LINE)
    return out


def _problem_code(spec, value) -> str:
    if spec.type == "choice" and isinstance(value, str):
        return "invalid-choice"
    if _type_ok(spec, value):
        return "out-of-range"
    return "type-mismatch"


def _type_ok(spec, value) -> bool:
    if spec.type == "int":
        return not isinstance(value, bool) and (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))
    if spec.type == "float":
        return not isinstance(value, bool) and isinstance(value, (int, float))
    if spec.type == "bool":
        return isinstance(value, bool)
    if spec.type == "choice":
        return isinstance(value, str)
    return isinstance(value, str) or value is None


def _python_value_problem(spec, value) -> str | None:
    what = f"setting `{spec.name}`"
    if not _type_ok(spec, value):
        return f"{what} expects {expected_text(spec)}, got {value!r}"
    if spec.type == "choice" and value not in spec.choices:
        return f"{what} has no choice `{value}`: expected one of {' | '.join(spec.choices)}"
    if spec.type in ("int", "float") and not spec.admits(float(value)):
        return f"{what} = {value!r} is out of range: {spec.range_text()}"
    if spec.type == "str" and value is not None and spec.form is not None:
        problem = spec.form(value)
        if problem is not None:
            return f"{what} {problem}"
    return None



def as_overrides(overrides: Mapping[str, Any] | Iterable[str] | str | None) -> dict[str, Any]:
    """Overrides as the API takes them, one way: a dict of values (`{"ipc": 50}`, checked
    when compiled), `--set` strings (`["ipc=50"]` or one string), or None."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    return parse_overrides([overrides] if isinstance(overrides, str) else overrides)
