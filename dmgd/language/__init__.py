"""The `.dmgd` recipe language: parse, check, format, compile.

Importing this package is cheap (no torch, diffusers, numpy or lark; the generated parser
is imported on the first parse), so that `dmgd check` and `dmgd fmt` start fast.
"""

from __future__ import annotations

from dmgd.language.diagnostics import Diagnostic, Note, RecipeError, did_you_mean, render_json, render_text
from dmgd.language.formatter import canonical_hash, canonical_text, format_recipe
from dmgd.language.parser import parse_recipe

__all__ = [
    "parse_recipe",
    "format_recipe",
    "canonical_text",
    "canonical_hash",
    "RecipeError",
    "Diagnostic",
    "Note",
    "render_text",
    "render_json",
    "did_you_mean",
]

# --- checking and compiling -----------------------------------------------------------
# The checker and the compiler (dmgd/language/checker.py, compiler.py) export their
# public functions here, below this line.

from dmgd.language.checker import check_recipe  # noqa: E402
from dmgd.language.compiler import compile_schedule, has_sigma_window  # noqa: E402
from dmgd.language.overrides import parse_overrides, validate_overrides  # noqa: E402

__all__ += ["check_recipe", "compile_schedule", "has_sigma_window", "parse_overrides", "validate_overrides"]
