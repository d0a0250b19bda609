"""Stage 4: the sampling loop. Greedy matching goes index by index over this rank's blocks
(a block is always sampled, and decoded, as one batch); joint matching class by class.
Each finished sample is written before the next batch starts."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from dmgd.pipeline.inputs import Model, Targets
from dmgd.pipeline.session import Session


class FinishedLatents:
    """The finished samples' latents, read back from the store (float32, exact) once and
    kept: the greedy memory of later samples, and the set the report measures."""

    def __init__(self, store: Any, latent_shape: Sequence[int]) -> None:
        self.store, self.latent_shape = store, tuple(latent_shape)
        self.latents: dict[tuple[int, int], torch.Tensor] = {}

    def keep(self, c: int, i: int, latent: torch.Tensor) -> None:
        self.latents[(c, i)] = latent

    def of(self, c: int, count: int) -> torch.Tensor | None:
        """Class c's samples 0..count-1, [count, *latent_shape] (None when count is 0)."""
        for j in range(count):
            if (c, j) not in self.latents:
                self.latents[(c, j)] = self.store.load_latent(c, j, self.latent_shape)
        return torch.stack([self.latents[(c, j)] for j in range(count)]) if count else None


def to_uint8(images: torch.Tensor) -> list[Any]:
    """[B, C, H, W] in [-1, 1] -> uint8 arrays [H, W] (one channel) or [H, W, 3]."""
    pixels = ((images.float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(dtype=torch.uint8)
    arrays = pixels.permute(0, 2, 3, 1).numpy()
    return [a[:, :, 0] if a.shape[2] == 1 else a for a in arrays]


class SamplingLoop:
    """Samples what this rank still has to, writing each batch as it finishes."""

    def __init__(self, model: Model, targets: Targets, session: Session, reporter: Any, device: str) -> None:
        from dmgd.sampling.sampler import GuidedSampler

        self.model, self.targets, self.session, self.reporter = model, targets, session, reporter
        self.settings = model.schedule.settings
        self.sampler = GuidedSampler(model.backbone, model.schedule, targets.tables, device,
                                     class_pool=targets.class_ids, on_step=lambda _: reporter.step_done())
        self.finished = FinishedLatents(session.store, model.backbone.latent_shape)

    def run(self) -> None:
        ipc = self.settings.ipc
        store = self.session.store
        self.reporter.sampling_started(len(self.targets.mine) * ipc, store.count_finished(self.targets.mine, ipc),
                                       self.model.schedule.num_steps)
        if self.settings.matching == "greedy":
            for index in range(ipc):
                for block in self.targets.my_blocks:
                    self._greedy_batch(block, index)
        else:
            for c in self.targets.mine:
                self._joint_class(c)

    def _greedy_batch(self, block: Sequence[int], index: int) -> None:
        todo = {(c, index) for c in block if not self.session.store.is_finished(c, index)}
        if not todo:
            return
        self.reporter.batch_started([self.targets.class_names[c] for c in block], range(index, index + 1),
                                    self.settings.ipc)
        memory = torch.stack([self.finished.of(c, index) for c in block]) if index else None
        z0 = self.sampler.sample_batch([self.targets.class_ids[c] for c in block], index, memory,
                                       seed=self.settings.seed)
        self._write([(c, index) for c in block], todo, z0)

    def _joint_class(self, c: int) -> None:
        ipc = self.settings.ipc
        todo = {(c, i) for i in range(ipc) if not self.session.store.is_finished(c, i)}
        if not todo:
            return
        self.reporter.batch_started([self.targets.class_names[c]], range(ipc), ipc)
        z0 = self.sampler.sample_joint(self.targets.class_ids[c], range(ipc), seed=self.settings.seed)
        self._write([(c, i) for i in range(ipc)], todo, z0)

    def _write(self, batch: Sequence[tuple[int, int]], todo: set[tuple[int, int]], z0: torch.Tensor) -> None:
        images = to_uint8(self.sampler.decode(z0))  # the whole batch, always: the same numbers
        for (c, i), image, latent in zip(batch, images, z0):
            latent = latent.detach().to("cpu", torch.float32)
            if (c, i) in todo:
                self.session.store.write_sample(c, i, image, latent)
            self.finished.keep(c, i, latent)
        self.reporter.images_done(len(todo))
        self.session.samples_written(len(todo))
