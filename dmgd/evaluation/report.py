"""What `dmgd eval` records (eval.json beside the manifest) and shows (a rich table)."""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from dmgd.data.atomic import atomic_write_json
from dmgd.data.manifest import package_versions
from dmgd.evaluation.config import EvalError
from dmgd.evaluation.models import DISPLAY_NAMES, describe
from dmgd.evaluation.results import EvalResult
from dmgd.evaluation.stats import mean, population_std

EVAL_JSON = "eval.json"
FORMAT = "dmgd-eval-v1"
BEST_LABEL = "best over training, selected on the test set (as the papers report)"
LAST_LABEL = "last epoch"
PROTOCOLS = {
    "hard": "hard labels: cross-entropy against each image's class folder, CutMix mixing the two labels "
            "(the Minimax / DMGD harness)",
    "soft": "soft labels on the fly (RDED): per batch ShufflePatches -> RandomResizedCrop -> flip -> normalise "
            "-> CutMix, a frozen teacher labels that exact batch under no_grad; loss KLDivLoss(batchmean) of "
            "log_softmax(student / T) against softmax(teacher / T), no T^2 factor, no hard-label term",
}
STD_NOTE = "population standard deviation over seeds (ddof = 0, numpy's default, as the harness prints)"


def _versions() -> dict[str, str]:
    versions = package_versions()
    versions["cuda"] = str(torch.version.cuda)
    versions["cudnn"] = str(torch.backends.cudnn.version())
    return versions


def _set_record(result: EvalResult) -> dict[str, Any]:
    d = result.distilled
    record: dict[str, Any] = {
        "path": str(d.root),
        "format": (d.manifest or {}).get("format", "plain ImageFolder (no manifest.json)"),
        "ipc": d.ipc,
        "images": result.train_images,
        "native_size": d.native_size,
        "channels": d.channels,
        "class_names": list(d.class_names),
        "selection": "the first IPC image files of each class folder, sorted by file name",
        "files": list(d.files),
    }
    manifest = d.manifest or {}
    recipe = manifest.get("recipe")
    if isinstance(recipe, dict) and recipe.get("hash"):
        record["recipe_hash"] = recipe["hash"]
    if isinstance(manifest.get("settings"), dict):
        record["settings"] = manifest["settings"]
    if manifest.get("status"):
        record["status"] = manifest["status"]
    if manifest.get("format") == "dmgd-sample-real-v1":
        record["sample_real"] = {k: manifest.get(k) for k in ("seed", "source")}
    return record


def _figures(values: list[float]) -> dict[str, Any]:
    return {"mean": mean(values), "std": population_std(values), "per_seed": values}


def build_report(result: EvalResult) -> dict[str, Any]:
    """eval.json's content: the setting, the sets, per-seed figures and the aggregates."""
    c = result.config
    return {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "protocol": {"name": c.protocol, "description": PROTOCOLS[c.protocol]},
        **({"teacher": result.teacher} if result.teacher is not None else {}),
        "model": {"name": c.model, "display": DISPLAY_NAMES[c.model], "variant": describe(c.model, c.image_size)},
        "config": c.to_dict(),
        "distilled_set": _set_record(result),
        "real_set": {"source": result.real_source, "images": result.test_images,
                     "class_names": list(result.class_names)},
        "accuracy_unit": "top-1 %, on the real test set",
        "last": {"label": LAST_LABEL, **_figures([s.last for s in result.seeds])},
        "best": {"label": BEST_LABEL, **_figures([s.best for s in result.seeds]),
                 "best_epoch_per_seed": [s.best_epoch for s in result.seeds]},
        "std": STD_NOTE,
        "seeds": [
            {"seed": s.seed, "last": s.last, "best": s.best, "best_epoch": s.best_epoch,
             "history": [[e, a] for e, a in s.history], "final_train_loss": s.final_train_loss,
             "seconds": round(s.seconds, 3)}
            for s in result.seeds
        ],
        "determinism": {
            "weights": "torch.manual_seed(seed) right before the model is built",
            "data_order": "torch.Generator seeded with sha256('dmgd-eval:order:<seed>')[:8] (little endian) & (2**63-1)",
            "augmentation": "torch.Generator seeded with sha256('dmgd-eval:augment:<seed>')[:8] (little endian) "
                            "& (2**63-1), all draws on the CPU",
            "kernels": "torch.use_deterministic_algorithms(True), cudnn.deterministic, no cudnn.benchmark, "
                       "CUBLAS_WORKSPACE_CONFIG=:4096:8 on CUDA",
        },
        "device": result.device,
        "threads": result.threads,
        "versions": _versions(),
        "wall_seconds": round(result.wall_seconds, 3),
    }


def write_eval_json(result: EvalResult, path: str | os.PathLike[str] | None = None) -> Path:
    """Write eval.json atomically (default: beside the set's manifest) and return its path."""
    target = Path(path) if path is not None else result.out / EVAL_JSON
    try:
        atomic_write_json(target, build_report(result))
    except OSError as error:
        raise EvalError(f"cannot write {target}: {error.strerror or error}") from None
    return target


def pm(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {std:.2f}"


def summary_table(result: EvalResult) -> Table:
    """model, IPC, seeds, last-epoch mean ± std, best mean ± std (labelled), one row per seed
    below the aggregate."""
    c = result.config
    table = Table(title=f"{result.out}: {len(result.class_names)} classes x {result.ipc} images, "
                        f"tested on {result.test_images} real images, {c.protocol} labels")
    for name, justify in (("model", "left"), ("IPC", "right"), ("seeds", "right"),
                          ("last epoch (%)", "right"), ("best (%) *", "right")):
        table.add_column(name, justify=justify)
    table.add_row(DISPLAY_NAMES[c.model], str(result.ipc), str(len(result.seeds)),
                  pm(result.last_mean, result.last_std), pm(result.best_mean, result.best_std))
    table.add_section()
    for s in result.seeds:
        table.add_row("[dim]seed[/dim]", "", str(s.seed), f"{s.last:.2f}", f"{s.best:.2f} [dim]@{s.best_epoch}[/dim]")
    teacher = ""
    if result.teacher is not None:
        t = result.teacher
        teacher = (f"teacher {t['display']} ({t['spec']}, sha256 {t['sha256'][:12]}, "
                   f"{t['test_accuracy']:.2f}% on this test set), T = {c.temperature:g}; ")
    table.caption = (
        f"* {BEST_LABEL}. mean ± population std. {teacher}{c.optimizer} lr {c.lr:g} {c.schedule}, {c.epochs} epochs, "
        f"batch {c.batch_size}, {c.preset} preset, {c.image_size} px; real set: {result.real_source}; "
        f"{result.wall_seconds:.1f} s on {result.device}"
    )
    return table
