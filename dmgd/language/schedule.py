"""The compiled schedule: the contract between the language and the sampler."""

from __future__ import annotations

from typing import Any, Iterator

from attrs import field, frozen

from dmgd.language.diagnostics import Diagnostic
from dmgd.language.settings import Settings


@frozen
class TermUse:
    """One term acting at one step, with every parameter's value at that step."""

    term: str
    values: tuple[tuple[str, Any], ...]  # (parameter, value) for every parameter, in declaration order
    # Index of the recipe rule it comes from; None for the default conditioning. Provenance, not
    # meaning: equality ignores it, so recipes that say the same thing compile equal.
    rule: int | None = field(eq=False)
    progress: float  # 0.0 at the window's first (noisiest) step, 1.0 at its last

    def __getitem__(self, name: str) -> Any:
        for key, value in self.values:
            if key == name:
                return value
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)


@frozen
class Step:
    """One real sampling step: where it is (`index`, `i`, `tau`), its noise level, and the
    terms acting at it (exactly one conditioning term, any number of energies)."""

    index: int  # position in sampling order: 0 is the first (noisiest) step
    i: int  # the step on the run's own clock, counted as the paper does: N-1 first, 0 last
    tau: float  # recipe time: i * steps / N
    timestep: float | None  # the scheduler's timestep (None when noise levels were not resolved)
    sigma: float | None  # sqrt((1 - abar) / abar) at that timestep
    conditioning: TermUse
    energies: tuple[TermUse, ...]


@frozen
class Schedule:
    """What the sampler does at every real sampling step, in sampling order.

    Ramps are evaluated and defaults filled in: the sampler never re-reads the recipe.
    `to_dict()` is the JSON form in manifests and `dmgd explain --format json`.
    """

    steps: tuple[Step, ...]
    settings: Settings  # resolved settings; settings.steps is the recipe clock
    num_steps: int  # N, the real sampling steps
    recipe_hash: str  # sha256 of the recipe's canonical form
    # Warning diagnostics of the recipe for this run (e.g. a window empty at this N); not
    # part of the schedule's meaning, so equality ignores them. Callers print them.
    warnings: tuple[Diagnostic, ...] = field(default=(), eq=False)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for manifests and `--format json`."""
        return {
            "recipe_hash": self.recipe_hash,
            "num_steps": self.num_steps,
            "settings": self.settings.to_dict(),
            "steps": [
                {
                    "index": s.index, "i": s.i, "tau": s.tau, "timestep": s.timestep, "sigma": s.sigma,
                    "conditioning": {"term": s.conditioning.term, **s.conditioning.as_dict()},
                    "energies": [{"term": e.term, **e.as_dict()} for e in s.energies],
                }
                for s in self.steps
            ],
        }


@frozen
class NoiseLevels:
    """The scheduler's timestep and sigma for each real step, in sampling order.

    Made by `dmgd.sampling.schedulers.noise_levels` (which imports diffusers); the
    compiler only reads it, so the language itself never imports torch.
    """

    timesteps: tuple[float, ...]
    sigmas: tuple[float, ...]
