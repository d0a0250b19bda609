"""The guided sampler on tiny random-weight diffusers DiTs with hand-made schedules."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from dmgd.language.schedule import Schedule, Step, TermUse
from dmgd.language.settings import Settings
from dmgd.sampling.step import GuidanceError
from dmgd.guidance import get_term
from dmgd.sampling.sampler import GuidedSampler, make_generator, sample_seed
from dmgd.guidance import GradientAt, TargetTable
from dmgd.sampling.samplers import sampler_spec
from dmgd.sampling.schedulers import DEFAULT_SCHEDULER_CONFIG, coefficients_for, make_scheduler

NUM_CLASSES = 10
SHAPE = (1, 8, 8)
F = 64


# -- test energies (the conditioning terms and ot are the registry's own implementations) --
class HandMadeEnergy:
    """The EnergyTerm contract from hand-made values: rho (0 if absent), grad (tweedie)."""

    def strength(self, values):
        return float(values.get("rho", 0.0))

    def gradient_at(self, values):
        return GradientAt.Z_T

    def full_backward(self, values):
        return values.get("grad") == "full"


class PullPush(HandMadeEnergy):
    """A simple energy with every ingredient of ot: targets (points, masses) and memory, all
    points on the unit sphere as ot has them (so the gradient stays bounded):

    E = sum_k masses_k |n(x0) - n(p_k)|^2 - 0.5 * mean_m |n(x0) - n(memory_m)|^2,  n(v) = v/|v|
    """

    def target_k(self, values, ipc):
        return int(values.get("K", 3))

    def energy(self, x0, memory, target, values):
        n = torch.nn.functional.normalize
        x = n(x0, dim=-1)
        e = (target.masses * ((x[:, None, :] - n(target.points, dim=-1)) ** 2).sum(-1)).sum(1)
        if memory.shape[1]:
            e = e - 0.5 * ((x[:, None, :] - n(memory, dim=-1)) ** 2).sum(-1).mean(1)
        return e


class NaNEnergy(HandMadeEnergy):
    def target_k(self, values, ipc):
        return 3

    def energy(self, x0, memory, target, values):
        return (x0 * float("nan")).sum(1)


IMPLS = {"pull": PullPush(), "nan": NaNEnergy()}


def tiny_dit(num_classes=NUM_CLASSES, out_channels=1, in_channels=1, seed=0, layers=2):
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(seed)
    model = DiTTransformer2DModel(
        sample_size=8, in_channels=in_channels, out_channels=out_channels, patch_size=2, num_layers=layers,
        num_attention_heads=2, attention_head_dim=8, num_embeds_ada_norm=num_classes,
    )
    return model.eval().requires_grad_(False)


class Denoiser(torch.nn.Module):
    """A real tiny random DiT plus the exact noise prediction for data ~ N(0, s^2 I).

    A random DiT alone predicts nothing like the noise, so its samples blow up to
    hundreds; adding the analytic eps keeps every sampler's latents O(1) while the DiT
    (and its per-block label tables, which the sampler hooks) still shapes the output.
    """

    def __init__(self, dit, s=0.7, w=0.3):
        super().__init__()
        self.dit, self.s, self.w = dit, s, w
        self.transformer_blocks = dit.transformer_blocks
        self.config = dit.config
        acp = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
        self.register_buffer("acp", acp.float())

    def forward(self, x, timestep, class_labels):
        out = self.dit(x, timestep=timestep, class_labels=class_labels).sample
        a = self.acp[timestep.long().clamp(0, 999)].view(-1, 1, 1, 1).to(x)
        c = x.shape[1]
        eps = (1 - a).sqrt() * x / (a * self.s**2 + 1 - a)
        return SimpleNamespace(sample=torch.cat([eps + self.w * out[:, :c], out[:, c:]], 1))


def backbone(model=None, num_classes=NUM_CLASSES, learned_sigma=False, vae=None, vae_scale=1.0):
    model = model or Denoiser(tiny_dit(num_classes))
    c = model.config.in_channels
    return SimpleNamespace(
        transformer=model, vae=vae, vae_scale=vae_scale, scheduler_config=dict(DEFAULT_SCHEDULER_CONFIG),
        num_classes=num_classes, null_class=num_classes,
        latent_shape=(c, model.config.sample_size, model.config.sample_size), learned_sigma=learned_sigma,
    )


def use(term, rule=0, progress=0.0, **values):
    return TermUse(term=term, values=tuple(values.items()), rule=rule, progress=progress)


def schedule(n=10, sampler="ddpm", cfg=4.0, energy=None, window=None, conditioning=None, cfg_channels=0,
             ipc=4, seed=0, matching="greedy", config=None):
    """A hand-made schedule: refine at `cfg` everywhere (or `conditioning(k)`), `energy` on `window`."""
    clock = coefficients_for(make_scheduler(sampler, n, config), sampler)
    steps = []
    for k in range(n):
        i = n - 1 - k
        cond = conditioning(k) if conditioning else use("refine", rule=None, cfg=cfg)
        energies = (energy,) if energy is not None and (window is None or k in window) else ()
        steps.append(Step(index=k, i=i, tau=float(i), timestep=clock.timesteps[k], sigma=clock.sigmas[k],
                          conditioning=cond, energies=energies))
    settings = Settings(steps=n, sampler=sampler, cfg=cfg, ipc=ipc, seed=seed, matching=matching,
                        cfg_channels=cfg_channels)
    return Schedule(steps=tuple(steps), settings=settings, num_steps=n, recipe_hash="test")


def targets(K=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(NUM_CLASSES, K, F, generator=g)
    masses = torch.rand(NUM_CLASSES, K, generator=g) + 0.1
    return {K: TargetTable(points, masses / masses.sum(1, keepdim=True), range(NUM_CLASSES))}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def bb():
    return backbone()


# -- tests ------------------------------------------------------------------------------
def test_sample_seed_is_stable_and_distinct():
    assert sample_seed(0, 3, 2) == sample_seed(0, 3, 2)
    assert len({sample_seed(s, c, i) for s in range(3) for c in range(4) for i in range(5)}) == 60
    assert 0 <= sample_seed(2**63 - 1, 999, 10**6) < 2**63
    a = torch.rand(4, generator=make_generator(0, 1, 2))
    assert torch.equal(a, torch.rand(4, generator=make_generator(0, 1, 2)))


def test_shapes_and_decode(bb):
    s = GuidedSampler(bb, schedule(n=5), impls=IMPLS)
    z = s.sample_batch([0, 3, 7], 0)
    assert z.shape == (3, *SHAPE) and z.dtype == torch.float32 and torch.isfinite(z).all()
    img = s.decode(z)
    assert img.shape == z.shape and img.min() >= -1 and img.max() <= 1


def test_determinism(bb):
    sch = schedule(n=8, energy=use("pull", K=3, rho=0.5), window=range(2, 6))
    s = GuidedSampler(bb, sch, targets(), impls=IMPLS)
    mem = torch.randn(2, 1, *SHAPE)
    a = s.sample_batch([1, 2], 1, mem)
    b = s.sample_batch([1, 2], 1, mem)
    assert torch.equal(a, b)
    c = s.sample_batch([1, 2], 1, mem, seed=1)
    assert (a - c).abs().max() > 1e-2
    d = s.sample_batch([1, 2], 2, torch.cat([mem, mem], 1))  # another index: another sample
    assert (a - d).abs().max() > 1e-2


@pytest.mark.parametrize("sampler", ["ddpm", "euler"])
def test_greedy_class_batched_equals_one_at_a_time(bb, sampler):
    """Class-batched greedy == the reference's order (class by class, index by index)."""
    ipc, classes = 3, [0, 4, 9]
    energy = use("ot", K=3, rho=0.5, eps=0.1, iters=5, grad="tweedie")
    sch = schedule(n=8, sampler=sampler, energy=energy, window=range(1, 6), ipc=ipc,
                   conditioning=lambda k: use("explore", bn=0.06, null="same") if k < 2 else
                   use("refine", rule=None, cfg=4.0))
    s = GuidedSampler(bb, sch, targets(), impls=IMPLS)
    # batched: index by index, all classes at once
    done = torch.zeros(len(classes), ipc, *SHAPE)
    for index in range(ipc):
        done[:, index] = s.sample_batch(classes, index, done[:, :index])
    # one at a time: class by class, index by index
    for row, c in enumerate(classes):
        mine = torch.zeros(ipc, *SHAPE)
        for index in range(ipc):
            mine[index] = s.sample_batch([c], index, mine[:index].unsqueeze(0))[0]
        assert (mine - done[row]).abs().max() < 1e-5
    # the energy did something: without it the samples differ
    plain = GuidedSampler(bb, schedule(n=8, sampler=sampler, ipc=ipc, conditioning=lambda k: use(
        "explore", bn=0.06, null="same") if k < 2 else use("refine", rule=None, cfg=4.0)), impls=IMPLS)
    assert (plain.sample_batch(classes, 2, done[:, :2]) - done[:, 2]).abs().max() > 1e-3


