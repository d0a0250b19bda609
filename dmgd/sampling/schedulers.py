"""The four samplers, realised with diffusers schedulers, and their per-step noise levels.

`make_scheduler(sampler, N, config)` returns a fresh diffusers scheduler with its N
timesteps set; `noise_levels(...)` gives the compiler each real step's timestep and
`sigma = sqrt((1 - abar) / abar)`; `clock_for(scheduler, sampler)` gives the sampler the
per-step coefficients it needs around the scheduler (abar, the posterior std, the scale
between the scheduler's sample and the variance-preserving latent z_t).

Samplers (the model's scheduler config supplies the betas; the default is DDPM's 1000
linear betas 1e-4..0.02, epsilon prediction, no clipping):

- `ddpm`: DDPM respaced exactly as DiT's own `create_diffusion("N")`, i.e.
  `space_timesteps(T, "N")`: one section, stride `(T-1)/(N-1)` accumulated in floating
  point and rounded with Python's `round` (0, 20, 41, 61, ..., 979, 999 for T=1000, N=50).
  It is run by `DDPMScheduler.set_timesteps(timesteps=[descending])`: diffusers then steps
  from `t` to the next listed timestep with `beta = 1 - abar_t / abar_prev`, which is
  DiT's respaced beta, and the same posterior mean and variance. `variance_type` is
  `learned_range` for models that predict their variance (DiT's LEARNED_RANGE between
  the respaced posterior variance and the respaced beta), else `fixed_small` (DiT's
  FIXED_SMALL). No noise is added at the final step (t = 0), as in DiT.
- `ddim`: `DDIMScheduler`, eta = 0, the config's timestep spacing (diffusers' default
  "leading": 980, 960, ..., 0 for N = 50).
- `dpm`: `DPMSolverMultistepScheduler` with `algorithm_type="dpmsolver++"` (order 2).
- `euler`: `EulerDiscreteScheduler` (no churn: deterministic). Its sample lives in the
  variance-exploding parametrisation `x = z_t / sqrt(abar)`; `SamplerClock.input_scale`
  and `output_scale` convert.

The posterior std `sigma_t` used by energies (update `-rho * sigma_t * grad E`) is
defined for every sampler the same way, as the DDPM posterior std between the step's
noise level abar_t and the noise level the scheduler steps to, abar_prev:

    sigma_t = sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))

with abar_prev = 1 after the last step (so sigma_t = 0 at the final step: an energy
there does nothing). For `ddpm` this is exactly DiT's respaced fixed-small posterior std.
(The reference code scales by the model's own std, `exp(0.5 * log_variance)`, which for a
learned-sigma DiT is the learned std; we use the fixed posterior std for every sampler so
that a recipe means the same under each.)
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Mapping

from attrs import frozen

from dmgd.language.schedule import NoiseLevels
from dmgd.language.settings import SAMPLERS

DEFAULT_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
}


def dit_respaced_timesteps(num_train_timesteps: int, num_steps: int) -> list[int]:
    """DiT's `space_timesteps(T, str(N))` (one section), ascending.

    Mirrors the rule of DiT's respace.py: `frac_stride = (T-1)/(N-1)` (1 when N <= 1), a
    float accumulator starting at 0, each taken step `round(acc)` (Python's round).
    """
    if num_steps < 1:
        raise ValueError(f"need at least one sampling step, got {num_steps}")
    if num_steps > num_train_timesteps:
        raise ValueError(f"cannot divide {num_train_timesteps} training steps into {num_steps} sampling steps")
    stride = 1.0 if num_steps <= 1 else (num_train_timesteps - 1) / (num_steps - 1)
    taken, acc = [], 0.0
    for _ in range(num_steps):
        taken.append(round(acc))
        acc += stride
    return sorted(set(taken))


def _scheduler_class(sampler: str):
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    classes = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler,
               "euler": EulerDiscreteScheduler}
    if sampler not in classes:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
    return classes[sampler]


def _config_for(cls, sampler: str, scheduler_config: Mapping[str, Any] | None, learned_sigma: bool) -> dict:
    base = dict(DEFAULT_SCHEDULER_CONFIG if scheduler_config is None else scheduler_config)
    base.setdefault("clip_sample", False)  # DiT samples with clip_denoised=False
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    config = {k: v for k, v in base.items() if k in accepted and not k.startswith("_")}
    if sampler == "ddpm":
        config["variance_type"] = "learned_range" if learned_sigma else "fixed_small"
    elif sampler == "dpm":
        config["algorithm_type"] = "dpmsolver++"
    return config


def make_scheduler(sampler: str, num_steps: int, scheduler_config: Mapping[str, Any] | None = None,
                   *, learned_sigma: bool = False, device: Any = None):
    """A fresh diffusers scheduler for `sampler`, with its `num_steps` timesteps set.

    `scheduler_config`: the model's scheduler config (a dict, e.g. `Backbone.scheduler_config`;
    keys the sampler's class does not take are ignored); None: DEFAULT_SCHEDULER_CONFIG.
    `learned_sigma`: the model predicts its variance (out_channels = 2 * in_channels);
    chooses DDPM's `learned_range` over `fixed_small`.
    Schedulers are stateful (DPM-Solver keeps its history): make one per sampled batch.
    """
    cls = _scheduler_class(sampler)
    scheduler = cls(**_config_for(cls, sampler, scheduler_config, learned_sigma))
    if sampler == "ddpm":
        ts = dit_respaced_timesteps(scheduler.config.num_train_timesteps, num_steps)
        scheduler.set_timesteps(timesteps=ts[::-1], device=device)
    else:
        scheduler.set_timesteps(num_steps, device=device)
    if len(scheduler.timesteps) != num_steps:
        raise ValueError(f"sampler {sampler!r} gave {len(scheduler.timesteps)} timesteps for {num_steps} steps")
    return scheduler


@frozen
class SamplerClock:
    """Per-step coefficients around a scheduler, in sampling order (index 0 the noisiest).

    `alpha_bars[k]`: abar at step k's noise level; `alpha_bars_next[k]`: at the level the
    scheduler steps to (1.0 after the last step); `posterior_stds[k]`: the DDPM posterior
    std between the two (see the module doc); `input_scales[k]`: z_t = input_scale * the
    scheduler's sample (the scheduler's `scale_model_input`); `output_scales[k]`: a change
    `d` of the variance-preserving z_{t-1} is a change `d * output_scales[k]` of the
    scheduler's next sample.
    """

    sampler: str
    timesteps: tuple[float, ...]
    alpha_bars: tuple[float, ...]
    alpha_bars_next: tuple[float, ...]
    posterior_stds: tuple[float, ...]
    input_scales: tuple[float, ...]
    output_scales: tuple[float, ...]

    @property
    def sigmas(self) -> tuple[float, ...]:
        return tuple(math.sqrt((1.0 - a) / a) for a in self.alpha_bars)


def _posterior_std(abar: float, abar_next: float) -> float:
    if abar_next <= abar or abar >= 1.0:
        return 0.0
    var = (1.0 - abar_next) / (1.0 - abar) * (1.0 - abar / abar_next)
    return math.sqrt(max(var, 0.0))


def clock_for(scheduler: Any, sampler: str) -> SamplerClock:
    """The per-step coefficients of a scheduler made by `make_scheduler`."""
    timesteps = [float(t) for t in scheduler.timesteps.tolist()]
    n = len(timesteps)
    acp = scheduler.alphas_cumprod.double()
    if sampler in ("dpm", "euler"):
        sig = [float(s) for s in scheduler.sigmas.double().tolist()]  # n + 1 entries, the last 0
        abar = [1.0 / (1.0 + s * s) for s in sig[:n]]
        abar_next = [1.0 / (1.0 + s * s) for s in sig[1:n + 1]]
    elif sampler == "ddpm":
        abar = [float(acp[int(t)]) for t in timesteps]
        abar_next = abar[1:] + [1.0]
    elif sampler == "ddim":
        abar = [float(acp[int(t)]) for t in timesteps]
        jump = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        final = float(scheduler.final_alpha_cumprod)
        abar_next = [float(acp[int(t) - jump]) if int(t) - jump >= 0 else final for t in timesteps]
    else:
        raise ValueError(f"unknown sampler {sampler!r}")
    if sampler == "euler":
        sig = [float(s) for s in scheduler.sigmas.double().tolist()]
        input_scales = [1.0 / math.sqrt(1.0 + s * s) for s in sig[:n]]
        output_scales = [math.sqrt(1.0 + s * s) for s in sig[1:n + 1]]
    else:
        input_scales = [1.0] * n
        output_scales = [1.0] * n
    return SamplerClock(
        sampler=sampler,
        timesteps=tuple(timesteps),
        alpha_bars=tuple(abar),
        alpha_bars_next=tuple(abar_next),
        posterior_stds=tuple(_posterior_std(a, b) for a, b in zip(abar, abar_next)),
        input_scales=tuple(input_scales),
        output_scales=tuple(output_scales),
    )


def noise_levels(sampler: str, num_steps: int, scheduler_config: Mapping[str, Any] | None = None) -> NoiseLevels:
    """Each real step's scheduler timestep and sigma = sqrt((1-abar)/abar), in sampling order.

    The timesteps are exactly those the sampler passes to the model at each step.
    """
    clock = clock_for(make_scheduler(sampler, num_steps, scheduler_config), sampler)
    return NoiseLevels(timesteps=clock.timesteps, sigmas=clock.sigmas)
