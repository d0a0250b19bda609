"""Loading the recipe grammar (`dmgd.lark`) and building its LALR parser, once.

Where the grammar lies:
- in a wheel, hatch's force-include puts `grammar/dmgd.lark` at `dmgd/grammar/dmgd.lark`,
  beside this package;
- in a source checkout or an editable install it stays at `<repo>/grammar/dmgd.lark`.

Building an LALR parser means analysing the grammar (and, when the optional
`interegular` package is installed, lark also checks the terminals for collisions):
a few hundred milliseconds, too much for `dmgd check`'s start-up. So the analysed
parser is cached with lark's own `cache=` option in the user's cache directory
(`$DMGD_CACHE_DIR`, else `$XDG_CACHE_HOME/dmgd`, else `~/.cache/dmgd`): lark stores a
hash of the grammar and the options in the file and rebuilds it when it is stale or
cannot be read. Within a process the parser is built (or loaded) at most once.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

GRAMMAR_NAME = "dmgd.lark"

_LOCK = threading.Lock()
_GRAMMAR_TEXT: str | None = None


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


def grammar_text() -> str:
    global _GRAMMAR_TEXT
    if _GRAMMAR_TEXT is None:
        _GRAMMAR_TEXT = grammar_path().read_text(encoding="utf-8")
    return _GRAMMAR_TEXT


# The options every build uses. `propagate_positions` is off: the parser's transformer
# builds every span itself from the tokens' positions (positions are only propagated to
# lark Trees, which the transformer never returns).
PARSER_OPTIONS: dict[str, Any] = {"parser": "lalr", "lexer": "contextual", "maybe_placeholders": False}


def build_lark(transformer: Any = None, strict: bool = False, **extra: Any):
    """A fresh lark parser for the grammar (slow; `cached_lark` is what callers want).

    `strict=True` makes lark reject any shift/reduce conflict and any terminal collision
    (it needs the `interegular` package); the tests build it that way.
    """
    from lark import Lark

    return Lark(grammar_text(), transformer=transformer, strict=strict, **PARSER_OPTIONS, **extra)


def cache_dir() -> Path:
    explicit = os.environ.get("DMGD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "dmgd"


def _cache_file() -> Path:
    import lark

    # lark checks the grammar and the options itself (a stale file is rebuilt); the name
    # only keeps different lark and Python versions apart.
    return cache_dir() / f"grammar-lark{lark.__version__}-py{sys.version_info[0]}.{sys.version_info[1]}.lark-cache"


def cached_lark(transformer: Any = None):
    """The parser, loaded from the on-disk cache when it is there and current, else built
    (and cached). lark's own `cache=` option does the work: it keys the file's content by
    a hash of the grammar and the options, and rebuilds (and rewrites) the file when it
    is stale, unreadable or corrupt; a cache that cannot be written is skipped."""
    from lark import Lark

    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writable = os.access(path.parent, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        return build_lark(transformer=transformer)
    return Lark(grammar_text(), transformer=transformer, cache=str(path), **PARSER_OPTIONS)


_PARSERS: dict[str, Any] = {}



def shared_lark(key: str, make_transformer: Any):
    """One parser per process and per `key`, built (or loaded) on first use."""
    parser = _PARSERS.get(key)
    if parser is None:
        with _LOCK:
            parser = _PARSERS.get(key)
            if parser is None:
                parser = cached_lark(make_transformer())
                _PARSERS[key] = parser
    return parser
