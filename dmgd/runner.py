"""`dmgd run`: a recipe in, a distilled image set out.

    compile the recipe -> load the frozen DiT -> read the real data -> build the k-means
    targets -> sample index by index (greedy) or class by class (joint) -> write each image
    as it finishes -> manifest

The CLI calls `run` below; so can any script. Each finished image is on disk (PNG and
latent, atomically) before the next batch starts, so a failed or interrupted run loses
nothing and `resume=True` finishes it with the images an uninterrupted run would give.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from attrs import field, frozen

from dmgd.errors import DmgdError
from dmgd.language.schedule import Schedule
from dmgd.language.settings import Settings


class RunError(DmgdError):
    pass


class Reporter:
    """Progress events of a run; the CLI draws them with rich, scripts may ignore them."""

    def stage(self, text: str) -> None: ...

    def sampling_started(self, total_images: int, done: int, steps_per_batch: int) -> None: ...

    def batch_started(self, classes: Sequence[str], index: int) -> None: ...

    def step_done(self) -> None: ...

    def images_done(self, count: int) -> None: ...


@frozen
class RunResult:
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


@frozen(eq=False)
class _ModelTargets:
    """ClassTargets whose row r belongs to model class `classes[r]` (the sampler's lookup)."""

    k: int
    points: Any = field(repr=False)
    masses: Any = field(repr=False)
    classes: tuple[int, ...]


def pick_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"--device {device} asked for, but no CUDA device is available here; use --device cpu")
    return str(device)


def map_classes(data_names: Sequence[str], backbone: Any) -> tuple[int, ...]:
    """The model class id of each data class: by name, then by count, then numeric names."""
    model_names = tuple(backbone.class_names or ())
    if model_names and all(name in model_names for name in data_names):
        return tuple(model_names.index(name) for name in data_names)
    if len(data_names) == backbone.num_classes:
        return tuple(range(len(data_names)))
    if all(name.isdigit() and int(name) < backbone.num_classes for name in data_names):
        return tuple(int(name) for name in data_names)
    raise RunError(
        f"the data has {len(data_names)} classes and the model {backbone.num_classes}, and the "
        "class folders' names do not say which model class each one is: name each class folder "
        "after its model class (its index, e.g. '207', or its label in the model's id2label)"
    )


def _compile(recipe: Any, steps: int | None, sampler: str | None, overrides: Mapping[str, Any],
             scheduler_config: Mapping[str, Any] | None) -> Schedule:
    from dmgd.api import compile as compile_recipe
    from dmgd.sampling.schedulers import noise_levels

    draft = compile_recipe(recipe, steps=steps, sampler=sampler, overrides=dict(overrides), noise="auto")
    noise = noise_levels(draft.settings.sampler, draft.num_steps, scheduler_config=dict(scheduler_config or {}) or None)
    return compile_recipe(recipe, steps=steps, sampler=sampler, overrides=dict(overrides), noise=noise)


def _target_ks(schedule: Schedule) -> set[int]:
    from dmgd.terms.registry import get_term

    ks = set()
    for step in schedule:
        for use in step.energies:
            ks.add(int(get_term(use.term).impl.target_k(use.as_dict(), schedule.settings.ipc)))
    return ks


def _report_k(schedule: Schedule, smallest_class: int) -> int:
    """K of the targets the manifest's OT distance is measured against: the recipe's ot K,
    else 10 (the paper's), so that runs of different recipes compare."""
    for step in schedule:
        for use in step.energies:
            if use.term == "ot":
                return int(use["K"])
    return max(1, min(10, smallest_class))


