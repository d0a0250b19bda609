"""The canonical layout of a recipe (`dmgd fmt`) and the recipe's identity (its hash).

    format_recipe(recipe) -> str    the recipe in its one canonical layout
    canonical_text(recipe) -> str   the same without comments and blank lines
    canonical_hash(recipe) -> str   sha256 hex of canonical_text

`format_recipe` is idempotent and keeps the statements' meaning; the layout rules and
what the hash covers are in docs/language.md ("Formatting and the recipe hash").
"""

from __future__ import annotations

import hashlib
import math
import re

from dmgd.language.ast import (
    Always,
    Boolean,
    Bound,
    Comment,
    Directive,
    Drop,
    Name,
    Number,
    OneSided,
    Percent,
    Ramp,
    Range,
    Recipe,
    Rule,
    Setting,
    SigmaRange,
    String,
    Sweep,
    Term,
    Use,
    Value,
    Window,
    WindowSweep,
)

__all__ = ["format_recipe", "canonical_text", "canonical_hash", "format_statement", "format_value",
           "format_window", "format_number"]

_WHOLE = re.compile(r"-?[0-9]+\Z")


def _float_text(value: float) -> str:
    if math.isinf(value):
        return "1e999" if value > 0 else "-1e999"
    if value != value:  # NaN: no literal reads as NaN; keep something that parses
        return "0"
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def format_number(number: Number) -> str:
    text = number.text
    if _WHOLE.match(text):
        negative = text.startswith("-")
        digits = text.lstrip("-").lstrip("0") or "0"
        return "-" + digits if negative and digits != "0" else digits
    value = number.value
    if math.isinf(value) or value != value:
        return text.lower()  # too large for a float: keep what was written
    return repr(value)


def _bound(bound: Bound) -> str:
    return _float_text(bound.value) + ("%" if bound.percent else "")


def format_window(window: Window) -> str:
    if isinstance(window, Range):
        return f"{_bound(window.lo)}{'..=' if window.inclusive else '..'}{_bound(window.hi)}"
    if isinstance(window, OneSided):
        return f"t{window.op}{_bound(window.bound)}"
    if isinstance(window, SigmaRange):
        return f"sigma {format_number(window.lo)}..{format_number(window.hi)}"
    if isinstance(window, Always):
        return "*"
    if isinstance(window, WindowSweep):
        return "{" + ", ".join(format_window(w) for w in window.alternatives) + "}"
    raise TypeError(f"not a window: {window!r}")


def _string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_value(value: Value) -> str:
    if isinstance(value, Number):
        return format_number(value)
    if isinstance(value, Percent):
        return _float_text(value.value) + "%"
    if isinstance(value, String):
        return _string(value.value)
    if isinstance(value, Boolean):
        return "true" if value.value else "false"
    if isinstance(value, Name):
        return value.value
    if isinstance(value, Ramp):
        inner = f"{format_number(value.start)}..{format_number(value.end)}"
        return inner if value.shape == "linear" else f"{value.shape}({inner})"
    if isinstance(value, Sweep):
        return "{" + ", ".join(format_value(v) for v in value.alternatives) + "}"
    raise TypeError(f"not a value: {value!r}")


def _term(term: Term) -> str:
    if not term.params:
        return term.name
    return f"{term.name}(" + ", ".join(f"{p.name}={format_value(p.value)}" for p in term.params) + ")"


def format_statement(statement: Setting | Rule | Directive) -> str:
    if isinstance(statement, Use):
        return f"use {_string(statement.path)}"
    if isinstance(statement, Drop):
        return f"drop {statement.name}"
    if isinstance(statement, Setting):
        return f"{statement.name} = {format_value(statement.value)}"
    if isinstance(statement, Rule):
        return f"{format_window(statement.window)}: " + ", ".join(_term(t) for t in statement.terms)
    raise TypeError(f"not a statement: {statement!r}")


def format_recipe(recipe: Recipe) -> str:
    """The recipe in its canonical layout (see the module's doc): its own text, `use` and
    `drop` kept, not what they resolve to."""
    items: list[Setting | Rule | Directive | Comment] = [*recipe.own_statements, *recipe.comments]
    items.sort(key=lambda item: item.span.start)
    lines: list[str] = []
    previous: Setting | Rule | Comment | None = None
    for item in items:
        if previous is not None:
            if isinstance(item, Comment) and not isinstance(previous, Comment) \
                    and item.span.line == previous.span.end_line:
                lines[-1] += "  " + item.text.rstrip()
                previous = item
                continue
            if item.span.line - previous.span.end_line >= 2:
                lines.append("")
        if isinstance(item, Comment):
            lines.append(item.text.rstrip())
        else:
            lines.append(format_statement(item))
        previous = item
    return "".join(line + "\n" for line in lines)


def canonical_text(recipe: Recipe) -> str:
    """The statements alone, canonically formatted, one a line: no comments, no blank lines.
    A recipe that `use`s others gives the text of what it resolves to: the same as the
    flat recipe it stands for, so the two have one identity."""
    return "".join(format_statement(s) + "\n" for s in recipe.statements)


def canonical_hash(recipe: Recipe) -> str:
    """The recipe's identity: sha256 (hex) of `canonical_text`, UTF-8 encoded.

    Comments and layout are left out on purpose: rewording a comment or running `dmgd
    fmt` does not change what a recipe does, so it does not change its identity.
    """
    return hashlib.sha256(canonical_text(recipe).encode("utf-8", "surrogatepass")).hexdigest()
