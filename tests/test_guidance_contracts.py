"""The guidance package's contracts: registration checks, the registry's helpers, ranges."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dmgd.guidance import (
    ContractError,
    GradientAt,
    Kind,
    ParamSpec,
    TermSpec,
    all_terms,
    default_conditioning,
    get_term,
    register,
    report_k,
    target_ks,
    unregister,
)
from dmgd.language.schedule import Schedule, Step, TermUse
from dmgd.language.settings import Settings, setting_spec


class HalfEnergy:
    """Meets the EnergyTerm contract except for full_backward and energy."""

    def strength(self, values):
        return 1.0

    def gradient_at(self, values):
        return GradientAt.Z_T

    def target_k(self, values, ipc):
        return 1


def test_a_term_missing_contract_members_fails_when_it_registers():
    with pytest.raises(ContractError) as info:
        register(TermSpec("half", Kind.ENERGY, (), "half an energy", impl=HalfEnergy()))
    message = str(info.value)
    assert "'half'" in message and "EnergyTerm" in message
    assert "full_backward(values)" in message and "energy(x0, memory, target, values)" in message
    assert get_term("half") is None


def test_a_method_with_the_wrong_parameters_is_named():
    class WrongEnergy(HalfEnergy):
        def full_backward(self, values):
            return False

        def energy(self, x0, target, values):  # no memory
            return x0

    with pytest.raises(ContractError, match=r"'wrong'.*energy does not take \(x0, memory, target, values\)"):
        register(TermSpec("wrong", Kind.ENERGY, (), "wrong", impl=WrongEnergy()))


def test_other_registration_errors():
    with pytest.raises(ContractError, match="'bare'.*no implementation"):
        register(TermSpec("bare", Kind.CONDITIONING, (), "nothing"))
    with pytest.raises(ContractError, match="'cond'.*ConditioningTerm.*no method embed"):
        register(TermSpec("cond", Kind.CONDITIONING, (), "x", impl=HalfEnergy()))
    refine = default_conditioning()
    with pytest.raises(ContractError, match="already the default"):
        register(TermSpec("other", Kind.CONDITIONING, (), "x", impl=refine.impl, default=True))
    with pytest.raises(ValueError, match="declared twice"):
        register(TermSpec(refine.name, Kind.CONDITIONING, (), "x", impl=refine.impl))


def test_a_term_that_meets_the_contract_registers_and_unregisters():
    class Fine(HalfEnergy):
        def full_backward(self, values):
            return False

        def energy(self, x0, memory, target, values):
            return x0.sum(1)

    spec = register(TermSpec("fine", Kind.ENERGY, (ParamSpec("rho", "float", 1.0, "strength"),), "ok",
                             impl=Fine()))
    try:
        assert get_term("fine") is spec and all_terms()[-1] is spec
    finally:
        unregister("fine")
    assert get_term("fine") is None


def test_exactly_one_default_conditioning_term():
    spec = default_conditioning()
    assert spec.kind is Kind.CONDITIONING and [t for t in all_terms() if t.default] == [spec]


def _schedule(*energies, ipc=4):
    steps = tuple(
        Step(index=0, i=0, tau=0.0, timestep=None, sigma=None,
             conditioning=TermUse(default_conditioning().name, (), None, 0.0),
             energies=tuple(TermUse(name, tuple(values.items()), 0, 0.0) for name, values in energies))
        for _ in range(1)
    )
    return Schedule(steps=steps, settings=Settings(ipc=ipc), num_steps=1, recipe_hash="x")


def test_target_ks_and_report_k():
    ot = {"K": 7, "rho": 0.1, "eps": 0.1, "iters": 5, "grad": "tweedie"}
    mean = {"rho": 0.1, "eps": 0.1, "iters": 5, "grad": "tweedie"}
    sch = _schedule(("ot", ot), ("mean", mean), ("mode", {"rho": 0.1}), ipc=3)
    assert target_ks(sch) == {7, 1, 3}
    assert report_k(sch, smallest_class=50) == 7
    assert target_ks(_schedule()) == set()
    assert report_k(_schedule(), smallest_class=50) == 10
    assert report_k(_schedule(), smallest_class=4) == 4
    assert report_k(_schedule(), smallest_class=0) == 1


def test_integer_ranges_print_as_integers():
    assert setting_spec("seed").range_text() == "0 <= seed <= 9223372036854775807"
    assert get_term("ot").param("K").range_text() == "1 <= K"
    assert get_term("ot").param("eps").range_text() == "0 < eps"
    assert setting_spec("cfg").range_text() == "0 <= cfg <= 100"


def test_importing_guidance_does_not_import_torch():
    code = ("import sys, dmgd.guidance; dmgd.guidance.all_terms(); import dmgd.sampling.samplers; "
            "import dmgd.language.settings; "
            "bad = sorted(m for m in ('torch', 'ot', 'diffusers', 'numpy') if m in sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
