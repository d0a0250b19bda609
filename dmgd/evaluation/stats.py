"""The aggregates `dmgd eval` reports over seeds: the mean and the POPULATION std (ddof = 0)."""

from __future__ import annotations

from typing import Sequence


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


def population_std(values: Sequence[float]) -> float:
    """Population standard deviation (ddof = 0), numpy's default and the harness's."""
    m = mean(values)
    return float((sum((v - m) ** 2 for v in values) / len(values)) ** 0.5)
