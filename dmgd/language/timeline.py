"""The recipe timeline: windows on recipe time, and ramps.

A recipe counts time on its own clock of `steps` steps (`clock` below is that number):
`t = steps-1` is the first, noisiest step, `t = 0` the last. Real step `i` of a run of N
steps (counted the same way) lies at recipe time `tau = i * steps / N`; a window holds at a
step when `tau` lies in it, or, for a sigma window, when the step's noise level does. Times
and bounds are exact `Fraction`s (a bound is the shortest decimal of its float, i.e. what
the user wrote), so a window's edge never flickers with float rounding.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Sequence

from attrs import frozen

from dmgd.language import ast

__all__ = [
    "Interval",
    "bound_time",
    "exact",
    "progress",
    "ramp_value",
    "run_time",
    "window_holds",
    "window_interval",
    "window_steps",
]

# Sigma windows compare floats printed and pasted back by people (from `dmgd explain`);
# a relative slack this small only absorbs the last printed digit's rounding noise.
SIGMA_REL_TOL = 1e-9


@functools.lru_cache(maxsize=4096)
def exact(value: float) -> Fraction:
    """The exact rational a number in a recipe stands for: its shortest decimal form."""
    if isinstance(value, int) or float(value).is_integer():
        return Fraction(int(value))
    return Fraction(repr(float(value)))


def bound_time(bound: ast.Bound, clock: int) -> Fraction:
    """A bound on the recipe clock: `p%` is `t = p/100 * steps`."""
    value = exact(bound.value)
    return value * clock / 100 if bound.percent else value


def run_time(i: int, clock: int, num_steps: int) -> Fraction:
    """Recipe time of real step i (N-1 first) in a run of N steps: tau = i * steps / N."""
    return Fraction(i * clock, num_steps)


@frozen
class Interval:
    """A set of recipe times: lo (<|<=) t (<|<=) hi; None is unbounded."""

    lo: Fraction | None
    lo_closed: bool
    hi: Fraction | None
    hi_closed: bool

    def contains(self, t: Fraction) -> bool:
        if self.lo is not None and (t < self.lo or (t == self.lo and not self.lo_closed)):
            return False
        if self.hi is not None and (t > self.hi or (t == self.hi and not self.hi_closed)):
            return False
        return True

    def is_empty(self) -> bool:
        """Empty as a set of real numbers."""
        if self.lo is None or self.hi is None:
            return False
        return self.lo > self.hi or (self.lo == self.hi and not (self.lo_closed and self.hi_closed))

    def intersect(self, other: Interval) -> Interval:
        lo, lo_closed = self.lo, self.lo_closed
        if other.lo is not None and (lo is None or other.lo > lo or (other.lo == lo and not other.lo_closed)):
            lo, lo_closed = other.lo, other.lo_closed
        hi, hi_closed = self.hi, self.hi_closed
        if other.hi is not None and (hi is None or other.hi < hi or (other.hi == hi and not other.hi_closed)):
            hi, hi_closed = other.hi, other.hi_closed
        return Interval(lo, lo_closed, hi, hi_closed)

    def whole_steps(self, clock: int) -> range:
        """The steps t of the recipe clock (integers in [0, clock)) that lie in the interval."""
        first = 0
        if self.lo is not None:
            first = max(0, math.ceil(self.lo) if self.lo_closed else math.floor(self.lo) + 1)
        last = clock - 1
        if self.hi is not None:
            last = min(clock - 1, math.floor(self.hi) if self.hi_closed else math.ceil(self.hi) - 1)
        return range(first, max(first, last + 1))

    def run_indices(self, clock: int, num_steps: int) -> range:
        """Positions in sampling order (0 = noisiest) of the run steps whose recipe time
        tau = i*clock/N lies in the interval: one contiguous range, computed exactly."""
        scale = Fraction(num_steps, clock)  # i = tau * N / clock
        i_lo = 0
        if self.lo is not None:
            x = self.lo * scale
            i_lo = max(0, math.ceil(x) if self.lo_closed else math.floor(x) + 1)
        i_hi = num_steps - 1
        if self.hi is not None:
            x = self.hi * scale
            i_hi = min(num_steps - 1, math.floor(x) if self.hi_closed else math.ceil(x) - 1)
        if i_hi < i_lo:
            return range(0)
        return range(num_steps - 1 - i_hi, num_steps - i_lo)

    def describe(self) -> str:
        """E.g. `25.2 <= t < 25.5`."""
        lo = "" if self.lo is None else f"{_num(self.lo)} {'<=' if self.lo_closed else '<'} "
        hi = "" if self.hi is None else f" {'<=' if self.hi_closed else '<'} {_num(self.hi)}"
        return f"{lo}t{hi}"


# The recipe clock as an interval: recipe times of real steps lie in [0, steps).
def clock_interval(clock: int) -> Interval:
    return Interval(Fraction(0), True, Fraction(clock), False)


def _num(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):g}"


def window_interval(window: ast.Window, clock: int) -> Interval | None:
    """The recipe times a clock window holds at (not clipped to the clock); None for sigma windows."""
    if isinstance(window, ast.Always):
        return Interval(None, False, None, False)
    if isinstance(window, ast.Range):
        return Interval(bound_time(window.lo, clock), True, bound_time(window.hi, clock), window.inclusive)
    if isinstance(window, ast.OneSided):
        b = bound_time(window.bound, clock)
        if window.op in (">=", ">"):
            return Interval(b, window.op == ">=", None, False)
        return Interval(None, False, b, window.op == "<=")
    if isinstance(window, ast.SigmaRange):
        return None
    raise TypeError(f"not a window: {window!r}")


def is_bounded(window: ast.Window) -> bool:
    """May a ramp live on this window? `a..b`, `a..=b` and `sigma a..b` are bounded."""
    return isinstance(window, (ast.Range, ast.SigmaRange))


def sigma_holds(window: ast.SigmaRange, sigma: float) -> bool:
    lo, hi = float(window.lo.value), float(window.hi.value)
    return lo * (1 - SIGMA_REL_TOL) <= sigma <= hi * (1 + SIGMA_REL_TOL)


def window_holds(window: ast.Window, tau: Fraction, sigma: float | None, clock: int) -> bool:
    """Whether a window holds at a step at recipe time tau with noise level sigma."""
    if isinstance(window, ast.SigmaRange):
        if sigma is None:
            raise ValueError("a sigma window needs the step's noise level")
        return sigma_holds(window, sigma)
    interval = window_interval(window, clock)
    assert interval is not None
    return interval.contains(tau)


def window_steps(
    window: ast.Window, clock: int, num_steps: int, sigmas: Sequence[float] | None = None
) -> list[int]:
    """Positions in sampling order (0 = the first, noisiest step) where the window holds."""
    if not isinstance(window, ast.SigmaRange):
        return list(window_interval(window, clock).run_indices(clock, num_steps))
    out = []
    for index in range(num_steps):
        i = num_steps - 1 - index
        sigma = sigmas[index] if sigmas is not None else None
        if window_holds(window, run_time(i, clock, num_steps), sigma, clock):
            out.append(index)
    return out


def progress(position: int, n: int) -> float:
    """Progress of the window's step at `position` (0-based, sampling order) of its n
    steps: position/(n-1); 0 if n == 1."""
    return 0.0 if n <= 1 else position / (n - 1)


def ramp_value(shape: str, a: float, b: float, p: float) -> float:
    """A ramp from a (p = 0, the window's noisiest step) to b (p = 1, its last step).

    linear: a + (b-a) p; cos: a + (b-a) (1 - cos(pi p)) / 2; exp: a (b/a)^p (a, b > 0).
    The ends are returned exactly.
    """
    if p <= 0.0:
        return a
    if p >= 1.0:
        return b
    if shape == "linear":
        return a + (b - a) * p
    if shape == "cos":
        return a + (b - a) * (1.0 - math.cos(math.pi * p)) / 2.0
    if shape == "exp":
        return a * (b / a) ** p
    raise ValueError(f"unknown ramp shape {shape!r}")
