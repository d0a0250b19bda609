"""Stage 5: the output store, this session's record and the manifest, kept current as
samples finish (rank 0 writes the manifest; every rank its own progress file)."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import time
from typing import Any, Callable, Iterator

from dmgd.pipeline.inputs import Model, Targets
from dmgd.pipeline.request import RunRequest

log = logging.getLogger("dmgd.run")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_identity(request: RunRequest, model: Model, targets: Targets) -> dict[str, Any]:
    """What must match for `--resume`: recipe, settings, steps, model, data, block size."""
    return {
        "recipe_hash": model.schedule.recipe_hash,
        "settings": dict(model.schedule.settings.to_dict()),
        "num_steps": model.schedule.num_steps,
        "model_weights_sha256": model.backbone.weights_sha256,
        "data_fingerprint": targets.real.fingerprint,
        "block_size": targets.block_size,
    }


def sharding_record(targets: Targets, ctx: Any) -> dict[str, Any]:
    return {
        "block_size": targets.block_size,
        "blocks": len(targets.blocks),
        "rule": "classes in consecutive blocks of block_size; block b is sampled by rank b mod world_size, "
                "always as one batch",
        "world_size": ctx.world_size,
        "backend": ctx.backend,
    }


@contextlib.contextmanager
def holding_out(request: RunRequest) -> Iterator[Callable[[Any], None]]:
    """OUT's lock for the whole job, taken by rank 0 (as torchrun's environment says) first
    of all, before the process group starts and torch is imported: a run that cannot take
    it (another run holds OUT, the file system cannot lock) stops at once. Yields
    `confirm(ctx)`, which, once the ranks can talk, stops every rank the same way."""
    from dmgd.distributed import env_world
    from dmgd.errors import DmgdError

    held: list[Any] = []
    refused: list[DmgdError] = []
    rank, world, _ = env_world()
    if rank == 0:
        try:
            held.extend(_lock_out(request))
        except DmgdError as error:
            if world == 1:
                raise
            refused.append(error)

    def confirm(ctx: Any) -> None:
        def check() -> None:
            if refused:
                raise refused[0]

        ctx.on_main(check)

    try:
        yield confirm
    finally:
        for out_lock in held:
            out_lock.release()


def _lock_out(request: RunRequest) -> list[Any]:
    from dmgd.data.lock import OutLock
    from dmgd.errors import option

    if request.lock:
        return [OutLock.acquire(request.out)]
    log.warning("running without a lock on %s (%s): nothing stops another run writing it meanwhile, and "
                "temporary files a killed run left there are kept", request.out, option("no_lock"))
    return []


class Session:
    """One start of a run on OUT: the store, the manifest (rank 0's, else empty), the
    session id, and how many samples were finished when it started."""

    def __init__(self, store: Any, manifest: dict[str, Any], session_id: str, done_at_start: int, total: int,
                 ctx: Any) -> None:
        self.store, self.manifest, self.id = store, manifest, session_id
        self.done_at_start, self.total, self.ctx = done_at_start, total, ctx
        self.written = 0

    @classmethod
    def open(cls, request: RunRequest, model: Model, targets: Targets, ctx: Any, device: str) -> Session:
        """Open OUT (rank 0: checks, clean-up, the manifest), then attach every rank to it."""
        from dmgd.data.store import RunStore

        manifest: dict[str, Any] = {}

        def open_on_main() -> tuple[str, int]:
            store = RunStore.open(request.out, targets.class_names, request.mode,
                                  run_identity(request, model, targets), sweep=request.lock)
            session, done = _first_manifest(store, request, model, targets, ctx, device, manifest)
            store.write_manifest(manifest)
            return session, done

        session_id, done = ctx.on_main(open_on_main)
        store = RunStore.attach(request.out, targets.class_names)
        return cls(store, manifest, session_id, done, len(targets.class_ids) * model.schedule.settings.ipc, ctx)

    def samples_written(self, count: int) -> None:
        """Record progress after a batch: this rank's file; rank 0 folds all into the manifest."""
        self.written += count
        ctx = self.ctx
        self.store.write_progress(ctx.rank, {"session": self.id, "rank": ctx.rank, "world_size": ctx.world_size,
                                             "written": self.written, "updated": now()})
        if ctx.is_main:
            records = self.store.read_progress(self.id)
            finished = self.done_at_start + sum(int(r.get("written", 0)) for r in records)
            self.manifest["progress"] = {"finished": min(finished, self.total), "total": self.total}
            self.store.write_manifest(self.manifest)

    def failed(self, error: BaseException) -> None:
        """Mark the run interrupted or failed (rank 0), keeping everything written so far."""
        if self.ctx.is_main and self.manifest:
            self.manifest["status"] = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            self.manifest["error"] = str(error) or type(error).__name__
            self.store.write_manifest(self.manifest)

    def completed(self, distances: dict[str, float], report_k: int, timings: dict[str, float],
                  parts: list[dict[str, Any]]) -> None:
        """The final manifest (rank 0), and no progress file left behind."""
        from dmgd.data.store import PROGRESS_PREFIX

        if not self.ctx.is_main:
            return
        written = sum(part["written"] for part in parts)
        manifest = self.manifest
        manifest.update(status="complete", ot_distance={"k": report_k, "per_class": distances},
                        timings={k: round(v, 4) for k, v in timings.items()})
        manifest.pop("error", None)
        manifest["timings"]["seconds_per_image"] = round(timings["sampling_seconds"] / max(1, written), 5)
        manifest["progress"] = {"finished": self.total, "total": self.total}
        manifest["sessions"][-1].update(ended=now(), written=written, ranks=[
            {k: part[k] for k in ("rank", "written", "sampling_seconds", "sampling_cpu_seconds")} for part in parts])
        self.store.write_manifest(manifest)
        for path in self.store.root.glob(f"{PROGRESS_PREFIX}*.json"):
            path.unlink(missing_ok=True)


def _first_manifest(store: Any, request: RunRequest, model: Model, targets: Targets, ctx: Any, device: str,
                    manifest: dict[str, Any]) -> tuple[str, int]:
    """Fill `manifest` for this session (earlier sessions kept on resume); (session id, done)."""
    import torch

    from dmgd.data.manifest import build_manifest

    ipc = model.schedule.settings.ipc
    previous = store.previous or {}
    resuming = request.mode == "resume"
    done = store.count_finished(range(len(targets.class_ids)), ipc)
    sessions = [x for x in previous.get("sessions", []) if isinstance(x, dict)] if resuming else []
    session = {"started": now(), "mode": request.mode, "world_size": ctx.world_size, "backend": ctx.backend,
               "device": device, "cpu_threads": None if str(device).startswith("cuda") else torch.get_num_threads(),
               "finished_at_start": done, "id": f"{time.time_ns():x}-{os.getpid()}"}
    manifest.update(build_manifest(request.recipe, model.schedule, model.backbone, targets.real, targets.class_ids,
                                   run_identity(request, model, targets), targets.built, device,
                                   sharding=sharding_record(targets, ctx), sessions=[*sessions, session],
                                   created=previous.get("created") if resuming else None))
    manifest["progress"] = {"finished": done, "total": len(targets.class_ids) * ipc}
    return session["id"], done
