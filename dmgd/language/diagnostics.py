"""Diagnostics: compiler-grade messages about a recipe, and the error that carries them.

Rendering (`file:line:col: error: ...`, the source line, a caret, notes; or JSON) lives in
this module too, so every tool reports the same way.
"""

from __future__ import annotations

from typing import Literal

from attrs import frozen

from dmgd.language.ast import Span

Severity = Literal["error", "warning"]


@frozen
class Note:
    """A secondary message pointing at another place, e.g. the other rule of a conflict."""

    message: str
    span: Span | None = None


@frozen
class Diagnostic:
    severity: Severity
    message: str
    span: Span | None  # None for problems with no place in the text (e.g. an empty file)
    code: str  # a stable identifier for editors and CI, e.g. "syntax", "unknown-term"
    notes: tuple[Note, ...] = ()
    help: str | None = None  # e.g. "did you mean `softlabel`?"
    expected: tuple[str, ...] = ()  # for syntax errors: the tokens that would fit here


class RecipeError(Exception):
    """A recipe (or a setting given on the command line) has errors.

    The only exception the language raises for bad input, whatever the input.
    """

    def __init__(self, diagnostics: list[Diagnostic] | tuple[Diagnostic, ...], source: str = "", path: str = "<recipe>"):
        self.diagnostics = tuple(diagnostics)
        self.source = source
        self.path = path
        first = next((d for d in self.diagnostics if d.severity == "error"), None)
        super().__init__(first.message if first else "recipe error")
