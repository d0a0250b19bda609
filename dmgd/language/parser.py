"""The recipe parser: text in, `Recipe` (the syntax tree of ast.py) out, or `RecipeError`.

The LALR(1) parser is generated from `grammar/dmgd.lark` into `_standalone_parser.py`;
`_Builder` makes the AST nodes (with their spans) while it parses. A text that does not
parse is parsed again statement by statement, so that each broken statement gets its own
diagnostic. Any input whatsoever gives a `Recipe` or raises `RecipeError`.
"""

from __future__ import annotations

import bisect
import re
from functools import cache
from typing import Any, Iterator

from attrs import evolve

from dmgd.language import ast
from dmgd.language.ast import (
    Always,
    Boolean,
    Bound,
    Comment,
    Drop,
    Name,
    Number,
    OneSided,
    Param,
    Percent,
    Ramp,
    Range,
    Recipe,
    Rule,
    Setting,
    SigmaRange,
    Span,
    String,
    Sweep,
    Term,
    Use,
    WindowSweep,
)
from dmgd.language.diagnostics import Diagnostic, RecipeError, did_you_mean

__all__ = ["parse_recipe", "MAX_ERRORS"]

MAX_ERRORS = 100

RAMP_SHAPES = ("cos", "exp")


# --- building the tree --------------------------------------------------------------


class _Bad:
    """What the transformer returns in place of a node that is syntactically wrong."""

    __slots__ = ("diagnostics",)

    def __init__(self, diagnostics: tuple[Diagnostic, ...]):
        self.diagnostics = diagnostics


def _tok_span(tok: Any) -> Span:
    return Span(tok.line, tok.column, tok.end_line, tok.end_column, tok.start_pos, tok.end_pos)


def _join(a: Span, b: Span) -> Span:
    return Span(a.line, a.column, b.end_line, b.end_column, a.start, b.end)


def _sub_span(tok: Any, lo: int, hi: int) -> Span:
    """Characters lo..hi of a one-line token."""
    return Span(tok.line, tok.column + lo, tok.line, tok.column + hi, tok.start_pos + lo, tok.start_pos + hi)


def _bad_children(children: list[Any]) -> _Bad | None:
    found: list[Diagnostic] = []
    for child in children:
        if type(child) is _Bad:
            found.extend(child.diagnostics)
    return _Bad(tuple(found)) if found else None


def _syntax(message: str, span: Span, help: str | None = None, expected: tuple[str, ...] = ()) -> _Bad:
    return _Bad((Diagnostic("error", message, span, "syntax", help=help, expected=expected),))


def _too_large(tok: Any, value: float) -> _Bad | None:
    if value - value != 0:  # inf: the literal is beyond the largest float
        return _syntax(f"number too large: `{_clip(str(tok.value))}`", _tok_span(tok),
                       help="numbers must fit a double-precision float (at most about 1.8e308)")
    return None


def _number(tok: Any) -> Number | _Bad:
    value = float(tok.value)
    return _too_large(tok, value) or Number(value, str(tok.value), _tok_span(tok))


_ESCAPE = re.compile(r"\\(.)", re.S)


