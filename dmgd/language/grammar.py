"""Loading the recipe grammar (`dmgd.lark`) and building its LALR parser, once.

Where the grammar lies:
- in a wheel, hatch's force-include puts `grammar/dmgd.lark` at `dmgd/grammar/dmgd.lark`,
  beside this package;
- in a source checkout or an editable install it stays at `<repo>/grammar/dmgd.lark`.

Building an LALR parser means analysing the grammar (and, when the optional
`interegular` package is installed, lark also checks the terminals for collisions):
a few hundred milliseconds, too much for `dmgd check`'s start-up. So the analysed
parser is cached with lark's own `save`/`load` in the user's cache directory
(`$DMGD_CACHE_DIR`, else `$XDG_CACHE_HOME/dmgd`, else `~/.cache/dmgd`), under a name
that hashes the grammar, the options and the lark and Python versions; it is written
atomically and ignored (rebuilt) when it cannot be read. Within a process the parser is
built at most once.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
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

    key = "\n".join(
        [grammar_text(), repr(sorted(PARSER_OPTIONS.items())), lark.__version__, repr(sys.version_info[:2])]
    )
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
    return cache_dir() / f"grammar-{digest}.lark-cache"


def cached_lark(transformer: Any = None):
    """The parser, loaded from the on-disk cache when possible, else built (and cached)."""
    from lark import Lark

    path = None
    try:
        path = _cache_file()
        with open(path, "rb") as f:
            return Lark.load(f, transformer=transformer)
    except Exception:  # missing, unreadable, stale or corrupt: build it anew
        pass
    parser = build_lark(transformer=transformer)
    if path is not None:
        _save_atomically(parser, path)
    return parser


# Options given again at load time, never pickled.
_NOT_SAVED = ("transformer", "postlex", "lexer_callbacks", "tree_class", "_plugins")


def _save_atomically(parser: Any, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".grammar-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                parser.save(f, exclude_options=_NOT_SAVED)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except Exception:  # a read-only home, a full disk: run without the cache
        pass


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
