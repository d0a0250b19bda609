"""`dmgd run`: a recipe in, a distilled image set out, as named stages.

    request  = make_request(...)           # 1. arguments checked, settings resolved (nothing loaded)
    model    = load_model(request, device)  # 2. the frozen backbone, the recipe compiled once
    targets  = build_run_targets(...)       # 3. real data, class mapping, blocks, k-means targets
    session  = Session.open(...)            # 5. the store, the session record, the manifest
    SamplingLoop(...).run()                 # 4. sample, writing each batch as it finishes

Every finished image is on disk (PNG and latent, atomically) before the next batch starts,
so a failed, interrupted or killed run loses nothing and `resume=True` finishes it with the
images an uninterrupted run gives. Under torchrun every rank runs this same function on its
own blocks of classes (docs/running.md); bytes written do not depend on the number of ranks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from dmgd.pipeline.inputs import Model, Targets, build_run_targets, load_model, map_classes
from dmgd.pipeline.request import RunError, RunRequest, cpu_threads, make_request
from dmgd.pipeline.result import Reporter, RunResult, class_distances
from dmgd.pipeline.session import holding_out

__all__ = ["Reporter", "RunError", "RunResult", "map_classes", "run"]


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
    lock: bool = True,
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
    lock: hold a lock on `out` for the run, so that a second run on it stops at once
    (naming this one); False only where its file system cannot lock (docs/running.md).
    Under torchrun (RANK, WORLD_SIZE in the environment) every rank calls this and each
    returns the whole run's result.
    """
    from dmgd import distributed

    request = make_request(recipe, out, steps=steps, sampler=sampler, resume=resume, overwrite=overwrite,
                           batch_size=batch_size, cache_dir=cache_dir, overrides=overrides, settings=settings,
                           lock=lock)
    threads = cpu_threads()
    with holding_out(request) as confirm:  # first: a second run on OUT stops before anything loads
        ctx, device = distributed.setup(device)
        import torch

        before = torch.get_num_threads()
        if not str(device).startswith("cuda"):
            torch.set_num_threads(threads)
        try:
            confirm(ctx)
            return _run(request, ctx, device, reporter or Reporter())
        finally:
            torch.set_num_threads(before)
            ctx.close()


def _run(request: RunRequest, ctx: Any, device: str, reporter: Reporter) -> RunResult:
    from dmgd.data.store import RunStore
    from dmgd.pipeline.loop import SamplingLoop
    from dmgd.pipeline.session import Session

    started = time.perf_counter()
    # fail before the slow part when OUT is wrong, or holds a run this one cannot resume
    ctx.on_main(lambda: RunStore.precheck(request.out, request.mode, request.known_identity()))
    reporter.stage("loading the model")
    model = load_model(request, device)
    targets = build_run_targets(request, model, ctx, reporter)
    session = Session.open(request, model, targets, ctx, device)
    loop = SamplingLoop(model, targets, session, reporter, device)
    tic, cpu_tic = time.perf_counter(), time.process_time()
    try:
        loop.run()
    except BaseException as error:
        session.failed(error)
        raise
    timings = {"load_model_seconds": model.seconds, "targets_seconds": targets.seconds,
               "sampling_seconds": time.perf_counter() - tic}
    return _finish(request, model, targets, session, loop, timings, time.process_time() - cpu_tic, started)


def _finish(request: RunRequest, model: Model, targets: Targets, session: Any, loop: Any,
            timings: dict[str, float], cpu_seconds: float, started: float) -> RunResult:
    """Gather every rank's report, write the final manifest, return the whole run's result."""
    ctx = session.ctx
    distances = class_distances(loop)
    parts = ctx.all_gather({"rank": ctx.rank, "distances": distances, "written": session.written,
                            "sampling_seconds": round(timings["sampling_seconds"], 4),
                            "sampling_cpu_seconds": round(cpu_seconds, 4),
                            "classes": [targets.class_names[c] for c in targets.mine]})
    for part in parts:
        distances.update(part["distances"])
    distances = {name: distances[name] for name in targets.class_names}
    timings["total_seconds"] = time.perf_counter() - started
    session.completed(distances, targets.report_k, timings, parts)
    ctx.barrier()
    store = session.store
    manifest = session.manifest or store.read_manifest() or {}
    ipc = model.schedule.settings.ipc
    images = {name: tuple(store.png_path(c, i) for i in range(ipc)) for c, name in enumerate(targets.class_names)}
    return RunResult(out=request.out, manifest_path=store.manifest_path, class_names=targets.class_names,
                     images=images, ot_distance=distances, timings=timings, schedule=model.schedule,
                     manifest=manifest)
