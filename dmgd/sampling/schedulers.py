"""Schedulers for the samplers of `dmgd.sampling.samplers`, and their per-step coefficients.

`make_scheduler(sampler, N, config)` returns a fresh diffusers scheduler with its N
timesteps set; `noise_levels(...)` gives the compiler each step's timestep and
`sigma = sqrt((1 - abar) / abar)`; `coefficients_for(scheduler, sampler)` gives the guided
step the `StepCoefficients` it needs around the scheduler. The model's scheduler config
supplies the betas (default: DDPM's 1000 linear betas 1e-4..0.02, epsilon prediction, no
clipping). The energies' sigma_t is the same for every sampler (docs/method.md):

    sigma_t = sqrt((1 - abar_next) / (1 - abar_t) * (1 - abar_t / abar_next)),

abar_next the noise level the scheduler steps to (1 after the last step, so sigma_t = 0
there); for `ddpm` it is DiT's respaced fixed-small posterior std.
"""

from __future__ import annotations

import importlib
import inspect
import math
from typing import Any, Mapping

from attrs import frozen

from dmgd.language.schedule import NoiseLevels
from dmgd.sampling.samplers import SamplerSpec, dit_respaced_timesteps, sampler_spec

__all__ = ["DEFAULT_SCHEDULER_CONFIG", "StepCoefficients", "coefficients_for", "dit_respaced_timesteps",
           "make_scheduler", "noise_levels"]

DEFAULT_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
}


def _config_for(cls: type, spec: SamplerSpec, scheduler_config: Mapping[str, Any] | None,
                learned_sigma: bool) -> dict[str, Any]:
    base = dict(DEFAULT_SCHEDULER_CONFIG if scheduler_config is None else scheduler_config)
    base.setdefault("clip_sample", False)  # DiT samples with clip_denoised=False
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    config = {k: v for k, v in base.items() if k in accepted and not k.startswith("_")}
    config.update(spec.config)
    if spec.learned_variance:
        config["variance_type"] = "learned_range" if learned_sigma else "fixed_small"
    return config


def make_scheduler(sampler: str, num_steps: int, scheduler_config: Mapping[str, Any] | None = None,
                   *, learned_sigma: bool = False, device: Any = None):
    """A fresh diffusers scheduler for `sampler`, with its `num_steps` timesteps set.

    `scheduler_config`: the model's (keys the class does not take are ignored); None:
    DEFAULT_SCHEDULER_CONFIG. `learned_sigma`: the model predicts its variance
    (out_channels = 2 * in_channels). Schedulers keep state (DPM-Solver's history): make
    one per sampled batch.
    """
    spec = sampler_spec(sampler)
    cls = getattr(importlib.import_module("diffusers"), spec.scheduler)
    scheduler = cls(**_config_for(cls, spec, scheduler_config, learned_sigma))
    spec.set_timesteps(scheduler, num_steps, device)
    if len(scheduler.timesteps) != num_steps:
        raise ValueError(f"sampler {sampler!r} gave {len(scheduler.timesteps)} timesteps for {num_steps} steps")
    return scheduler


@frozen
class StepCoefficients:
    """Per-step numbers around a scheduler, in sampling order (index 0 the noisiest).

    `alpha_bars[index]`: abar at the step's noise level; `alpha_bars_next[index]`: at the
    level the scheduler steps to (1.0 after the last step); `posterior_stds[index]`: the
    energies' sigma_t (module doc); `input_scales[index]`: z_t = input_scale * the
    scheduler's sample; `output_scales[index]`: a change d of the variance-preserving
    z_{t-1} is a change d * output_scale of the scheduler's next sample.
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


def _scales(scheduler: Any, spec: SamplerSpec, n: int) -> tuple[list[float], list[float]]:
    """(input_scales, output_scales): 1 for a variance-preserving sample; for a
    variance-exploding one x = z_t * sqrt(1 + sigma^2)."""
    if not spec.variance_exploding:
        return [1.0] * n, [1.0] * n
    sig = [float(s) for s in scheduler.sigmas.double().tolist()]
    return [1.0 / math.sqrt(1.0 + s * s) for s in sig[:n]], [math.sqrt(1.0 + s * s) for s in sig[1:n + 1]]


def coefficients_for(scheduler: Any, sampler: str) -> StepCoefficients:
    """The per-step coefficients of a scheduler made by `make_scheduler(sampler, ...)`."""
    spec = sampler_spec(sampler)
    timesteps = [float(t) for t in scheduler.timesteps.tolist()]
    abar, abar_next = spec.alpha_bars(scheduler)
    input_scales, output_scales = _scales(scheduler, spec, len(timesteps))
    return StepCoefficients(
        sampler=sampler,
        timesteps=tuple(timesteps),
        alpha_bars=tuple(abar),
        alpha_bars_next=tuple(abar_next),
        posterior_stds=tuple(_posterior_std(a, b) for a, b in zip(abar, abar_next)),
        input_scales=tuple(input_scales),
        output_scales=tuple(output_scales),
    )


def noise_levels(sampler: str, num_steps: int, scheduler_config: Mapping[str, Any] | None = None) -> NoiseLevels:
    """Each step's scheduler timestep (exactly what the model receives),
    sigma = sqrt((1-abar)/abar) and the energies' posterior std sigma_t, in sampling order."""
    coefficients = coefficients_for(make_scheduler(sampler, num_steps, scheduler_config), sampler)
    return NoiseLevels(timesteps=coefficients.timesteps, sigmas=coefficients.sigmas,
                       posterior_stds=coefficients.posterior_stds)