def _energy_of(classes, memory, tgt, z):
    """PullPush's energy of final latents z."""
    t = tgt[3]
    target = SimpleNamespace(points=t.points[classes], masses=t.masses[classes])
    return PullPush().energy(z.flatten(1), memory.flatten(2), target, {})


@pytest.mark.parametrize("grad", ["tweedie", "full"])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_energy_moves_samples_downhill(bb, grad, sampler):
    classes, tgt = [2, 5, 8], targets()
    mem = torch.randn(3, 2, *SHAPE)
    base = GuidedSampler(bb, schedule(n=10, sampler=sampler), tgt, impls=IMPLS)
    z0 = base.sample_batch(classes, 2, mem)
    e0 = _energy_of(classes, mem, tgt, z0)
    for rho in (0.05, 0.2):
        s = GuidedSampler(bb, schedule(n=10, sampler=sampler, energy=use("pull", K=3, rho=rho, grad=grad),
                                       window=range(2, 9)), tgt, impls=IMPLS)
        z1 = s.sample_batch(classes, 2, mem)
        e1 = _energy_of(classes, mem, tgt, z1)
        assert (e1 < e0).all(), (rho, e0, e1)
        e0 = e1


@pytest.mark.parametrize("grad", ["tweedie", "full"])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_real_ot_lowers_the_final_transport_energy(bb, grad, sampler):
    """The registry's ot term: guided samples end with a lower OT energy (memory + sample vs
    the class target) than unguided ones from the same seeds."""
    from dmgd.guidance.transport import ot_energy

    classes, tgt = [2, 5, 8], targets()
    mem = torch.randn(3, 2, *SHAPE)

    def E(z):
        return ot_energy(z.flatten(1), mem.flatten(2), tgt[3].points[classes], tgt[3].masses[classes], 0.1, 5)

    plain = GuidedSampler(bb, schedule(n=10, sampler=sampler), tgt).sample_batch(classes, 2, mem)
    guided = GuidedSampler(bb, schedule(n=10, sampler=sampler, energy=use("ot", K=3, rho=20.0, eps=0.1, iters=5,
                                                                          grad=grad), window=range(2, 9)),
                           tgt).sample_batch(classes, 2, mem)
    assert (E(guided) < E(plain) - 1e-4).all()


