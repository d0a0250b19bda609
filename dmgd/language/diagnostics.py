"""Diagnostics: compiler-grade messages about a recipe, and the error that carries them.

Rendering (`file:line:col: error: ...`, the source line, a caret, notes; or JSON) lives in
this module too, so every tool reports the same way.
"""

from __future__ import annotations

import difflib
import json
from typing import Iterable, Literal

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


def source_order(d: Diagnostic) -> tuple[int, str, int, int]:
    """Sort key: diagnostics without a place first, then the used files' (in the order their
    statements come), then the recipe's own, each in text order."""
    span = d.span
    if span is None:
        return (-1, "", -1, -1)
    if span.origin is None:
        return (1, "", span.start, span.end)
    return (0, span.origin.path, span.start, span.end)


# --- did you mean -------------------------------------------------------------------


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """`did you mean `x`?` for the candidate closest to `name`, or None if none is close.

    Closeness is difflib's ratio (cutoff 0.6); a candidate that differs only in case wins.
    """
    pool = [c for c in candidates if c != name]
    if not pool or not name:
        return None
    folded = [c for c in pool if c.lower() == name.lower()]
    if folded:
        return f"did you mean `{folded[0]}`?"
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


# --- rendering ------------------------------------------------------------------------

# Longest stretch of a source line shown; longer lines are cut around the caret.
EXCERPT_WIDTH = 100
TAB_WIDTH = 4

_COLORS = {"error": "\x1b[1;31m", "warning": "\x1b[1;33m", "note": "\x1b[1;36m", "help": "\x1b[1;32m"}
_BOLD = "\x1b[1m"
_BLUE = "\x1b[1;34m"
_RESET = "\x1b[0m"


def _source_line(lines: list[str], number: int) -> str:
    return lines[number - 1] if 1 <= number <= len(lines) else ""


def _display(ch: str) -> str:
    """One source character as shown: tabs widen, control characters become U+FFFD."""
    if ch == "\t":
        return " " * TAB_WIDTH
    if not ch.isprintable():
        return "\ufffd"
    return ch


def _shown(text: str) -> str:
    return text if text.isprintable() else "".join(_display(c) for c in text)