class _Builder:
    """The AST builder the parser calls at each reduction (inline: no parse tree is built)."""

    def start(self, children: list[Any]) -> list[Any]:
        return children

    # statements

    def setting(self, c: list[Any]) -> Any:
        bad = _bad_children(c)
        if bad:
            return bad
        name, value = c
        return Setting(str(name.value), value, _join(_tok_span(name), value.span), _tok_span(name))

    def use(self, c: list[Any]) -> Any:
        name, tok = c
        if name.value != "use":
            return _syntax(f"expected `use` before a file name, found `{_clip(name.value)}`", _tok_span(name),
                           help=did_you_mean(str(name.value), ["use"])
                           or 'a recipe is used with `use "other.dmgd"`; a setting is written `name = value`',
                           expected=("`use`",))
        path = self.string([tok])
        if type(path) is _Bad:
            return path
        return Use(path.value, _join(_tok_span(name), path.span), path.span)

    def drop(self, c: list[Any]) -> Any:
        name, term = c
        if name.value != "drop":
            return _syntax(
                f"expected `=`, a comparison (`>=`, `>`, `<=`, `<`) or a number, found `{_clip(term.value)}`",
                _tok_span(term), help=did_you_mean(str(name.value), ["drop"])
                or f"a setting is written `{_clip(name.value)} = value`", expected=("`=`",))
        return Drop(str(term.value), _join(_tok_span(name), _tok_span(term)), _tok_span(term))

    def rule(self, c: list[Any]) -> Any:
        bad = _bad_children(c)
        if bad:
            return bad
        window = c[0]
        terms = tuple(c[1:])
        return Rule(window, terms, _join(window.span, terms[-1].span))

    # windows

    def bound(self, c: list[Any]) -> Bound | _Bad:
        tok = c[0]
        percent = tok.type == "PERCENT"
        value = float(tok.value[:-1] if percent else tok.value)
        return _too_large(tok, value) or Bound(value, percent, _tok_span(tok))

    def range(self, c: list[Any]) -> Range | _Bad:
        lo, hi = c
        return _bad_children(c) or Range(lo, hi, False, _join(lo.span, hi.span))

    def range_inclusive(self, c: list[Any]) -> Range | _Bad:
        lo, hi = c
        return _bad_children(c) or Range(lo, hi, True, _join(lo.span, hi.span))

    def one_sided(self, c: list[Any]) -> Any:
        name, op, bound = c
        if type(bound) is _Bad:
            return bound
        if name.value != "t":
            return _syntax(
                f"expected `t`, found `{_clip(name.value)}`",
                _tok_span(name),
                help=f"a one-sided window is written `t{op.value}{_clip(bound_text(bound))}`",
                expected=("`t`",),
            )
        return OneSided(str(op.value), bound, _join(_tok_span(name), bound.span))

    def window_sweep(self, c: list[Any]) -> Any:
        return _sweep(c, WindowSweep, "window")

    def always(self, c: list[Any]) -> Always:
        return Always(_tok_span(c[0]))

    def sigma_range(self, c: list[Any]) -> Any:
        name, lo, hi = c
        if name.value != "sigma":
            return _syntax(
                f"expected `sigma` before a noise-level range, found `{_clip(name.value)}`",
                _tok_span(name),
                help=did_you_mean(str(name.value), ["sigma"])
                or "a noise-level window is written `sigma 0.28..5.42`; a setting `name = value`",
                expected=("`sigma`",),
            )
        lo_n, hi_n = _number(lo), _number(hi)
        return _bad_children([lo_n, hi_n]) or SigmaRange(lo_n, hi_n, _join(_tok_span(name), hi_n.span))

    # terms

    def bare_term(self, c: list[Any]) -> Term:
        name = c[0]
        span = _tok_span(name)
        return Term(str(name.value), (), span, span)

    def call_term(self, c: list[Any]) -> Any:
        bad = _bad_children(c)
        if bad:
            return bad
        name, rpar = c[0], c[-1]
        return Term(str(name.value), tuple(c[1:-1]), _join(_tok_span(name), _tok_span(rpar)), _tok_span(name))

    def param(self, c: list[Any]) -> Any:
        bad = _bad_children(c)
        if bad:
            return bad
        name, value = c
        name_span = _tok_span(name)
        return Param(str(name.value), value, _join(name_span, value.span), name_span)

    # values

    def number(self, c: list[Any]) -> Number | _Bad:
        return _number(c[0])

    def percent(self, c: list[Any]) -> Percent | _Bad:
        tok = c[0]
        value = float(tok.value[:-1])
        return _too_large(tok, value) or Percent(value, _tok_span(tok))

    def string(self, c: list[Any]) -> Any:
        tok = c[0]
        raw = tok.value[1:-1]
        if "\\" not in raw:
            return String(raw, _tok_span(tok))
        for m in _ESCAPE.finditer(raw):
            if m.group(1) not in '"\\':
                esc = _printable(m.group(0))
                return _syntax(
                    f"unknown escape `{esc}` in a string",
                    _sub_span(tok, m.start() + 1, m.end() + 1),
                    help='the only escapes are `\\"` and `\\\\`; write `\\\\` for a backslash',
                )
        return String(_ESCAPE.sub(r"\1", raw), _tok_span(tok))

    def name(self, c: list[Any]) -> Name | Boolean:
        tok = c[0]
        value = tok.value
        if value == "true":
            return Boolean(True, _tok_span(tok))
        if value == "false":
            return Boolean(False, _tok_span(tok))
        return Name(str(value), _tok_span(tok))

    def sweep(self, c: list[Any]) -> Any:
        return _sweep(c, Sweep, "value")

    def linear_ramp(self, c: list[Any]) -> Ramp | _Bad:
        lo, hi = _number(c[0]), _number(c[1])
        return _bad_children([lo, hi]) or Ramp(lo, hi, "linear", _join(lo.span, hi.span))

    def shaped_ramp(self, c: list[Any]) -> Any:
        name, lo, hi, rpar = c
        if name.value not in RAMP_SHAPES:
            return _Bad((Diagnostic(
                "error",
                f"unknown ramp shape `{_clip(name.value)}`",
                _tok_span(name),
                "syntax",
                help=did_you_mean(str(name.value), list(RAMP_SHAPES))
                or "a ramp is written `a..b` (linear), `cos(a..b)` or `exp(a..b)`",
                expected=("`cos`", "`exp`"),
            ),))
        lo_n, hi_n = _number(lo), _number(hi)
        return _bad_children([lo_n, hi_n]) or Ramp(lo_n, hi_n, name.value, _join(_tok_span(name), _tok_span(rpar)))


