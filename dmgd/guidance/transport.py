"""Distribution matching: the `ot` and `mean` energies and their optimal-transport maths.

Points are flattened, L2-normalised onto the unit sphere, and compared with the Euclidean
distance (not squared), as the reference code does: costs lie in [0, 2], so with eps = 0.1
the Gibbs kernel stays above exp(-20) and the plan never underflows to zero.
`sinkhorn_plan` reproduces POT's `ot.sinkhorn(..., method="sinkhorn")` step for step
(docs/method.md); the gradient flows through the plan. Torch and POT are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Mapping

from dmgd.guidance.contracts import GradientAt
from dmgd.guidance.registry import register
from dmgd.guidance.specs import UNITS_PARAM, Kind, ParamSpec, TermSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from dmgd.guidance.targets import TargetBatch
    from dmgd.language.schedule import Schedule

# Added inside the square root of the distance: the gradient of |x - y| at x = y is
# 0/0 (NaN) without it; with it the gradient there is 0 (d2's gradient 2(x - y) is 0).
DIST_EPS = 1e-30
# POT's default stopping threshold (ot.sinkhorn's stopThr), checked every 10th iteration.
STOP_THR = 1e-9


def to_sphere(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last dimension (a zero vector stays zero instead of NaN)."""
    import torch

    return torch.nn.functional.normalize(x, p=2.0, dim=-1, eps=1e-12)


