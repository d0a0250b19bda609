"""The recipe parser: text in, `Recipe` (the syntax tree of ast.py) out, or `RecipeError`.

    parse_recipe(text, path="<recipe>") -> Recipe

How it works
- The grammar (`grammar/dmgd.lark`) is LALR(1) with lark's contextual lexer; a
  transformer given to the Lark constructor builds the AST nodes while parsing, in one
  pass, each with its `Span` computed from its tokens.
- Names that act as words of the language (`t`, `sigma`, `cos`, `exp`, `true`,
  `false`) are plain NAME tokens, checked here: `x>=45:` is a syntax error that says
  `t` was expected; `lin(0..1)` says the ramp shapes are `cos` and `exp`.
- Error recovery: when the whole text does not parse, it is cut into statements (at
  `;` and newlines, outside strings and comments) and each statement is parsed on its
  own, so that every broken statement gets its own diagnostic. After `MAX_ERRORS`
  errors the parser stops and says so.
- Any input whatsoever gives a `Recipe` or raises `RecipeError`: nothing else.

Spans: `line` and `column` are 1-based and count characters (a tab is one column);
`end_line`/`end_column` and `end` are exclusive (the position just past the node), so a
one-character token at column 5 has end_column 6; `start`/`end` are 0-based offsets into
the text.
"""

from __future__ import annotations

import bisect
import re
from typing import Any, Iterator

