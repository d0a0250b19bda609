"""A Pygments lexer for `.dmgd` recipes, so that documentation (Sphinx, MkDocs, anything
that highlights through Pygments) colours recipes in ```dmgd blocks.

Registered under Pygments' `pygments.lexers` entry point (pyproject.toml): once dmgd is
installed, `pygments.lexers.get_lexer_by_name("dmgd")` finds it. The language has no
reserved words (grammar/dmgd.lark), so the lexer colours a name by where it stands: a
setting before `=`, a term after a window's `:`, a parameter inside a term's parentheses,
`t` and `sigma` before a window's bound, `cos`/`exp` before a ramp, `use` and `drop` at the
start of a statement. editors/vscode/ holds the same rules as a TextMate grammar.
"""

from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, default, include
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Whitespace

NAME = r"[A-Za-z_][A-Za-z0-9_]*"
NUMBER = r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"


class DmgdLexer(RegexLexer):
    """Recipes of dmgd's guidance-schedule language (`.dmgd`)."""

    name = "dmgd"
    aliases = ["dmgd"]
    filenames = ["*.dmgd"]
    mimetypes = ["text/x-dmgd"]
    url = "https://github.com/solomonWQC/DMGD"

    tokens = {
        "common": [
            (r"[ \t\f\r]+", Whitespace),
            (r"#[^\n]*", Comment.Single),
            (r'"', String.Double, "string"),
            (r"(true|false)\b", Keyword.Constant),
            (r"(cos|exp)(\s*)(\()", bygroups(Name.Builtin, Whitespace, Punctuation), "ramp"),
            (NUMBER + "%", Number.Float),
            (r"-?[0-9]+\.[0-9]+(?:[eE][+-]?[0-9]+)?|-?[0-9]+[eE][+-]?[0-9]+", Number.Float),
            (r"-?[0-9]+", Number.Integer),
            (r"\.\.=?|[<>]=?|\*", Operator),
            (r"[{},()]", Punctuation),
        ],
        # the start of a statement: a setting, a `use` or `drop`, or a rule's window
        "root": [
            (r"\n", Whitespace),
            (r";", Punctuation),
            (r'(use)(\s+)(?=")', bygroups(Keyword.Namespace, Whitespace)),
            (rf"(drop)(\s+)({NAME})", bygroups(Keyword, Whitespace, Name.Function)),
            (rf"({NAME})(\s*)(=)", bygroups(Name.Variable, Whitespace, Operator), "value"),
            (r"(t|sigma)\b", Keyword.Pseudo),
            (r":", Punctuation, "terms"),
            include("common"),
            (NAME, Name),
        ],
        "value": [
            include("common"),
            (NAME, Name.Constant),
            default("#pop"),  # the end of the statement: root takes the newline or `;`
        ],
        # after a window's `:`: the rule's terms, up to the end of the statement
        "terms": [
            (rf"({NAME})(\s*)(\()", bygroups(Name.Function, Whitespace, Punctuation), "call"),
            (NAME, Name.Function),
            include("common"),
            default("#pop"),
        ],
        # a term's parameters, up to its `)`
        "call": [
            (r"\)", Punctuation, "#pop"),
            (r"\n", Whitespace),
            (rf"({NAME})(\s*)(=)", bygroups(Name.Attribute, Whitespace, Operator)),
            include("common"),
            (NAME, Name.Constant),
        ],
        # a shaped ramp's `(a..b)`, inside a value
        "ramp": [
            (r"\)", Punctuation, "#pop"),
            include("common"),
        ],
        "string": [
            (r'\\[^\n]', String.Escape),
            (r'[^"\\\n]+', String.Double),
            (r'"', String.Double, "#pop"),
        ],
    }
