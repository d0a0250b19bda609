"""Carrying a schedule to another model or sampler: `reference`, `push = "total"`."""

from __future__ import annotations

import json
import math

import pytest

import dmgd
from dmgd.language import RecipeError, check_recipe, parse_recipe
from dmgd.sampling.schedulers import noise_levels

PAPER = open("recipes/dmgd.dmgd").read()
CODE = """steps = 50
reference = "4x32x32"
t>=45: explore
25..45: softlabel
30..=45: ot(K=10, rho=0.05)
"""


def held(schedule, term="ot"):
    return [s.index for s in schedule if any(e.term == term for e in s.energies)]


def test_without_reference_nothing_changes():
    s = dmgd.compile(PAPER, noise="always")
    assert s.transfer is None and all(st.reference_sigma is None for st in s)
    d = s.to_dict()
    assert "transfer" not in d and "reference" not in d["settings"] and "push" not in d["settings"]
    assert set(d["steps"][40]) == {"index", "i", "tau", "timestep", "sigma", "conditioning", "energies"}


def test_reference_at_its_own_shape_and_clock_places_the_same_steps():
    """No latent shape: no shift; at the recipe's own sampler and N the sigma ranges hold at
    exactly the clock window's steps (edges are midpoints between reference steps)."""
    plain = dmgd.compile(PAPER, noise="always")
    carried = dmgd.compile(PAPER + 'reference = "4x32x32"\n', noise="always")
    assert carried.transfer.sigma_scale == 1.0
    assert [(s.conditioning, s.energies) for s in plain] == [(s.conditioning, s.energies) for s in carried]
    assert all(s.reference_sigma == s.sigma for s in carried)


def test_the_shift_to_a_smaller_latent():
    """A window written at 4x32x32 placed on a 1x8x8 model: every sigma / 8. The authors'
    OT window t = 30..45 spans reference sigmas 6.66..71.1; on 1x8x8 it holds at the run
    steps with sigma about 0.83..8.9."""
    ref = noise_levels("ddpm", 50)
    s = dmgd.compile(CODE, latent_shape=(1, 8, 8))
    assert s.transfer.sigma_scale == 0.125 and s.transfer.latent_shape == (1, 8, 8)
    ot = held(s)
    sig = [s.steps[k].sigma for k in ot]
    ref_sig = [ref.sigmas[50 - 1 - t] for t in range(30, 46)]
    assert min(ref_sig) == pytest.approx(6.657, abs=1e-3) and max(ref_sig) == pytest.approx(71.107, abs=1e-3)
    lo = math.sqrt(ref.sigmas[49 - 30] * ref.sigmas[49 - 29]) / 8
    hi = math.sqrt(ref.sigmas[49 - 45] * ref.sigmas[49 - 46]) / 8
    assert ot == [k for k, x in enumerate(s.transfer and [st.sigma for st in s]) if lo < x <= hi]
    assert 0.83 <= min(sig) and max(sig) <= 8.9 and min(sig) < 0.84 and max(sig) > 8.6
    assert [st.i for st in s if st.index in ot] == list(range(32, 10, -1))
    placement = s.transfer.placements[2]
    assert placement.reference_steps == tuple(range(45, 29, -1))
    assert placement.sigma_lo / 8 == pytest.approx(lo) and placement.sigma_hi / 8 == pytest.approx(hi)
    # explore (t >= 45) now holds down to sigma ~ 64.9 / 8; the rest follows by noise level
    stages = [st.conditioning.term for st in s]
    first_soft, first_refine = stages.index("softlabel"), stages.index("refine")
    assert set(stages[:first_soft]) == {"explore"} and set(stages[first_soft:first_refine]) == {"softlabel"}
    assert s.steps[first_soft - 1].sigma * 8 > math.sqrt(ref.sigmas[4] * ref.sigmas[5]) >= s.steps[first_soft].sigma * 8
    assert ot[0] == first_soft - 1  # ot's t = 45 is explore's last step, as on the reference
    for st in s:
        assert st.reference_sigma == pytest.approx(st.sigma * 8)
    # the same windows at another N and sampler still hold at that noise range
    other = dmgd.compile(CODE, steps=25, sampler="ddim", latent_shape="1x8x8")
    assert all(lo < other.steps[k].sigma <= hi for k in held(other)) and held(other)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["transfer"]["sigma_scale"] == 0.125 and d["steps"][0]["reference_sigma"] == pytest.approx(157.4 * 8, abs=1)


