"""Stage 1: what the caller asked for, checked and resolved once, before anything is loaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from attrs import field, frozen

from dmgd.errors import DmgdError, option
from dmgd.language.ast import Recipe
from dmgd.language.settings import Settings

Mode = Literal["new", "resume", "overwrite"]


class RunError(DmgdError):
    """A run that cannot start or go on; the message says what to do."""


@frozen
class RunRequest:
    """A run's inputs, resolved: the parsed recipe, the settings it resolves to (with the
    caller's overrides), the number of real steps, how OUT is opened, and the block size
    (None: `dmgd.distributed.default_block_size` once the number of classes is known).
    lock: hold OUT's lock for the run (`dmgd.data.lock`); False only where it cannot lock."""

    recipe: Recipe = field(repr=False)
    out: Path
    settings: Settings
    overrides: Mapping[str, Any]
    num_steps: int
    steps: int | None
    sampler: str | None
    mode: Mode
    batch_size: int | None
    cache_dir: Path | None
    recipe_hash: str
    lock: bool = True

    def known_identity(self) -> dict[str, Any]:
        """The part of the run's identity known before loading (what `--resume` must match)."""
        known = {"recipe_hash": self.recipe_hash, "settings": self.settings.to_dict(), "num_steps": self.num_steps}
        if self.batch_size:
            known["block_size"] = self.batch_size
        return known


def make_request(recipe: Any, out: str | os.PathLike[str], *, steps: int | None, sampler: str | None,
                 resume: bool, overwrite: bool, batch_size: int | None, cache_dir: str | os.PathLike[str] | None,
                 overrides: Mapping[str, Any] | Sequence[str] | str | None,
                 settings: Mapping[str, Any], lock: bool = True) -> RunRequest:
    """Check and resolve a run's arguments (RunError, RecipeError); loads nothing heavy."""
    from dmgd.api import parse
    from dmgd.language.compiler import checked_settings
    from dmgd.language.formatter import canonical_hash
    from dmgd.language.overrides import as_overrides

    if resume and overwrite:
        raise RunError(f"choose one of {option('resume')} and {option('overwrite')}")
    if batch_size is not None and int(batch_size) < 1:
        raise RunError(f"{option('batch')} must be at least 1, not {batch_size}")
    parsed = parse(recipe)
    given = {**as_overrides(overrides), **settings}
    resolved, num_steps = checked_settings(parsed, steps=steps, sampler=sampler, overrides=given)
    return RunRequest(
        recipe=parsed, out=Path(out), settings=resolved, overrides=given, num_steps=num_steps, steps=steps,
        sampler=sampler, mode="resume" if resume else "overwrite" if overwrite else "new",
        batch_size=int(batch_size) if batch_size else None,
        cache_dir=Path(cache_dir) if cache_dir is not None else None, recipe_hash=canonical_hash(parsed),
        lock=_flag(lock, "lock"),
    )


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise RunError(f"{name} must be True or False, not {value!r}")
    return value


def cpu_threads() -> int:
    """Intra-op threads a CPU run samples with: 1, or $DMGD_THREADS.

    One thread a process, because the last bits of a small matrix product depend on how
    many threads share it, and bytes written must not depend on the machine's core count
    or on the number of ranks. Use more cores with more ranks (torchrun). A run with
    DMGD_THREADS > 1 is recorded as such in its manifest; its images equal a 1-thread run's
    up to floating-point rounding, not byte for byte."""
    raw = os.environ.get("DMGD_THREADS", "").strip()
    if not raw:
        return 1
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise RunError(f"DMGD_THREADS={raw!r} is not a positive whole number of threads")
    return threads
