"""The conditioning terms' implementations: what the sampler substitutes for the label rows."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dmgd.guidance import NullRow, get_term

C, D = 5, 32


@pytest.fixture
def table() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(C + 1, D, generator=g, dtype=torch.float64) * 0.3 + 0.05


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 3, 4])
    others = torch.tensor([2, 1, 1])  # never a label of the batch (tests permute label rows)
    noise = torch.rand(3, D, generator=g, dtype=torch.float64)
    return labels, others, noise


def impl(name):
    spec = get_term(name)
    assert spec is not None and spec.impl is not None, name
    return spec.impl


def stats(x):
    return x.mean(dim=1), x.std(dim=1)


SOFT = {"bs": 0.01, "bn": 0.06, "lam": 0.4, "null": "keep"}
EXPL = {"bn": 0.06, "null": "same"}


def test_every_term_has_an_implementation():
    for name in ("explore", "softlabel", "refine", "uncond", "ot", "mean", "mode"):
        assert get_term(name).impl is not None


def test_registry_import_does_not_import_torch():
    code = (
        "import sys; from dmgd.guidance import all_terms; all_terms(); "
        "assert 'torch' not in sys.modules and 'ot' not in sys.modules, sorted(m for m in sys.modules if m.startswith(('torch', 'ot')))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_refine_uses_the_label_rows_and_the_cfg(table, inputs):
    labels, others, noise = inputs
    r = impl("refine")
    out = r.embed(table, labels, others, noise, {"cfg": 3.5})
    assert torch.equal(out, table[labels])
    assert r.guidance_scale({"cfg": 3.5}, 4.0) == 3.5
    assert r.null_row({"cfg": 3.5}) is NullRow.KEEP


def test_uncond_uses_the_null_row(table, inputs):
    labels, others, noise = inputs
    u = impl("uncond")
    out = u.embed(table, labels, others, noise, {})
    assert torch.equal(out, table[C].expand(3, D))
    assert u.guidance_scale({}, 4.0) == 1.0
    assert u.null_row({}) is NullRow.KEEP


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.9])
def test_softlabel_matches_class_embedding_statistics(table, inputs, lam):
    labels, others, noise = inputs
    out = impl("softlabel").embed(table, labels, others, noise, {**SOFT, "lam": lam})
    m, s = stats(out)
    my, sy = stats(table[labels])
    torch.testing.assert_close(m, my, atol=1e-12, rtol=0)
    torch.testing.assert_close(s, sy, atol=1e-12, rtol=1e-12)


def test_softlabel_formula(table, inputs):
    labels, others, noise = inputs
    lam, bn, bs = 0.3, 0.06, 0.01
    out = impl("softlabel").embed(table, labels, others, noise, {**SOFT, "lam": lam})
    for b in range(3):
        e_y = table[labels[b]]
        e = lam**0.5 * e_y + bn * (1 - lam) ** 0.5 * noise[b] + bs * (1 - lam) ** 0.5 * table[others[b]]
        # torch.std: unbiased, over the whole row, as the reference code
        expect = (e - e.mean()) / e.std() * e_y.std() + e_y.mean()
        torch.testing.assert_close(out[b], expect, atol=1e-12, rtol=0)


def test_softlabel_lam_one_is_exactly_the_class_embedding(table, inputs):
    labels, others, noise = inputs
    out = impl("softlabel").embed(table, labels, others, noise, {**SOFT, "lam": 1.0})
    assert torch.equal(out, table[labels])


def test_softlabel_lam_zero_has_no_class_embedding_but_the_other_class(table, inputs):
    labels, others, noise = inputs
    vals = {**SOFT, "lam": 0.0}
    out = impl("softlabel").embed(table, labels, others, noise, vals)
    # Changing e_y's direction (keeping its mean/std) does not change the result...
    perm = torch.randperm(D, generator=torch.Generator().manual_seed(3))
    t2 = table.clone()
    t2[labels] = table[labels][:, perm]
    out2 = impl("softlabel").embed(t2, labels, others, noise, vals)
    torch.testing.assert_close(out, out2, atol=1e-12, rtol=0)
    # ...and the blend before renormalising is bn*u + bs*e_other: reproduce it.
    e = 0.06 * noise + 0.01 * table[others]
    ey = table[labels]
    expect = (e - e.mean(1, keepdim=True)) / e.std(1, keepdim=True) * ey.std(1, keepdim=True) + ey.mean(1, keepdim=True)
    torch.testing.assert_close(out, expect, atol=1e-12, rtol=0)
    # With bs = 0 the other class no longer matters.
    a = impl("softlabel").embed(table, labels, others, noise, {**vals, "bs": 0.0})
    b = impl("softlabel").embed(table, labels, (others + 1) % C, noise, {**vals, "bs": 0.0})
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    c = impl("softlabel").embed(table, labels, (others + 1) % C, noise, vals)
    assert not torch.allclose(out, c)


def test_softlabel_scale_and_null(table):
    s = impl("softlabel")
    assert s.guidance_scale(SOFT, 4.0) == 4.0
    assert s.null_row(SOFT) is NullRow.KEEP
    assert s.null_row({**SOFT, "null": "same"}) is NullRow.SAME
    assert s.null_row({**SOFT, "null": "blend"}) is NullRow.BLEND


def test_explore_ignores_the_label_direction(table, inputs):
    labels, others, noise = inputs
    e = impl("explore")
    out = e.embed(table, labels, others, noise, EXPL)
    m, s = stats(out)
    my, sy = stats(table[labels])
    torch.testing.assert_close(m, my, atol=1e-12, rtol=0)
    torch.testing.assert_close(s, sy, atol=1e-12, rtol=1e-12)
    # standardised, the rows are the standardised noise: no class information
    z = (out - m[:, None]) / s[:, None]
    zn = (noise - noise.mean(1, keepdim=True)) / noise.std(1, keepdim=True)
    torch.testing.assert_close(z, zn, atol=1e-10, rtol=0)
    # another class with the same statistics gives the same row
    t2 = table.clone()
    t2[labels[0]] = table[labels[0]].flip(0)
    torch.testing.assert_close(e.embed(t2, labels, others, noise, EXPL), out, atol=1e-12, rtol=0)
    assert e.guidance_scale(EXPL, 4.0) == 4.0
    assert e.null_row(EXPL) is NullRow.SAME
    assert e.null_row({**EXPL, "null": "keep"}) is NullRow.KEEP


def test_explore_with_zero_noise_is_finite(table, inputs):
    labels, others, noise = inputs
    out = impl("explore").embed(table, labels, others, noise, {**EXPL, "bn": 0.0})
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, table[labels].mean(1, keepdim=True).expand(3, D))


@pytest.mark.parametrize("name,vals", [("softlabel", SOFT), ("explore", EXPL), ("refine", {"cfg": 4.0}),
                                       ("uncond", {})])
def test_batch_invariance(table, inputs, name, vals):
    labels, others, noise = inputs
    t32 = table.float()
    n32 = noise.float()
    whole = impl(name).embed(t32, labels, others, n32, vals)
    for b in range(3):
        one = impl(name).embed(t32, labels[b:b + 1], others[b:b + 1], n32[b:b + 1], vals)
        torch.testing.assert_close(whole[b:b + 1], one, atol=1e-6, rtol=0)


def test_null_label_rows_work(table, inputs):
    """With null=same the sampler feeds the null label as `labels` for the null rows."""
    _, others, noise = inputs
    null = torch.full((3,), C)
    out = impl("softlabel").embed(table, null, others, noise, SOFT)
    m, s = stats(out)
    torch.testing.assert_close(m, table[C].mean().expand(3), atol=1e-12, rtol=0)
    torch.testing.assert_close(s, table[C].std().expand(3), atol=1e-12, rtol=1e-12)


# --- null = blend: the reference code's null row ------------------------------------------

def _hand_pair(y, y0):
    """The reference's renormalisation of its [2, D] CFG batch, written out by hand in
    plain Python: (y - mean(y)) / std(y) * std(y0) + mean(y0), scalar statistics over both
    rows, std unbiased."""
    flat = [v for row in y for v in row]
    flat0 = [v for row in y0 for v in row]
    n = len(flat)
    m, m0 = sum(flat) / n, sum(flat0) / n
    s = (sum((v - m) ** 2 for v in flat) / (n - 1)) ** 0.5
    s0 = (sum((v - m0) ** 2 for v in flat0) / (n - 1)) ** 0.5
    return [[(v - m) / s * s0 + m0 for v in row] for row in y]


SMALL = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.5], [0.0, 1.0, 3.0]]  # rows: class 0, class 1, null


def test_softlabel_blend_matches_a_hand_computation():
    table = torch.tensor(SMALL, dtype=torch.float64)
    u = [0.2, 0.7, 0.1]
    u2 = [0.9, 0.3, 0.6]
    lam, bn, bs = 0.36, 0.5, 0.25
    cond, null = impl("softlabel").embed_pair(
        table, torch.tensor([0]), torch.tensor([1]), torch.tensor([u], dtype=torch.float64),
        torch.tensor([u2], dtype=torch.float64), {"bs": bs, "bn": bn, "lam": lam, "null": "blend"})
    a, r = lam ** 0.5, (1 - lam) ** 0.5  # 0.6, 0.8
    e_y, e_o, e_n = SMALL[0], SMALL[1], SMALL[2]
    y = [[a * e_y[j] + bn * r * u[j] + bs * r * e_o[j] for j in range(3)],
         [a * e_n[j] + bn * r * u2[j] + bs * r * e_o[j] for j in range(3)]]
    want = _hand_pair(y, [e_y, e_n])
    torch.testing.assert_close(cond, torch.tensor([want[0]], dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(null, torch.tensor([want[1]], dtype=torch.float64), atol=1e-12, rtol=0)
    # the pair, not each row, has [e_y; e_null]'s statistics
    both = torch.cat([cond, null], 1)
    ref = torch.tensor([e_y + e_n], dtype=torch.float64)
    torch.testing.assert_close(both.mean(), ref.mean(), atol=1e-12, rtol=0)
    torch.testing.assert_close(both.std(), ref.std(), atol=1e-12, rtol=0)
    assert abs(float(cond.mean()) - float(torch.tensor(e_y).mean())) > 1e-3


def test_explore_blend_matches_a_hand_computation():
    table = torch.tensor(SMALL, dtype=torch.float64)
    u, u2, bn = [0.2, 0.7, 0.1], [0.9, 0.3, 0.6], 0.06
    cond, null = impl("explore").embed_pair(
        table, torch.tensor([1]), torch.tensor([0]), torch.tensor([u], dtype=torch.float64),
        torch.tensor([u2], dtype=torch.float64), {"bn": bn, "null": "blend"})
    want = _hand_pair([[bn * v for v in u], [bn * v for v in u2]], [SMALL[1], SMALL[2]])
    torch.testing.assert_close(torch.cat([cond, null]), torch.tensor(want, dtype=torch.float64), atol=1e-12, rtol=0)


def test_blend_at_lam_one_is_exact_and_batch_invariant(table, inputs):
    labels, others, noise = inputs
    s = impl("softlabel")
    cond, null = s.embed_pair(table, labels, others, noise, noise.flip(1), {**SOFT, "lam": 1.0, "null": "blend"})
    assert torch.equal(cond, table[labels]) and torch.equal(null, table[C].expand(3, D))
    vals = {**SOFT, "null": "blend"}
    whole = s.embed_pair(table, labels, others, noise, noise.flip(1), vals)
    for b in range(3):
        one = s.embed_pair(table, labels[b:b + 1], others[b:b + 1], noise[b:b + 1], noise.flip(1)[b:b + 1], vals)
        torch.testing.assert_close(whole[0][b:b + 1], one[0], atol=1e-12, rtol=0)
        torch.testing.assert_close(whole[1][b:b + 1], one[1], atol=1e-12, rtol=0)


def test_on_null_is_retired_with_a_helpful_message():
    from dmgd.language import check_recipe, parse_recipe

    (d,) = [d for d in check_recipe(parse_recipe("25..45: softlabel(on_null=true)\n")) if d.severity == "error"]
    assert d.code == "unknown-param" and "`on_null` was replaced by `null = keep | same | blend`" in d.help
