"""One guided sampling step for a batch: conditioning, CFG, energies, the scheduler update.

For a batch of B samples (classes `y`), at step k of a compiled `Schedule`:

1. Conditioning. The step's conditioning term (a `ConditioningImpl`) gives the CFG scale
   s = `guidance_scale(values, recipe cfg)`. With s != 1 the model sees a [2B] batch, the
   B conditional rows then B null rows; with s == 1 one pass of the B conditional rows.
   diffusers' DiT keeps one label table per block
   (`transformer_blocks[j].norm1.emb.class_embedder.embedding_table`); for every block the
   conditional rows are `embed(table_j, y, others, u, values)` (u ~ U[0,1)^D, one row per
   sample, the same u for every block) and the null rows are `table_j[null]`, or the same
   rows as the conditional half when `replaces_null(values)`. They are substituted for the
   block's label embedding with a forward hook for this one forward pass, removed
   afterwards even on error. (Block 0's embedder is also called for the final layer's
   modulation; the hook covers that call too.)
2. CFG: on the first `cfg_channels` latent channels (0 = all),
   `eps = eps_u + s * (eps_c - eps_u)`; the remaining latent channels, and a learned-sigma
   model's variance channels, come from the conditional half. cfg_channels = 0 is what
   diffusers' `DiTPipeline` does (it guides all latent channels, and then drops the
   variance channels entirely); cfg_channels = 3 is DiT-XL/2's own `forward_with_cfg`
   (channels 0..2 guided, channel 3 and the variance from each half, of which `sample.py`
   keeps the conditional half).
3. Energies. Tweedie's estimate `x0 = (z_t - sqrt(1-abar) eps) / sqrt(abar)` with eps the
   step's guided noise prediction (the CFG result, i.e. the conditional half of the
   reference's `forward_with_cfg` output, which the reference passes to its loss; with s=1
   simply the conditional eps). z_t is the variance-preserving latent (the scheduler's
   `scale_model_input`). `grad=tweedie`: eps is held fixed, the gradient reaches z_t
   through Tweedie's explicit term only (no backward pass through the DiT); `grad=full`:
   the step's model pass keeps its graph and the gradient flows through eps as well.
   Latents are flattened to [B, F]; `memory` [B, M, F]; `target` a
   `dmgd.guidance.TargetBatch` (rows of each sample's class). The update is
   `-sum_terms rho_term * sigma_t * grad_{z_t} E_term`, sigma_t the step's posterior std
   (`SamplerClock.posterior_stds`), added to the scheduler's `prev_sample` (the same as
   adding it to the posterior mean, since the step noise is additive).
4. The scheduler step, with one `torch.Generator` per sample (diffusers' `randn_tensor`
   draws row b from generator b), so that a sample's result does not depend on its batch.

Per-sample random draws, each from the sample's own generator, in this fixed order:
at the start its initial noise then its `others` class (see `sampler.py`); at every step
first u (D values, drawn whether or not the step's term uses it) then the scheduler's own
noise (DDPM only; DDIM eta=0, DPM-Solver++ and Euler without churn draw none).

Any NaN/Inf in eps, x0, an energy or its gradient, or the new latent raises
`GuidanceError` naming the step and the term.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from attrs import define

from dmgd.language.schedule import Step, TermUse
from dmgd.sampling.schedulers import SamplerClock


class GuidanceError(RuntimeError):
    """A non-finite value during a guided step.

    Fields: `step_index` (0 = first, noisiest step), `i` (the run's clock, N-1 first),
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
# target_fn(term_use, impl) -> the energy's target for this batch
TargetFn = Callable[[TermUse, Any], Any]


def resolve_impl(name: str, impls: Mapping[str, Any] | None = None) -> Any:
    """A term's implementation: `impls[name]` if given, else the registry's."""
    if impls and name in impls:
        return impls[name]
    from dmgd.terms.registry import get_term

    spec = get_term(name)
    if spec is None:
        raise KeyError(f"unknown term {name!r}")
    if spec.impl is None:
        raise NotImplementedError(f"term {name!r} has no implementation registered")
    return spec.impl


def label_embedders(transformer: Any) -> list[Any]:
    """Every block's `LabelEmbedding`, in block order."""
    found = []
    for block in transformer.transformer_blocks:
        emb = getattr(getattr(block, "norm1", None), "emb", None)
        embedder = getattr(emb, "class_embedder", None)
        if embedder is not None:
            found.append(embedder)
    if not found:
        raise TypeError("the transformer has no per-block class label embeddings (not a class-conditional DiT?)")
    return found


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


class StepRunner:
    """Runs guided steps for one batch against one scheduler (the scheduler keeps state)."""

    def __init__(self, *, transformer: Any, null_class: int, learned_sigma: bool, scheduler: Any,
                 clock: SamplerClock, recipe_cfg: float, cfg_channels: int, ipc: int,
                 impls: Mapping[str, Any] | None = None):
        self.transformer = transformer
        self.null_class = null_class
        self.learned_sigma = learned_sigma
        self.scheduler = scheduler
        self.clock = clock
        self.recipe_cfg = float(recipe_cfg)
        self.cfg_channels = int(cfg_channels)
        self.ipc = ipc
        self.impls = impls
        self.embedders = label_embedders(transformer)
        self.embed_dim = self.embedders[0].embedding_table.weight.shape[1]
        self.model_dtype = next(transformer.parameters()).dtype

    # -- conditioning ---------------------------------------------------------------
    def _rows(self, use: TermUse, impl: Any, batch: BatchState, noise: torch.Tensor, cfg: bool) -> list[torch.Tensor]:
        values = use.as_dict()
        both = cfg and bool(impl.replaces_null(values))
        out = []
        with torch.no_grad():
            for embedder in self.embedders:
                table = embedder.embedding_table.weight
                if table.shape[0] <= self.null_class:
                    raise ValueError(f"label table has {table.shape[0]} rows; the null class {self.null_class} "
                                     "needs one more")
                cond = impl.embed(table, batch.classes, batch.others, noise.to(table), values)
                if not cfg:
                    out.append(cond)
                elif both:
                    out.append(torch.cat([cond, cond], 0))
                else:
                    out.append(torch.cat([cond, table[self.null_class].expand_as(cond)], 0))
        return out

    def _predict(self, z: torch.Tensor, k: int, use: TermUse, impl: Any, batch: BatchState,
                 noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(guided eps [B, C, ...], conditional variance channels or None)."""
        values = use.as_dict()
        scale = float(impl.guidance_scale(values, self.recipe_cfg))
        cfg = scale != 1.0
        B, C = z.shape[:2]
        rows = self._rows(use, impl, batch, noise, cfg)
        x = torch.cat([z, z], 0) if cfg else z
        labels = torch.cat([batch.classes, torch.full_like(batch.classes, self.null_class)]) if cfg else batch.classes
        t = self.scheduler.timesteps[k]
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

    # -- the step -------------------------------------------------------------------
    def step(self, k: int, step: Step, sample: torch.Tensor, batch: BatchState,
             memory_fn: MemoryFn, target_fn: TargetFn) -> torch.Tensor:
        clock = self.clock
        ts = float(clock.timesteps[k])

        def fail(quantity: str, term: str | None, mask: torch.Tensor) -> GuidanceError:
            return GuidanceError(step_index=step.index, i=step.i, tau=step.tau, timestep=ts, term=term,
                                 quantity=quantity, samples=batch.pairs(mask))

        # fixed per-sample draw order at every step: u first
        noise = torch.stack([torch.rand(self.embed_dim, generator=g) for g in batch.generators]).to(sample.device)

        cond = step.conditioning
        cond_impl = resolve_impl(cond.term, self.impls)
        post_std = clock.posterior_stds[k]
        energies = []
        if post_std > 0:
            for use in step.energies:
                values = use.as_dict()
                rho = float(values.get("rho", 0.0))
                if rho != 0.0:
                    energies.append((use, resolve_impl(use.term, self.impls), values, rho))
        full = any(values.get("grad") == "full" for _, _, values, _ in energies)

        z = self.scheduler.scale_model_input(sample, self.scheduler.timesteps[k]).detach()
        if energies:
            z = z.requires_grad_(True)
        with torch.set_grad_enabled(full):
            eps, var = self._predict(z, k, cond, cond_impl, batch, noise)
        bad = _bad_rows(eps)
        if bad is not None:
            raise fail("eps", cond.term, bad)

        delta = None
        if energies:
            abar = clock.alpha_bars[k]
            a, b = math.sqrt(abar), math.sqrt(1.0 - abar)
            with torch.enable_grad():
                x0_fixed = ((z - b * eps.detach()) / a).flatten(1)
                x0_full = ((z - b * eps) / a).flatten(1) if full else None
                bad = _bad_rows(x0_fixed)
                if bad is not None:
                    raise fail("x0", energies[0][0].term, bad)
                memory = memory_fn(x0_fixed.detach())
                total = None
                parts = []
                for use, impl, values, rho in energies:
                    x0 = x0_full if values.get("grad") == "full" else x0_fixed
                    e = impl.energy(x0, memory, target_fn(use, impl), values)
                    bad = _bad_rows(e.reshape(e.shape[0], -1))
                    if bad is not None:
                        raise fail("energy", use.term, bad)
                    # An energy defined on x0 (mode guidance: -rho*sigma_t*(x0 - m)) is scaled by
                    # sqrt(abar) so that its z_t-gradient is its x0-gradient, not 1/sqrt(abar) times it.
                    scale = a if getattr(impl, "pulls_x0", False) else 1.0
                    parts.append((use, rho * scale * e.sum()))
                    total = parts[-1][1] if total is None else total + parts[-1][1]
                (grad,) = torch.autograd.grad(total, z, retain_graph=len(parts) > 1, allow_unused=True)
            if grad is None:
                grad = torch.zeros_like(z)
            bad = _bad_rows(grad)
            if bad is not None:
                raise fail("gradient", self._culprit(parts, z), bad)
            delta = (-post_std * grad).detach()

        model_output = eps.detach()
        if var is not None and clock.sampler == "ddpm" and self.learned_sigma:
            model_output = torch.cat([model_output, var.detach()], 1)
        t = self.scheduler.timesteps[k]
        with torch.no_grad():
            if clock.sampler == "ddim":
                prev = self.scheduler.step(model_output, t, sample, eta=0.0, generator=batch.generators).prev_sample
            else:
                prev = self.scheduler.step(model_output, t, sample, generator=batch.generators).prev_sample
            if delta is not None:
                prev = prev + delta * clock.output_scales[k]
        bad = _bad_rows(prev)
        if bad is not None:
            raise fail("latent", energies[0][0].term if energies else cond.term, bad)
        return prev

    @staticmethod
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
