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
    # The factor `push = "total"` applied to an energy's strength at this run (1.0 otherwise):
    # the step uses strength(values) * push.
    push: float = 1.0

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
    # With a `reference` shape: this step's sigma read on the reference, sigma / sigma_scale
    # (the noise level the recipe's windows were written at). None otherwise.
    reference_sigma: float | None = None


@frozen
class Placement:
    """Where one rule's window holds, read on the reference (recipe sampler at `steps` steps)."""

    rule: int  # index of the rule among the recipe's rules
    reference_steps: tuple[int, ...]  # the reference steps t (clock steps, N-1 first) it holds at
    sigma_lo: float | None  # the range's edges on the reference (None: unbounded); lo < sigma <= hi
    sigma_hi: float | None
    push: tuple[float, ...]  # the push = "total" factor of each of its energies, in rule order (1.0: none)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "reference_steps": list(self.reference_steps), "sigma_lo": self.sigma_lo,
                "sigma_hi": self.sigma_hi, "push": list(self.push)}


@frozen
class Transfer:
    """How a schedule was carried to this model and sampler (`reference`, `push`)."""

    reference: tuple[int, ...] | None  # the latent shape the windows were written for
    latent_shape: tuple[int, ...] | None  # the model's (None: taken to be the reference's)
    sigma_scale: float  # sqrt(D_model / D_reference): run sigmas = reference sigmas * sigma_scale
    push: str  # "step" or "total"
    reference_sampler: str  # the reference clock: this sampler at `steps` steps, default betas
    placements: tuple[Placement, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"reference": list(self.reference) if self.reference else None,
                "latent_shape": list(self.latent_shape) if self.latent_shape else None,
                "sigma_scale": self.sigma_scale, "push": self.push, "reference_sampler": self.reference_sampler,
                "placements": [p.to_dict() for p in self.placements]}


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
    # Set when the recipe has `reference` or `push = "total"` (None: placed on the recipe clock).
    transfer: Transfer | None = None

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for manifests and `--format json`."""
        out = {
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
        if self.transfer is not None:  # extra fields only: the ones above mean what they always did
            out["transfer"] = self.transfer.to_dict()
            for row, s in zip(out["steps"], self.steps):
                row["reference_sigma"] = s.reference_sigma
                for e_row, e in zip(row["energies"], s.energies):
                    e_row["push"] = e.push
        return out


@frozen
class NoiseLevels:
    """The scheduler's timestep and sigma for each real step, in sampling order.

    Made by `dmgd.sampling.schedulers.noise_levels` (which imports diffusers); the
    compiler only reads it, so the language itself never imports torch.
    """

    timesteps: tuple[float, ...]
    sigmas: tuple[float, ...]
    # The energies' sigma_t at each step (docs/method.md), for `push = "total"`; None: unknown.
    posterior_stds: tuple[float, ...] | None = None
