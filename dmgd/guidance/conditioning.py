"""Conditioning terms: explore, softlabel, refine (the default) and uncond.

At most one holds at a step; where none does, the default (`refine` at the recipe's cfg).
"""

from __future__ import annotations

from dmgd.guidance.contracts import NullRow
from dmgd.guidance.registry import register
from dmgd.guidance.specs import FromSetting, Kind, ParamSpec, RampDefault, TermSpec

_NULL = ParamSpec(
    "null", "choice", "keep",
    "the null row of the CFG batch: keep (the null label), same (a copy of the blend), "
    "blend (its own blend of the null label, renormalised with the class row: the reference code)",
    choices=("keep", "same", "blend"),
    shown_at_default=False,
)
# on_null (a bool) became `null`; the checker says so to whoever still writes it.
_RETIRED = (("on_null", "`on_null` was replaced by `null = keep | same | blend` "
                        "(on_null=false is null=keep, on_null=true is null=same; the reference code is null=blend)"),)

# --------------------------------------------------------------------------- implementations
#
# The blends are renormalised to the class embedding's SCALAR mean and std, as the
# reference (solomonWQC/DMGD, SemanticMatching.random_label_conditioning) does with
# `(y_blended - y_blended.mean()) / y_blended.std() * y.std() + y.mean()`: torch.mean and
# torch.std over every entry, std unbiased (Bessel's correction, torch's default).
# Difference: the reference takes those statistics over its whole [2, D] CFG batch (the
# class row and the null row together, one image at a time); here each row is renormalised
# to its OWN embedding's statistics (per sample), so that batching classes together gives
# the same numbers as sampling them one at a time. With null=blend the null row gets its
# own blend and the PAIR [cond; null] of each sample is renormalised together, to the
# statistics of [e_y; e_null] over both rows, exactly as the reference does for its one
# image (`_renormalise_pair`): still per sample, so batching stays exact.


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


def _renormalise_pair(cond, null, ref_cond, ref_null):
    """Each sample's pair [cond_b; null_b] ([B, D] each) shifted and scaled together to
    the scalar mean and unbiased std of [ref_cond_b; ref_null_b], taken over the 2*D values
    of the pair (the reference's `(y - y.mean()) / y.std() * y0.std() + y0.mean()` on its
    [2, D] CFG batch). Returns (cond, null)."""
    import torch

    out = _renormalise(torch.cat([cond, null], 1), torch.cat([ref_cond, ref_null], 1))
    D = cond.shape[1]
    return out[:, :D], out[:, D:]


def _null_rows(table, n):
    """The null label's row (the table's last) for n samples, [n, D]."""
    return table[-1:].expand(n, table.shape[1])


def _rows(table, labels):
    import torch

    return table[torch.as_tensor(labels, dtype=torch.long, device=table.device)]


class RefineImpl:
    """The hard class label, classifier-free guidance at values["cfg"]."""

    def embed(self, table, labels, others, noise, values):
        return _rows(table, labels)

    def guidance_scale(self, values, recipe_cfg):
        return float(values["cfg"])

    def null_row(self, values):
        return NullRow.KEEP


class UncondImpl:
    """The null label (row C of the table) for every sample; no guidance."""

    def embed(self, table, labels, others, noise, values):
        import torch

        n = len(labels)
        null = table.shape[0] - 1
        return _rows(table, torch.full((n,), null, dtype=torch.long))

    def guidance_scale(self, values, recipe_cfg):
        return 1.0

    def null_row(self, values):
        return NullRow.KEEP


class ExploreImpl:
    """bn * u, renormalised to the class embedding's scalar mean and std. Since u is
    uniform noise, the result carries no class information (only the row's statistics;
    for bn > 0 it does not even depend on bn)."""

    def embed(self, table, labels, others, noise, values):
        e_y = _rows(table, labels)
        e = float(values["bn"]) * noise.to(device=e_y.device, dtype=e_y.dtype)
        return _renormalise(e, e_y)

    def embed_pair(self, table, labels, others, noise, null_noise, values):
        """null=blend: (bn*u, bn*u'), renormalised together to [e_y; e_null]'s statistics."""
        e_y = _rows(table, labels)
        e_n = _null_rows(table, e_y.shape[0])
        bn = float(values["bn"])
        u = noise.to(device=e_y.device, dtype=e_y.dtype)
        u_null = null_noise.to(device=e_y.device, dtype=e_y.dtype)
        return _renormalise_pair(bn * u, bn * u_null, e_y, e_n)

    def guidance_scale(self, values, recipe_cfg):
        return float(recipe_cfg)

    def null_row(self, values):
        return NullRow(values["null"])


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

    def embed_pair(self, table, labels, others, noise, null_noise, values):
        """null=blend: the class row's blend and the null row's own, sqrt(lam) e_null +
        bn sqrt(1-lam) u' + bs sqrt(1-lam) e_other (the same other class), renormalised
        together to [e_y; e_null]'s statistics; lam == 1 returns (e_y, e_null) exactly."""
        import math

        e_y = _rows(table, labels)
        e_n = _null_rows(table, e_y.shape[0])
        lam = float(values["lam"])
        if lam >= 1.0:
            return e_y, e_n
        e_o = _rows(table, others)
        u = noise.to(device=e_y.device, dtype=e_y.dtype)
        u_null = null_noise.to(device=e_y.device, dtype=e_y.dtype)
        rest = math.sqrt(1.0 - lam)
        bn, bs = float(values["bn"]) * rest, float(values["bs"]) * rest
        cond = math.sqrt(lam) * e_y + bn * u + bs * e_o
        null = math.sqrt(lam) * e_n + bn * u_null + bs * e_o
        return _renormalise_pair(cond, null, e_y, e_n)

    def guidance_scale(self, values, recipe_cfg):
        return float(recipe_cfg)

    def null_row(self, values):
        return NullRow(values["null"])


EXPLORE = register(TermSpec(
    name="explore",
    kind=Kind.CONDITIONING,
    params=(
        ParamSpec("bn", "float", 0.06, "scale of the uniform noise u ~ U[0,1)^D", low=0.0),
        _NULL,
    ),
    doc="class embedding replaced by noise bn*u, renormalised: no class information",
    impl=ExploreImpl(),
    retired=_RETIRED,
))

SOFTLABEL = register(TermSpec(
    name="softlabel",
    kind=Kind.CONDITIONING,
    params=(
        ParamSpec("bs", "float", 0.01, "weight of another class's embedding (drawn once per sample)", low=0.0),
        ParamSpec("bn", "float", 0.06, "scale of the uniform noise u ~ U[0,1)^D", low=0.0),
        ParamSpec("lam", "float", RampDefault(0.0, 1.0), "weight of the true class (ramps 0 to 1 by default)",
                  low=0.0, high=1.0),
        _NULL,
    ),
    doc="dynamic soft label: sqrt(lam)*e_y + bn*sqrt(1-lam)*u + bs*sqrt(1-lam)*e_other, renormalised",
    impl=SoftlabelImpl(),
    retired=_RETIRED,
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
