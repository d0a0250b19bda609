"""What an evaluation produces: one `SeedResult` per trained classifier, gathered in an
`EvalResult` (with the `DistilledSet` it was trained on), and the `EvalReporter` of progress
events. Importing this module needs no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attrs import field, frozen

from dmgd.evaluation.config import EvalConfig
from dmgd.evaluation.stats import mean, population_std


@frozen
class SeedResult:
    """One trained classifier: accuracies in top-1 %, on the real test set."""

    seed: int
    last: float  # after the last epoch
    best: float  # the best of the periodic evaluations (selected on the test set)
    best_epoch: int
    history: tuple[tuple[int, float], ...]  # (epoch, accuracy) at every evaluation
    final_train_loss: float
    seconds: float


@frozen
class DistilledSet:
    """The images evaluated: the first `ipc` files of each class folder, sorted by name."""

    root: Path
    images: Any = field(repr=False)  # float32 [N, C, H, W] in [-1, 1]
    labels: Any = field(repr=False)  # int64 [N], index into class_names
    class_names: tuple[str, ...]
    files: tuple[str, ...] = field(repr=False)  # relative posix paths, in order
    ipc: int
    native_size: int
    channels: int
    manifest: dict[str, Any] | None = field(repr=False)


@frozen
class EvalResult:
    out: Path
    config: EvalConfig  # resolved: every field filled
    seeds: tuple[SeedResult, ...]
    class_names: tuple[str, ...]
    ipc: int
    train_images: int
    test_images: int
    real_source: str
    distilled: DistilledSet = field(repr=False)
    wall_seconds: float
    device: str
    threads: int
    eval_json: Path | None = None
    teacher: dict[str, Any] | None = None  # the soft protocol's teacher (dmgd.evaluation.teacher.teacher_record)

    @property
    def last_mean(self) -> float:
        return mean([s.last for s in self.seeds])

    @property
    def last_std(self) -> float:
        return population_std([s.last for s in self.seeds])

    @property
    def best_mean(self) -> float:
        return mean([s.best for s in self.seeds])

    @property
    def best_std(self) -> float:
        return population_std([s.best for s in self.seeds])


class EvalReporter:
    """Progress events; the CLI draws them, scripts may ignore them."""

    def started(self, seeds: tuple[int, ...], epochs: int) -> None: ...

    def seed_started(self, seed: int) -> None: ...

    def epoch_done(self, seed: int, epoch: int, accuracy: float | None) -> None: ...

    def seed_done(self, result: SeedResult) -> None: ...
