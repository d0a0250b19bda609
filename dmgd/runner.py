"""`dmgd run`: a recipe in, a distilled image set out.

    compile the recipe -> load the frozen DiT -> read the real data -> build the k-means
    targets -> sample index by index (greedy) or class by class (joint) -> write each image
    as it finishes -> manifest

The CLI calls `run` below; so can any script. Each finished image is on disk (PNG and
latent, atomically) before the next batch starts, so a failed, interrupted or killed run
loses nothing and `resume=True` finishes it with the images an uninterrupted run would give.

Under torchrun (`dmgd.distributed`) every rank runs this same function: it compiles the
same schedule, loads the model and the data, builds the k-means targets of its own classes
(exchanged, so every rank has them all), samples its own blocks of classes, and rank 0
writes the manifest. Bytes written do not depend on the number of ranks:

- a sample's random draws come from its own generator, seeded by (seed, class, index);
- classes are cut into fixed blocks of `batch_size` classes (default
  `dmgd.distributed.default_block_size(C)`), and a block is always sampled (and decoded) as
  one batch, even when some of its samples are already finished (those are not written
  again): a row's last bits depend on its batch's size, so the batch must not vary with
  the world size or the progress of a crashed run;
- greedy memory is read back from the float32 latents on disk, never from PNGs.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from attrs import field, frozen

from dmgd.errors import DmgdError, option
from dmgd.language.schedule import Schedule
from dmgd.language.settings import Settings


log = logging.getLogger("dmgd.run")


class RunError(DmgdError):
    pass


class Reporter:
    """Progress events of a run; the CLI draws them with rich, scripts may ignore them."""

    def stage(self, text: str) -> None: ...

    def sampling_started(self, total_images: int, done: int, steps_per_batch: int) -> None: ...

    def batch_started(self, classes: Sequence[str], samples: range, ipc: int) -> None:
        """A batch starts: sample indices `samples` (of `ipc`) of each class in `classes`."""

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
    batch_size: classes in a block, the batch sampled together and the unit split across
    ranks (default `dmgd.distributed.default_block_size`); it is part of the run's identity.
    Under torchrun (RANK, WORLD_SIZE in the environment) every rank calls this and each
    returns the whole run's result.
    """
    from dmgd import distributed
    from dmgd.api import parse
    from dmgd.language.overrides import parse_overrides

    if resume and overwrite:
        raise RunError(f"choose one of {option('resume')} and {option('overwrite')}")
    if batch_size is not None and int(batch_size) < 1:
        raise RunError(f"{option('batch')} must be at least 1, not {batch_size}")
    parsed = parse(recipe)
    given = dict(parse_overrides([overrides] if isinstance(overrides, str) else overrides)
                 if overrides is not None and not isinstance(overrides, Mapping) else (overrides or {}))
    given.update(settings)
    draft = _compile(parsed, steps, sampler, given, None)
    threads = cpu_threads()
    ctx, device = distributed.setup(device)
    import torch

    before = torch.get_num_threads()
    if not str(device).startswith("cuda"):
        torch.set_num_threads(threads)
    try:
        return _run(ctx, parsed, draft, given, out, steps=steps, sampler=sampler, device=device, resume=resume,
                    overwrite=overwrite, batch_size=batch_size, cache_dir=cache_dir,
                    reporter=reporter or Reporter())
    finally:
        torch.set_num_threads(before)
        ctx.close()


