"""Editor support: the Pygments lexer (dmgd/highlight.py) and the VS Code TextMate grammar
(editors/vscode/) colour every recipe in the repository, with nothing left unrecognised."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from pygments.token import Error, Token

ROOT = Path(__file__).resolve().parents[1]
VSCODE = ROOT / "editors" / "vscode"
GRAMMAR = VSCODE / "syntaxes" / "dmgd.tmLanguage.json"

# What the language is growing into (issue 14): composition and sweeps, beside strings and
# every window form.
COMING = '''use "dmgd.dmgd"  # the reference schedule
drop ot
cfg = {2.0, 4.0}; model = "runs/a \\"b\\""
{25..45, 10..30}: ot(rho = {0.05..0.5, 5.0..50.0}, grad=full)
sigma 0.28..5.42: mode(rho=cos(0.1..0.5)); t<90%: refine
30..=45: ot(K=10,
  rho=exp(0.05..0.5), units=rms)
flag = true
'''


def sources() -> dict[str, str]:
    """Every recipe in recipes/, every ```dmgd block of the docs, and COMING."""
    found = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in sorted((ROOT / "recipes").glob("*.dmgd"))}
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "editors" / "README.md"]:
        for n, block in enumerate(re.findall(r"^```dmgd\n(.*?)^```", doc.read_text(encoding="utf-8"), re.S | re.M)):
            found[f"{doc.relative_to(ROOT)} block {n + 1}"] = block
    found["COMING"] = COMING
    return found


def test_the_docs_have_dmgd_blocks_and_recipes_are_many():
    names = sources()
    assert sum(n.startswith("recipes/") for n in names) >= 9 and any("extending.md" in n for n in names)


# --- Pygments --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lexer():
    """The lexer as Pygments finds it: through the entry point pyproject.toml declares."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["pygments.lexers"]
    cls = EntryPoint("dmgd", declared["dmgd"], "pygments.lexers").load()
    assert "dmgd" in cls.aliases and "*.dmgd" in cls.filenames
    return cls()


def tokens(lexer, text: str) -> list[tuple]:
    return [(t, v) for t, v in lexer.get_tokens(text) if v.strip()]


@pytest.mark.parametrize("name", sorted(sources()))
def test_every_recipe_lexes_without_error_tokens(lexer, name):
    text = sources()[name]
    lexed = list(lexer.get_tokens(text))
    assert [v for t, v in lexed if t in Error] == []
    assert "".join(v for _, v in lexed) == (text if text.endswith("\n") else text + "\n")


def test_names_are_coloured_by_where_they_stand(lexer):
    found = tokens(lexer, COMING)
    assert found[:4] == [(Token.Keyword.Namespace, "use"), (Token.Literal.String.Double, '"'),
                         (Token.Literal.String.Double, "dmgd.dmgd"), (Token.Literal.String.Double, '"')]
    kinds = {}
    for t, v in found:
        kinds.setdefault(v, set()).add(t)
    assert kinds["drop"] == {Token.Keyword} and kinds["ot"] == {Token.Name.Function}
    assert kinds["cfg"] == {Token.Name.Variable} and kinds["rho"] == {Token.Name.Attribute}
    assert kinds["sigma"] == kinds["t"] == {Token.Keyword.Pseudo}
    assert kinds["cos"] == kinds["exp"] == {Token.Name.Builtin}
    assert kinds["full"] == {Token.Name.Constant} and kinds["true"] == {Token.Keyword.Constant}
    assert kinds["{"] == {Token.Punctuation} and kinds[".."] == {Token.Operator}
    assert kinds["90%"] == {Token.Literal.Number.Float} and kinds["10"] == {Token.Literal.Number.Integer}
    assert kinds['\\"'] == {Token.Literal.String.Escape}
    assert (Token.Comment.Single, "# the reference schedule") in found


def test_what_is_not_the_language_is_an_error_token(lexer):
    assert [v for t, v in lexer.get_tokens("steps = 50 @\n30..45: ot(K=10) !\n") if t in Error] == ["@", "!"]


def test_pygments_finds_the_lexer_through_the_declared_entry_point(tmp_path):
    """dmgd's metadata as an install writes it (a dist-info whose entry_points.txt holds
    pyproject.toml's `pygments.lexers` entry), first on the path: Pygments' own lookup finds
    the lexer by name and by file name, and highlights a recipe with it."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["pygments.lexers"]
    info = tmp_path / "site" / "dmgd-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dmgd\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[pygments.lexers]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items()))
    code = ("from pygments import highlight; from pygments.formatters import HtmlFormatter; "
            "from pygments.lexers import get_lexer_by_name, get_lexer_for_filename; "
            "lexer = get_lexer_by_name('dmgd'); print(type(lexer).__module__); "
            "print(type(get_lexer_for_filename('x.dmgd')).__name__); "
            "print(highlight('30..45: ot(K=10)', lexer, HtmlFormatter()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{ROOT}"}, timeout=1800)
    lines = out.stdout.splitlines()
    assert lines[:2] == ["dmgd.highlight", "DmgdLexer"]
    assert '<span class="nf">ot</span>' in out.stdout and '<span class="na">K</span>' in out.stdout


# --- the TextMate grammar --------------------------------------------------------------------


@pytest.fixture(scope="module")
def grammar() -> dict:
    return json.loads(GRAMMAR.read_text(encoding="utf-8"))


def test_the_vscode_extension_declares_the_language_and_its_grammar(grammar):
    package = json.loads((VSCODE / "package.json").read_text(encoding="utf-8"))
    (language,) = package["contributes"]["languages"]
    (declared,) = package["contributes"]["grammars"]
    assert language["id"] == declared["language"] == "dmgd" and language["extensions"] == [".dmgd"]
    assert (VSCODE / declared["path"]).resolve() == GRAMMAR and declared["scopeName"] == grammar["scopeName"]
    configuration = json.loads((VSCODE / language["configuration"]).read_text(encoding="utf-8"))
    assert configuration["comments"]["lineComment"] == "#"


def _rules(node):
    """Every rule of the grammar, nested ones included."""
    yield node
    for child in node.get("patterns", []):
        yield from _rules(child)


def test_the_grammar_is_well_formed(grammar):
    rules = [r for top in [{"patterns": grammar["patterns"]}, *grammar["repository"].values()] for r in _rules(top)]
    for rule in rules:
        for key in ("match", "begin", "end"):
            if key in rule:
                re.compile(rule[key])  # (TextMate's Oniguruma reads these too: no Python-only syntax here)
        if "include" in rule:
            assert rule["include"].removeprefix("#") in grammar["repository"], rule["include"]
    names = {rule.get("name") for rule in rules} | {c["name"] for rule in rules
                                                    for key in ("captures", "beginCaptures", "endCaptures")
                                                    for c in rule.get(key, {}).values()}
    expected = {"comment.line.number-sign", "string.quoted.double", "constant.character.escape",
                "keyword.control.import", "keyword.other.drop", "variable.other.setting", "variable.parameter",
                "entity.name.function.term", "variable.language.clock", "constant.numeric",
                "constant.numeric.percent", "constant.language.boolean", "support.function.ramp",
                "keyword.operator.range", "keyword.operator.comparison", "keyword.operator.wildcard",
                "punctuation.section.braces.begin", "meta.sweep"}
    assert {f"{scope}.dmgd" for scope in expected} <= names
    assert all(name.endswith(".dmgd") for name in names - {None})


class TextMate:
    """A small reader of TextMate grammars (first match wins, an end pattern before the rules
    at the same place, begin/end regions across lines): enough to tell which scope each
    character of a recipe gets."""

    def __init__(self, grammar: dict):
        self.grammar = grammar
        self.repository = grammar["repository"]

    def _expand(self, patterns: list[dict]) -> list[dict]:
        out = []
        for rule in patterns:
            if "include" in rule:
                rule = self.repository[rule["include"][1:]]
            out += self._expand(rule["patterns"]) if "match" not in rule and "begin" not in rule else [rule]
        return out

    def scopes(self, text: str) -> list[list[str]]:
        """For each character of `text`, the scopes it lies in, outermost first."""
        stack: list[tuple[dict, re.Pattern]] = []
        out: list[list[str]] = []
        for line in text.splitlines(keepends=True):
            pos = 0
            while pos < len(line):
                outer = [r.get("name") for r, _ in stack if r.get("name")]
                found = self._next(line, pos, stack)
                if found is None:
                    out += [outer] * (len(line) - pos)
                    break
                match, rule, kind = found
                out += [outer] * (match.start() - pos)
                out += self._captured(match, rule, kind, outer)
                if kind == "end":
                    stack.pop()
                elif kind == "begin":
                    stack.append((rule, re.compile(rule["end"])))
                pos = match.end()
        return out

    def _next(self, line: str, pos: int, stack):
        candidates = []
        if stack:
            candidates.append((stack[-1][1].search(line, pos), stack[-1][0], "end"))
        for rule in self._expand(stack[-1][0].get("patterns", []) if stack else self.grammar["patterns"]):
            key = "match" if "match" in rule else "begin"
            candidates.append((re.compile(rule[key]).search(line, pos), rule, key))
        found = [c for c in candidates if c[0] is not None]
        return min(found, key=lambda c: c[0].start()) if found else None  # min keeps the first of equals

    @staticmethod
    def _captured(match, rule, kind, outer):
        own = outer + [rule["name"]] if rule.get("name") and kind != "end" else list(outer)
        if kind == "end":
            own = outer
        scopes = [list(own) for _ in range(match.end() - match.start())]
        captures = rule.get({"match": "captures", "begin": "beginCaptures", "end": "endCaptures"}[kind], {})
        for group, capture in captures.items():
            start, end = match.span(int(group))
            for i in range(max(start, 0), max(end, 0)):
                scopes[i - match.start()].append(capture["name"])
        return scopes


@pytest.mark.parametrize("name", sorted(sources()))
def test_the_textmate_grammar_gives_every_character_a_scope(grammar, name):
    text = sources()[name]
    scopes = TextMate(grammar).scopes(text)
    assert len(scopes) == len(text)
    bare = sorted({ch for ch, s in zip(text, scopes) if not s and not ch.isspace()})
    assert bare == [], f"characters with no scope: {bare}"


def test_the_textmate_grammar_colours_names_by_where_they_stand(grammar):
    scopes = TextMate(grammar).scopes(COMING)

    def scope_of(word: str, nth: int = 0) -> str:
        bounded = rf"(?<![\w.]){re.escape(word)}(?!\w)" if word[0].isalnum() else re.escape(word)
        at = [m.start() for m in re.finditer(bounded, COMING)][nth]
        return scopes[at][-1].removesuffix(".dmgd")

    assert scope_of("use") == "keyword.control.import" and scope_of("drop") == "keyword.other.drop"
    assert scope_of("ot") == "entity.name.function.term" and scope_of("ot", 1) == "entity.name.function.term"
    assert scope_of("cfg") == "variable.other.setting" and scope_of("rho") == "variable.parameter"
    assert scope_of("sigma") == scope_of("t") == "variable.language.clock"
    assert scope_of("cos") == "support.function.ramp" and scope_of("true") == "constant.language.boolean"
    assert scope_of("full") == "constant.other.name" and scope_of("90%") == "constant.numeric.percent"
    assert scope_of("{") == "punctuation.section.braces.begin" and scope_of("..") == "keyword.operator.range"
    assert scope_of("# the reference schedule") == "comment.line.number-sign"
    assert scope_of('\\"') == "constant.character.escape" and scope_of("units") == "variable.parameter"
