"""Guidance machinery shared by the energy terms: the per-sample target batch and the
transport maths (`dmgd.guidance.transport`, imported lazily: it needs torch).

Importing this package does NOT import torch, so the term modules (which `dmgd check`
imports through the registry) can name it freely.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from attrs import frozen

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from dmgd.data.targets import ClassTargets


@frozen(eq=False)
class TargetBatch:
    """What an energy term needs per sample of the batch (row b belongs to sample b).

    points: [B, K, F] float: the support points of sample b's class target (k-means
        centroids of the class's flattened real latents), ordered by mass descending;
    masses: [B, K] float: their masses (cluster shares, each row sums to 1);
    modes: [B, F] float or None: sample b's own mode for mode guidance (the i-th
        centroid of its class's K = ipc target when b is the class's i-th sample).
    """

    points: Any
    masses: Any
    modes: Any | None = None

    @classmethod
    def gather(
        cls,
        labels: Any,
        targets: ClassTargets | None = None,
        mode_targets: ClassTargets | None = None,
        sample_index: int | Sequence[int] | Any = 0,
        *,
        device: Any = None,
        dtype: Any = None,
    ) -> TargetBatch:
        """Pick each sample's rows out of per-class targets.

        labels: [B] class indices; targets: the ClassTargets for the term's K (points and
        masses; None for mode-only use); mode_targets: the ClassTargets with K = ipc
        (sample b gets centroid `sample_index[b]` of its class); sample_index: one int
        for the whole batch or one per sample.
        """
        import torch

        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1).cpu()
        points = masses = modes = None
        if targets is not None:
            points = targets.points[labels].to(device=device, dtype=dtype)
            masses = targets.masses[labels].to(device=device, dtype=dtype)
        if mode_targets is not None:
            idx = torch.as_tensor(sample_index, dtype=torch.long).reshape(-1).cpu()
            if idx.numel() == 1:
                idx = idx.expand(labels.numel())
            k = mode_targets.points.shape[1]
            if bool((idx < 0).any()) or bool((idx >= k).any()):
                raise ValueError(
                    f"mode guidance: sample index {idx.tolist()} out of range for {k} modes "
                    "(the mode target must be built with K = ipc)"
                )
            modes = mode_targets.points[labels, idx].to(device=device, dtype=dtype)
        return cls(points=points, masses=masses, modes=modes)


__all__ = ["TargetBatch"]
