"""`dmgd eval`: what a distilled set is worth, measured the way the papers measure it.

`evaluate(out_dir, real_dir=None, config=EvalConfig())` trains one classifier per seed on
the distilled images (protocol "hard": the class folders' labels; "soft": a frozen
teacher's labels of each augmented batch, RDED's protocol), tests each on the real held-out
images, and returns an `EvalResult` (last-epoch and best accuracy per seed, their mean
and population std). The protocol, presets and determinism are in docs/evaluation.md.

Importing this module needs no torch (`dmgd.EvalConfig` stays cheap): `evaluate` loads
the torch side (sets, training, report) when it runs.
"""

from __future__ import annotations

import importlib
import os
import time
from typing import Any, Callable

import attrs

from dmgd.device import pick_device
from dmgd.evaluation.config import (DIGITS_EPOCH_DIVISOR, DIGITS_EVALUATIONS, HARNESS_EVALUATIONS,
                                    IMAGENET_MIN_SIZE, IMAGENET_SIZE, OPTIMIZER_DEFAULTS, SOFT_TEST_RESIZE,
                                    EvalConfig, EvalError, Optimizer, Preset, Protocol, Schedule, digits_epochs,
                                    harness_epochs, preset_for)
from dmgd.evaluation.results import DistilledSet, EvalResult, EvalReporter, SeedResult

__all__ = [
    "DIGITS_EPOCH_DIVISOR", "DIGITS_EVALUATIONS", "HARNESS_EVALUATIONS", "IMAGENET_MIN_SIZE", "IMAGENET_SIZE",
    "OPTIMIZER_DEFAULTS", "DistilledSet", "EvalConfig", "EvalError", "EvalResult", "Optimizer", "Preset", "Protocol",
    "EvalReporter", "Schedule", "SeedResult", "digits_epochs", "evaluate", "harness_epochs", "pick_device",
    "preset_for",
    # loaded on first use (they import torch):
    "EMBEDDED_TEST", "EVAL_JSON", "MANIFEST", "real_folders_for", "derived_seed", "folder_list", "read_distilled",
    "read_real", "train_one",
]

# names kept importable from here, defined in modules that import torch: loaded on first use
_LAZY = {
    "EMBEDDED_TEST": "dmgd.evaluation.sets",
    "MANIFEST": "dmgd.evaluation.sets",
    "real_folders_for": "dmgd.evaluation.sets",
    "folder_list": "dmgd.evaluation.sets",
    "read_distilled": "dmgd.evaluation.sets",
    "read_real": "dmgd.evaluation.sets",
    "derived_seed": "dmgd.evaluation.training",
    "train_one": "dmgd.evaluation.training",
    "EVAL_JSON": "dmgd.evaluation.report",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def evaluate(out_dir: str | os.PathLike[str], real_dir: str | os.PathLike[str] | None = None,
             config: EvalConfig | None = None, *, reporter: EvalReporter | None = None,
             on_seed: Callable[[SeedResult], None] | None = None, write: bool = True,
             eval_json: str | os.PathLike[str] | None = None) -> EvalResult:
    """Evaluate the distilled set in `out_dir` on the real test set `real_dir` (None: an
    embedded test split, the corners' for a corners set, else the digits', see
    `dmgd.evaluation.sets.default_test_data`). Writes `out_dir/eval.json` (or `eval_json`) unless
    write=False. on_seed: called with each seed's result as it finishes. Raises EvalError
    (a DmgdError) for unusable input."""
    import torch

    from dmgd.evaluation.report import write_eval_json
    from dmgd.evaluation.training import hard_step_loss, run_seeds

    config = config or EvalConfig()
    reporter = reporter or EvalReporter()
    started = time.perf_counter()
    device = pick_device(config.device)
    distilled, resolved = _read_set(out_dir, config)
    real, real_source = _read_test(real_dir, resolved, distilled)
    threads = torch.get_num_threads()
    step_loss, teacher = hard_step_loss, None
    if resolved.protocol == "soft":
        step_loss, teacher = _soft_setup(resolved, distilled, real, real_dir, real_source, device)
    results = run_seeds(distilled, real, resolved, device, reporter, on_seed, step_loss)
    result = EvalResult(
        out=distilled.root, config=resolved, seeds=tuple(results), class_names=real.class_names,
        ipc=distilled.ipc, train_images=int(distilled.labels.shape[0]), test_images=len(real),
        real_source=real_source, distilled=distilled, wall_seconds=time.perf_counter() - started,
        device=device, threads=threads, teacher=teacher,
    )
    if write:
        result = attrs.evolve(result, eval_json=write_eval_json(result, eval_json))
    return result


def _read_set(out_dir: str | os.PathLike[str], config: EvalConfig) -> tuple[DistilledSet, EvalConfig]:
    """The distilled set, read at the resolution of the config it resolves (returned too)."""
    from dmgd.evaluation.sets import read_distilled

    distilled = read_distilled(out_dir, ipc=config.ipc, image_size=config.image_size, preset=config.preset)
    resolved = config.resolve(ipc=distilled.ipc, native_size=distilled.native_size)
    if resolved.image_size != distilled.images.shape[-1]:  # image_size given but preset set apart
        distilled = read_distilled(out_dir, ipc=distilled.ipc, image_size=resolved.image_size,
                                   channels=distilled.channels, preset=resolved.preset)
    return distilled, resolved


def _read_test(real_dir: str | os.PathLike[str] | None, config: EvalConfig, distilled: DistilledSet) -> tuple[Any, str]:
    """The real test set at the training resolution; the soft protocol's ImageNet preset
    reads it as RDED does: Resize(256) then CenterCrop(224)."""
    from dmgd.evaluation.sets import read_real

    size = int(config.image_size)
    resize = SOFT_TEST_RESIZE * size // IMAGENET_SIZE if config.protocol == "soft" and config.preset == "imagenet" \
        else size
    real, source = read_real(real_dir, image_size=resize, channels=distilled.channels, manifest=distilled.manifest,
                             class_names=distilled.class_names, out=distilled.root)
    if resize != size:
        top = (resize - size) // 2
        real = attrs.evolve(real, images=real.images[:, :, top:top + size, top:top + size].contiguous())
        source = f"{source} (resized to {resize}, centre {size} kept)"
    return real, source


def _soft_setup(config: EvalConfig, distilled: DistilledSet, real: Any, real_dir: Any, real_source: str,
                device: str) -> tuple[Any, dict[str, Any]]:
    """The soft protocol's step loss (its teacher aligned to the real set's classes and on
    `device`) and eval.json's record of the teacher, with its accuracy on this test set."""
    from dmgd.evaluation.sets import default_test_data
    from dmgd.evaluation.soft import SoftLoss
    from dmgd.evaluation.teacher import align, load_teacher, teacher_record
    from dmgd.evaluation.training import accuracy, prepare_test

    spec = config.teacher
    if spec is None:
        if real_dir is not None:
            raise EvalError("--protocol soft needs --teacher: a .safetensors or .pth file (`dmgd teacher train` "
                            "makes one), or digits / corners for the embedded sets")
        spec = default_test_data(distilled.manifest)
    teacher = load_teacher(spec)
    aligned = align(teacher, real.class_names, distilled.channels, int(config.image_size)).to(device).eval()
    score = accuracy(aligned, prepare_test(real.images).to(device), real.labels.to(device), config.test_batch_size)
    return SoftLoss(aligned), teacher_record(teacher, str(spec), score, real_source)