def euclidean_cost(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances: src [..., N, F], tgt [..., K, F] -> [..., N, K].

    Computed as sqrt(max(|x|^2 + |y|^2 - 2 x.y, 0) + DIST_EPS): one batched matmul,
    memory O(N*K) rather than O(N*K*F) (latents have F = 4096), and a finite gradient at
    zero distance.
    """
    xx = (src * src).sum(-1, keepdim=True)  # [..., N, 1]
    yy = (tgt * tgt).sum(-1).unsqueeze(-2)  # [..., 1, K]
    d2 = xx + yy - 2.0 * (src @ tgt.transpose(-1, -2))
    return (d2.clamp_min(0.0) + DIST_EPS).sqrt()


def _sinkhorn_loop(
    a: torch.Tensor, b: torch.Tensor, G: torch.Tensor, iters: int, stop_thr: float, careful: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """POT's sinkhorn_knopp loop on a batch of kernels G [B, N, K]; returns (u, v).

    careful=False is the fast path (no per-iteration finiteness tests); careful=True also
    reproduces POT's fall-back on a numerical error (a zero in K^T u, a non-finite u or v:
    keep the previous iterate and stop), element by element, with divisions made safe so
    that no inf/NaN reaches the backward pass.
    """
    import torch

    B, N, K = G.shape
    Gp = G / a.unsqueeze(-1)  # POT's Kp = diag(1/a) K
    u = torch.full((B, N), 1.0 / N, dtype=G.dtype, device=G.device)
    v = torch.full((B, K), 1.0 / K, dtype=G.dtype, device=G.device)
    active: torch.Tensor | None = None  # None: every element still iterating
    for ii in range(int(iters)):
        ktu = (G * u.unsqueeze(2)).sum(1)  # K^T u, [B, K] (elementwise: tiny BLAS calls cost more)
        if careful:
            bad = (ktu == 0).any(1)
            ktu = torch.where(ktu == 0, torch.ones_like(ktu), ktu)
        v_new = b / ktu
        kv = (Gp * v_new.unsqueeze(1)).sum(2)  # Kp v, [B, N]
        if careful:
            bad = bad | (kv == 0).any(1) | ~torch.isfinite(v_new).all(1)
            kv = torch.where(kv == 0, torch.ones_like(kv), kv)
        u_new = 1.0 / kv
        if careful:
            bad = bad | ~torch.isfinite(u_new).all(1)
            step = ~bad if active is None else active & ~bad
            active = step
        if active is None:
            u, v = u_new, v_new
        else:
            u = torch.where(active.unsqueeze(1), u_new, u)
            v = torch.where(active.unsqueeze(1), v_new, v)
        if ii % 10 == 0:
            # POT: every 10th iteration, stop once the column marginal is within stop_thr.
            with torch.no_grad():
                col = v * (G * u.unsqueeze(2)).sum(1)
                done = torch.linalg.vector_norm(col - b, dim=1) < stop_thr
            if bool(done.any()):
                active = ~done if active is None else active & ~done
        if active is not None and not bool(active.any()):
            break
    return u, v


def sinkhorn_plan(
    a: torch.Tensor,
    b: torch.Tensor,
    C: torch.Tensor,
    reg: float,
    iters: int,
    stop_thr: float = STOP_THR,
) -> torch.Tensor:
    """Batched Sinkhorn-Knopp plans, element b equal to
    `ot.sinkhorn(a[b], b[b], C[b], reg, method="sinkhorn", numItermax=iters)`.

    a: [B, N], b: [B, K] (nonnegative masses), C: [B, N, K] costs. Returns P [B, N, K],
    differentiable with respect to C (and a, b). Elements never interact (batch-invariant).
    """
    import torch

    # A constant shift of the costs multiplies the kernel by a constant, which the scaling
    # vectors absorb exactly (v -> v/c, u unchanged): the plan is the same, but the kernel's
    # largest entry is 1, so it cannot underflow entirely.
    shift = C.detach().amin(dim=(1, 2), keepdim=True)
    G = torch.exp((C - shift) / (-reg))  # [B, N, K]
    u, v = _sinkhorn_loop(a, b, G, iters, stop_thr, careful=False)
    if not (bool(torch.isfinite(u).all()) and bool(torch.isfinite(v).all())):
        u, v = _sinkhorn_loop(a, b, G, iters, stop_thr, careful=True)
    return u.unsqueeze(2) * G * v.unsqueeze(1)


def _costs(x0: torch.Tensor, memory: torch.Tensor | None, tgt: torch.Tensor) -> torch.Tensor:
    """C [B, M+1, K] on the sphere: rows 0..M-1 the frozen memory (computed without
    autograd: nothing to differentiate there), row M the current sample (with autograd)."""
    import torch

    x = to_sphere(x0.reshape(x0.shape[0], 1, -1).to(torch.float64))
    c_x = euclidean_cost(x, tgt)  # [B, 1, K]
    if memory is None or memory.numel() == 0 or memory.shape[1] == 0:
        return c_x
    with torch.no_grad():
        mem = memory.detach().reshape(memory.shape[0], memory.shape[1], -1)
        c_m = euclidean_cost(to_sphere(mem.to(device=x.device, dtype=torch.float64)), tgt)
    return torch.cat([c_m, c_x], dim=1)


def ot_energy(
    x0: torch.Tensor,
    memory: torch.Tensor | None,
    points: torch.Tensor,
    masses: torch.Tensor,
    eps: float,
    iters: int,
    *,
    solver: Literal["torch", "pot"] = "torch",
    plan_grad: bool = True,
) -> torch.Tensor:
    """Per-sample entropic OT energy E_b = sum_ij P_ij C_ij, [B], in x0's dtype.

    x0: [B, F] (requires grad), memory: [B, M, F] frozen (M may be 0), points: [B, K, F],
    masses: [B, K]. Source: memory[b] + x0[b] with uniform masses 1/(M+1); target:
    points[b] with masses[b] (renormalised to sum 1); all on the unit sphere; C Euclidean.
    Computed in float64. solver="pot" loops over the batch calling `ot.sinkhorn` (the
    reference); "torch" is the batched equivalent. plan_grad=False detaches the plan.
    """
    import torch

    out_dtype = x0.dtype
    tgt = to_sphere(points.detach().reshape(points.shape[0], points.shape[1], -1)
                    .to(device=x0.device, dtype=torch.float64))
    m = masses.detach().to(device=x0.device, dtype=torch.float64)
    m = m / m.sum(dim=-1, keepdim=True)
    C = _costs(x0, memory, tgt)  # [B, N, K]
    B, N, _ = C.shape
    a = torch.full((B, N), 1.0 / N, dtype=torch.float64, device=C.device)
    if solver == "torch":
        P = sinkhorn_plan(a, m, C if plan_grad else C.detach(), float(eps), int(iters))
    elif solver == "pot":
        import ot

        P = torch.stack([
            ot.sinkhorn(a[i], m[i], C[i] if plan_grad else C[i].detach(), reg=float(eps),
                        numItermax=int(iters), warn=False, method="sinkhorn")
            for i in range(B)
        ])
    else:
        raise ValueError(f"unknown solver {solver!r}: expected 'torch' or 'pot'")
    return (P * C).sum(dim=(1, 2)).to(out_dtype)


def ot_distance(synthetic: torch.Tensor, points: torch.Tensor, masses: torch.Tensor) -> float:
    """Exact OT cost (POT's `ot.emd2`) between a finished synthetic set and a target.

    synthetic: [n, F] (uniform masses 1/n), points: [K, F], masses: [K] (renormalised to
    sum 1); all flattened, on the unit sphere, Euclidean cost (not squared), float64.
    A number in [0, 2]: the distance the run's manifest reports per class.
    """
    import numpy as np
    import ot
    import torch

    x = to_sphere(torch.as_tensor(synthetic).detach().reshape(len(synthetic), -1).to(torch.float64).cpu())
    y = to_sphere(torch.as_tensor(points).detach().reshape(len(points), -1).to(torch.float64).cpu())
    if x.shape[0] == 0:
        raise ValueError("ot_distance: the synthetic set is empty")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"ot_distance: {x.shape[1]} features in the synthetic set, {y.shape[1]} in the target")
    m = torch.as_tensor(masses).detach().reshape(-1).to(torch.float64).cpu().numpy()
    m = m / m.sum()
    a = np.full(x.shape[0], 1.0 / x.shape[0])
    C = euclidean_cost(x, y).numpy()
    return float(ot.emd2(a, m, C))


# --------------------------------------------------------------------------- the terms

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
        UNITS_PARAM,
    )


class TransportEnergy:
    """E_b = sum_ij P_ij C_ij from sample b's synthetic set (its memory plus x0[b], uniform
    masses) to its class target (`ot_energy`), the gradient taken through Tweedie."""

    def __init__(self, fixed_k: int | None = None):
        self.fixed_k = fixed_k  # 1 for mean matching; None: the term's K parameter

    def strength(self, values: Mapping[str, Any]) -> float:
        return float(values["rho"])

    def units(self, values: Mapping[str, Any]) -> str:
        return values.get("units", "grad")

    def gradient_at(self, values: Mapping[str, Any]) -> GradientAt:
        return GradientAt.Z_T

    def full_backward(self, values: Mapping[str, Any]) -> bool:
        return values["grad"] == "full"

    def target_k(self, values: Mapping[str, Any], ipc: int) -> int:
        return int(self.fixed_k if self.fixed_k is not None else values["K"])

    def energy(self, x0: Any, memory: Any, target: TargetBatch, values: Mapping[str, Any]) -> Any:
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
    impl=TransportEnergy(),
))

MEAN = register(TermSpec(
    name="mean",
    kind=Kind.ENERGY,
    params=_transport_params(0.05),
    doc="mean matching: ot with K = 1 (the paper's Proposition 2 baseline)",
    impl=TransportEnergy(fixed_k=1),
))


def report_k(schedule: Schedule, smallest_class: int) -> int:
    """K of the target the manifest's `ot_distance` is measured against: the recipe's `ot`
    K, else 10 (the paper's) capped at the smallest class's size, at least 1, so that
    runs of different recipes compare."""
    for step in schedule:
        for use in step.energies:
            if use.term == OT.name:
                return int(use["K"])
    return max(1, min(10, smallest_class))