def _snippet(lines: list[str], span: Span, color: str | None, width: int) -> list[str]:
    """The source line of `span` and a row of carets under it (gutter included)."""
    line = _source_line(lines, span.line)
    if line.endswith("\r"):  # CRLF line endings
        line = line[:-1]
    col0 = max(span.column - 1, 0)  # 0-based character index of the first caret
    if span.end_line == span.line:
        end0 = max(span.end_column - 1, col0 + 1)
    else:  # a span over several lines: underline to the end of its first line
        end0 = max(len(line), col0 + 1)
    # An excerpt of long lines, around the caret.
    first = 0
    last = len(line)
    if len(line) > EXCERPT_WIDTH:
        first = max(0, min(col0 - EXCERPT_WIDTH // 3, len(line) - EXCERPT_WIDTH))
        last = min(len(line), first + EXCERPT_WIDTH)
    shown = _shown(line[first:last])
    lead = "..." if first > 0 else ""
    tail = "..." if last < len(line) else ""
    # Caret columns, in displayed characters.
    pad = len(lead) + len(_shown(line[first:max(first, min(col0, last))]))
    if col0 > last:
        pad += col0 - last  # a position past the end of the line (e.g. end of file)
    covered = line[max(col0, first):min(end0, last)]
    count = max(1, len(_shown(covered)))
    number = str(span.line).rjust(width)
    gutter = " " * width
    bar = f"{_BLUE}|{_RESET}" if color else "|"
    carets = "^" * count
    if color:
        carets = f"{color}{carets}{_RESET}"
        number_shown = f"{_BLUE}{number}{_RESET}"
    else:
        number_shown = number
    text_row = f"  {number_shown} {bar} {lead}{shown}{tail}".rstrip()
    caret_row = f"  {gutter} {bar} {' ' * pad}{carets}"
    return [text_row, caret_row]


def _location(path: str, span: Span | None) -> str:
    return f"{path}:{span.line}:{span.column}" if span is not None else path


def render_text(
    diagnostics: Iterable[Diagnostic], source: str, path: str, color: bool = False
) -> str:
    """Diagnostics as a compiler prints them, one block each, separated by blank lines:

        recipes/x.dmgd:3:9: error: unknown term `softlable`
          3 | 25..45: softlable(bs=0.01)
            |         ^^^^^^^^^
            = help: did you mean `softlabel`?

    Columns are 1-based. Notes with a span get their own location line, source line and
    carets; notes without one are `= note:` lines. Syntax errors with several possible
    continuations list them in an `= expected one of:` line. `color=True` adds ANSI
    colors. The result ends with a newline (or is empty when there is nothing to say).
    """
    lines = source.split("\n")
    blocks: list[str] = []
    for d in diagnostics:
        blocks.append(_render_one(d, lines, path, color))
    return "\n".join(blocks)


def _render_one(d: Diagnostic, lines: list[str], path: str, color: bool) -> str:
    sev_color = _COLORS.get(d.severity, _COLORS["error"]) if color else None
    out: list[str] = []
    width = len(str(d.span.line)) if d.span is not None else 0
    for note in d.notes:
        if note.span is not None:
            width = max(width, len(str(note.span.line)))

    def file_of(span: Span | None) -> tuple[list[str], str]:
        """The lines and path of the file a span lies in (a used file's, or the recipe's)."""
        if span is None or span.origin is None:
            return lines, path
        return span.origin.source.split("\n"), span.origin.path

    def header(span: Span | None, severity: str, message: str, c: str | None) -> str:
        where = _location(file_of(span)[1], span)
        if c:
            return f"{_BOLD}{where}:{_RESET} {c}{severity}:{_RESET} {_BOLD}{message}{_RESET}"
        return f"{where}: {severity}: {message}"

    def gutter_line(label: str, text: str) -> str:
        eq = f"{_BLUE}={_RESET}" if color else "="
        return f"  {' ' * width} {eq} {label}: {text}"

    def snippet(span: Span, c: str | None) -> list[str]:
        return _snippet(file_of(span)[0], span, c, width)

    out.append(header(d.span, d.severity, _one_line(d.message), sev_color))
    if d.span is not None:
        out.extend(snippet(d.span, sev_color))
    if d.span is not None and d.span.origin is not None:
        out.append(gutter_line("note", d.span.origin.used_by_text()))
    if len(d.expected) > 1:
        out.append(gutter_line("expected one of", ", ".join(d.expected)))
    if d.help:
        out.append(gutter_line("help", _one_line(d.help)))
    for note in d.notes:
        if note.span is None:
            out.append(gutter_line("note", _one_line(note.message)))
    for note in d.notes:
        if note.span is not None:
            note_color = _COLORS["note"] if color else None
            out.append(header(note.span, "note", _one_line(note.message), note_color))
            out.extend(snippet(note.span, note_color))
            if note.span.origin is not None and (d.span is None or note.span.origin != d.span.origin):
                out.append(gutter_line("note", note.span.origin.used_by_text()))
    return "\n".join(out) + "\n"


def _one_line(message: str) -> str:
    return message.replace("\r", " ").replace("\n", " ")


def render_json(diagnostics: Iterable[Diagnostic], path: str) -> str:
    """Diagnostics as a JSON list, for editors and CI. Each object has: path, line,
    column, end_line, end_column (1-based, end exclusive; null without a span),
    severity, code, message, help (or null), expected (a list of words) and notes (a
    list of {message, line, column, end_line, end_column}). A diagnostic in a file the recipe
    `use`s has that file's path, and `used_by`: ["FILE:LINE", ...], innermost first."""
    def where(span: Span | None) -> dict[str, int | None]:
        if span is None:
            return {"line": None, "column": None, "end_line": None, "end_column": None}
        return {"line": span.line, "column": span.column, "end_line": span.end_line, "end_column": span.end_column}

    items = []
    for d in diagnostics:
        origin = d.span.origin if d.span is not None else None
        item: dict[str, object] = {"path": origin.path if origin is not None else path}
        item.update(where(d.span))
        item.update({
            "severity": d.severity,
            "code": d.code,
            "message": d.message,
            "help": d.help,
            "expected": list(d.expected),
            "notes": [{"message": n.message, **where(n.span)} for n in d.notes],
        })
        if origin is not None:
            item["used_by"] = [f"{p}:{line}" for p, line in origin.used_by]
        items.append(item)
    return json.dumps(items, indent=2)
