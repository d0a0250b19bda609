"""Optimal-transport maths for the distribution-matching energies (imports torch).

Everything works on points flattened to F features and L2-normalised onto the unit
sphere, with the Euclidean distance (not squared) as the cost, as the reference code does.
On the sphere the costs lie in [0, 2], so with eps = 0.1 the Gibbs kernel exp(-C/eps) stays
above exp(-20): no underflow to a zero plan (the pitfall of raw squared latent distances).

`sinkhorn_plan` is a batched torch Sinkhorn-Knopp that reproduces POT's
`ot.sinkhorn(a, b, C, reg, method="sinkhorn", numItermax=iters)` step for step (same
initialisation u = 1/n, v = 1/m, same update order v then u, same stopping test every 10th
iteration, same fall-back to the previous iterate on a numerical error), batch element by
batch element, in float64; the tests check it against POT to 1e-6 and POT stays the
reference (`solver="pot"` runs POT itself, one sample at a time). POT 0.9.7's
`ot.batch.bregman_projection_batch` initialises u = v = 1 and updates u first, so after the
5 iterations DMGD uses it gives a different (unconverged) plan: it is not used.

The gradient flows through the plan P (POT's torch backend keeps the autograd graph too);
`plan_grad=False` detaches P, for comparison.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pragma: no cover
    import torch

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


def mode_energy(x0: torch.Tensor, modes: torch.Tensor) -> torch.Tensor:
    """Per-sample 0.5 * |x0[b] - modes[b]|^2, [B]: its gradient is x0 - m (MGD3's pull)."""
    d = x0.reshape(x0.shape[0], -1) - modes.detach().reshape(modes.shape[0], -1).to(x0)
    return 0.5 * (d * d).sum(dim=1)


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
