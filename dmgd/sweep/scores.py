"""A sweep's scores: each variant's accuracies (generation seeds x classifier seeds), their
mean and standard error, and the selection rule. No torch here."""

from __future__ import annotations

import math
from typing import Sequence

from attrs import frozen

SELECTION_RULE = ("the variant with the best mean accuracy on the chosen split (last epoch, over generation "
                  "seeds x classifier seeds); a tie goes to the first variant in the sweep's order")


@frozen
class VariantScore:
    """One variant's accuracies, in top-1 %, one per (generation seed, classifier seed)."""

    index: int
    label: str
    scores: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float:
        return sum(self.scores) / self.n if self.scores else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1); nan for fewer than 2 scores."""
        if self.n < 2:
            return math.nan
        m = self.mean
        return math.sqrt(sum((s - m) ** 2 for s in self.scores) / (self.n - 1))

    @property
    def se(self) -> float:
        return self.std / math.sqrt(self.n) if self.n >= 2 else math.nan

    def to_dict(self) -> dict[str, object]:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 4)

        return {"scores": [round(s, 4) for s in self.scores], "n": self.n, "mean": num(self.mean),
                "std": num(self.std), "se": num(self.se)}


def select(scores: Sequence[VariantScore]) -> VariantScore | None:
    """SELECTION_RULE: the best mean; the first of equal means (None when nothing was scored)."""
    best: VariantScore | None = None
    for s in scores:
        if s.scores and (best is None or s.mean > best.mean):
            best = s
    return best