def _sweep(c: list[Any], node: type, what: str) -> Any:
    """A Sweep or a WindowSweep from `{`, its alternatives and `}`; a sweep inside a sweep is an error."""
    bad = _bad_children(c)
    if bad:
        return bad
    lbrace, alternatives, rbrace = c[0], c[1:-1], c[-1]
    nested = next((a for a in alternatives if isinstance(a, (Sweep, WindowSweep))), None)
    if nested is not None:
        return _syntax(f"a sweep inside a sweep: each alternative is one {what}", nested.span,
                       help="list every alternative in the one pair of braces, e.g. `{1.0, 2.0, 4.0}`")
    return node(tuple(alternatives), _join(_tok_span(lbrace), _tok_span(rbrace)))


def bound_text(bound: Bound) -> str:
    v = bound.value
    text = str(int(v)) if v.is_integer() and abs(v) < 1e16 else repr(v)
    return text + ("%" if bound.percent else "")


# --- the generated parser ------------------------------------------------------------


@cache
def _generated() -> Any:
    """The generated parser module, imported on first use rather than at the top: it is
    about 140 KB of code, and `import dmgd` and `import dmgd.language` must stay cheap."""
    from dmgd.language import _standalone_parser

    return _standalone_parser


@cache
def _parser() -> Any:
    """The parser, with `_Builder` as its transformer (built once per process)."""
    return _generated().Lark_StandAlone(transformer=_Builder())


def parse_raw(text: str) -> list[Any]:
    """The statements (or `_Bad`s) and comment tokens, as the parser's transformer returns
    them; raises the generated module's `UnexpectedInput` where the text does not parse."""
    return _parser().parse(text)


# --- the entry point ----------------------------------------------------------------


def parse_recipe(text: str, path: str = "<recipe>", *, resolve: bool = True) -> Recipe:
    """Parse a recipe. Raises RecipeError (with every syntax error found) on bad input.

    A recipe that `use`s others has them read and resolved (`dmgd.language.sources`; paths
    relative to `path`'s folder, or the current directory for text without a file);
    resolve=False keeps only its own statements (`written`), as `dmgd fmt` needs them."""
    if not isinstance(text, str):
        raise TypeError(f"parse_recipe() takes the recipe's text (str), not {type(text).__name__}")
    recipe = _assemble(_parse_or_raise(text, path), text, path)
    if recipe.written is None or not resolve:
        return recipe
    from dmgd.language.sources import resolve_uses  # sources parses the used files with this module

    return resolve_uses(recipe)


