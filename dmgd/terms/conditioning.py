"""Conditioning terms: what the denoiser is conditioned on at a step.

explore, softlabel, refine and uncond. At most one holds at a step; where none does, the
compiler puts `refine` at the recipe's cfg.
"""

from __future__ import annotations

from dmgd.terms.registry import FromSetting, Kind, ParamSpec, RampDefault, TermSpec, register

_ON_NULL = ParamSpec(
    "on_null", "bool", False,
    "also replace the null (unconditional) row of the CFG batch, as the reference code does",
)

EXPLORE = register(TermSpec(
    name="explore",
    kind=Kind.CONDITIONING,
    params=(
        ParamSpec("bn", "float", 0.06, "scale of the uniform noise u ~ U[0,1)^D", low=0.0),
        _ON_NULL,
    ),
    doc="class embedding replaced by noise bn*u, renormalised: no class information",
))

SOFTLABEL = register(TermSpec(
    name="softlabel",
    kind=Kind.CONDITIONING,
    params=(
        ParamSpec("bs", "float", 0.01, "weight of another class's embedding (drawn once per sample)", low=0.0),
        ParamSpec("bn", "float", 0.06, "scale of the uniform noise u ~ U[0,1)^D", low=0.0),
        ParamSpec("lam", "float", RampDefault(0.0, 1.0), "weight of the true class (ramps 0 to 1 by default)",
                  low=0.0, high=1.0),
        _ON_NULL,
    ),
    doc="dynamic soft label: sqrt(lam)*e_y + bn*sqrt(1-lam)*u + bs*sqrt(1-lam)*e_other, renormalised",
))

REFINE = register(TermSpec(
    name="refine",
    kind=Kind.CONDITIONING,
    params=(
        ParamSpec("cfg", "float", FromSetting("cfg"), "classifier-free guidance scale 1 + omega",
                  low=0.0, high=100.0),
    ),
    doc="the hard class label with classifier-free guidance",
))

UNCOND = register(TermSpec(
    name="uncond",
    kind=Kind.CONDITIONING,
    params=(),
    doc="the null label, no guidance (for ablations)",
))
