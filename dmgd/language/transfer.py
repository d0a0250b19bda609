"""Carrying a schedule to another model or sampler: `reference` and `push = "total"`.

With `reference = "CxHxW"` a recipe's windows are placed by noise level: each window is
first read on the reference (the recipe's own sampler at its own clock `steps`, with the
default scheduler config), which gives the sigma range it spans, from the geometric
midpoint to the next noisier reference step to the geometric midpoint to the next less
noisy one (unbounded at the clock's ends); the range is scaled by
`sqrt(D_model / D_reference)` (D = the number of latent values: at a fixed noise level
the signal-to-noise ratio of a picture grows with D); the window holds at the run steps
whose sigma lies in the scaled range, `lo < sigma <= hi`. With `push = "total"` each
energy's strength is rescaled per run so that its total push `sum(rho_k * sigma_t,k)`
over the run steps it holds at equals that over the reference steps it holds at.
docs/language.md ("Carrying a schedule to another model or sampler") is the user's page.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from dmgd.language.settings import parse_shape

__all__ = ["latent_size", "normalise_shape", "reference_edges", "held_in_range", "sigma_scale"]


def normalise_shape(shape: Any) -> tuple[int, ...]:
    """A latent shape from "CxHxW" or a sequence of positive whole numbers."""
    if isinstance(shape, str):
        return parse_shape(shape)
    try:
        out = tuple(int(x) for x in shape)
    except (TypeError, ValueError):
        raise ValueError(f"latent_shape must be (C, H, W) or \"CxHxW\", got {shape!r}") from None
    if not out or any(x < 1 for x in out) or any(float(x) != float(y) for x, y in zip(out, shape)):
        raise ValueError(f"latent_shape must be positive whole numbers, got {shape!r}")
    return out


def latent_size(shape: Sequence[int]) -> int:
    """D, the number of latent values."""
    return math.prod(int(x) for x in shape)


def sigma_scale(reference: Sequence[int], model: Sequence[int] | None) -> float:
    """sqrt(D_model / D_reference); 1.0 when the model's shape is not known."""
    if model is None:
        return 1.0
    d_ref, d_model = latent_size(reference), latent_size(model)
    return 1.0 if d_ref == d_model else math.sqrt(d_model / d_ref)


def reference_edges(sigmas: Sequence[float], held: Sequence[int]) -> tuple[float | None, float | None]:
    """(lo, hi): the sigma range of the reference steps `held` (positions in sampling order,
    contiguous): geometric midpoints to the neighbouring reference steps, None past either
    end of the reference clock."""
    first, last = min(held), max(held)
    hi = None if first == 0 else math.sqrt(sigmas[first] * sigmas[first - 1])
    lo = None if last == len(sigmas) - 1 else math.sqrt(sigmas[last] * sigmas[last + 1])
    return lo, hi


def held_in_range(sigmas: Sequence[float], lo: float | None, hi: float | None, scale: float) -> list[int]:
    """Positions of the run steps whose sigma lies in (lo * scale, hi * scale]."""
    lo_s = None if lo is None else lo * scale
    hi_s = None if hi is None else hi * scale
    return [k for k, s in enumerate(sigmas) if (lo_s is None or s > lo_s) and (hi_s is None or s <= hi_s)]
