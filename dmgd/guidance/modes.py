"""Mode guidance (MGD3): sample i of a class is pulled toward its own mode."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from dmgd.guidance.contracts import GradientAt
from dmgd.guidance.registry import register
from dmgd.guidance.specs import UNITS_PARAM, Kind, ParamSpec, TermSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from dmgd.guidance.targets import TargetBatch


def mode_energy(x0: torch.Tensor, modes: torch.Tensor) -> torch.Tensor:
    """Per-sample 0.5 * |x0[b] - modes[b]|^2, [B]: its gradient is x0 - m (MGD3's pull)."""
    d = x0.reshape(x0.shape[0], -1) - modes.detach().reshape(modes.shape[0], -1).to(x0)
    return 0.5 * (d * d).sum(dim=1)


class ModeEnergy:
    """E_b = 0.5 * |x0[b] - m_b|^2 with m_b sample b's own mode (`TargetBatch.modes`: centroid
    i of its class's K = ipc k-means for the class's i-th sample). The gradient is taken on
    x0 as it stands (MGD3's -rho * sigma_t * (x0 - m)), not through Tweedie's 1/sqrt(abar),
    which overflows at high noise."""

    def strength(self, values: Mapping[str, Any]) -> float:
        return float(values["rho"])

    def units(self, values: Mapping[str, Any]) -> str:
        return values.get("units", "grad")

    def gradient_at(self, values: Mapping[str, Any]) -> GradientAt:
        return GradientAt.X0

    def full_backward(self, values: Mapping[str, Any]) -> bool:
        return False

    def target_k(self, values: Mapping[str, Any], ipc: int) -> int:
        return int(ipc)

    def energy(self, x0: Any, memory: Any, target: TargetBatch, values: Mapping[str, Any]) -> Any:
        if target is None or target.modes is None:
            raise ValueError("the mode energy needs each sample's mode (TargetBatch.modes)")
        return mode_energy(x0, target.modes)


MODE = register(TermSpec(
    name="mode",
    kind=Kind.ENERGY,
    params=(
        ParamSpec("rho", "float", 0.1, "guidance strength; the update is -rho * sigma_t * (x0_hat - m_i)", low=0.0),
        UNITS_PARAM,
    ),
    doc="mode guidance: pull sample i toward mode m_i of k-means with K = ipc",
    impl=ModeEnergy(),
))
