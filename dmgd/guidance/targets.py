"""The targets energies are guided toward: a per-class table and the batch's rows of it."""

from __future__ import annotations

from typing import Any, Sequence

from attrs import field, frozen


@frozen(eq=False)
class TargetTable:
    """The K-point targets of a run's classes, one row per class.

    points: [C, K, F] float, row r the k-means centroids of class `classes[r]`'s flattened
    real latents, ordered by mass descending (centroid i is "mode i");
    masses: [C, K] float, their cluster shares (each row sums to 1);
    classes: the model class id of each row.
    """

    points: Any = field(repr=False)
    masses: Any = field(repr=False)
    classes: tuple[int, ...] = field(converter=lambda cs: tuple(int(c) for c in cs))

    @property
    def k(self) -> int:
        return int(self.points.shape[1])

    def rows(self, classes: Sequence[int]) -> list[int]:
        """The row of each model class in `classes`."""
        return [self.classes.index(int(c)) for c in classes]

    def batch(self, classes: Sequence[int], indices: Sequence[int], *, device: Any = None,
              dtype: Any = None) -> TargetBatch:
        """The rows of a batch whose sample b is sample `indices[b]` of model class
        `classes[b]`; with modes (sample b's centroid `indices[b]`) when every index is < K."""
        modes = self if max(indices) < self.k else None
        return TargetBatch.gather(self.rows(classes), self, modes, list(indices), device=device, dtype=dtype)


@frozen(eq=False)
class TargetBatch:
    """What an energy term gets per sample of the batch (row b belongs to sample b).

    points: [B, K, F] the support points of sample b's class target, mass-descending;
    masses: [B, K] their masses; modes: [B, F] or None: sample b's own mode (the i-th
    centroid of its class's K = ipc target when b is the class's i-th sample).
    """

    points: Any
    masses: Any
    modes: Any | None = None

    @classmethod
    def gather(
        cls,
        rows: Any,
        targets: TargetTable | None = None,
        mode_targets: TargetTable | None = None,
        sample_index: int | Sequence[int] | Any = 0,
        *,
        device: Any = None,
        dtype: Any = None,
    ) -> TargetBatch:
        """Pick each sample's rows out of per-class tables (anything with `points` [C, K, F]
        and `masses` [C, K]).

        rows: [B] row indices; targets: the table for the term's K (None for mode-only
        use); mode_targets: the table with K = ipc (sample b gets centroid
        `sample_index[b]` of its row); sample_index: one int for the batch or one per sample.
        """
        import torch

        rows = torch.as_tensor(rows, dtype=torch.long).reshape(-1).cpu()
        points = masses = modes = None
        if targets is not None:
            points = targets.points[rows].to(device=device, dtype=dtype)
            masses = targets.masses[rows].to(device=device, dtype=dtype)
        if mode_targets is not None:
            idx = torch.as_tensor(sample_index, dtype=torch.long).reshape(-1).cpu()
            if idx.numel() == 1:
                idx = idx.expand(rows.numel())
            k = mode_targets.points.shape[1]
            if bool((idx < 0).any()) or bool((idx >= k).any()):
                raise ValueError(
                    f"mode guidance: sample index {idx.tolist()} out of range for {k} modes "
                    "(the mode target must be built with K = ipc)"
                )
            modes = mode_targets.points[rows, idx].to(device=device, dtype=dtype)
        return cls(points=points, masses=masses, modes=modes)
