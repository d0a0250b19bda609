"""The contracts a term's implementation meets, by kind (tensors are torch tensors).

`values` is always the term's parameter values at the step (`TermUse.as_dict()`: every
declared parameter, defaults filled in, ramps evaluated).
"""

from __future__ import annotations

import enum
import inspect
from typing import Any, Mapping, Protocol, runtime_checkable


class NullRow(enum.Enum):
    """What the null (unconditional) half of the CFG batch is conditioned on."""

    KEEP = "keep"  # the null label's own row, untouched
    SAME = "same"  # a copy of the term's conditional row
    BLEND = "blend"  # the term's own null row, from `embed_pair` (the reference code's)


class GradientAt(enum.Enum):
    """Where an energy's gradient is taken."""

    Z_T = "z_t"  # through Tweedie's x0 = (z_t - sqrt(1-abar) eps) / sqrt(abar), to z_t
    X0 = "x0"  # on x0 as it stands: the update is -strength * sigma_t * grad_x0 E (MGD3's mode pull)


class Units(enum.Enum):
    """What an energy's strength rho measures (an energy's optional `units(values)`)."""

    GRAD = "grad"  # the update is -rho * sigma_t * grad E
    RMS = "rms"  # that update rescaled, per sample, to root-mean-square rho * sigma_t


def units_of(term: Any, values: Mapping[str, Any]) -> Units:
    """The units of an energy's strength: its `units(values)` if it has one, else GRAD."""
    units = getattr(term, "units", None)
    return Units.GRAD if units is None else Units(units(values))


@runtime_checkable
class ConditioningTerm(Protocol):
    """Decides what the denoiser is conditioned on at a step.

    DiT keeps one class-label table per block; the step calls `embed` once per block's
    table, with the same labels and noise, and substitutes the result for that step.
    """

    def embed(self, table: Any, labels: Any, others: Any, noise: Any, values: Mapping[str, Any]) -> Any:
        """Rows for the conditional branch: table [C+1, D] (row C the null label); labels,
        others [B] long (others: a class != label, drawn once per sample); noise [B, D]
        ~ U[0,1), fresh each step. Returns [B, D]."""
        ...

    def guidance_scale(self, values: Mapping[str, Any], recipe_cfg: float) -> float:
        """The CFG scale 1 + omega at this step (1.0: one conditional pass, no CFG)."""
        ...

    def null_row(self, values: Mapping[str, Any]) -> NullRow:
        """What the null half of the CFG batch gets: the null label (KEEP), `embed`'s rows
        (SAME), or the null rows of `embed_pair` (BLEND). A term that answers BLEND also
        has `embed_pair(table, labels, others, noise, null_noise, values) -> (cond, null)`,
        each [B, D]: null_noise [B, D] ~ U[0,1) is a second draw, made only for BLEND."""
        ...


@runtime_checkable
class EnergyTerm(Protocol):
    """A per-sample energy E whose gradient the step subtracts: -strength * sigma_t * grad E."""

    def strength(self, values: Mapping[str, Any]) -> float:
        """rho at this step; 0 (or a final step, where sigma_t = 0) skips the term.

        Optional: `units(values) -> "grad" | "rms"` (see `Units`, `units_of`); without it,
        "grad". With "rms" the step rescales the term's update of each sample to root-mean-
        square rho * sigma_t over the sample's latent values."""
        ...

    def gradient_at(self, values: Mapping[str, Any]) -> GradientAt:
        """Where the gradient is taken: z_t through Tweedie, or x0 as it stands."""
        ...

    def full_backward(self, values: Mapping[str, Any]) -> bool:
        """True: the gradient also flows back through the denoiser's eps (grad=full);
        False: eps is held fixed (no backward pass through the model)."""
        ...

    def target_k(self, values: Mapping[str, Any], ipc: int) -> int:
        """How many k-means support points per class the term's target needs."""
        ...

    def energy(self, x0: Any, memory: Any, target: Any, values: Mapping[str, Any]) -> Any:
        """E per sample, [B]. x0 [B, F] the batch's predicted clean latents (flattened,
        requires grad); memory [B, M, F] each sample's class's other samples (frozen; M may
        be 0); target: the `dmgd.guidance.TargetBatch` of the batch (K = target_k)."""
        ...


def contract_problems(impl: Any, contract: type) -> list[str]:
    """What `impl` lacks to meet `contract`: each missing or wrongly shaped method, in words."""
    problems = []
    for name, declared in vars(contract).items():
        if name.startswith("_") or not callable(declared):
            continue
        params = list(inspect.signature(declared).parameters)[1:]  # without self
        shown = f"{name}({', '.join(params)})"
        member = getattr(impl, name, None)
        if not callable(member):
            problems.append(f"no method {shown}")
            continue
        try:
            inspect.signature(member).bind(*params)
        except TypeError:
            problems.append(f"{name} does not take ({', '.join(params)})")
        except ValueError:  # no signature to inspect (a builtin): trust it
            pass
    return problems