def _parse_or_raise(text: str, path: str) -> list[Any]:
    try:
        return parse_raw(text)
    except _generated().UnexpectedInput as whole_error:
        diagnostics = _recover(text, whole_error)
    raise RecipeError(diagnostics, text, path)


def _assemble(items: list[Any], text: str, path: str) -> Recipe:
    """The Recipe from the parser's items, or RecipeError for the `_Bad` ones."""
    statements: list[ast.Statement | ast.Directive] = []
    comments: list[Comment] = []
    errors: list[Diagnostic] = []
    for item in items:
        kind = type(item)
        if kind is _Bad:
            errors.extend(item.diagnostics)
        elif kind is Setting or kind is Rule or kind is Use or kind is Drop:
            statements.append(item)
        else:  # a COMMENT token
            comments.append(Comment(str(item.value).rstrip(), _tok_span(item)))
    if errors:
        raise RecipeError(errors[:MAX_ERRORS], text, path)
    if any(type(st) is Use or type(st) is Drop for st in statements):
        own = tuple(st for st in statements if type(st) is Setting or type(st) is Rule)
        return Recipe(own, tuple(comments), text, path, written=tuple(statements))
    return Recipe(tuple(statements), tuple(comments), text, path)


# --- error recovery: one statement at a time ----------------------------------------

# Cuts the text where the parser's lexer would: strings (possibly unterminated) and comments
# are kept whole; `;` and newlines separate statements.
_PIECES = re.compile(r'(?P<s>"(?:[^"\\\n]|\\[^\n])*"?)|(?P<c>#[^\n]*)|(?P<sep>[;\n])|(?P<o>[^"#;\n]+)')
_BLANK = " \t\f\r"


def _statements(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) offsets of each non-blank statement's text."""
    start = None
    end = 0
    for m in _PIECES.finditer(text):
        kind = m.lastgroup
        if kind == "s" or kind == "o":
            if start is None:
                start = m.start()
            end = m.end()
        else:
            if start is not None:
                if text[start:end].strip(_BLANK):
                    yield start, end
                start = None
    if start is not None and text[start:end].strip(_BLANK):
        yield start, end


class _Lines:
    def __init__(self, text: str):
        self.starts = [0]
        self.starts.extend(m.end() for m in re.finditer("\n", text))

    def span(self, start: int, end: int) -> Span:
        line = bisect.bisect_right(self.starts, start)
        end_line = bisect.bisect_right(self.starts, end)
        return Span(line, start - self.starts[line - 1] + 1, end_line, end - self.starts[end_line - 1] + 1, start, end)


def _recover(text: str, whole_error: Exception) -> list[Diagnostic]:
    lines = _Lines(text)
    found: list[Diagnostic] = []
    for start, end in _statements(text):
        piece = text[start:end]
        try:
            items = parse_raw(piece)
        except _generated().UnexpectedInput as e:
            found.append(_describe(e, text, start, end, lines))
        else:
            for item in items:
                if type(item) is _Bad:
                    found.extend(_shift(d, start, lines) for d in item.diagnostics)
        if len(found) >= MAX_ERRORS:
            found = found[:MAX_ERRORS]
            found.append(Diagnostic(
                "error", f"too many errors: stopped after {MAX_ERRORS}", lines.span(end, end), "too-many-errors"))
            return found
    if not found:  # cannot happen if the statement cutter agrees with the lexer; be safe
        found.append(_describe(whole_error, text, 0, len(text), lines))
    return found


def _shift(d: Diagnostic, base: int, lines: _Lines) -> Diagnostic:
    span = d.span
    if span is None:
        return d
    return evolve(d, span=lines.span(span.start + base, span.end + base))


# --- describing a syntax error in words ---------------------------------------------