@pytest.mark.parametrize("grad", ["tweedie", "full"])
def test_single_step_update_is_minus_rho_sigma_grad(bb, grad):
    """One guided step == the unguided step - rho * sigma_t * grad_{z_t} E, with eps held fixed
    (tweedie) or differentiated through the DiT's CFG pass (full)."""
    from dmgd.guidance import TargetBatch
    from dmgd.sampling.step import BatchState, GuidedStep

    tgt = targets()
    sch = schedule(n=10, energy=use("pull", K=3, rho=0.3, grad=grad), window={3})
    clock = coefficients_for(make_scheduler("ddpm", 10), "ddpm")
    classes = [1, 2]
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(5))
    target = TargetBatch(points=tgt[3].points[classes], masses=tgt[3].masses[classes])

    def run(step):
        runner = GuidedStep(transformer=bb.transformer, null_class=10, learned_sigma=False,
                            scheduler=make_scheduler("ddpm", 10), sampler=sampler_spec("ddpm"), coefficients=clock,
                            recipe_cfg=4.0, cfg_channels=0, ipc=4, impls=IMPLS)
        batch = BatchState(classes=torch.tensor(classes), indices=(0, 0),
                           generators=[make_generator(0, c, 0) for c in classes], others=torch.tensor([3, 4]))
        return runner.step(step, x, batch, lambda x0: torch.zeros(2, 0, F), lambda u, i: target)

    guided = run(sch.steps[3])
    plain = run(Step(index=3, i=6, tau=6.0, timestep=clock.timesteps[3], sigma=clock.sigmas[3],
                     conditioning=sch.steps[3].conditioning, energies=()))
    z = x.clone().requires_grad_(True)
    with torch.set_grad_enabled(grad == "full"):
        t = torch.full((4,), clock.timesteps[3])
        out = bb.transformer(torch.cat([z, z]), timestep=t, class_labels=torch.tensor(classes + [10, 10])).sample
        eps = out[2:] + 4.0 * (out[:2] - out[2:])
    a = clock.alpha_bars[3]
    x0 = ((z - math.sqrt(1 - a) * eps) / math.sqrt(a)).flatten(1)
    e = PullPush().energy(x0, torch.zeros(2, 0, F), target, {})
    (g,) = torch.autograd.grad(0.3 * e.sum(), z)
    expected = plain - clock.posterior_stds[3] * g
    assert (guided - expected).abs().max() < 1e-5
    assert (guided - plain).abs().max() > 1e-4


