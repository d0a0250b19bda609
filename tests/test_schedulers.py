"""Schedulers: DiT's respacing, DiT's posterior conventions, and that the timesteps the
sampler really uses are those `noise_levels` reports."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dmgd.sampling.schedulers import (
    DEFAULT_SCHEDULER_CONFIG, coefficients_for, dit_respaced_timesteps, make_scheduler, noise_levels,
)

SAMPLERS = ("ddpm", "ddim", "dpm", "euler")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_ddpm_respacing_is_dits_for_50_steps():
    # DiT's space_timesteps(1000, "50"): stride 999/49 accumulated, Python round
    ts = dit_respaced_timesteps(1000, 50)
    assert len(ts) == 50
    assert ts[:8] == [0, 20, 41, 61, 82, 102, 122, 143]
    assert ts[-5:] == [917, 938, 958, 979, 999]
    assert ts == sorted({round(i * 999 / 49) for i in range(50)})
    levels = noise_levels("ddpm", 50)
    assert levels.timesteps == tuple(float(t) for t in reversed(ts))
    assert levels.timesteps[:3] == (999.0, 979.0, 958.0) and levels.timesteps[-2:] == (20.0, 0.0)


def _dit_space_timesteps(num_timesteps: int, count: int) -> set[int]:
    """DiT's respace.py rule, one section, written out independently for the check."""
    frac_stride = 1 if count <= 1 else (num_timesteps - 1) / (count - 1)
    cur, taken = 0.0, []
    for _ in range(count):
        taken.append(round(cur))
        cur += frac_stride
    return set(taken)


@pytest.mark.parametrize("n", [1, 2, 10, 25, 50, 100, 250, 1000])
def test_ddpm_respacing_other_counts(n):
    assert dit_respaced_timesteps(1000, n) == sorted(_dit_space_timesteps(1000, n))
    sch = make_scheduler("ddpm", n)
    assert sch.timesteps.tolist() == sorted(_dit_space_timesteps(1000, n), reverse=True)


def test_ddpm_ten_steps():
    assert dit_respaced_timesteps(1000, 10) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]


def _dit_respaced(use_timesteps, betas):
    """DiT's SpacedDiffusion + GaussianDiffusion coefficients (float64), from its formulas."""
    acp = np.cumprod(1.0 - betas)
    last, new_betas = 1.0, []
    for i, a in enumerate(acp):
        if i in use_timesteps:
            new_betas.append(1 - a / last)
            last = a
    b = np.array(new_betas)
    acp = np.cumprod(1.0 - b)
    acp_prev = np.append(1.0, acp[:-1])
    post_var = b * (1.0 - acp_prev) / (1.0 - acp)
    post_logvar_clipped = np.log(np.append(post_var[1], post_var[1:]))
    coef1 = b * np.sqrt(acp_prev) / (1.0 - acp)
    coef2 = (1.0 - acp_prev) * np.sqrt(1.0 - b) / (1.0 - acp)
    return dict(betas=b, acp=acp, post_var=post_var, post_logvar=post_logvar_clipped, coef1=coef1, coef2=coef2)


@pytest.mark.parametrize("learned", [False, True])
def test_ddpm_step_is_dits_p_sample(learned):
    """diffusers' DDPM step on the respaced timesteps == DiT's respaced p_sample
    (FIXED_SMALL, or LEARNED_RANGE between the clipped posterior log-variance and log beta)."""
    n = 50
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    d = _dit_respaced(set(dit_respaced_timesteps(1000, n)), betas)
    sch = make_scheduler("ddpm", n, learned_sigma=learned)
    assert sch.config.variance_type == ("learned_range" if learned else "fixed_small")
    g = torch.Generator().manual_seed(0)
    for k, t in enumerate(sch.timesteps.tolist()):
        idx = n - 1 - k  # DiT's respaced index
        x = torch.randn(2, 4, 4, 4, generator=g, dtype=torch.float64)
        eps = torch.randn(2, 4, 4, 4, generator=g, dtype=torch.float64)
        v = torch.rand(2, 4, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
        noise_g = torch.Generator().manual_seed(100 + k)
        noise = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(100 + k)).double()
        out = torch.cat([eps, v], 1) if learned else eps
        prev = sch.step(out.float(), sch.timesteps[k], x.float(), generator=noise_g).prev_sample.double()
        # DiT
        x0 = np.sqrt(1 / d["acp"][idx]) * x.numpy() - np.sqrt(1 / d["acp"][idx] - 1) * eps.numpy()
        mean = d["coef1"][idx] * x0 + d["coef2"][idx] * x.numpy()
        if learned:
            frac = (v.numpy() + 1) / 2
            logvar = frac * np.log(d["betas"][idx]) + (1 - frac) * d["post_logvar"][idx]
        else:
            logvar = d["post_logvar"][idx]
        expected = mean + (idx != 0) * np.exp(0.5 * logvar) * noise.numpy()
        assert np.abs(prev.numpy() - expected).max() < 2e-4 * max(1.0, np.abs(expected).max()), (k, t)


