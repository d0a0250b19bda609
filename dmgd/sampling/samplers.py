"""The samplers, one `SamplerSpec` each in `SAMPLERS`: a new sampler is one entry.

Every sampler is a diffusers scheduler built from the model's scheduler config (the betas),
and described by how it is configured, stepped, and where its per-step noise levels are
read. Importing this module imports neither torch nor diffusers (the language reads
`SAMPLER_NAMES`); schedulers are made in `dmgd.sampling.schedulers`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

from attrs import field, frozen

# (abar at each step's noise level, abar at the level the scheduler steps to), sampling order
AlphaBars = tuple[list[float], list[float]]


def dit_respaced_timesteps(num_train_timesteps: int, num_steps: int) -> list[int]:
    """DiT's `space_timesteps(T, str(N))` (one section), ascending.

    Mirrors DiT's respace.py: `frac_stride = (T-1)/(N-1)` (1 when N <= 1), a float
    accumulator starting at 0, each taken step `round(acc)` (Python's round).
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


# -- how the timesteps are set ----------------------------------------------------------


def evenly(scheduler: Any, num_steps: int, device: Any) -> None:
    """The scheduler's own spacing (its config's `timestep_spacing`)."""
    scheduler.set_timesteps(num_steps, device=device)


def dit_respaced(scheduler: Any, num_steps: int, device: Any) -> None:
    """DiT's respacing: the scheduler steps between the listed timesteps, with DiT's
    respaced betas `1 - abar_t / abar_prev`."""
    ts = dit_respaced_timesteps(scheduler.config.num_train_timesteps, num_steps)
    scheduler.set_timesteps(timesteps=ts[::-1], device=device)


# -- where the per-step noise levels are read -------------------------------------------


def abar_at_timesteps(scheduler: Any) -> AlphaBars:
    """abar of each listed timestep; each step goes to the next listed one (1.0 at the end)."""
    acp = scheduler.alphas_cumprod.double()
    abar = [float(acp[int(t)]) for t in scheduler.timesteps.tolist()]
    return abar, abar[1:] + [1.0]


def abar_ddim(scheduler: Any) -> AlphaBars:
    """DDIM steps t -> t - T/N (below 0: the scheduler's `final_alpha_cumprod`)."""
    acp = scheduler.alphas_cumprod.double()
    timesteps = [int(t) for t in scheduler.timesteps.tolist()]
    jump = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    final = float(scheduler.final_alpha_cumprod)
    return [float(acp[t]) for t in timesteps], [float(acp[t - jump]) if t - jump >= 0 else final for t in timesteps]


def abar_from_sigmas(scheduler: Any) -> AlphaBars:
    """abar = 1 / (1 + sigma^2) from the scheduler's sigmas (n + 1 entries, the last 0)."""
    n = len(scheduler.timesteps)
    sig = [float(s) for s in scheduler.sigmas.double().tolist()]
    return [1.0 / (1.0 + s * s) for s in sig[:n]], [1.0 / (1.0 + s * s) for s in sig[1:n + 1]]


@frozen
class SamplerSpec:
    """One sampler: a diffusers scheduler and how the guided step drives it.

    scheduler: the diffusers scheduler class's name; config: set on top of the model's
    scheduler config; set_timesteps(scheduler, N, device); step_kwargs: passed to every
    `scheduler.step`; alpha_bars(scheduler): each step's abar and the abar it steps to;
    learned_variance: the scheduler takes a learned-sigma model's variance channels
    (`variance_type` "learned_range", else "fixed_small"); variance_exploding: its sample
    is z_t / sqrt(abar) (the step converts with `StepCoefficients.input_scales` and
    `output_scales`); doc: one line of documentation.
    """

    name: str
    scheduler: str
    doc: str
    alpha_bars: Callable[[Any], AlphaBars]
    set_timesteps: Callable[[Any, int, Any], None] = evenly
    config: Mapping[str, Any] = field(factory=dict)
    step_kwargs: Mapping[str, Any] = field(factory=dict)
    learned_variance: bool = False
    variance_exploding: bool = False


SAMPLERS: dict[str, SamplerSpec] = {spec.name: spec for spec in (
    SamplerSpec("ddpm", "DDPMScheduler", "DDPM respaced as DiT's own create_diffusion(N)",
                alpha_bars=abar_at_timesteps, set_timesteps=dit_respaced, learned_variance=True),
    SamplerSpec("ddim", "DDIMScheduler", "DDIM, eta = 0", alpha_bars=abar_ddim, step_kwargs={"eta": 0.0}),
    SamplerSpec("dpm", "DPMSolverMultistepScheduler", "DPM-Solver++ (order 2)", alpha_bars=abar_from_sigmas,
                config={"algorithm_type": "dpmsolver++"}),
    SamplerSpec("euler", "EulerDiscreteScheduler", "Euler, no churn", alpha_bars=abar_from_sigmas,
                variance_exploding=True),
)}



class _Names(Sequence[str]):
    """A live read-only view of the sampler names (the language's `sampler` choices)."""

    def __getitem__(self, i):
        return tuple(SAMPLERS)[i]

    def __len__(self) -> int:
        return len(SAMPLERS)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(SAMPLERS))

    def __contains__(self, name: object) -> bool:
        return name in SAMPLERS

    def __repr__(self) -> str:
        return repr(tuple(SAMPLERS))


SAMPLER_NAMES: Sequence[str] = _Names()


def register_sampler(spec: SamplerSpec) -> SamplerSpec:
    """Add a sampler (one defined outside this table); ValueError if the name is taken."""
    if spec.name in SAMPLERS and SAMPLERS[spec.name] is not spec:
        raise ValueError(f"sampler {spec.name!r} is declared twice")
    SAMPLERS[spec.name] = spec
    return spec


def unregister_sampler(name: str) -> None:
    """Remove a sampler added with `register_sampler` (tests, examples)."""
    SAMPLERS.pop(name, None)


def sampler_spec(name: str) -> SamplerSpec:
    """The spec of sampler `name`; ValueError naming the known ones otherwise."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLER_NAMES)}")
    return SAMPLERS[name]