def test_full_differs_from_tweedie(bb):
    tgt = targets()
    runs = [GuidedSampler(bb, schedule(n=6, energy=use("pull", K=3, rho=0.2, grad=grad), window=range(1, 5)),
                          tgt, impls=IMPLS).sample_batch([0, 1], 0) for grad in ("tweedie", "full")]
    assert (runs[0] - runs[1]).abs().max() > 1e-5


def test_joint_matching(bb):
    tgt = targets()
    sch = schedule(n=6, energy=use("pull", K=3, rho=0.2), window=range(1, 5), matching="joint")
    s = GuidedSampler(bb, sch, tgt, impls=IMPLS)
    z = s.sample_joint(3, [0, 1, 2])
    assert z.shape == (3, *SHAPE) and torch.isfinite(z).all()
    assert torch.equal(z, s.sample_joint(3, [0, 1, 2]))
    # without the energy, joint = independent samples; with it, the samples interact
    plain = GuidedSampler(bb, schedule(n=6), tgt, impls=IMPLS)
    alone = plain.sample_batch([3, 3, 3], 0)  # index 0 for all: compare sample 0 only
    assert torch.allclose(plain.sample_joint(3, [0, 1, 2])[0], alone[0], atol=1e-5)
    assert (z[0] - alone[0]).abs().max() > 1e-4


def test_nan_energy_raises_guidance_error(bb):
    sch = schedule(n=6, energy=use("nan", rho=0.1), window={2})
    s = GuidedSampler(bb, sch, targets(), impls=IMPLS)
    with pytest.raises(GuidanceError) as info:
        s.sample_batch([0, 1], 0)
    err = info.value
    assert err.step_index == 2 and err.i == 3 and err.term == "nan" and err.quantity == "energy"
    assert err.timestep == sch.steps[2].timestep
    assert err.samples == ((0, 0), (1, 0))
    assert "step 2" in str(err) and "'nan'" in str(err)


def test_nan_model_output_raises(bb):
    model = tiny_dit()
    with torch.no_grad():
        model.proj_out_2.bias.fill_(float("nan"))
    s = GuidedSampler(backbone(model), schedule(n=4), impls=IMPLS)
    with pytest.raises(GuidanceError) as info:
        s.sample_batch([0], 0)
    assert info.value.step_index == 0 and info.value.quantity == "eps" and info.value.term == "refine"


def test_hooks_are_removed_even_on_error(bb):
    s = GuidedSampler(bb, schedule(n=4, energy=use("nan", rho=0.1), window={1}), targets(), impls=IMPLS)
    with pytest.raises(GuidanceError):
        s.sample_batch([0], 0)
    for block in bb.transformer.transformer_blocks:
        assert not block.norm1.emb.class_embedder._forward_hooks


