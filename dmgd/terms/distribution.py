"""Distribution-matching energies: ot (K support points) and mean (K = 1).

E = sum_ij P_ij C_ij between the class's synthetic set (frozen samples plus the current
sample's Tweedie estimate, uniform masses) and its k-means target, all points on the unit
sphere, C the Euclidean distance, P the Sinkhorn plan; the gradient flows through P too.
"""

from __future__ import annotations

from dmgd.terms.registry import Kind, ParamSpec, TermSpec, register

_GRAD = ParamSpec(
    "grad", "choice", "tweedie",
    "tweedie: reach z_t through Tweedie's formula only; full: back-propagate through the denoiser",
    choices=("tweedie", "full"),
)


def _transport_params(rho: float) -> tuple[ParamSpec, ...]:
    return (
        ParamSpec("rho", "float", rho, "guidance strength; the update is -rho * sigma_t * grad E", low=0.0),
        ParamSpec("eps", "float", 0.1, "entropic regularisation of Sinkhorn", low=0.0, low_open=True),
        ParamSpec("iters", "int", 5, "Sinkhorn iterations", low=1, rampable=False),
        _GRAD,
    )


# --------------------------------------------------------------------------- implementations


class OTImpl:
    """Entropic OT energy per sample (dmgd.guidance.transport.ot_energy); `target` is a
    dmgd.guidance.TargetBatch with points [B, K, F] and masses [B, K]."""

    def __init__(self, fixed_k: int | None = None):
        self.fixed_k = fixed_k  # 1 for mean matching; None: the term's K parameter

    def target_k(self, values, ipc):
        return int(self.fixed_k if self.fixed_k is not None else values["K"])

    def energy(self, x0, memory, target, values):
        from dmgd.guidance.transport import ot_energy

        if target is None or target.points is None or target.masses is None:
            raise ValueError("the ot/mean energy needs target points and masses")
        k = self.target_k(values, 0)
        if target.points.shape[1] != k:
            raise ValueError(f"target has {target.points.shape[1]} support points, the term asks for K = {k}")
        return ot_energy(x0, memory, target.points, target.masses, float(values["eps"]), int(values["iters"]))


OT = register(TermSpec(
    name="ot",
    kind=Kind.ENERGY,
    params=(
        ParamSpec("K", "int", 10, "k-means support points of the class's target distribution", low=1,
                  rampable=False),
        *_transport_params(0.05),
    ),
    doc="entropic optimal transport from the class's synthetic set to its k-means target",
    impl=OTImpl(),
))

MEAN = register(TermSpec(
    name="mean",
    kind=Kind.ENERGY,
    params=_transport_params(0.05),
    doc="mean matching: ot with K = 1 (the paper's Proposition 2 baseline)",
    impl=OTImpl(fixed_k=1),
))
