"""One guided sampling step for a batch: conditioning, CFG, energies, the scheduler update.

The step calls terms only through their contracts (`dmgd.guidance.ConditioningTerm`,
`EnergyTerm`) and samplers only through their `SamplerSpec`; docs/method.md gives the
maths. Per-sample random draws, each from the sample's own generator, in a fixed order:
at the start its initial noise then its `others` class (`sampler.py`); at every step first
u (D values, drawn whether or not the term uses it), then u' (D values, only at a step whose
conditioning term gives the null row its own blend, NullRow.BLEND), then the scheduler's
own noise.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from attrs import define, frozen

from dmgd.guidance import ConditioningTerm, EnergyTerm, GradientAt, Kind, NullRow, Units, get_term, units_of
from dmgd.language.schedule import Step, TermUse
from dmgd.sampling.backbones import label_embedders
from dmgd.sampling.samplers import SamplerSpec
from dmgd.sampling.schedulers import StepCoefficients


class GuidanceError(RuntimeError):
    """A non-finite value during a guided step.

    Fields: `step_index` (0 = first, noisiest step), `i` (the run's step, N-1 first),
    `tau` (recipe time), `timestep` (the scheduler's), `term` (the term involved, or None),
    `quantity` ("eps", "x0", "energy", "gradient" or "latent"), `samples`: the (class,
    index) pairs of the offending rows.
    """

    def __init__(self, *, step_index: int, i: int, tau: float, timestep: float, term: str | None,
                 quantity: str, samples: Sequence[tuple[int, int]] = ()):
        self.step_index = step_index
        self.i = i
        self.tau = tau
        self.timestep = timestep
        self.term = term
        self.quantity = quantity
        self.samples = tuple(samples)
        where = f"step {step_index} (t={i}, tau={tau:g}, timestep {timestep:g})"
        what = f"{quantity}" + (f" of term {term!r}" if term else "")
        rows = ", ".join(f"class {c} #{j}" for c, j in self.samples[:8])
        more = f" and {len(self.samples) - 8} more" if len(self.samples) > 8 else ""
        super().__init__(f"non-finite {what} at {where}" + (f" for {rows}{more}" if rows else ""))


@define
class BatchState:
    """The samples of one batch: their classes, sample indices, generators and other class."""

    classes: torch.Tensor  # [B] long, on the device
    indices: tuple[int, ...]  # each sample's index within its class
    generators: list[torch.Generator]  # one per sample (CPU)
    others: torch.Tensor  # [B] long: another class, drawn once per sample

    def pairs(self, mask: torch.Tensor | None = None) -> list[tuple[int, int]]:
        cls = self.classes.tolist()
        rows = range(len(cls)) if mask is None else [int(b) for b in torch.nonzero(mask).flatten().tolist()]
        return [(cls[b], self.indices[b]) for b in rows]


# memory_fn(x0 [B, F] detached) -> memory [B, M, F]
MemoryFn = Callable[[torch.Tensor], torch.Tensor]
# target_fn(term_use, energy term) -> the energy's TargetBatch for this batch
TargetFn = Callable[[TermUse, EnergyTerm], Any]


def resolve_impl(name: str, kind: Kind, impls: Mapping[str, Any] | None = None) -> Any:
    """A term's implementation: `impls[name]` if given (checked against `kind`'s contract),
    else the registry's."""
    if impls and name in impls:
        impl = impls[name]
        contract = ConditioningTerm if kind is Kind.CONDITIONING else EnergyTerm
        if not isinstance(impl, contract):
            raise TypeError(f"the implementation given for term {name!r} is not a {contract.__name__}")
        return impl
    spec = get_term(name)
    if spec is None:
        raise KeyError(f"unknown term {name!r}")
    if spec.kind is not kind:
        raise TypeError(f"term {name!r} is a {spec.kind.value} term, not a {kind.value} term")
    return spec.impl


@contextlib.contextmanager
def label_override(embedders: Sequence[Any], rows: Sequence[torch.Tensor]) -> Iterator[None]:
    """Make each embedder return `rows[j]` instead of its table lookup, inside the block."""
    handles = []

    def make_hook(replacement: torch.Tensor):
        def hook(module, inputs, output):
            if output.shape != replacement.shape:
                raise RuntimeError(f"label embedding override: expected {tuple(output.shape)}, "
                                   f"have {tuple(replacement.shape)}")
            return replacement.to(dtype=output.dtype)
        return hook

    try:
        for embedder, r in zip(embedders, rows, strict=True):
            handles.append(embedder.register_forward_hook(make_hook(r)))
        yield
    finally:
        for h in handles:
            h.remove()


def _bad_rows(x: torch.Tensor) -> torch.Tensor | None:
    """None when all finite, else a [B] bool mask of the rows with a NaN/Inf."""
    finite = torch.isfinite(x.detach()).reshape(x.shape[0], -1).all(dim=1)
    return None if bool(finite.all()) else ~finite


@frozen
class _Energy:
    """An energy term acting at this step."""

    use: TermUse
    term: EnergyTerm
    values: dict[str, Any]
    strength: float
    full: bool  # the gradient flows back through the model's eps
    on_x0: bool  # the gradient is taken on x0 as it stands
    rms: bool  # units = rms: the term's update of each sample is rescaled to RMS strength * sigma_t


class GuidedStep:
    """The guided step of one batch against one scheduler (the scheduler keeps state).

    `step(step, sample, batch, memory_fn, target_fn)` takes the scheduler's sample at
    `step.index` to the next one: the step's conditioning term gives the label rows and
    the CFG scale s (s == 1: one conditional pass, else B conditional then B null rows, CFG
    on the first `cfg_channels` channels, 0 = all); each energy with a nonzero strength
    (times its push factor) adds -strength * sigma_t * grad E (on z_t through Tweedie's x0,
    or on x0 itself) to the scheduler's new sample; an energy in units = rms adds
    -strength * sigma_t * g / rms(g) per sample instead, g its own gradient. Raises GuidanceError on any non-finite value.
    """

    def __init__(self, *, transformer: Any, null_class: int, learned_sigma: bool, scheduler: Any,
                 sampler: SamplerSpec, coefficients: StepCoefficients, recipe_cfg: float, cfg_channels: int,
                 ipc: int, impls: Mapping[str, Any] | None = None):
        self.transformer = transformer
        self.null_class = null_class
        self.learned_sigma = learned_sigma
        self.scheduler = scheduler
        self.sampler = sampler
        self.coefficients = coefficients
        self.recipe_cfg = float(recipe_cfg)
        self.cfg_channels = int(cfg_channels)
        self.ipc = ipc
        self.impls = impls
        self.embedders = label_embedders(transformer)
        self.embed_dim = self.embedders[0].embedding_table.weight.shape[1]
        self.model_dtype = next(transformer.parameters()).dtype

    # -- conditioning and CFG -------------------------------------------------------
    def _rows(self, use: TermUse, term: ConditioningTerm, batch: BatchState, noise: torch.Tensor,
              null_noise: torch.Tensor | None, cfg: bool) -> list[torch.Tensor]:
        """Each block's label rows: the term's rows, then (with CFG) the null rows: the null
        label's (KEEP), a copy of the term's (SAME) or the term's own (BLEND, embed_pair)."""
        values = use.as_dict()
        mode = NullRow(term.null_row(values)) if cfg else NullRow.KEEP
        out = []
        with torch.no_grad():
            for embedder in self.embedders:
                table = embedder.embedding_table.weight
                if table.shape[0] <= self.null_class:
                    raise ValueError(f"label table has {table.shape[0]} rows; the null class {self.null_class} "
                                     "needs one more")
                if mode is NullRow.BLEND:
                    cond, null = term.embed_pair(table[: self.null_class + 1], batch.classes, batch.others,
                                                 noise.to(table), null_noise.to(table), values)
                    out.append(torch.cat([cond, null], 0))
                    continue
                cond = term.embed(table, batch.classes, batch.others, noise.to(table), values)
                if not cfg:
                    out.append(cond)
                elif mode is NullRow.SAME:
                    out.append(torch.cat([cond, cond], 0))
                else:
                    out.append(torch.cat([cond, table[self.null_class].expand_as(cond)], 0))
        return out

    def _predict(self, z: torch.Tensor, index: int, use: TermUse, term: ConditioningTerm, batch: BatchState,
                 noise: torch.Tensor, null_noise: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(guided eps [B, C, ...], the conditional variance channels or None)."""
        scale = float(term.guidance_scale(use.as_dict(), self.recipe_cfg))
        cfg = scale != 1.0
        B, C = z.shape[:2]
        rows = self._rows(use, term, batch, noise, null_noise, cfg)
        x = torch.cat([z, z], 0) if cfg else z
        labels = torch.cat([batch.classes, torch.full_like(batch.classes, self.null_class)]) if cfg else batch.classes
        t = self.scheduler.timesteps[index]
        t = (t[None] if t.dim() == 0 else t).to(z.device).expand(x.shape[0])
        with label_override(self.embedders, rows):
            out = self.transformer(x.to(self.model_dtype), timestep=t, class_labels=labels).sample.float()
        var = out[:B, C:] if out.shape[1] > C else None
        if not cfg:
            return out[:, :C], var
        eps_c, eps_u = out[:B, :C], out[B:, :C]
        n = C if self.cfg_channels <= 0 or self.cfg_channels >= C else self.cfg_channels
        guided = eps_u[:, :n] + scale * (eps_c[:, :n] - eps_u[:, :n])
        eps = guided if n == C else torch.cat([guided, eps_c[:, n:]], 1)
        return eps, var

    # -- energies -------------------------------------------------------------------
    def _energies(self, step: Step) -> list[_Energy]:
        """The step's energies with a nonzero strength (none where sigma_t = 0)."""
        if self.coefficients.posterior_stds[step.index] <= 0:
            return []
        out = []
        for use in step.energies:
            term = resolve_impl(use.term, Kind.ENERGY, self.impls)
            values = use.as_dict()
            strength = float(term.strength(values))
            if use.push != 1.0:  # push = "total": the compiler's factor for this run
                strength *= float(use.push)
            if strength != 0.0:
                out.append(_Energy(use, term, values, strength, bool(term.full_backward(values)),
                                   term.gradient_at(values) is GradientAt.X0,
                                   units_of(term, values) is Units.RMS))
        return out

    def _energy_delta(self, index: int, z: torch.Tensor, eps: torch.Tensor, energies: list[_Energy],
                      memory_fn: MemoryFn, target_fn: TargetFn, fail: Callable[..., GuidanceError]) -> torch.Tensor:
        """-sigma_t * grad_{z_t} sum_terms strength * E (x0-gradient terms scaled by sqrt(abar)
        so that their z_t-gradient is their x0-gradient)."""
        abar = self.coefficients.alpha_bars[index]
        a, b = math.sqrt(abar), math.sqrt(1.0 - abar)
        full = any(e.full for e in energies)
        with torch.enable_grad():
            x0_fixed = ((z - b * eps.detach()) / a).flatten(1)
            x0_full = ((z - b * eps) / a).flatten(1) if full else None
            bad = _bad_rows(x0_fixed)
            if bad is not None:
                raise fail("x0", energies[0].use.term, bad)
            memory = memory_fn(x0_fixed.detach())
            total = None
            parts = []
            rms_parts = []
            for e in energies:
                x0 = x0_full if e.full else x0_fixed
                value = e.term.energy(x0, memory, target_fn(e.use, e.term), e.values)
                bad = _bad_rows(value.reshape(value.shape[0], -1))
                if bad is not None:
                    raise fail("energy", e.use.term, bad)
                scale = a if e.on_x0 else 1.0
                if e.rms:  # its own gradient, normalised per sample below
                    rms_parts.append((e, value.sum()))
                    continue
                parts.append((e.use, e.strength * scale * value.sum()))
                total = parts[-1][1] if total is None else total + parts[-1][1]
            grad = None
            if total is not None:
                (grad,) = torch.autograd.grad(total, z, retain_graph=bool(rms_parts) or len(parts) > 1,
                                              allow_unused=True)
                if grad is None:
                    grad = torch.zeros_like(z)
                bad = _bad_rows(grad)
                if bad is not None:
                    raise fail("gradient", _culprit(parts, z), bad)
            for n, (e, value) in enumerate(rms_parts):
                (g,) = torch.autograd.grad(value, z, retain_graph=n + 1 < len(rms_parts), allow_unused=True)
                if g is None:
                    continue
                bad = _bad_rows(g)
                if bad is not None:
                    raise fail("gradient", e.use.term, bad)
                g = _unit_rms(g) * e.strength
                grad = g if grad is None else grad + g
        if grad is None:
            grad = torch.zeros_like(z)
        return (-self.coefficients.posterior_stds[index] * grad).detach()

    # -- the step -------------------------------------------------------------------
    def step(self, step: Step, sample: torch.Tensor, batch: BatchState, memory_fn: MemoryFn,
             target_fn: TargetFn) -> torch.Tensor:
        """The scheduler's next sample from `sample` at `step` (see the class doc)."""
        index = step.index
        timestep = self.scheduler.timesteps[index]

        def fail(quantity: str, term: str | None, mask: torch.Tensor) -> GuidanceError:
            return GuidanceError(step_index=index, i=step.i, tau=step.tau,
                                 timestep=float(self.coefficients.timesteps[index]), term=term,
                                 quantity=quantity, samples=batch.pairs(mask))

        cond = step.conditioning
        cond_term = resolve_impl(cond.term, Kind.CONDITIONING, self.impls)
        # fixed per-sample draw order at every step: u first, then u' (null=blend only)
        blend = NullRow(cond_term.null_row(cond.as_dict())) is NullRow.BLEND
        noise = torch.stack([torch.rand(self.embed_dim, generator=g) for g in batch.generators]).to(sample.device)
        null_noise = None
        if blend:
            null_noise = torch.stack([torch.rand(self.embed_dim, generator=g)
                                      for g in batch.generators]).to(sample.device)
        energies = self._energies(step)
        z = self.scheduler.scale_model_input(sample, timestep).detach()
        if energies:
            z = z.requires_grad_(True)
        with torch.set_grad_enabled(any(e.full for e in energies)):
            eps, var = self._predict(z, index, cond, cond_term, batch, noise, null_noise)
        bad = _bad_rows(eps)
        if bad is not None:
            raise fail("eps", cond.term, bad)
        delta = self._energy_delta(index, z, eps, energies, memory_fn, target_fn, fail) if energies else None

        model_output = eps.detach()
        if var is not None and self.sampler.learned_variance and self.learned_sigma:
            model_output = torch.cat([model_output, var.detach()], 1)
        with torch.no_grad():
            prev = self.scheduler.step(model_output, timestep, sample, **self.sampler.step_kwargs,
                                       generator=batch.generators).prev_sample
            if delta is not None:
                prev = prev + delta * self.coefficients.output_scales[index]
        bad = _bad_rows(prev)
        if bad is not None:
            raise fail("latent", energies[0].use.term if energies else cond.term, bad)
        return prev


def _unit_rms(g: torch.Tensor) -> torch.Tensor:
    """Each sample's gradient [B, ...] scaled to root-mean-square 1 over its values (a zero
    gradient stays zero): units = rms, where rho is a step in posterior stds."""
    flat = g.detach().reshape(g.shape[0], -1)
    rms = flat.pow(2).mean(dim=1).sqrt()
    safe = torch.where(rms > 0, rms, torch.ones_like(rms))
    return g / safe.reshape((-1,) + (1,) * (g.dim() - 1))


def _culprit(parts: list[tuple[TermUse, torch.Tensor]], z: torch.Tensor) -> str:
    """The first term whose own gradient is non-finite (only computed on failure)."""
    if len(parts) == 1:
        return parts[0][0].term
    for use, value in parts:
        try:
            (g,) = torch.autograd.grad(value, z, retain_graph=True, allow_unused=True)
        except RuntimeError:
            return use.term
        if g is not None and not bool(torch.isfinite(g).all()):
            return use.term
    return "+".join(use.term for use, _ in parts)