def test_conditioning_rows_replace_every_block_table(bb):
    """explore replaces the label embedding in every block: the output changes."""
    base = GuidedSampler(bb, schedule(n=3), impls=IMPLS).sample_batch([0], 0)
    sch = schedule(n=3, conditioning=lambda k: use("explore", bn=0.06, null="keep"))
    expl = GuidedSampler(bb, sch, impls=IMPLS).sample_batch([0], 0)
    assert (base - expl).abs().max() > 1e-4


def test_cfg_one_is_a_single_conditional_pass(bb):
    calls = []
    h = bb.transformer.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        GuidedSampler(bb, schedule(n=3, cfg=1.0), impls=IMPLS).sample_batch([0, 1], 0)
        assert calls == [2, 2, 2]
        calls.clear()
        GuidedSampler(bb, schedule(n=3, cfg=4.0), impls=IMPLS).sample_batch([0, 1], 0)
        assert calls == [4, 4, 4]
    finally:
        h.remove()


def test_cfg_channels():
    """cfg_channels=1 on a 2-channel model: channel 1 is the conditional eps, unguided."""
    model = tiny_dit(in_channels=2, out_channels=2)
    bb2 = backbone(model)
    x = torch.randn(1, 2, 8, 8)
    from dmgd.sampling.step import BatchState, GuidedStep

    sch = schedule(n=5, cfg_channels=1)
    sc = make_scheduler("ddpm", 5)
    runner = GuidedStep(transformer=model, null_class=10, learned_sigma=False, scheduler=sc,
                        sampler=sampler_spec("ddpm"), coefficients=coefficients_for(sc, "ddpm"), recipe_cfg=4.0,
                        cfg_channels=1, ipc=1, impls=IMPLS)
    batch = BatchState(classes=torch.tensor([2]), indices=(0,), generators=[make_generator(0, 2, 0)],
                       others=torch.tensor([3]))
    eps, var = runner._predict(x, 0, sch.steps[0].conditioning, get_term("refine").impl, batch, torch.rand(1, 16))
    with torch.no_grad():
        t = torch.full((2,), float(sc.timesteps[0]))
        out = model(torch.cat([x, x]), timestep=t, class_labels=torch.tensor([2, 10])).sample
    assert var is None
    assert torch.allclose(eps[:, 0], out[1:, 0] + 4 * (out[:1, 0] - out[1:, 0]), atol=1e-6)
    assert torch.allclose(eps[:, 1], out[:1, 1], atol=1e-6)
    assert bb2.latent_shape == (2, 8, 8)


def test_schedule_timestep_mismatch_is_refused(bb):
    sch = schedule(n=10, sampler="ddim")
    wrong = Schedule(steps=sch.steps, settings=sch.settings.replace(sampler="ddpm"), num_steps=10,
                     recipe_hash="x")
    with pytest.raises(ValueError, match="timestep"):
        GuidedSampler(bb, wrong, impls=IMPLS)


def test_on_step_callback(bb):
    seen = []
    GuidedSampler(bb, schedule(n=4), impls=IMPLS, on_step=seen.append).sample_batch([0], 0)
    assert seen == [0, 1, 2, 3]


# -- issue 15: null = blend, push factors, units = rms ------------------------------------
class RmsPull(PullPush):
    """PullPush with `units = rms` (the optional part of the EnergyTerm contract)."""

    def units(self, values):
        return values.get("units", "grad")


def _one_step(bb, step, x, classes=(1, 2), impls=None):
    from dmgd.guidance import TargetBatch
    from dmgd.sampling.step import BatchState, GuidedStep

    tgt = targets()
    clock = coefficients_for(make_scheduler("ddpm", 10), "ddpm")
    runner = GuidedStep(transformer=bb.transformer, null_class=10, learned_sigma=False,
                        scheduler=make_scheduler("ddpm", 10), sampler=sampler_spec("ddpm"), coefficients=clock,
                        recipe_cfg=4.0, cfg_channels=0, ipc=4, impls=impls or {**IMPLS, "rpull": RmsPull()})
    batch = BatchState(classes=torch.tensor(list(classes)), indices=(0,) * len(classes),
                       generators=[make_generator(0, c, 0) for c in classes],
                       others=torch.tensor([3] * len(classes)))
    target = TargetBatch(points=tgt[3].points[list(classes)], masses=tgt[3].masses[list(classes)])
    out = runner.step(step, x, batch, lambda x0: torch.zeros(len(classes), 0, F), lambda u, i: target)
    return out, batch, clock, runner