from dmgd.language import ast
from dmgd.language.ast import (
    Always,
    Boolean,
    Bound,
    Comment,
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
    Term,
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
    """The AST builder lark calls at each reduction (inline: no parse tree is built)."""

    def start(self, children: list[Any]) -> list[Any]:
        return children

    # statements

    def setting(self, c: list[Any]) -> Any:
        bad = _bad_children(c)
        if bad:
            return bad
        name, value = c
        return Setting(str(name.value), value, _join(_tok_span(name), value.span), _tok_span(name))

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


def bound_text(bound: Bound) -> str:
    v = bound.value
    text = str(int(v)) if v.is_integer() and abs(v) < 1e16 else repr(v)
    return text + ("%" if bound.percent else "")


def _lark():
    from dmgd.language.grammar import shared_lark

    return shared_lark("recipe", _Builder)


# --- the fast path --------------------------------------------------------------------
#
# lark's own parse loop costs a few microseconds a token; a recipe parse is a few dozen
# tokens, and `dmgd` parses recipes on every command. So valid recipes go through a
# tighter loop over lark's own LALR table, with lark's own reduction callbacks (which
# call `_Builder`) and a lexer made of lark's own terminals, tried in lark's order.
# Whenever this loop meets anything it does not accept, it gives up and lark's parser
# runs instead, which accepts exactly the same texts (the tests check the two agree) and
# describes the errors. Lexing without lark's context is safe here because no terminal
# can be split into two tokens that would fit where the whole one does not (`..=` is
# never `..` then `=`, `90%` never `90` then `%`): the grammar passes lark's strict mode.


class _Tok:
    """A token as `_Builder` reads it (the attributes of lark's Token it uses)."""

    __slots__ = ("type", "value", "start_pos", "end_pos", "line", "column", "end_line", "end_column")

    def __init__(self, type: str, value: str, start: int, end: int, line: int, column: int):
        self.type = type
        self.value = value
        self.start_pos = start
        self.end_pos = end
        self.line = line
        self.column = column
        self.end_line = line
        self.end_column = column + end - start


class _FastParser:
    def __init__(self, lark: Any):
        from lark.parsers.lalr_analysis import Shift

        inner = lark.parser.parser.parser  # ParsingFrontend -> LALR_Parser -> _Parser
        table = inner.parse_table
        callbacks = inner.callbacks
        self.start = table.start_states["start"]
        self.end = table.end_states["start"]
        gotos: dict[str, dict[int, int]] = {}
        for state, actions in table.states.items():
            for symbol, (action, arg) in actions.items():
                if not _is_terminal(symbol):
                    gotos.setdefault(symbol, {})[state] = arg
        # state -> terminal -> the state to shift to (an int), or (size, callback, gotos)
        self.actions: dict[int, dict[str, Any]] = {}
        for state, actions in table.states.items():
            row: dict[str, Any] = {}
            for symbol, (action, arg) in actions.items():
                if _is_terminal(symbol):
                    row[symbol] = arg if action is Shift else (len(arg.expansion), callbacks[arg], gotos[arg.origin.name])
            self.actions[state] = row
        terminals = sorted(lark.terminals, key=lambda t: (-t.priority, -t.pattern.max_width,
                                                           -len(t.pattern.value), t.name))
        self.scanner = re.compile("|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in terminals))
        self.ignore = frozenset(lark.lexer_conf.ignore)

    def parse(self, text: str) -> list[Any] | None:
        """What lark's parse would return, or None where lark would raise (or might)."""
        actions = self.actions
        states = [self.start]
        values: list[Any] = []
        ignore = self.ignore
        line = 1
        line_start = 0
        pos = 0
        for m in self.scanner.finditer(text):
            start = m.start()
            if start != pos:  # a character no terminal matches
                return None
            pos = m.end()
            kind = m.lastgroup
            if kind in ignore:
                continue
            tok = _Tok(kind, m.group(), start, pos, line, start - line_start + 1)  # type: ignore[arg-type]
            if kind == "_NL":
                line += 1
                line_start = pos
            while True:
                act = actions[states[-1]].get(kind)  # type: ignore[arg-type]
                if act is None:
                    return None
                if act.__class__ is int:
                    states.append(act)
                    values.append(tok)
                    break
                size, callback, gotos = act
                if size:
                    children = values[-size:]
                    del states[-size:]
                    del values[-size:]
                else:
                    children = []
                states.append(gotos[states[-1]])
                values.append(callback(children))
        if pos != len(text):
            return None
        while True:
            act = actions[states[-1]].get("$END")
            if act is None or act.__class__ is int:
                return None
            size, callback, gotos = act
            if size:
                children = values[-size:]
                del states[-size:]
                del values[-size:]
            else:
                children = []
            value = callback(children)
            state = gotos[states[-1]]
            if state == self.end:
                return value
            states.append(state)
            values.append(value)


def _is_terminal(symbol: str) -> bool:
    return symbol == "$END" or symbol.isupper()


_FAST: list[_FastParser | None] = []


def _fast_parser() -> _FastParser | None:
    if not _FAST:
        try:
            fast: _FastParser | None = _FastParser(_lark())
        except Exception:  # another lark's internals: parse with lark alone
            fast = None
        _FAST.append(fast)
    return _FAST[0]


def parse_with_lark(text: str) -> list[Any]:
    """The statements and comments (raw) as lark's own parser returns them; raises lark's errors."""
    return _lark().parse(text)


def parse_fast(text: str) -> list[Any] | None:
    """The same as `parse_with_lark`, or None whenever the fast loop cannot tell."""
    fast = _fast_parser()
    return fast.parse(text) if fast is not None else None


# --- the entry point ----------------------------------------------------------------


def parse_recipe(text: str, path: str = "<recipe>") -> Recipe:
    """Parse a recipe. Raises RecipeError (with every syntax error found) on bad input."""
    if not isinstance(text, str):
        raise TypeError(f"parse_recipe() takes the recipe's text (str), not {type(text).__name__}")
    from lark.exceptions import UnexpectedInput

    items = parse_fast(text)
    if items is None:
        parser = _lark()
        try:
            items = parser.parse(text)
        except UnexpectedInput as whole_error:
            diagnostics = _recover(parser, text, whole_error)
            raise RecipeError(diagnostics, text, path) from None

    statements: list[ast.Statement] = []
    comments: list[Comment] = []
    errors: list[Diagnostic] = []
    for item in items:
        kind = type(item)
        if kind is _Bad:
            errors.extend(item.diagnostics)
        elif kind is Setting or kind is Rule:
            statements.append(item)
        else:  # a COMMENT token
            comments.append(Comment(str(item.value).rstrip(), _tok_span(item)))
    if errors:
        raise RecipeError(errors[:MAX_ERRORS], text, path)
    return Recipe(tuple(statements), tuple(comments), text, path)


# --- error recovery: one statement at a time ----------------------------------------

# Cuts the text where lark's lexer would: strings (possibly unterminated) and comments
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


def _recover(parser: Any, text: str, whole_error: Exception) -> list[Diagnostic]:
    from lark.exceptions import UnexpectedInput

    lines = _Lines(text)
    found: list[Diagnostic] = []
    for start, end in _statements(text):
        piece = text[start:end]
        try:
            items = parser.parse(piece)
        except UnexpectedInput as e:
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
    from attrs import evolve

    span = d.span
    if span is None:
        return d
    return evolve(d, span=lines.span(span.start + base, span.end + base))


# --- describing a syntax error in words ---------------------------------------------

_STATEMENT_START = {"NAME", "NUMBER", "PERCENT", "STAR"}
_VALUE = {"NAME", "NUMBER", "PERCENT", "STRING"}
_BOUND = {"NUMBER", "PERCENT"}
_END = {"_NL", "_SEMI", "$END", "COMMENT"}
_LITERALS = {
    "EQUAL": "=", "COLON": ":", "COMMA": ",", "LPAR": "(", "RPAR": ")", "STAR": "*",
    "_SEMI": ";", "__ANON_0": "..", "__ANON_1": "..=",
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
_ORDER = ["EQUAL", "CMP", "__ANON_0", "__ANON_1", "COLON", "LPAR", "COMMA", "RPAR", "NAME", "NUMBER", "PERCENT",
          "STRING", "STAR"]


def _terminal_literals(parser: Any) -> dict[str, str]:
    """Terminal name -> its literal text, read from the grammar (names like __ANON_0 are lark's)."""
    table = dict(_LITERALS)
    try:
        for t in parser.terminals:
            if t.pattern.type == "str":
                table[t.name] = t.pattern.value
    except Exception:
        pass
    return table


_LITERAL_CACHE: dict[str, str] = {}


def describe_expected(names: set[str] | frozenset[str]) -> tuple[str, ...]:
    """What would fit, in words, from lark's set of acceptable terminals."""
    if not _LITERAL_CACHE:
        _LITERAL_CACHE.update(_terminal_literals(_lark()))
    names = set(names) - {"WS"}
    if _STATEMENT_START <= names:
        return ("a window", "a setting", "a comment")
    words: list[str] = []
    if names == {"NAME"}:
        return ("a term",)
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
    for name in _ORDER:
        if name in names:
            names.discard(name)
            if name in _WORDS:
                words.append(_WORDS[name])
            else:
                words.append(f"`{_LITERAL_CACHE.get(name, name)}`")
    for name in sorted(names):  # anything not foreseen
        words.append(_WORDS.get(name) or f"`{_LITERAL_CACHE.get(name, name)}`")
    if has_end:
        words.append("the end of the statement")
    return tuple(words)


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
_SETTING_WITHOUT_EQUAL = re.compile(r"[ \t\f\r]*([A-Za-z_][A-Za-z0-9_]*)[ \t\f\r]+(?:-?[0-9]|\"|[A-Za-z_])")


def _describe(e: Any, text: str, base: int, end: int, lines: _Lines) -> Diagnostic:
    """A Diagnostic for lark's error `e` from parsing text[base:end]."""
    from lark.exceptions import UnexpectedCharacters, UnexpectedToken

    piece = text[base:end]
    help: str | None = None
    accepted = _accepted(e)
    if isinstance(e, UnexpectedToken):
        tok = e.token
        expected = describe_expected(accepted if accepted is not None else set(e.expected))
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
        message = f"expected {_or(expected)}, found {found}"
    elif isinstance(e, UnexpectedCharacters):
        pos = e.pos_in_stream
        ch = piece[pos] if pos < len(piece) else ""
        span = lines.span(base + pos, base + pos + 1)
        expected = describe_expected(accepted if accepted is not None else set(e.allowed or ()))
        if ch == '"':
            message = "unterminated string"
            help = 'close the string with `"` on the same line'
            expected = ('`"`',)
        else:
            message = f"expected {_or(expected)}, found `{_printable(ch)}`"
            before = piece[pos - 1] if pos > 0 else ""
            after = piece[pos + 1] if pos + 1 < len(piece) else ""
            if ch == "." and after.isdigit() and not before.isdigit() and before != ".":
                help = f"write a digit before the point: `0.{after}`"
            elif ch == "." and before.isdigit() and not after.isdigit():
                help = f"write a digit after the point: `{before}.0`"
    else:  # pragma: no cover - lark's LALR raises only the two above
        span = lines.span(base, base)
        expected = ()
        message = "syntax error"
    if help is None and _SIGMA_INCLUSIVE.match(piece):
        help = "a sigma window holds at both of its ends: write `sigma a..b`"
    if help is None:
        m = _SETTING_WITHOUT_EQUAL.match(piece)
        if m and m.group(1) not in ("sigma", "t") and "=" not in piece[: m.end()]:
            help = f"a setting is written `{m.group(1)} = value`"
    return Diagnostic("error", message, span, "syntax", help=help, expected=expected)


def _accepted(e: Any) -> set[str] | None:
    """The terminals that would have let the parse go on where it stopped (exact, unlike
    the LALR state's lookaheads, which merge contexts), or None if lark cannot tell."""
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