_STATEMENT_START = {"NAME", "NUMBER", "PERCENT", "STAR"}
_VALUE = {"NAME", "NUMBER", "PERCENT", "STRING"}
_BOUND = {"NUMBER", "PERCENT"}
_END = {"_NL", "_SEMI", "$END", "COMMENT"}
# The grammar's punctuation terminals and their text.
_LITERALS = {
    "EQUAL": "=", "COLON": ":", "COMMA": ",", "LPAR": "(", "RPAR": ")", "STAR": "*",
    "_SEMI": ";", "DOTDOT": "..", "DOTDOT_EQ": "..=", "LBRACE": "{", "RBRACE": "}",
}
_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "PERCENT": "a percent",
    "STRING": "a string",
    "CMP": "a comparison (`>=`, `>`, `<=`, `<`)",
    "COMMENT": "a comment",
}
# The order in which expectations are listed.
_ORDER = ["EQUAL", "CMP", "DOTDOT", "DOTDOT_EQ", "COLON", "LPAR", "COMMA", "RPAR", "RBRACE", "NAME", "NUMBER",
          "PERCENT", "STRING", "STAR", "LBRACE"]


def describe_expected(names: set[str] | frozenset[str]) -> tuple[str, ...]:
    """What would fit, in words, from the parser's set of acceptable terminals."""
    names = set(names) - {"WS"}
    if {"EQUAL", "CMP"} <= names:  # after a statement's first name: `use "f"` and `drop x` are rare there
        names -= {"STRING", "NAME"}
    if names & (_VALUE | _BOUND | _STATEMENT_START):  # a sweep `{...}` is one more way to write a value or window
        names.discard("LBRACE")
    if _STATEMENT_START <= names:
        return ("a window", "a setting", "a comment")
    if names == {"NAME"}:
        return ("a term",)
    words: list[str] = []
    if _VALUE <= names:
        words.append("a value")
        names -= _VALUE
    elif _BOUND <= names:
        words.append("a number or a percent")
        names -= _BOUND
    if names == {"NAME", "RPAR"}:
        return ("a parameter", "`)`")
    has_end = bool(names & {"_NL", "$END"})
    names -= _END if has_end else set()
    words.extend(_word(name) for name in _ORDER if name in names)
    words.extend(_word(name) for name in sorted(names - set(_ORDER)))  # anything not foreseen
    if has_end:
        words.append("the end of the statement")
    return tuple(words)


def _word(terminal: str) -> str:
    return _WORDS.get(terminal) or f"`{_LITERALS.get(terminal, terminal)}`"


def _or(words: tuple[str, ...]) -> str:
    if not words:
        return "something else"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _printable(s: str) -> str:
    out = []
    for ch in s:
        if ch.isprintable():
            out.append(ch)
        elif ch == "\t":
            out.append("\\t")
        else:
            out.append(f"\\u{{{ord(ch):04x}}}")
    return "".join(out)


def _clip(s: str, limit: int = 30) -> str:
    s = _printable(s[: limit + 1])
    return s if len(s) <= limit else s[:limit] + "..."


def _after(text: str, offset: int) -> str:
    """What lies at `offset` of the whole text, in words (where a statement ended)."""
    if offset >= len(text):
        return "end of file"
    ch = text[offset]
    if ch == "\n":
        return "end of line"
    if ch == ";":
        return "`;`"
    if ch == "#":
        return "a comment"
    return f"`{_printable(ch)}`"


_SIGMA_INCLUSIVE = re.compile(r"[ \t\f\r]*sigma[ \t\f\r]+[-0-9.eE+]+[ \t\f\r]*\.\.=")
_USE_WITHOUT_STRING = re.compile(r'[ \t\f\r]*use[ \t\f\r]+[^"= \t\f\r]')
_SETTING_WITHOUT_EQUAL = re.compile(r"[ \t\f\r]*([A-Za-z_][A-Za-z0-9_]*)[ \t\f\r]+(?:-?[0-9]|\"|[A-Za-z_])")

