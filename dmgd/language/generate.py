"""Regenerates `dmgd/language/_standalone_parser.py`, the recipe parser, from the grammar.

    python -m dmgd.language.generate           # rewrite the module if it is stale
    python -m dmgd.language.generate --check   # only say whether it is (exit 1 if stale)

The module is lark's standalone LALR(1) parser (`python -m lark.tools.standalone`), made
at development time and committed, so that parsing needs no grammar analysis at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

from dmgd.language.grammar import grammar_path, grammar_text

MODULE = Path(__file__).resolve().parent / "_standalone_parser.py"

# The options of `grammar.PARSER_OPTIONS`, as the standalone tool spells them
# (`maybe_placeholders` is off unless asked for).
STANDALONE_ARGS = ("--lexer", "contextual", "--start", "start")

_HASH_PREFIX = "# grammar sha256: "


def grammar_hash() -> str:
    return hashlib.sha256(grammar_text().encode("utf-8")).hexdigest()


def header() -> str:
    return (
        "# Generated from grammar/dmgd.lark by `python -m dmgd.language.generate`: do not edit.\n"
        "# After changing the grammar (or upgrading lark), regenerate it with that command;\n"
        "# tests/test_parser.py checks that this file is current.\n"
        f"# generator: python -m lark.tools.standalone {' '.join(STANDALONE_ARGS)} grammar/dmgd.lark\n"
        f"{_HASH_PREFIX}{grammar_hash()}\n"
    )


def generate() -> str:
    """The module's text, freshly generated (needs lark)."""
    done = subprocess.run([sys.executable, "-m", "lark.tools.standalone", *STANDALONE_ARGS, str(grammar_path())],
                          capture_output=True, text=True, check=True)
    return header() + done.stdout


def recorded_hash(text: str) -> str | None:
    """The grammar hash a generated module's header names."""
    for line in text.splitlines()[:10]:
        if line.startswith(_HASH_PREFIX):
            return line[len(_HASH_PREFIX):].strip()
    return None


def _without_table(text: str) -> list[str]:
    """The lines of a generated module, less the parse table: lark numbers the LALR
    states differently from one run to the next, so only the rest compares exactly."""
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line == "DATA = (":
            lines[i + 1] = "<the parse table>"
    return lines


def is_current(committed: str, fresh: str) -> bool:
    """Whether `committed` is what generating again gives (up to the states' numbering)."""
    return _without_table(committed) == _without_table(fresh)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dmgd.language.generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the module is stale")
    args = parser.parse_args(argv)
    fresh = generate()
    committed = MODULE.read_text(encoding="utf-8") if MODULE.is_file() else ""
    if is_current(committed, fresh):
        print(f"{MODULE.name} is current")
        return 0
    if args.check:
        print(f"{MODULE.name} is stale: run `python -m dmgd.language.generate`", file=sys.stderr)
        return 1
    MODULE.write_text(fresh, encoding="utf-8")
    print(f"wrote {MODULE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
