"""What `dmgd explain` prints besides a schedule: where each statement came from
(`--sources`), and the variants of a sweep. rich is imported when printing."""

from __future__ import annotations

import json
from typing import Any

from dmgd.language import ast
from dmgd.language.formatter import canonical_hash, canonical_text
from dmgd.language.sources import source_lines
from dmgd.language.sweep import sweep_points, variants

__all__ = ["sources_record", "variants_record", "print_sources", "print_variants"]


def sources_record(recipe: ast.Recipe) -> dict[str, Any]:
    """The JSON of `dmgd explain --sources`: each resolved statement and where it came from,
    and every file read."""
    return {
        "path": recipe.path,
        "hash": canonical_hash(recipe),
        "files": [recipe.path, *(origin.path for origin in recipe.sources)],
        "statements": [{"statement": line.text, "from": line.where, "note": line.note or None}
                       for line in source_lines(recipe)],
    }


def variants_record(recipe: ast.Recipe) -> dict[str, Any]:
    """The JSON of `dmgd explain` on a sweep: its swept places and every variant."""
    return {
        "path": recipe.path,
        "hash": canonical_hash(recipe),
        "swept": [{"key": p.key, "alternatives": list(p.texts)} for p in sweep_points(recipe)],
        "variants": [{"index": v.index, "label": v.label, "hash": v.hash, "choices": dict(v.choices),
                      "text": canonical_text(v.recipe)} for v in variants(recipe)],
    }


def print_sources(recipe: ast.Recipe, as_json: bool) -> None:
    record = sources_record(recipe)
    if as_json:
        print(json.dumps(record, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{recipe.path}  sha256:{record['hash'][:16]}\nresolved from {', '.join(record['files'])}",
                  caption="the resolved recipe, in order, then the used rules a `drop` changed")
    for name in ("statement", "from", "note"):
        table.add_column(name)
    for item in record["statements"]:
        table.add_row(escape(item["statement"]), escape(item["from"]), escape(item["note"] or ""))
    Console(highlight=False).print(table)


def print_variants(recipe: ast.Recipe, as_json: bool) -> None:
    record = variants_record(recipe)
    if as_json:
        print(json.dumps(record, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    keys = [p["key"] for p in record["swept"]]
    table = Table(title=f"{recipe.path}  sha256:{record['hash'][:16]}\na sweep of {len(record['variants'])} "
                        f"variants over {', '.join(keys)}",
                  caption="`dmgd explain FILE --variant N` shows one variant's schedule; `dmgd sweep` runs them all")
    for name in ("#", "label", *keys, "sha256"):
        table.add_column(escape(name), no_wrap=name in ("#", "sha256"))
    for v in record["variants"]:
        table.add_row(str(v["index"]), escape(v["label"]), *(escape(v["choices"][k]) for k in keys), v["hash"][:16])
    Console(highlight=False).print(table)