def _to_uint8(images: Any) -> list[Any]:
    """[B, C, H, W] in [-1, 1] -> uint8 arrays [H, W] (one channel) or [H, W, 3]."""
    pixels = ((images.float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(dtype=__import__("torch").uint8)
    arrays = pixels.permute(0, 2, 3, 1).numpy()
    return [a[:, :, 0] if a.shape[2] == 1 else a for a in arrays]


def run(
    recipe: Any,
    out: str | Path,
    *,
    steps: int | None = None,
    sampler: str | None = None,
    device: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    batch_size: int | None = None,
    cache_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    **settings: Any,
) -> RunResult:
    """Distil an image set with a recipe.

    recipe: a path, recipe text or parsed Recipe. out: the output directory. steps: N real
    sampling steps (default: the recipe's clock). settings: any recipe setting
    (`ipc=50, seed=1, model="DiT-XL-2-256", data="woof/train"`); overrides: the same as
    `--set` strings. resume: finish the run already in `out`; overwrite: replace it.
    batch_size: classes sampled together (default: all of them, at most 64).
    """
    import torch

    from dmgd.api import parse
    from dmgd.data.store import RunStore
    from dmgd.data.targets import build_targets, real_data_for_backbone
    from dmgd.language.overrides import parse_overrides
    from dmgd.sampling.backbones import load_backbone
    from dmgd.sampling.sampler import GuidedSampler

    if resume and overwrite:
        raise RunError("choose one of --resume and --overwrite")
    reporter = reporter or Reporter()
    started = time.perf_counter()
    timings: dict[str, float] = {}

    parsed = parse(recipe)
    given = dict(parse_overrides([overrides] if isinstance(overrides, str) else overrides)
                 if overrides is not None and not isinstance(overrides, Mapping) else (overrides or {}))
    given.update(settings)
    draft = _compile(parsed, steps, sampler, given, None)
    device = pick_device(device)

    reporter.stage("loading the model")
    tic = time.perf_counter()
    backbone = load_backbone(draft.settings.model, device=device)
    schedule = _compile(parsed, steps, sampler, given, backbone.scheduler_config)
    s = schedule.settings
    timings["load_model_seconds"] = time.perf_counter() - tic

    reporter.stage("reading the real data")
    real = real_data_for_backbone(s.data, backbone)
    class_ids = map_classes(real.class_names, backbone)

    reporter.stage("building the k-means targets")
    tic = time.perf_counter()
    ks = _target_ks(schedule)
    report_k = _report_k(schedule, min(real.class_counts()))
    targets = build_targets(backbone, real, ks | {report_k}, seed=s.seed, cache_dir=cache_dir)
    timings["targets_seconds"] = time.perf_counter() - tic
    model_targets = {k: _ModelTargets(k, t.points, t.masses, class_ids) for k, t in targets.items()}

    identity = {
        "recipe_hash": schedule.recipe_hash,
        "settings": {k: v for k, v in s.to_dict().items()},
        "num_steps": schedule.num_steps,
        "model_weights_sha256": backbone.weights_sha256,
        "data_fingerprint": real.fingerprint,
    }
    mode = "resume" if resume else "overwrite" if overwrite else "new"
    store = RunStore.open(out, real.class_names, mode, identity)

    from dmgd.data.manifest import build_manifest

    manifest = build_manifest(parsed, schedule, backbone, real, class_ids, identity, targets, device)
    store.write_manifest(manifest)

    sampler_ = GuidedSampler(backbone, schedule, model_targets, device, class_pool=class_ids,
                             on_step=lambda _: reporter.step_done())
    C, ipc = len(class_ids), s.ipc
    chunk = batch_size or min(C, 64)
    done = sum(store.is_finished(c, i) for c in range(C) for i in range(ipc))
    reporter.sampling_started(C * ipc, done, schedule.num_steps)
    tic = time.perf_counter()
    latents: dict[tuple[int, int], Any] = {}

    def memory_of(c: int, index: int):
        for j in range(index):
            if (c, j) not in latents:
                latents[(c, j)] = store.load_latent(c, j)
        return torch.stack([latents[(c, j)] for j in range(index)]) if index else None

    def write(batch_classes: Sequence[int], indices: Sequence[int], z0: Any) -> None:
        for (c, i), image, latent in zip(zip(batch_classes, indices), _to_uint8(sampler_.decode(z0)), z0):
            store.write_sample(c, i, image, latent)
            latents[(c, i)] = latent.detach().cpu()
        reporter.images_done(len(batch_classes))
        manifest["progress"] = {"finished": sum(store.is_finished(c, i) for c in range(C) for i in range(ipc)),
                                "total": C * ipc}
        store.write_manifest(manifest)

    try:
        if s.matching == "greedy":
            for index in range(ipc):
                pending = [c for c in range(C) if not store.is_finished(c, index)]
                for start in range(0, len(pending), chunk):
                    part = pending[start:start + chunk]
                    reporter.batch_started([real.class_names[c] for c in part], index)
                    memory = torch.stack([memory_of(c, index) for c in part]) if index else None
                    z0 = sampler_.sample_batch([class_ids[c] for c in part], index, memory, seed=s.seed)
                    write(part, [index] * len(part), z0)
        else:
            for c in range(C):
                if all(store.is_finished(c, i) for i in range(ipc)):
                    continue
                reporter.batch_started([real.class_names[c]], 0)
                z0 = sampler_.sample_joint(class_ids[c], range(ipc), seed=s.seed)
                write([c] * ipc, list(range(ipc)), z0)
    except BaseException as error:
        manifest["status"] = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        manifest["error"] = str(error) or type(error).__name__
        store.write_manifest(manifest)
        raise
    timings["sampling_seconds"] = time.perf_counter() - tic

    from dmgd.guidance.transport import ot_distance

    report = targets[report_k]
    distances = {}
    for c, name in enumerate(real.class_names):
        synthetic = memory_of(c, ipc).reshape(ipc, -1)
        distances[name] = ot_distance(synthetic, report.points[c], report.masses[c])
    timings["total_seconds"] = time.perf_counter() - started
    manifest.update(status="complete", ot_distance={"k": report_k, "per_class": distances},
                    timings={k: round(v, 4) for k, v in timings.items()})
    manifest["timings"]["seconds_per_image"] = round(timings["sampling_seconds"] / max(1, C * ipc - done), 5)
    store.write_manifest(manifest)

    images = {name: tuple(store.png_path(c, i) for i in range(ipc)) for c, name in enumerate(real.class_names)}
    return RunResult(out=Path(out), manifest_path=store.manifest_path, class_names=real.class_names,
                     images=images, ot_distance=distances, timings=timings, schedule=schedule, manifest=manifest)
