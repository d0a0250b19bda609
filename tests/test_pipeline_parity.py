"""The sampler with the baseline recipe (hard label, CFG 4 on every step) reproduces
diffusers' own DiTPipeline: a random-weight latent DiT with 1000 classes (DiTPipeline
hard-codes the null class 1000) and a tiny AutoencoderKL, saved in diffusers' layout and
loaded back.

DiTPipeline's conventions, which the sampler's defaults match: CFG on ALL latent channels
(cfg_channels = 0), the conditional rows first, the null label 1000; a learned-sigma
model's variance channels are dropped before the scheduler step; the initial noise is
`randn(B, C, H, W, generator)` (so with B = 1 and the sample's own generator it is the
sampler's draw); the scheduler's own noise (DDPM) comes from the global RNG, which the
DDPM test replays. DiTPipeline does not multiply the initial noise by the scheduler's
`init_noise_sigma`, so it is not comparable under Euler (sigma_max ~ 157): not tested.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import dmgd.api
from dmgd.sampling.sampler import GuidedSampler, make_generator
from dmgd.sampling.schedulers import DEFAULT_SCHEDULER_CONFIG, dit_respaced_timesteps, noise_levels

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
N = 12
SEED = 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention
    yield
    torch.set_num_threads(n)


def _save_model(root: Path, learned_sigma: bool) -> Path:
    from diffusers import AutoencoderKL, DDPMScheduler, DiTTransformer2DModel

    torch.manual_seed(0)
    dit = DiTTransformer2DModel(
        sample_size=8, in_channels=4, out_channels=8 if learned_sigma else 4, patch_size=2, num_layers=2,
        num_attention_heads=2, attention_head_dim=8, num_embeds_ada_norm=1000,
    )
    with torch.no_grad():  # keep the random model's samples O(10), not O(1000)
        dit.proj_out_2.weight.mul_(0.2)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4, sample_size=16,
    )
    dit.save_pretrained(root / "transformer")
    vae.save_pretrained(root / "vae")
    DDPMScheduler(**DEFAULT_SCHEDULER_CONFIG).save_config(root / "scheduler")
    return root


def _load(root: Path):
    """The saved model, loaded back with diffusers (what load_backbone gives the sampler)."""
    from diffusers import AutoencoderKL, DiTTransformer2DModel

    dit = DiTTransformer2DModel.from_pretrained(root / "transformer", low_cpu_mem_usage=False).eval().requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(root / "vae", low_cpu_mem_usage=False).eval().requires_grad_(False)
    import json

    config = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    c = dit.config.in_channels
    return SimpleNamespace(
        transformer=dit, vae=vae, vae_scale=float(vae.config.scaling_factor), scheduler_config=config,
        num_classes=1000, null_class=1000, latent_shape=(c, 8, 8),
        learned_sigma=dit.config.out_channels == 2 * c,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("dit")
    return {ls: _load(_save_model(root / ("learned" if ls else "fixed"), ls)) for ls in (False, True)}


def _schedule(sampler: str, config: dict):
    return dmgd.api.compile(RECIPES / "baseline.dmgd", steps=N, sampler=sampler,
                            noise=noise_levels(sampler, N, config))


def _pipeline(bb, sampler: str):
    from diffusers import (DDIMScheduler, DDPMScheduler, DiTPipeline, DPMSolverMultistepScheduler)

    config = {k: v for k, v in bb.scheduler_config.items() if not k.startswith("_")}
    if sampler == "ddpm":
        scheduler = DDPMScheduler.from_config(config, variance_type="fixed_small")
        respaced = dit_respaced_timesteps(1000, N)[::-1]
        original = scheduler.set_timesteps
        scheduler.set_timesteps = lambda n, device=None: original(timesteps=respaced, device=device)
    elif sampler == "ddim":
        scheduler = DDIMScheduler.from_config(config)
    else:
        scheduler = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
    pipe = DiTPipeline(transformer=bb.transformer, vae=bb.vae, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextlib.contextmanager
def _replayed_ddpm_noise():
    """The sampler's per-sample DDPM noise (drawn with a list of generators) is recorded and
    replayed to DiTPipeline's scheduler step (which draws from the global RNG)."""
    import diffusers.schedulers.scheduling_ddpm as ddpm

    real = ddpm.randn_tensor
    recorded: list[torch.Tensor] = []
    replay: list[torch.Tensor] = []

    def fake(shape, generator=None, **kw):
        if isinstance(generator, list):
            out = real(shape, generator=generator, **kw)
            recorded.append(out.clone())
            return out
        noise = replay.pop(0)
        return torch.cat([noise] * (shape[0] // noise.shape[0])).to(kw.get("dtype") or noise.dtype)

    ddpm.randn_tensor = fake
    try:
        yield recorded, replay
    finally:
        ddpm.randn_tensor = real


def _compare(bb, sampler: str, cls: int):
    schedule = _schedule(sampler, bb.scheduler_config)
    assert schedule.settings.cfg == 4.0 and schedule.settings.cfg_channels == 0
    assert all(s.conditioning.term == "refine" and not s.energies for s in schedule.steps)
    sampler_ = GuidedSampler(bb, schedule)
    with _replayed_ddpm_noise() as (recorded, replay):
        mine = sampler_.sample_batch([cls], 0, seed=SEED)
        images = sampler_.decode(mine)
        replay.extend(recorded)
        pipe = _pipeline(bb, sampler)
        seen = {}
        decode = pipe.vae.decode

        def spy(z, *a, **kw):
            seen["latents"] = z * pipe.vae.config.scaling_factor
            return decode(z, *a, **kw)

        pipe.vae.decode = spy
        try:
            theirs = pipe(class_labels=[cls], guidance_scale=4.0, generator=make_generator(SEED, cls, 0),
                          num_inference_steps=N, output_type="pt").images
        finally:
            del pipe.vae.decode
        if sampler == "ddpm":
            assert len(recorded) == N - 1 and not replay  # noise at every step but the last (t = 0)
    lat = (mine - seen["latents"]).abs().max().item()
    img = ((images + 1) / 2 - theirs).abs().max().item()
    return lat, img, mine.abs().max().item()


@pytest.mark.parametrize("sampler,learned", [("ddpm", False), ("ddim", True), ("dpm", True), ("ddim", False)])
def test_baseline_matches_dit_pipeline(models, sampler, learned):
    lat, img, scale = _compare(models[learned], sampler, cls=207)
    assert scale > 1.0  # a real sample, not zeros
    assert lat < 1e-4, lat
    assert img < 1e-4, img


def test_parity_through_load_backbone(models, tmp_path):
    """The same, with the model folder loaded by the project's own loader."""
    backbones = pytest.importorskip("dmgd.sampling.backbones")
    root = _save_model(tmp_path / "m", learned_sigma=True)
    bb = backbones.load_backbone(str(root), "cpu")
    assert bb.null_class == 1000 and bb.learned_sigma
    lat, img, _ = _compare(bb, "ddim", cls=5)
    assert lat < 1e-4 and img < 1e-4


def test_dits_own_sampler_learned_sigma_cfg3(models):
    """DiT-XL/2's own sampling convention, written out from DiT's formulas: forward_with_cfg
    guiding the first 3 of 4 latent channels (channel 3 and the learned variance from each
    half, the conditional half kept), DDPM respaced with LEARNED_RANGE variance. The sampler
    with cfg_channels = 3 on a learned-sigma model reproduces it (same per-sample draws:
    initial noise and the `others` class, then per step u and, except at t = 0, the step
    noise)."""
    import numpy as np

    bb = models[True]
    schedule = dmgd.api.compile(RECIPES / "baseline.dmgd", steps=N, overrides={"cfg_channels": 3},
                                noise=noise_levels("ddpm", N, bb.scheduler_config))
    cls = 207
    mine = GuidedSampler(bb, schedule).sample_batch([cls], 0, seed=SEED).double()

    use = dit_respaced_timesteps(1000, N)
    acp_full = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
    acp = acp_full[use]
    acp_prev = np.append(1.0, acp[:-1])
    betas = 1.0 - acp / acp_prev
    post_var = betas * (1.0 - acp_prev) / (1.0 - acp)
    post_logvar = np.log(np.append(post_var[1], post_var[1:]))
    coef1 = betas * np.sqrt(acp_prev) / (1.0 - acp)
    coef2 = (1.0 - acp_prev) * np.sqrt(1.0 - betas) / (1.0 - acp)

    g = make_generator(SEED, cls, 0)
    D = bb.transformer.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight.shape[1]
    x = torch.randn(1, 4, 8, 8, generator=g).double()
    torch.randint(999, (1,), generator=g)  # the sample's `others` class (unused by refine)
    for idx in reversed(range(N)):
        torch.rand(D, generator=g)  # the step's u (unused by refine)
        with torch.no_grad():
            out = bb.transformer(torch.cat([x, x]).float(), timestep=torch.tensor([use[idx]] * 2),
                                 class_labels=torch.tensor([cls, 1000])).sample.double()
        eps3, rest = out[:, :3], out[:, 3:]
        half = eps3[1:] + 4.0 * (eps3[:1] - eps3[1:])
        model_out = torch.cat([half, rest[:1]], 1)  # the conditional half of forward_with_cfg
        eps, v = model_out[:, :4], model_out[:, 4:]
        x0 = np.sqrt(1 / acp[idx]) * x - np.sqrt(1 / acp[idx] - 1) * eps
        mean = coef1[idx] * x0 + coef2[idx] * x
        if idx > 0:
            frac = (v + 1) / 2
            logvar = frac * np.log(betas[idx]) + (1 - frac) * post_logvar[idx]
            x = mean + torch.exp(0.5 * logvar) * torch.randn(1, 4, 8, 8, generator=g).double()
        else:
            x = mean
    assert x.abs().max() > 1.0
    assert (mine - x).abs().max() < 1e-4 * max(1.0, x.abs().max().item())