# An error in parts: message, span, what was expected, help.
_Described = tuple[str, Span, tuple[str, ...], str | None]


def _describe(e: Any, text: str, base: int, end: int, lines: _Lines) -> Diagnostic:
    """A Diagnostic for the parser's error `e` from parsing text[base:end]."""
    generated = _generated()
    piece = text[base:end]
    if isinstance(e, generated.UnexpectedToken):
        message, span, expected, help = _unexpected_token(e, text, base, end, lines)
    elif isinstance(e, generated.UnexpectedCharacters):
        message, span, expected, help = _unexpected_characters(e, piece, base, lines)
    else:  # pragma: no cover - an LALR parser raises only the two above
        message, span, expected, help = "syntax error", lines.span(base, base), (), None
    return Diagnostic("error", message, span, "syntax", help=help or _statement_help(piece), expected=expected)


def _unexpected_token(e: Any, text: str, base: int, end: int, lines: _Lines) -> _Described:
    tok = e.token
    accepted = _accepted(e)
    expected = describe_expected(accepted if accepted is not None else set(e.expected))
    help = None
    if tok.type == "$END":
        at = base + (tok.end_pos or 0)
        span = lines.span(at, at)
        found = _after(text, end)
    else:
        span = lines.span(base + tok.start_pos, base + tok.end_pos)
        found = _found_token(tok)
        if tok.type == "COLON":
            help = "a window is `a..b`, `a..=b`, `t>=a`, `t>a`, `t<=b`, `t<b`, `*` or `sigma a..b`"
        elif tok.type == "LPAR" and accepted is not None and "EQUAL" in accepted and "CMP" in accepted:
            help = "a rule starts with its window: `*: term(...)` holds at every step"
    return f"expected {_or(expected)}, found {found}", span, expected, help


def _unexpected_characters(e: Any, piece: str, base: int, lines: _Lines) -> _Described:
    pos = e.pos_in_stream
    ch = piece[pos] if pos < len(piece) else ""
    span = lines.span(base + pos, base + pos + 1)
    if ch == '"':
        return "unterminated string", span, ('`"`',), 'close the string with `"` on the same line'
    accepted = _accepted(e)
    expected = describe_expected(accepted if accepted is not None else set(e.allowed or ()))
    before = piece[pos - 1] if pos > 0 else ""
    after = piece[pos + 1] if pos + 1 < len(piece) else ""
    help = None
    if ch == "." and after.isdigit() and not before.isdigit() and before != ".":
        help = f"write a digit before the point: `0.{after}`"
    elif ch == "." and before.isdigit() and not after.isdigit():
        help = f"write a digit after the point: `{before}.0`"
    return f"expected {_or(expected)}, found `{_printable(ch)}`", span, expected, help


def _statement_help(piece: str) -> str | None:
    """Help that the statement's text alone suggests, where the error gave none."""
    if _USE_WITHOUT_STRING.match(piece):
        return 'a recipe is used with `use "other.dmgd"`: the path in double quotes'
    if _SIGMA_INCLUSIVE.match(piece):
        return "a sigma window holds at both of its ends: write `sigma a..b`"
    m = _SETTING_WITHOUT_EQUAL.match(piece)
    if m and m.group(1) not in ("sigma", "t") and "=" not in piece[: m.end()]:
        return f"a setting is written `{m.group(1)} = value`"
    return None


def _accepted(e: Any) -> set[str] | None:
    """The terminals that would have let the parse go on where it stopped (exact, unlike
    the LALR state's lookaheads, which merge contexts), or None if the parser cannot tell."""
    interactive = getattr(e, "interactive_parser", None)
    if interactive is None:
        return None
    try:
        return set(interactive.accepts())
    except Exception:
        return None


def _found_token(tok: Any) -> str:
    kind = tok.type
    if kind == "_NL":
        return "end of line"
    if kind == "STRING":
        return "a string"
    if kind == "COMMENT":
        return "a comment"
    return f"`{_clip(str(tok.value))}`"
