"""What a run returns, and the report it ends with: each class's OT distance to its real
data, gathered from every rank."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from attrs import field, frozen

from dmgd.language.schedule import Schedule
from dmgd.language.settings import Settings


class Reporter:
    """Progress events of a run; the CLI draws them with rich, scripts may ignore them."""

    def stage(self, text: str) -> None:
        """A slow stage starts ("loading the model", ...)."""

    def sampling_started(self, total_images: int, done: int, steps_per_batch: int) -> None:
        """This rank has `total_images` to sample, `done` of them already finished."""

    def batch_started(self, classes: Sequence[str], samples: range, ipc: int) -> None:
        """A batch starts: sample indices `samples` (of `ipc`) of each class in `classes`."""

    def step_done(self) -> None:
        """One sampling step of the current batch is done."""

    def images_done(self, count: int) -> None:
        """`count` more images are written."""


@frozen
class RunResult:
    """A finished run: where it is, its images by class, each class's OT distance to its
    real data (the manifest's report), timings, the schedule it ran and its manifest."""

    out: Path
    manifest_path: Path
    class_names: tuple[str, ...]
    images: Mapping[str, tuple[Path, ...]] = field(repr=False)  # class name -> PNG paths, index order
    ot_distance: Mapping[str, float]  # class name -> OT distance of its synthetic set to its real data
    timings: Mapping[str, float]
    schedule: Schedule = field(repr=False)
    manifest: Mapping[str, Any] = field(repr=False)

    @property
    def settings(self) -> Settings:
        return self.schedule.settings


def class_distances(loop: Any) -> dict[str, float]:
    """This rank's classes' OT distances between their synthetic sets and the report target."""
    from dmgd.guidance.transport import ot_distance

    targets, ipc = loop.targets, loop.settings.ipc
    report = targets.built[targets.report_k]
    return {targets.class_names[c]: ot_distance(loop.finished.of(c, ipc).reshape(ipc, -1), report.points[c],
                                                report.masses[c])
            for c in targets.mine}