def test_posterior_std_is_dits_fixed_small_std():
    n = 50
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    d = _dit_respaced(set(dit_respaced_timesteps(1000, n)), betas)
    clock = coefficients_for(make_scheduler("ddpm", n), "ddpm")
    for k in range(n):
        idx = n - 1 - k
        assert clock.posterior_stds[k] == pytest.approx(math.sqrt(d["post_var"][idx]), rel=2e-4)  # diffusers: float32 abar
        assert clock.alpha_bars[k] == pytest.approx(d["acp"][idx], rel=1e-5)
    assert clock.posterior_stds[-1] == 0.0


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_sampler_runs_with_the_reported_timesteps(sampler):
    """The timesteps the transformer receives at each step are noise_levels(...).timesteps."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_sampler import IMPLS, backbone, schedule

    from dmgd.sampling.sampler import GuidedSampler

    n = 7
    bb = backbone()
    seen = []
    h = bb.transformer.dit.register_forward_hook(
        lambda m, args, kwargs, out: seen.append(float(kwargs["timestep"][0])), with_kwargs=True)
    try:
        z = GuidedSampler(bb, schedule(n=n, sampler=sampler), impls=IMPLS).sample_batch([1, 2], 0)
    finally:
        h.remove()
    levels = noise_levels(sampler, n)
    assert tuple(seen) == pytest.approx(levels.timesteps, abs=1e-4)
    assert len(levels.sigmas) == n and all(s > 0 for s in levels.sigmas)
    assert list(levels.sigmas) == sorted(levels.sigmas, reverse=True)
    assert torch.isfinite(z).all() and z.abs().max() < 50


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sigma_is_sqrt_one_minus_abar_over_abar(sampler):
    sch = make_scheduler(sampler, 20)
    clock = coefficients_for(sch, sampler)
    acp = sch.alphas_cumprod.double()
    for t, s in zip(clock.timesteps, clock.sigmas):
        if float(t).is_integer():
            a = float(acp[int(t)])
            assert s == pytest.approx(math.sqrt((1 - a) / a), rel=1e-5)
    for a, b, std in zip(clock.alpha_bars, clock.alpha_bars_next, clock.posterior_stds):
        assert b > a
        assert std == pytest.approx(math.sqrt(max((1 - b) / (1 - a) * (1 - a / b), 0.0)), abs=1e-12)


def test_euler_scales_match_scale_model_input():
    sch = make_scheduler("euler", 10)
    clock = coefficients_for(sch, "euler")
    x = torch.ones(1, 1, 2, 2)
    for k, t in enumerate(sch.timesteps):
        assert float(sch.scale_model_input(x, t)[0, 0, 0, 0]) == pytest.approx(clock.input_scales[k], rel=1e-6)
        sch._step_index = k + 1  # as if stepped
    assert clock.output_scales[-1] == 1.0


def test_configs_from_models_are_accepted():
    """A hub model's scheduler config (another class, extra keys) works for every sampler."""
    config = dict(DEFAULT_SCHEDULER_CONFIG, _class_name="DDIMScheduler", _diffusers_version="0.12.0",
                  set_alpha_to_one=True, steps_offset=0, trained_betas=None, clip_sample=False)
    for sampler in SAMPLERS:
        assert len(make_scheduler(sampler, 5, config).timesteps) == 5
    assert make_scheduler("dpm", 5, config).config.algorithm_type == "dpmsolver++"
    assert make_scheduler("ddpm", 5, config).config.clip_sample is False


def test_unknown_sampler():
    with pytest.raises(ValueError, match="unknown sampler"):
        make_scheduler("heun", 10)
    with pytest.raises(ValueError):
        dit_respaced_timesteps(1000, 0)
