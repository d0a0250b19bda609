"""The recipe's syntax tree: frozen attrs nodes, each with the source span it came from.

The parser builds these; the checker, the compiler and the formatter read them. Nothing
here knows term or setting names: those live in the registries.
"""

from __future__ import annotations

from typing import Literal, Union

from attrs import frozen


@frozen
class Span:
    """A region of the source: 1-based line and column of its start and end, and offsets."""

    line: int
    column: int
    end_line: int
    end_column: int
    start: int
    end: int


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


Value = Union[Number, Percent, String, Boolean, Name, Ramp]


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


Window = Union[Range, OneSided, Always, SigmaRange]


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


Statement = Union[Setting, Rule]


@frozen
class Comment:
    text: str  # including the leading '#'
    span: Span


@frozen
class Recipe:
    statements: tuple[Statement, ...]
    comments: tuple[Comment, ...]
    source: str
    path: str  # shown in diagnostics; "<recipe>" when the text did not come from a file