def test_ramps_progress_over_the_held_run_steps():
    s = dmgd.compile(PAPER + 'reference = "4x32x32"\n', latent_shape=(1, 8, 8))
    rhos = [e["rho"] for st in s for e in st.energies]
    assert rhos[0] == 0.05 and rhos[-1] == 0.5 and len(rhos) > 15


def test_reference_is_checked():
    (d,) = [d for d in check_recipe(parse_recipe('reference = "4x32"\n')) if d.severity == "error"]
    assert d.code == "invalid-value" and "CxHxW" in d.message
    with pytest.raises(RecipeError):
        dmgd.compile(PAPER, overrides={"reference": "big"})
    with pytest.raises(ValueError, match="latent_shape"):
        dmgd.compile(CODE, latent_shape=(1, 0, 8))
    s = dmgd.compile(PAPER, overrides=["reference=4x32x32"], latent_shape=(4, 64, 64))
    assert s.transfer.sigma_scale == 2.0


def push_total(s):
    """sum(rho * sigma_t) over the run's ot steps, with the factor applied."""
    sampler, n = s.settings.sampler, s.num_steps
    post = noise_levels(sampler, n).posterior_stds
    return sum(e["rho"] * e.push * post[st.index] for st in s for e in st.energies)


@pytest.mark.parametrize("recipe", [PAPER, CODE])
def test_push_total_gives_the_same_total_push_at_any_steps_and_sampler(recipe):
    text = recipe + 'push = "total"\n'
    reference = push_total(dmgd.compile(text))
    ref_levels = noise_levels("ddpm", 50)
    plain = dmgd.compile(recipe, noise="always")
    assert reference == pytest.approx(sum(e["rho"] * ref_levels.posterior_stds[st.index]
                                          for st in plain for e in st.energies))
    for sampler, n in (("ddpm", 50), ("ddim", 25), ("dpm", 25), ("euler", 10)):
        s = dmgd.compile(text, steps=n, sampler=sampler)
        assert push_total(s) == pytest.approx(reference, rel=1e-12), (sampler, n)
        factors = {e.push for st in s for e in st.energies}
        assert len(factors) == 1
        if (sampler, n) == ("ddpm", 50):
            assert factors == {1.0}
        else:
            assert factors != {1.0}
    # without push = total the totals differ
    assert push_total(dmgd.compile(recipe, steps=25, sampler="ddim", noise="always")) != pytest.approx(reference)


def test_push_total_is_recorded():
    s = dmgd.compile(PAPER + 'push = "total"\n', steps=25, sampler="ddim")
    d = s.to_dict()
    assert d["settings"]["push"] == "total" and d["transfer"]["push"] == "total"
    (factor,) = {e["push"] for row in d["steps"] for e in row["energies"]}
    assert d["transfer"]["placements"][3]["push"] == [factor]


def test_push_total_with_reference_and_shift():
    text = CODE + 'push = "total"\n'
    totals = [push_total(dmgd.compile(text, steps=n, sampler=smp, latent_shape=(1, 8, 8)))
              for smp, n in (("ddpm", 50), ("ddim", 25), ("dpm", 25))]
    assert totals == pytest.approx([totals[0]] * 3, rel=1e-12)


def test_compile_schedule_needs_the_noise_levels():
    from dmgd.language import compile_schedule

    with pytest.raises(ValueError, match="noise levels"):
        compile_schedule(parse_recipe(CODE))
    with pytest.raises(ValueError, match="reference_noise"):
        compile_schedule(parse_recipe(CODE), noise=noise_levels("ddpm", 50))
