"""dmgd: train-free dataset distillation with diffusion models, driven by .dmgd recipes.

The public API is loaded lazily, so that `import dmgd` stays cheap (no torch):

    import dmgd
    schedule = dmgd.compile("recipes/dmgd.dmgd", steps=25)

`dmgd.parse`, `dmgd.check`, `dmgd.compile` and `dmgd.format` live in `dmgd.api`;
`dmgd.run` (a recipe in, a distilled image set out) in `dmgd.runner`.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_LAZY = {
    "parse": "dmgd.api",
    "check": "dmgd.api",
    "compile": "dmgd.api",
    "format": "dmgd.api",
    "RecipeError": "dmgd.language.diagnostics",
    "Diagnostic": "dmgd.language.diagnostics",
    "Schedule": "dmgd.language.schedule",
    "run": "dmgd.runner",
    "RunResult": "dmgd.runner",
    "evaluate": "dmgd.evaluation.protocol",
    "EvalConfig": "dmgd.evaluation.protocol",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dmgd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
