"""The recipe grammar (`dmgd.lark`): where it lies, its text, and a lark parser built from it.

At run time recipes are parsed by the generated module `_standalone_parser.py` (see
`generate.py`); this file, which imports lark, serves only the generator and the tests.
The grammar lies at `<repo>/grammar/dmgd.lark` in a checkout, `dmgd/grammar/` in a wheel.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from lark import Lark

GRAMMAR_NAME = "dmgd.lark"

# The options the parser is generated with. `propagate_positions` is off: the parser's
# transformer builds every span itself from the tokens' positions.
PARSER_OPTIONS: dict[str, Any] = {"parser": "lalr", "lexer": "contextual", "maybe_placeholders": False}


def grammar_path() -> Path:
    """The grammar file: inside the installed package if it is there, else in the repo."""
    package_dir = Path(__file__).resolve().parent.parent  # .../dmgd
    packaged = package_dir / "grammar" / GRAMMAR_NAME
    if packaged.is_file():
        return packaged
    repo = package_dir.parent / "grammar" / GRAMMAR_NAME
    if repo.is_file():
        return repo
    raise FileNotFoundError(f"the recipe grammar is missing: neither {packaged} nor {repo} exists")


@cache
def grammar_text() -> str:
    return grammar_path().read_text(encoding="utf-8")


def build_lark(transformer: Any = None, strict: bool = False, **extra: Any):
    """A lark parser built from the grammar file (needs lark; a few hundred milliseconds).

    `strict=True` makes lark reject any shift/reduce conflict and any terminal collision
    (it needs the `interegular` package); the tests build it that way.
    """
    return Lark(grammar_text(), transformer=transformer, strict=strict, **PARSER_OPTIONS, **extra)