def test_rms_units_update_has_the_stated_rms(bb):
    """units = rms: each sample's update has root-mean-square rho * sigma_t (VP sampler, so
    the scheduler's sample is z_t), in the direction of -grad E."""
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(5))
    sch = schedule(n=10, energy=use("rpull", K=3, rho=0.3, units="rms"), window={3})
    grad_sch = schedule(n=10, energy=use("rpull", K=3, rho=0.3, units="grad"), window={3})
    plain_step = Step(index=3, i=6, tau=6.0, timestep=sch.steps[3].timestep, sigma=sch.steps[3].sigma,
                      conditioning=sch.steps[3].conditioning, energies=())
    guided, _, clock, _ = _one_step(bb, sch.steps[3], x)
    by_grad, _, _, _ = _one_step(bb, grad_sch.steps[3], x)
    plain, _, _, _ = _one_step(bb, plain_step, x)
    d = (guided - plain).flatten(1)
    rms = d.pow(2).mean(1).sqrt()
    torch.testing.assert_close(rms, torch.full((2,), 0.3 * clock.posterior_stds[3]), rtol=1e-4, atol=0)
    g = (by_grad - plain).flatten(1)  # -0.3 sigma_t grad E: the same direction
    cos = (d * g).sum(1) / (d.norm(dim=1) * g.norm(dim=1))
    assert (cos > 0.9999).all()
    assert (g.pow(2).mean(1).sqrt() - rms).abs().max() > 1e-6  # grad units are not normalised


def test_push_factor_multiplies_the_strength(bb):
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(6))
    pushed = schedule(n=10, energy=TermUse(term="pull", values=(("K", 3), ("rho", 0.1)), rule=0, progress=0.0,
                                            push=3.0), window={3})
    tripled = schedule(n=10, energy=use("pull", K=3, rho=0.3), window={3})
    a, _, _, _ = _one_step(bb, pushed.steps[3], x)
    b, _, _, _ = _one_step(bb, tripled.steps[3], x)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("null", ["keep", "same", "blend"])
def test_null_rows_and_draws(bb, null):
    """keep: the null label's row; same: the term's row again; blend: the term's embed_pair
    with u' drawn right after u (only then) from the sample's own generator."""
    from dmgd.guidance import NullRow

    sch = schedule(n=10, conditioning=lambda k: use("softlabel", bs=0.01, bn=0.06, lam=0.3, null=null))
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(7))
    _, batch, _, runner = _one_step(bb, sch.steps[2], x)
    # the generators drew u (and u' for blend) then the DDPM noise: replay that order
    D = runner.embed_dim
    for c, g in zip((1, 2), batch.generators):
        replay = make_generator(0, c, 0)
        u = torch.rand(D, generator=replay)
        if null == "blend":
            torch.rand(D, generator=replay)
        torch.randn(1, *SHAPE, generator=replay)
        assert torch.equal(replay.get_state(), g.get_state())
    term = get_term("softlabel").impl
    noise, null_noise = torch.rand(2, D), torch.rand(2, D)
    rows = runner._rows(sch.steps[2].conditioning, term, batch, noise, null_noise if null == "blend" else None, True)
    values = sch.steps[2].conditioning.as_dict()
    for emb, r in zip(runner.embedders, rows):
        table = emb.embedding_table.weight
        cond = term.embed(table, batch.classes, batch.others, noise, values)
        if null == "blend":
            c2, n2 = term.embed_pair(table, batch.classes, batch.others, noise, null_noise, values)
            assert torch.equal(r, torch.cat([c2, n2]))
            assert not torch.allclose(c2, cond)
        elif null == "same":
            assert torch.equal(r, torch.cat([cond, cond]))
        else:
            assert torch.equal(r, torch.cat([cond, table[10].expand_as(cond)]))
    assert term.null_row(values) is NullRow(null)
