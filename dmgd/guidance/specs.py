"""The declarations of guidance terms: `TermSpec`, its typed `ParamSpec`s and their defaults."""

from __future__ import annotations

import enum
from typing import Any, Literal

from attrs import field, frozen

from dmgd.guidance.contracts import ConditioningTerm, EnergyTerm

ParamType = Literal["float", "int", "bool", "choice", "str"]


class Kind(enum.Enum):
    """What a term does at a step."""

    CONDITIONING = "conditioning"  # decides what the denoiser is conditioned on
    ENERGY = "energy"  # adds -strength * sigma_t * grad E to the step's new latent


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


def _bound(value: float, integer: bool) -> str:
    return str(int(value)) if integer else f"{value:g}"


@frozen
class ParamSpec:
    """One typed parameter of a term (or one recipe setting).

    `default` is a plain value, a `RampDefault` or a `FromSetting`; `low`/`high` bound a
    number (None: unbounded), `low_open`/`high_open` exclude the bound itself; `choices`
    lists a choice's words; `rampable`: may a number ramp over its rule's window; `form`:
    for a str, `form(text) -> problem or None` (e.g. the `reference` setting's `CxHxW`).
    """

    name: str
    type: ParamType
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    rampable: bool = True
    # For a str: a function of the string giving its problem in words, or None when it is fine.
    form: Any = field(default=None, eq=False, repr=False)
    # False: `dmgd explain` leaves the parameter out at its default (an opt-in such as null=keep).
    shown_at_default: bool = True

    def range_text(self) -> str:
        """The allowed values in words, for diagnostics and `dmgd terms` (`0 < eps`, `1 <= K`)."""
        if self.type == "choice":
            return " | ".join(self.choices)
        if self.type in ("bool", "str"):
            return self.type
        integer = self.type == "int"
        lo = "" if self.low is None else f"{_bound(self.low, integer)} {'<' if self.low_open else '<='} "
        hi = "" if self.high is None else f" {'<' if self.high_open else '<='} {_bound(self.high, integer)}"
        return f"{lo}{self.name}{hi}" if (lo or hi) else "any"

    def admits(self, value: float) -> bool:
        """Whether a number lies in the range."""
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return True


@frozen
class TermSpec:
    """A guidance term as the language and the sampler see it.

    `name` is what a recipe writes; `kind` says which contract `impl` meets
    (`ConditioningTerm` or `EnergyTerm`, checked when the term registers); `params` are
    its parameters in declaration order (the order of `TermUse.values`); `doc` is one
    line for `dmgd terms`. `default`: this conditioning term holds, with its parameters'
    defaults, at every step where no rule's conditioning term does (exactly one term).
    `retired`: (old parameter name, help) for parameters the term used to take.
    """

    name: str
    kind: Kind
    params: tuple[ParamSpec, ...]
    doc: str
    impl: ConditioningTerm | EnergyTerm | None = field(default=None, eq=False, repr=False)
    default: bool = False
    # Parameters the term no longer takes: (old name, the help the checker gives for it).
    retired: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> ParamSpec | None:
        """The parameter called `name`, or None."""
        return next((p for p in self.params if p.name == name), None)


# The optional normalisation of an energy's strength (`dmgd.guidance.Units`): an energy
# term that declares this parameter returns it from its `units(values)`.
UNITS_PARAM = ParamSpec(
    "units", "choice", "grad",
    "grad: the update is -rho * sigma_t * grad E; rms: that update rescaled, per sample, to root-mean-square "
    "rho * sigma_t over the latent's values (rho in posterior stds, whatever the latent's size or E's scale)",
    choices=("grad", "rms"),
    shown_at_default=False,
)
