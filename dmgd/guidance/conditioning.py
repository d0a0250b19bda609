"""Conditioning terms: explore, softlabel, refine (the default) and uncond.

At most one holds at a step; where none does, the default (`refine` at the recipe's cfg).
"""

from __future__ import annotations

from dmgd.guidance.registry import register
from dmgd.guidance.specs import FromSetting, Kind, ParamSpec, RampDefault, TermSpec

_ON_NULL = ParamSpec(
    "on_null", "bool", False,
    "also replace the null (unconditional) row of the CFG batch, as the reference code does",
)

# --------------------------------------------------------------------------- implementations
#
# The blends are renormalised to the class embedding's SCALAR mean and std, as the
# reference (solomonWQC/DMGD, SemanticMatching.random_label_conditioning) does with
# `(y_blended - y_blended.mean()) / y_blended.std() * y.std() + y.mean()`: torch.mean and
# torch.std over every entry, std unbiased (Bessel's correction, torch's default).
# Difference: the reference takes those statistics over its whole [2, D] CFG batch (the
# class row and the null row together, one image at a time); here each row is renormalised
# to its OWN embedding's statistics (per sample), so that batching classes together gives
# the same numbers as sampling them one at a time.


def _renormalise(e, ref):
    """Rows of e [B, D] shifted and scaled to the scalar mean and unbiased std of the
    matching rows of ref [B, D]. A constant row (std 0: nothing to rescale) becomes ref's
    mean everywhere instead of NaN."""
    import torch

    mean_e = e.mean(dim=1, keepdim=True)
    std_e = e.std(dim=1, keepdim=True)  # unbiased, as torch.std in the reference
    mean_r = ref.mean(dim=1, keepdim=True)
    std_r = ref.std(dim=1, keepdim=True)
    safe = torch.where(std_e > 0, std_e, torch.ones_like(std_e))
    z = torch.where(std_e > 0, (e - mean_e) / safe, torch.zeros_like(e))
    return z * std_r + mean_r


def _rows(table, labels):
    import torch

    return table[torch.as_tensor(labels, dtype=torch.long, device=table.device)]


class RefineImpl:
    """The hard class label, classifier-free guidance at values["cfg"]."""

    def embed(self, table, labels, others, noise, values):
        return _rows(table, labels)

    def guidance_scale(self, values, recipe_cfg):
        return float(values["cfg"])

    def replaces_null(self, values):
        return False


class UncondImpl:
    """The null label (row C of the table) for every sample; no guidance."""

    def embed(self, table, labels, others, noise, values):
        import torch

        n = len(labels)
        null = table.shape[0] - 1
        return _rows(table, torch.full((n,), null, dtype=torch.long))

    def guidance_scale(self, values, recipe_cfg):
        return 1.0

    def replaces_null(self, values):
        return False


class ExploreImpl:
    """bn * u, renormalised to the class embedding's scalar mean and std. Since u is
    uniform noise, the result carries no class information (only the row's statistics;
    for bn > 0 it does not even depend on bn)."""

    def embed(self, table, labels, others, noise, values):
        e_y = _rows(table, labels)
        e = float(values["bn"]) * noise.to(device=e_y.device, dtype=e_y.dtype)
        return _renormalise(e, e_y)

    def guidance_scale(self, values, recipe_cfg):
        return float(recipe_cfg)

    def replaces_null(self, values):
        return bool(values["on_null"])


class SoftlabelImpl:
    """sqrt(lam) e_y + bn sqrt(1-lam) u + bs sqrt(1-lam) e_other, renormalised to e_y's
    scalar mean and std; lam == 1 returns e_y exactly (no renormalisation round-off)."""

    def embed(self, table, labels, others, noise, values):
        import math

        e_y = _rows(table, labels)
        lam = float(values["lam"])
        if lam >= 1.0:
            return e_y
        e_o = _rows(table, others)
        u = noise.to(device=e_y.device, dtype=e_y.dtype)
        rest = math.sqrt(1.0 - lam)
        e = math.sqrt(lam) * e_y + (float(values["bn"]) * rest) * u + (float(values["bs"]) * rest) * e_o
        return _renormalise(e, e_y)

    def guidance_scale(self, values, recipe_cfg):
        return float(recipe_cfg)

    def replaces_null(self, values):
        return bool(values["on_null"])


EXPLORE = register(TermSpec(
    name="explore",
    kind=Kind.CONDITIONING,
    params=(
        ParamSpec("bn", "float", 0.06, "scale of the uniform noise u ~ U[0,1)^D", low=0.0),
        _ON_NULL,
    ),
    doc="class embedding replaced by noise bn*u, renormalised: no class information",
    impl=ExploreImpl(),
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
    impl=SoftlabelImpl(),
))

REFINE = register(TermSpec(
    name="refine",
    kind=Kind.CONDITIONING,
    params=(
        ParamSpec("cfg", "float", FromSetting("cfg"), "classifier-free guidance scale 1 + omega",
                  low=0.0, high=100.0),
    ),
    doc="the hard class label with classifier-free guidance",
    impl=RefineImpl(),
    default=True,
))

UNCOND = register(TermSpec(
    name="uncond",
    kind=Kind.CONDITIONING,
    params=(),
    doc="the null label, no guidance (for ablations)",
    impl=UncondImpl(),
))
