"""dmgd: train-free dataset distillation with diffusion models, driven by .dmgd recipes.

A recipe is a guidance schedule in a small language; dmgd parses, checks and compiles it,
runs it on a frozen class-conditional DiT, and evaluates the distilled image set:

    import dmgd

    problems = dmgd.check("recipes/digits.dmgd")          # every Diagnostic, never raises
    schedule = dmgd.compile("recipes/digits.dmgd", steps=25)  # the per-step Schedule
    result = dmgd.run("recipes/digits.dmgd", "runs/api", ipc=10, seed=0)
    print(result.ot_distance, result.timings)             # a RunResult
    scores = dmgd.evaluate("runs/api")                     # an EvalResult; writes eval.json

    dmgd.run(..., resume=True)      # finish an interrupted run in the same folder
    dmgd.run(..., overwrite=True)   # replace the run in that folder

`dmgd.parse` and `dmgd.format` read and lay out recipes; bad recipes raise `RecipeError`
(its `.diagnostics`), bad input elsewhere a `DmgdError` whose message says what to do.
Also importable from here: `Schedule`, `Diagnostic`, `RunResult`, `EvalConfig`.
The command line (`dmgd --help`) is a thin layer over these functions; the docs/ folder
has the language reference, the method, running and evaluation.

Importing dmgd is cheap: each name is loaded when first used (torch only by `run` and
`evaluate`).
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
    "run": "dmgd.pipeline",
    "evaluate": "dmgd.evaluation.protocol",
    "RecipeError": "dmgd.language.diagnostics",
    "DmgdError": "dmgd.errors",
    "Diagnostic": "dmgd.language.diagnostics",
    "Schedule": "dmgd.language.schedule",
    "RunResult": "dmgd.pipeline",
    "EvalConfig": "dmgd.evaluation.protocol",
}

# What `help(dmgd)` documents: the functions (the errors and data types are reachable
# from here and documented on their own: help(dmgd.RunResult)).
__all__ = ["parse", "check", "compile", "format", "run", "evaluate"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dmgd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
