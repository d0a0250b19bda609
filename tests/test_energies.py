"""The energy terms (ot, mean, mode) and the transport maths, against real POT."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from dmgd.guidance import TargetBatch
from dmgd.guidance.transport import (
    euclidean_cost,
    ot_distance,
    ot_energy,
    sinkhorn_plan,
    to_sphere,
)
from dmgd.guidance import get_term

OT_VALUES = {"K": 4, "rho": 0.05, "eps": 0.1, "iters": 5, "grad": "tweedie"}
MEAN_VALUES = {"rho": 0.05, "eps": 0.1, "iters": 5, "grad": "tweedie"}


def problem(B=3, M=4, K=4, F=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(B, F, generator=g, dtype=dtype).requires_grad_(True)
    memory = torch.randn(B, M, F, generator=g, dtype=dtype)
    points = torch.randn(B, K, F, generator=g, dtype=dtype)
    masses = torch.rand(B, K, generator=g, dtype=dtype) + 0.1
    masses = masses / masses.sum(1, keepdim=True)
    return x0, memory, points, masses


def grad_of(fn, x0):
    x = x0.detach().clone().requires_grad_(True)
    e = fn(x)
    (g,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), g


@pytest.mark.parametrize(
    "B,M,K,F,eps,iters",
    [(3, 0, 10, 64, 0.1, 5), (3, 5, 10, 64, 0.1, 5), (2, 50, 10, 64, 0.1, 5), (2, 7, 1, 16, 0.1, 5),
     (2, 7, 4, 16, 0.02, 50), (2, 7, 4, 16, 0.5, 30), (3, 3, 3, 8, 0.1, 1)],
)
def test_batched_sinkhorn_matches_pot(B, M, K, F, eps, iters):
    x0, memory, points, masses = problem(B, M, K, F, seed=B * 100 + M)
    e1, g1 = grad_of(lambda x: ot_energy(x, memory, points, masses, eps, iters), x0)
    e2, g2 = grad_of(lambda x: ot_energy(x, memory, points, masses, eps, iters, solver="pot"), x0)
    torch.testing.assert_close(e1, e2, atol=1e-6, rtol=0)
    torch.testing.assert_close(g1, g2, atol=1e-6, rtol=0)


def test_sinkhorn_plan_matches_ot_sinkhorn_directly():
    g = torch.Generator().manual_seed(5)
    C = torch.rand(2, 6, 3, generator=g, dtype=torch.float64) * 2
    a = torch.full((2, 6), 1 / 6, dtype=torch.float64)
    b = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], dtype=torch.float64)
    P = sinkhorn_plan(a, b, C, 0.1, 5)
    for i in range(2):
        ref = ot.sinkhorn(a[i], b[i], C[i], reg=0.1, numItermax=5, warn=False, method="sinkhorn")
        torch.testing.assert_close(P[i], ref, atol=1e-12, rtol=0)


def test_energy_by_hand():
    """E = sum P*C with P from POT on the unit-sphere Euclidean costs."""
    x0, memory, points, masses = problem(1, 2, 3, 5, seed=9)
    src = torch.cat([memory[0], x0[0:1].detach()])
    src = src / src.norm(dim=1, keepdim=True)
    tgt = points[0] / points[0].norm(dim=1, keepdim=True)
    C = torch.cdist(src, tgt)
    P = ot.sinkhorn(torch.full((3,), 1 / 3, dtype=torch.float64), masses[0], C, reg=0.1, numItermax=5,
                    warn=False, method="sinkhorn")
    e = ot_energy(x0, memory, points, masses, 0.1, 5)
    torch.testing.assert_close(e[0], (P * C).sum(), atol=1e-10, rtol=0)


@pytest.mark.parametrize("solver", ["torch", "pot"])
def test_gradcheck_through_the_plan(solver):
    x0, memory, points, masses = problem(2, 2, 3, 5, seed=1)
    fn = lambda x: ot_energy(x, memory, points, masses, 0.1, 5, solver=solver)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x0,), eps=1e-6, atol=1e-6)


def test_gradient_flows_through_the_plan():
    x0, memory, points, masses = problem(2, 3, 4, 8, seed=2)
    _, g_full = grad_of(lambda x: ot_energy(x, memory, points, masses, 0.1, 5), x0)
    _, g_det = grad_of(lambda x: ot_energy(x, memory, points, masses, 0.1, 5, plan_grad=False), x0)
    _, g_pot = grad_of(lambda x: ot_energy(x, memory, points, masses, 0.1, 5, solver="pot"), x0)
    assert (g_full - g_det).abs().max() > 1e-4  # the plan's own gradient is not negligible
    torch.testing.assert_close(g_full, g_pot, atol=1e-8, rtol=0)  # POT's graph agrees


def test_energy_decreases_along_its_negative_gradient():
    x0, memory, points, masses = problem(3, 5, 4, 16, seed=3)
    e0, g = grad_of(lambda x: ot_energy(x, memory, points, masses, 0.1, 5), x0)
    for step in (1e-3, 1e-2):
        e1 = ot_energy(x0.detach() - step * g, memory, points, masses, 0.1, 5)
        assert (e1 < e0).all(), (step, e0, e1)


def test_batch_invariance_float32():
    x0, memory, points, masses = problem(3, 6, 10, 64, seed=4, dtype=torch.float32)
    e, g = grad_of(lambda x: ot_energy(x, memory, points, masses, 0.1, 5), x0)
    for b in range(3):
        s = slice(b, b + 1)
        e1, g1 = grad_of(lambda x: ot_energy(x, memory[s], points[s], masses[s], 0.1, 5), x0[s])
        torch.testing.assert_close(e[s], e1, atol=1e-6, rtol=0)
        torch.testing.assert_close(g[s], g1, atol=1e-6, rtol=0)


def test_ot_with_one_support_point_equals_mean():
    x0, memory, points, masses = problem(3, 4, 1, 16, seed=6)
    ot_impl, mean_impl = get_term("ot").impl, get_term("mean").impl
    target = TargetBatch(points=points, masses=torch.ones(3, 1, dtype=torch.float64))
    e_ot, g_ot = grad_of(lambda x: ot_impl.energy(x, memory, target, {**OT_VALUES, "K": 1}), x0)
    e_mean, g_mean = grad_of(lambda x: mean_impl.energy(x, memory, target, MEAN_VALUES), x0)
    torch.testing.assert_close(e_ot, e_mean, atol=0, rtol=0)
    torch.testing.assert_close(g_ot, g_mean, atol=0, rtol=0)
    # K = 1: the plan is the source masses; E = mean distance to the (normalised) point
    src = to_sphere(torch.cat([memory, x0.detach()[:, None]], 1))
    d = (src - to_sphere(points)).norm(dim=-1)
    torch.testing.assert_close(e_mean, d.mean(1), atol=1e-10, rtol=0)
    assert ot_impl.target_k({**OT_VALUES, "K": 7}, ipc=10) == 7
    assert mean_impl.target_k(MEAN_VALUES, ipc=10) == 1


@pytest.mark.filterwarnings("ignore:Warning. numerical errors")
def test_no_underflow_on_the_sphere_latent_scale():
    """Raw squared latent distances (~ thousands) give POT a zero plan; on the sphere no."""
    g = torch.Generator().manual_seed(7)
    B, M, K, F = 2, 10, 10, 4096  # a DiT-XL latent, 4 x 32 x 32
    x0 = (torch.randn(B, F, generator=g) * 1.0).requires_grad_(True)
    memory = torch.randn(B, M, F, generator=g)
    points = torch.randn(B, K, F, generator=g) * 0.5
    masses = torch.full((B, K), 1 / K)
    # the pitfall, for the record: POT on raw squared distances (float32) underflows
    raw = torch.cdist(torch.cat([memory[0], x0[0:1].detach()]), points[0]) ** 2
    P_raw = ot.sinkhorn(torch.full((M + 1,), 1 / (M + 1)), masses[0], raw, reg=0.1, numItermax=5, warn=False)
    assert not torch.isfinite(P_raw).all() or float(P_raw.sum()) == 0.0
    e = ot_energy(x0, memory, points, masses, 0.1, 5)
    (grad,) = torch.autograd.grad(e.sum(), x0)
    assert torch.isfinite(e).all() and (e > 0).all()
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


def test_zero_distance_has_a_finite_gradient():
    x0, memory, points, masses = problem(1, 2, 3, 8, seed=8)
    x = points[:, 0].clone().requires_grad_(True)  # the sample sits on a support point
    e = ot_energy(x, memory, points, masses, 0.1, 5)
    (grad,) = torch.autograd.grad(e.sum(), x)
    assert torch.isfinite(grad).all()
    C = euclidean_cost(to_sphere(points[0]), to_sphere(points[0]))
    assert torch.isfinite(C).all() and float(C.diagonal().max()) < 1e-7


def test_mode_energy():
    x0, _, points, _ = problem(3, 0, 1, 8, seed=10)
    modes = points[:, 0]
    impl = get_term("mode").impl
    e, g = grad_of(lambda x: impl.energy(x, None, TargetBatch(points=None, masses=None, modes=modes),
                                         {"rho": 0.1}), x0)
    torch.testing.assert_close(e, 0.5 * ((x0.detach() - modes) ** 2).sum(1))
    torch.testing.assert_close(g, x0.detach() - modes)
    assert impl.target_k({"rho": 0.1}, ipc=12) == 12
    with pytest.raises(ValueError, match="mode"):
        impl.energy(x0, None, TargetBatch(points=points, masses=None), {"rho": 0.1})


def test_ot_distance_matches_emd2_by_hand():
    # Two points on the circle and a two-point target: the exact plan is obvious.
    syn = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalised: (1,0), (0,1)
    pts = torch.tensor([[3.0, 0.0], [0.0, -1.0]])  # normalised: (1,0), (0,-1)
    masses = torch.tensor([0.5, 0.5])
    # (1,0)->(1,0) costs 0, (0,1)->(0,-1) costs 2: total 0.5*0 + 0.5*2
    assert ot_distance(syn, pts, masses) == pytest.approx(1.0, abs=1e-12)
    # against ot.emd2 on a random case
    g = torch.Generator().manual_seed(11)
    syn = torch.randn(7, 5, generator=g)
    pts = torch.randn(3, 5, generator=g)
    masses = torch.tensor([0.5, 0.3, 0.2])
    xs = (syn.double() / syn.double().norm(dim=1, keepdim=True)).numpy()
    ys = (pts.double() / pts.double().norm(dim=1, keepdim=True)).numpy()
    ref = ot.emd2(np.full(7, 1 / 7), masses.double().numpy(), ot.dist(xs, ys, metric="euclidean"))
    assert ot_distance(syn, pts, masses) == pytest.approx(float(ref), abs=1e-9)



def test_early_stop_of_one_element_matches_pot():
    """POT stops an element whose marginals already match at iteration 0 (here: a target of
    identical points); the batched solver must stop that element only."""
    x0, memory, points, masses = problem(2, 3, 4, 8, seed=12)
    points = points.clone()
    points[0] = points[0, :1].expand(4, 8)  # element 0: rank-one kernel, converged at once
    e1, g1 = grad_of(lambda x: ot_energy(x, memory, points, masses, 0.1, 5), x0)
    e2, g2 = grad_of(lambda x: ot_energy(x, memory, points, masses, 0.1, 5, solver="pot"), x0)
    torch.testing.assert_close(e1, e2, atol=1e-10, rtol=0)
    torch.testing.assert_close(g1, g2, atol=1e-10, rtol=0)


def test_tiny_eps_stays_finite():
    """eps so small that kernel rows underflow: POT's fall-back (keep the last good
    iterate), no NaN in the energy or its gradient."""
    x0, memory, points, masses = problem(3, 4, 5, 8, seed=13)
    e, g = grad_of(lambda x: ot_energy(x, memory, points, masses, 1e-4, 5), x0)
    assert torch.isfinite(e).all() and torch.isfinite(g).all()


def test_memory_is_frozen():
    x0, memory, points, masses = problem(2, 3, 4, 8, seed=14)
    mem = memory.clone().requires_grad_(True)
    e = ot_energy(x0, mem, points, masses, 0.1, 5)
    e.sum().backward()
    assert mem.grad is None and x0.grad is not None
