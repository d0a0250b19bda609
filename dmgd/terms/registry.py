"""The term registry: the one place where guidance terms are declared.

A term declares its kind, its typed parameters (default, range, one line of doc) and the
function the sampler calls to execute it. The parser knows no term names; the checker
validates calls against these declarations; the compiler fills in defaults and evaluates
ramps; the sampler looks the implementation up here. Adding a term is one new module in
`dmgd/terms/` and one entry in `TERM_MODULES`.

Implementations import torch inside their bodies, so that importing the registry (as
`dmgd check` does) stays cheap.
"""

from __future__ import annotations

import enum
import importlib
from typing import Any, Literal, Protocol

from attrs import field, frozen

ParamType = Literal["float", "int", "bool", "choice", "str"]


class Kind(enum.Enum):
    CONDITIONING = "conditioning"  # decides what the denoiser is conditioned on
    ENERGY = "energy"  # adds -rho_t * sigma_t * grad E to the step's posterior mean


@frozen
class RampDefault:
    """A default that ramps over the rule's window, e.g. softlabel's lam 0..1."""

    start: float
    end: float
    shape: Literal["linear", "cos", "exp"] = "linear"


@frozen
class FromSetting:
    """A default taken from a recipe setting, e.g. refine's cfg from the recipe's `cfg`."""

    setting: str


@frozen
class ParamSpec:
    name: str
    type: ParamType
    default: Any  # a plain value, a RampDefault or a FromSetting
    doc: str
    low: float | None = None  # range bounds for numbers; None = unbounded
    high: float | None = None
    low_open: bool = False  # True: the bound itself is excluded (eps > 0)
    high_open: bool = False
    choices: tuple[str, ...] = ()
    rampable: bool = True  # numbers only: may the value ramp over the window?

    def range_text(self) -> str:
        """The allowed values in words, for diagnostics and `dmgd terms`."""
        if self.type == "choice":
            return " | ".join(self.choices)
        if self.type in ("bool", "str"):
            return self.type
        lo = "" if self.low is None else f"{self.low:g} {'<' if self.low_open else '<='} "
        hi = "" if self.high is None else f" {'<' if self.high_open else '<='} {self.high:g}"
        return f"{lo}{self.name}{hi}" if (lo or hi) else "any"

    def admits(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return True


class ConditioningImpl(Protocol):
    """How the sampler executes a conditioning term (tensors are torch tensors).

    DiT keeps one class-label table per block; the sampler calls `embed` once per block's
    table, with the same labels and noise, and substitutes the result for the step.
    """

    def embed(self, table: Any, labels: Any, others: Any, noise: Any, values: dict[str, Any]) -> Any:
        """Rows for the conditional branch. table: [C+1, D] (row C is the null label);
        labels, others: [B] long (others: a class != label, drawn once per sample);
        noise: [B, D] ~ U[0,1), fresh each step; returns [B, D]."""
        ...

    def guidance_scale(self, values: dict[str, Any], recipe_cfg: float) -> float:
        """The CFG scale 1 + omega at this step (1.0: conditional branch only)."""
        ...

    def replaces_null(self, values: dict[str, Any]) -> bool:
        """Whether the null row of the CFG batch gets `embed`'s rows too (reference quirk)."""
        ...


class EnergyImpl(Protocol):
    """How the sampler executes an energy term."""

    def target_k(self, values: dict[str, Any], ipc: int) -> int:
        """How many k-means support points per class this term's target needs."""
        ...

    def energy(self, x0: Any, memory: Any, target: Any, values: dict[str, Any]) -> Any:
        """x0: [B, F] the current samples' predicted clean latents (flattened, requires grad);
        memory: [B, M, F] each sample's class's frozen finished samples (M may be 0);
        target: per-sample target (points [B, K, F], masses [B, K], and for mode guidance
        each sample's own mode [B, F]); returns the energy per sample, [B]. The sampler
        differentiates it and applies -rho_t * sigma_t * grad."""
        ...


@frozen
class TermSpec:
    name: str
    kind: Kind
    params: tuple[ParamSpec, ...]
    doc: str
    # What the sampler runs: a ConditioningImpl or an EnergyImpl (below), by kind.
    impl: Any = field(default=None, eq=False, repr=False)

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)


# The modules that declare terms. Importing one registers its terms.
TERM_MODULES = (
    "dmgd.terms.conditioning",
    "dmgd.terms.distribution",
    "dmgd.terms.modes",
)

_REGISTRY: dict[str, TermSpec] = {}
_loaded = False


def register(spec: TermSpec) -> TermSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"term {spec.name!r} is declared twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load() -> dict[str, TermSpec]:
    global _loaded
    if not _loaded:
        for module in TERM_MODULES:
            importlib.import_module(module)
        _loaded = True
    return _REGISTRY


def get_term(name: str) -> TermSpec | None:
    return _load().get(name)


def all_terms() -> tuple[TermSpec, ...]:
    return tuple(_load().values())
