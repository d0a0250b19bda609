"""The per-batch sampling loop and the two matching modes (greedy, joint).

    sampler = GuidedSampler(backbone, schedule, targets_by_k, device)
    for index in range(ipc):                       # greedy: index by index
        for chunk in chunks(classes):
            memory = finished[chunk, :index]        # [B, index, *latent_shape]
            z0 = sampler.sample_batch(chunk, index, memory)   # [B, *latent_shape]
            images = sampler.decode(z0)             # [B, C, H, W] in [-1, 1]

Every random draw of sample (class c, index i) comes from its own `torch.Generator`
seeded with `sample_seed(seed, c, i)`, so a sample's result does not depend on its batch.
Greedy matching (`sample_batch`): sample i of a class is guided with the class's finished
samples 0..i-1 (frozen) as its energies' memory. Joint matching (`sample_joint`): a class's
samples are sampled together; each one's memory is the others' current Tweedie estimates
(detached) plus any finished samples, and only its own estimate moves.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Mapping, Sequence

import torch

from dmgd.guidance import EnergyTerm, TargetBatch, TargetTable
from dmgd.language.schedule import Schedule, TermUse
from dmgd.sampling.samplers import sampler_spec
from dmgd.sampling.schedulers import StepCoefficients, coefficients_for, make_scheduler
from dmgd.sampling.step import BatchState, GuidedStep

OnStep = Callable[[int], None]


def sample_seed(seed: int, cls: int, index: int) -> int:
    """The 63-bit seed of sample `index` of class `cls` under the run's `seed`."""
    digest = hashlib.sha256(f"dmgd-sample:{int(seed)}:{int(cls)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def make_generator(seed: int, cls: int, index: int) -> torch.Generator:
    """The sample's own CPU generator (draws are moved to the device afterwards)."""
    return torch.Generator(device="cpu").manual_seed(sample_seed(seed, cls, index))


class GuidedSampler:
    """Samples batches of a compiled `Schedule` with a frozen DiT backbone.

    backbone: `dmgd.sampling.backbones.Backbone` (or anything with `transformer`, `vae`,
    `vae_scale`, `scheduler_config`, `num_classes`, `null_class`, `latent_shape`,
    `learned_sigma`). targets_by_k: {K: TargetTable} for the schedule's energy terms
    (None when it has none). class_pool: the classes `others` is drawn from (the
    reference draws among the run's own classes); default every class of the model.
    impls: optional {term name: impl} overriding the registry (tests, experiments).
    on_step: called with the step index after every step (progress bars).
    """

    def __init__(self, backbone: Any, schedule: Schedule, targets_by_k: Mapping[int, TargetTable] | None = None,
                 device: Any = None, *, class_pool: Sequence[int] | None = None,
                 impls: Mapping[str, Any] | None = None, on_step: OnStep | None = None):
        self.backbone = backbone
        self.schedule = schedule
        self.settings = schedule.settings
        self.targets_by_k = dict(targets_by_k or {})
        self.device = torch.device(device) if device is not None else next(backbone.transformer.parameters()).device
        self.class_pool = tuple(range(backbone.num_classes)) if class_pool is None else tuple(int(c) for c in class_pool)
        self.impls = impls
        self.on_step = on_step
        self.latent_shape = tuple(backbone.latent_shape)
        prediction = (backbone.scheduler_config or {}).get("prediction_type", "epsilon")
        if prediction != "epsilon":
            raise ValueError(f"only epsilon-prediction models are supported (this one predicts {prediction!r})")
        coefficients = self._fresh()[1]
        if len(schedule.steps) != len(coefficients.timesteps):
            raise ValueError(f"the schedule has {len(schedule.steps)} steps, the {self.settings.sampler} "
                             f"scheduler {len(coefficients.timesteps)}")
        for position, (step, ts) in enumerate(zip(schedule.steps, coefficients.timesteps)):
            if step.index != position:
                raise ValueError(f"step {position} of the schedule says it is step {step.index}")
            if step.timestep is not None and abs(float(step.timestep) - ts) > 1e-3:
                raise ValueError(f"step {step.index}: the schedule was compiled for timestep {step.timestep}, "
                                 f"the {self.settings.sampler} scheduler uses {ts} (different noise levels?)")
        self._target_cache: dict[tuple, Any] = {}

    # -- public API -----------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return len(self.schedule.steps)

    def sample_batch(self, classes: Sequence[int], index: int, memory: torch.Tensor | None = None,
                     seed: int | None = None, on_step: OnStep | None = None) -> torch.Tensor:
        """Sample `index` of each class in `classes`, greedy matching.

        memory: [B, M, *latent_shape], row b the finished samples (< index) of classes[b]
        (M = index; None or M = 0: nothing finished yet). Returns the final clean latents
        z_0, [B, *latent_shape], float32 on the sampler's device.
        """
        classes = [int(c) for c in classes]
        B = len(classes)
        fixed = self._flat_memory(memory, B)
        return self._run(classes, [int(index)] * B, lambda x0: fixed, seed, on_step)

    def sample_joint(self, cls: int, indices: Sequence[int], seed: int | None = None,
                     memory: torch.Tensor | None = None, on_step: OnStep | None = None) -> torch.Tensor:
        """Samples `indices` of class `cls` together, joint matching (see the module doc).

        memory: optional finished samples of the class, [M, *latent_shape], seen by all.
        Returns [len(indices), *latent_shape].
        """
        indices = [int(i) for i in indices]
        B = len(indices)
        finished = self._flat_memory(None if memory is None else memory.unsqueeze(0).expand(B, *memory.shape), B)
        others = torch.tensor([[l for l in range(B) if l != j] for j in range(B)], dtype=torch.long,
                              device=self.device).reshape(B, B - 1)

        def memory_fn(x0: torch.Tensor) -> torch.Tensor:
            current = x0[others]  # [B, B-1, F]
            return torch.cat([finished, current], 1)

        return self._run([int(cls)] * B, indices, memory_fn, seed, on_step)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1]: the VAE decode of latents / vae_scale (latent models) or the
        latents themselves (pixel models), clamped."""
        vae = self.backbone.vae
        with torch.no_grad():
            if vae is None:
                images = latents.float()
            else:
                dtype = next(vae.parameters()).dtype
                images = vae.decode((latents / self.backbone.vae_scale).to(dtype)).sample.float()
        return images.clamp(-1.0, 1.0)

    # -- internals ------------------------------------------------------------------
    def _fresh(self) -> tuple[Any, StepCoefficients]:
        # timesteps stay on the CPU, as in diffusers' pipelines (schedulers index CPU tables with them)
        scheduler = make_scheduler(self.settings.sampler, self.schedule.num_steps, self.backbone.scheduler_config,
                                   learned_sigma=bool(self.backbone.learned_sigma))
        return scheduler, coefficients_for(scheduler, self.settings.sampler)

    def _flat_memory(self, memory: torch.Tensor | None, B: int) -> torch.Tensor:
        F = 1
        for s in self.latent_shape:
            F *= s
        if memory is None:
            return torch.zeros(B, 0, F, device=self.device)
        if memory.shape[0] != B or tuple(memory.shape[2:]) != self.latent_shape:
            raise ValueError(f"memory must be [B={B}, M, {', '.join(map(str, self.latent_shape))}], "
                             f"got {list(memory.shape)}")
        return memory.detach().to(self.device, torch.float32).reshape(B, memory.shape[1], F)

    def _others(self, cls: int, g: torch.Generator) -> int:
        pool = [c for c in self.class_pool if c != cls]
        if not pool:
            return cls
        return pool[int(torch.randint(len(pool), (1,), generator=g))]

    def _target(self, use: TermUse, term: EnergyTerm, classes: list[int], indices: list[int]) -> TargetBatch:
        K = int(term.target_k(use.as_dict(), int(self.settings.ipc)))
        key = (K, tuple(classes), tuple(indices))
        if key not in self._target_cache:
            if K not in self.targets_by_k:
                raise KeyError(f"term {use.term!r} needs targets with K={K}; have K in {sorted(self.targets_by_k)}")
            target = self.targets_by_k[K].batch(classes, indices, device=self.device, dtype=torch.float32)
            self._target_cache = {k: v for k, v in self._target_cache.items() if k[1:] == key[1:]}
            self._target_cache[key] = target
        return self._target_cache[key]

    def _run(self, classes: list[int], indices: list[int], memory_fn, seed: int | None,
             on_step: OnStep | None) -> torch.Tensor:
        seed = int(self.settings.seed if seed is None else seed)
        on_step = on_step or self.on_step
        scheduler, coefficients = self._fresh()
        gens = [make_generator(seed, c, i) for c, i in zip(classes, indices)]
        # per-sample draws at the start: the initial noise, then the `others` class
        init = torch.cat([torch.randn((1, *self.latent_shape), generator=g) for g in gens]).to(self.device)
        others = [self._others(c, g) for c, g in zip(classes, gens)]
        batch = BatchState(
            classes=torch.tensor(classes, dtype=torch.long, device=self.device),
            indices=tuple(indices),
            generators=gens,
            others=torch.tensor(others, dtype=torch.long, device=self.device),
        )
        guided = GuidedStep(
            transformer=self.backbone.transformer, null_class=int(self.backbone.null_class),
            learned_sigma=bool(self.backbone.learned_sigma), scheduler=scheduler,
            sampler=sampler_spec(self.settings.sampler), coefficients=coefficients,
            recipe_cfg=float(self.settings.cfg), cfg_channels=int(self.settings.cfg_channels),
            ipc=int(self.settings.ipc), impls=self.impls,
        )
        sample = init * float(scheduler.init_noise_sigma)

        def target_fn(use: TermUse, term: EnergyTerm) -> TargetBatch:
            return self._target(use, term, classes, indices)

        for step in self.schedule.steps:
            sample = guided.step(step, sample, batch, memory_fn, target_fn)
            if on_step is not None:
                on_step(step.index)
        return sample.float()
