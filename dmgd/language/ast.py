"""The recipe's syntax tree: frozen attrs nodes, each with the source span it came from.

The parser builds these; the checker, the compiler and the formatter read them. Nothing
here knows term or setting names: those live in the registries.
"""

from __future__ import annotations

from typing import Literal, Union

from attrs import field, frozen


@frozen
class Origin:
    """The file a statement came from when a recipe `use`s another: its path, its text, and
    the `use` lines that brought it in, innermost first: ((using file, line), ...)."""

    path: str
    source: str = field(repr=False)
    used_by: tuple[tuple[str, int], ...]

    def used_by_text(self) -> str:
        return ", ".join(f"used by {path}:{line}" for path, line in self.used_by)


@frozen
class Span:
    """A region of the source: 1-based line and column of its start and end, and offsets.

    origin: None for the recipe's own text; the used file's `Origin` for a statement a
    `use` brought in (the offsets are then into that file's text)."""

    line: int
    column: int
    end_line: int
    end_column: int
    start: int
    end: int
    origin: Origin | None = None


# --- values -------------------------------------------------------------------------


@frozen
class Number:
    value: float
    text: str  # as written, e.g. "1e-3", kept so diagnostics can quote it
    span: Span


@frozen
class Percent:
    value: float  # the number before '%', e.g. 90 for "90%"
    span: Span


@frozen
class String:
    value: str  # unescaped
    span: Span


@frozen
class Boolean:
    value: bool
    span: Span


@frozen
class Name:
    value: str
    span: Span


RampShape = Literal["linear", "cos", "exp"]


@frozen
class Ramp:
    """`a..b`, `cos(a..b)` or `exp(a..b)`: a value that moves over its rule's window."""

    start: Number
    end: Number
    shape: RampShape
    span: Span


@frozen
class Sweep:
    """`{a, b, ...}`: the value takes each alternative in turn, one variant of the recipe each."""

    alternatives: tuple["Value", ...]
    span: Span


Value = Union[Number, Percent, String, Boolean, Name, Ramp, Sweep]


# --- windows on the recipe clock ----------------------------------------------------


@frozen
class Bound:
    """A point on the recipe clock: a step count, or a percent of the clock."""

    value: float
    percent: bool
    span: Span


@frozen
class Range:
    """`a..b` (a <= t < b) or `a..=b` (a <= t <= b)."""

    lo: Bound
    hi: Bound
    inclusive: bool
    span: Span


@frozen
class OneSided:
    """`t>=a`, `t>a`, `t<=b`, `t<b`."""

    op: Literal[">=", ">", "<=", "<"]
    bound: Bound
    span: Span


@frozen
class Always:
    """`*`: every step."""

    span: Span


@frozen
class SigmaRange:
    """`sigma a..b`: sigma_lo <= sigma <= sigma_hi, in the noise level of the step."""

    lo: Number
    hi: Number
    span: Span


@frozen
class WindowSweep:
    """`{25..45, 10..30}`: the rule's window takes each alternative in turn."""

    alternatives: tuple["Window", ...]
    span: Span


Window = Union[Range, OneSided, Always, SigmaRange, WindowSweep]


# --- statements ---------------------------------------------------------------------


@frozen
class Param:
    name: str
    value: Value
    span: Span  # the whole `name=value`
    name_span: Span


@frozen
class Term:
    name: str
    params: tuple[Param, ...]
    span: Span
    name_span: Span


@frozen
class Rule:
    window: Window
    terms: tuple[Term, ...]
    span: Span


@frozen
class Setting:
    name: str
    value: Value
    span: Span
    name_span: Span


@frozen
class Use:
    """`use "other.dmgd"`: the other recipe's settings and rules first (path relative to this file)."""

    path: str
    span: Span
    path_span: Span


@frozen
class Drop:
    """`drop NAME`: remove every rule of term NAME that the `use` lines brought in."""

    name: str
    span: Span
    name_span: Span


Statement = Union[Setting, Rule]
Directive = Union[Use, Drop]


@frozen
class Comment:
    text: str  # including the leading '#'
    span: Span


@frozen
class Recipe:
    """A parsed recipe. `statements` are what it means, `use`s resolved: the used files'
    settings and rules first (their spans carry an `Origin`), overridden and dropped as the
    recipe says; `written` are its own statements as written, `use` and `drop` included
    (what `dmgd fmt` prints); `sources` the used files, each once, in the order first used."""

    statements: tuple[Statement, ...]
    comments: tuple[Comment, ...]
    source: str
    path: str  # shown in diagnostics; "<recipe>" when the text did not come from a file
    written: tuple[Statement | Directive, ...] | None = None  # None: the same as `statements`
    sources: tuple[Origin, ...] = ()

    @property
    def own_statements(self) -> tuple[Statement | Directive, ...]:
        return self.statements if self.written is None else self.written


def span_text(recipe: Recipe, span: Span) -> str:
    """The text a span covers, in whichever file it lies."""
    source = span.origin.source if span.origin is not None else recipe.source
    return source[span.start:span.end] if source else ""