def cpu_threads() -> int:
    """Intra-op threads a CPU run samples with: 1, or $DMGD_THREADS.

    One thread a process, because the last bits of a small matrix product depend on how
    many threads share it, and bytes written must not depend on the machine's core count
    or on the number of ranks; batched small models gain little from threads anyway, and
    lose much on a busy machine. Use more cores with more ranks (torchrun). A run with
    DMGD_THREADS > 1 is recorded as such in its manifest; its images equal a 1-thread run's
    up to floating-point rounding, not byte for byte."""
    raw = os.environ.get("DMGD_THREADS", "").strip()
    if not raw:
        return 1
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise RunError(f"DMGD_THREADS={raw!r} is not a positive whole number of threads")
    return threads


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _run(ctx: Any, parsed: Any, draft: Schedule, given: dict[str, Any], out: str | Path, *, steps: int | None,
         sampler: str | None, device: str, resume: bool, overwrite: bool, batch_size: int | None,
         cache_dir: str | Path | None, reporter: Reporter) -> RunResult:
    import torch

    from dmgd.data.manifest import build_manifest
    from dmgd.data.store import PROGRESS_PREFIX, RunStore, check_class_names
    from dmgd.data.targets import build_targets, real_data_for_backbone
    from dmgd.distributed import blocks_of_rank, class_blocks, default_block_size
    from dmgd.guidance import TargetTable, target_ks
    from dmgd.guidance import report_k as guidance_report_k
    from dmgd.sampling.backbones import load_backbone
    from dmgd.sampling.sampler import GuidedSampler

    started = time.perf_counter()
    timings: dict[str, float] = {}
    mode = "resume" if resume else "overwrite" if overwrite else "new"
    known = {"recipe_hash": draft.recipe_hash, "settings": draft.settings.to_dict(), "num_steps": draft.num_steps,
             **({"block_size": int(batch_size)} if batch_size else {})}
    ctx.on_main(lambda: RunStore.precheck(out, mode, known))  # fail before the slow part when OUT is wrong

    reporter.stage("loading the model")
    tic = time.perf_counter()
    backbone = load_backbone(draft.settings.model, device=device)
    schedule = _compile(parsed, steps, sampler, given, backbone.scheduler_config)
    s = schedule.settings
    timings["load_model_seconds"] = time.perf_counter() - tic

    reporter.stage("reading the real data")
    real = real_data_for_backbone(s.data, backbone)
    check_class_names(real.class_names)
    class_ids = map_classes(real.class_names, backbone)
    C, ipc = len(class_ids), s.ipc
    block_size = int(batch_size) if batch_size else default_block_size(C)
    blocks = class_blocks(C, block_size)
    my_blocks = blocks_of_rank(blocks, ctx.rank, ctx.world_size)
    mine = sorted(c for block in my_blocks for c in block)
    if ctx.distributed and len(blocks) < ctx.world_size and ctx.is_main:
        log.warning("%d ranks but only %d block(s) of classes: ranks %d.. have nothing to sample; pass "
                    "%s %d or less to use them all", ctx.world_size, len(blocks), len(blocks),
                    option("batch"), max(1, C // ctx.world_size))

    reporter.stage("building the k-means targets")
    tic = time.perf_counter()
    ks = target_ks(schedule)
    report_k = guidance_report_k(schedule, min(real.class_counts()))
    targets = build_targets(backbone, real, ks | {report_k}, seed=s.seed, cache_dir=cache_dir,
                            classes=mine if ctx.distributed else None,
                            gather=ctx.all_gather if ctx.distributed else None, write_cache=ctx.is_main)
    timings["targets_seconds"] = time.perf_counter() - tic
    model_targets = {k: TargetTable(t.points, t.masses, class_ids) for k, t in targets.items()}

    identity = {
        "recipe_hash": schedule.recipe_hash,
        "settings": {k: v for k, v in s.to_dict().items()},
        "num_steps": schedule.num_steps,
        "model_weights_sha256": backbone.weights_sha256,
        "data_fingerprint": real.fingerprint,
        "block_size": block_size,
    }
    sharding = {
        "block_size": block_size,
        "blocks": len(blocks),
        "rule": "classes in consecutive blocks of block_size; block b is sampled by rank b mod world_size, "
                "always as one batch",
        "world_size": ctx.world_size,
        "backend": ctx.backend,
    }
    manifest: dict[str, Any] = {}

    def open_store() -> tuple[str, int]:
        store = RunStore.open(out, real.class_names, mode, identity)
        previous = store.previous or {}
        done = store.count_finished(range(C), ipc)
        sessions = [x for x in previous.get("sessions", []) if isinstance(x, dict)] if mode == "resume" else []
        session = {"started": _now(), "mode": mode, "world_size": ctx.world_size, "backend": ctx.backend,
                   "device": device, "cpu_threads": None if str(device).startswith("cuda") else torch.get_num_threads(),
                   "finished_at_start": done, "id": f"{time.time_ns():x}-{os.getpid()}"}
        manifest.update(build_manifest(parsed, schedule, backbone, real, class_ids, identity, targets, device,
                                       sharding=sharding, sessions=[*sessions, session],
                                       created=previous.get("created") if mode == "resume" else None))
        manifest["progress"] = {"finished": done, "total": C * ipc}
        store.write_manifest(manifest)
        return session["id"], done

    session_id, done_at_start = ctx.on_main(open_store)
    store = RunStore.attach(out, real.class_names)

    sampler_ = GuidedSampler(backbone, schedule, model_targets, device, class_pool=class_ids,
                             on_step=lambda _: reporter.step_done())
    mine_done = store.count_finished(mine, ipc)
    reporter.sampling_started(len(mine) * ipc, mine_done, schedule.num_steps)
    tic, cpu_tic = time.perf_counter(), time.process_time()
    latents: dict[tuple[int, int], Any] = {}
    written = 0

    def memory_of(c: int, index: int):
        for j in range(index):
            if (c, j) not in latents:
                latents[(c, j)] = store.load_latent(c, j, backbone.latent_shape)
        return torch.stack([latents[(c, j)] for j in range(index)]) if index else None

    def write(batch: Sequence[tuple[int, int]], todo: set[tuple[int, int]], z0: Any) -> None:
        nonlocal written
        images = _to_uint8(sampler_.decode(z0))  # the whole batch, always: the same numbers
        for (c, i), image, latent in zip(batch, images, z0):
            latent = latent.detach().to("cpu", torch.float32)
            if (c, i) in todo:
                store.write_sample(c, i, image, latent)
                written += 1
            latents[(c, i)] = latent
        reporter.images_done(len(todo))
        store.write_progress(ctx.rank, {"session": session_id, "rank": ctx.rank, "world_size": ctx.world_size,
                                        "written": written, "updated": _now()})
        if ctx.is_main:
            finished = done_at_start + sum(int(r.get("written", 0)) for r in store.read_progress(session_id))
            manifest["progress"] = {"finished": min(finished, C * ipc), "total": C * ipc}
            store.write_manifest(manifest)

    try:
        if s.matching == "greedy":
            for index in range(ipc):
                for block in my_blocks:
                    todo = {(c, index) for c in block if not store.is_finished(c, index)}
                    if not todo:
                        continue
                    reporter.batch_started([real.class_names[c] for c in block], range(index, index + 1), ipc)
                    memory = torch.stack([memory_of(c, index) for c in block]) if index else None
                    z0 = sampler_.sample_batch([class_ids[c] for c in block], index, memory, seed=s.seed)
                    write([(c, index) for c in block], todo, z0)
        else:
            for c in mine:
                todo = {(c, i) for i in range(ipc) if not store.is_finished(c, i)}
                if not todo:
                    continue
                reporter.batch_started([real.class_names[c]], range(ipc), ipc)
                z0 = sampler_.sample_joint(class_ids[c], range(ipc), seed=s.seed)
                write([(c, i) for i in range(ipc)], todo, z0)
    except BaseException as error:
        if ctx.is_main and manifest:
            manifest["status"] = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            manifest["error"] = str(error) or type(error).__name__
            store.write_manifest(manifest)
        raise
    timings["sampling_seconds"] = time.perf_counter() - tic
    cpu_seconds = time.process_time() - cpu_tic

    from dmgd.guidance.transport import ot_distance

    report = targets[report_k]
    distances = {}
    for c in mine:
        synthetic = memory_of(c, ipc).reshape(ipc, -1)
        distances[real.class_names[c]] = ot_distance(synthetic, report.points[c], report.masses[c])
    parts = ctx.all_gather({"rank": ctx.rank, "distances": distances, "written": written,
                            "sampling_seconds": round(timings["sampling_seconds"], 4),
                            "sampling_cpu_seconds": round(cpu_seconds, 4),
                            "classes": [real.class_names[c] for c in mine]})
    for part in parts:
        distances.update(part["distances"])
    distances = {name: distances[name] for name in real.class_names}
    written_total = sum(part["written"] for part in parts)
    timings["total_seconds"] = time.perf_counter() - started
    if ctx.is_main:
        manifest.update(status="complete", ot_distance={"k": report_k, "per_class": distances},
                        timings={k: round(v, 4) for k, v in timings.items()})
        manifest.pop("error", None)
        manifest["timings"]["seconds_per_image"] = round(timings["sampling_seconds"] / max(1, written_total), 5)
        manifest["progress"] = {"finished": C * ipc, "total": C * ipc}
        manifest["sessions"][-1].update(ended=_now(), written=written_total,
                                        ranks=[{k: part[k] for k in ("rank", "written", "sampling_seconds",
                                                                     "sampling_cpu_seconds")}
                                               for part in parts])
        store.write_manifest(manifest)
        for path in store.root.glob(f"{PROGRESS_PREFIX}*.json"):
            path.unlink(missing_ok=True)
    ctx.barrier()
    if not manifest:
        manifest = store.read_manifest() or {}

    images = {name: tuple(store.png_path(c, i) for i in range(ipc)) for c, name in enumerate(real.class_names)}
    return RunResult(out=Path(out), manifest_path=store.manifest_path, class_names=real.class_names,
                     images=images, ot_distance=distances, timings=timings, schedule=schedule, manifest=manifest)
