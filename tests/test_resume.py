"""Runs killed with SIGKILL at random points, then resumed: exactly the uninterrupted output,
and no partial file ever visible while the runs were being killed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from dmgd.data.store import PAUSE_ENV
from dmgd.pipeline import run

RECIPE = "t>=8: explore; 4..8: softlabel(bs=0.01, bn=0.06); 5..8: ot(K=3, rho=0.05..0.5)\nsteps = 10\n"
IPC, STEPS = 4, 20  # 40 samples in 8 batches of 5 classes: kills land inside and between batches


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix in (".png", ".safetensors")}


def _descendants(pid: int) -> list[int]:
    """pid's children, grandchildren... (torchrun starts its workers in sessions of their own)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started, as a machine losing power would."""
    for pid in [proc.pid, *_descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(30)


_CHECKED: set[tuple[str, int, int, int]] = set()  # (path, inode, size, mtime) of files found whole


def check_visible_files(out: Path) -> int:
    """Every visible file of a run is whole: PNGs decode, latents load, JSON parses (each
    version of a file is read once). Returns how many latents there are."""
    from safetensors.torch import load_file

    latents = 0
    if not out.exists():
        return 0
    for path in out.rglob("*"):
        if path.name.startswith(".") and ".tmp-" in path.name:
            continue  # a write in progress: hidden, and never read by anything
        try:
            st = path.stat()
            version = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
            if path.suffix == ".safetensors":
                latents += 1
            if version in _CHECKED or path.is_dir():
                continue
            if path.suffix == ".png":
                with Image.open(path) as image:
                    image.load()
            elif path.suffix == ".safetensors":
                tensor = load_file(path)["latent"]
                assert tensor.dtype == torch.float32 and torch.isfinite(tensor).all()
            elif path.suffix == ".json":
                assert isinstance(json.loads(path.read_text()), dict)
            _CHECKED.add(version)
        except FileNotFoundError:
            continue  # replaced or removed between listing and reading
    return latents


def _command(recipe: Path, out: Path, model: Path, resume: bool, nproc: int) -> list[str]:
    dmgd = ["-m", "dmgd", "run", str(recipe), "--out", str(out), "--set", f"model={model}",
            "--set", f"ipc={IPC}", "--steps", str(STEPS), *(["--resume"] if resume else [])]
    if nproc == 1:
        return [sys.executable, *dmgd]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *dmgd]


# A guard against a run that hangs, not a kill timer: no outcome depends on how fast the machine is.
HANG_GUARD_SECONDS = 1800


def kill_at_random_point(command: list[str], out: Path, rng: random.Random, total: int) -> dict:
    """Start the command, let it pause after a random number of sample files (PNG or latent:
    kills land between a sample's two files, inside and between batches), SIGKILL it all.
    The pause is dmgd's test hook (`DMGD_TEST_PAUSE_AFTER_WRITES`), so where the kill lands
    does not depend on the machine's speed. Checks the visible files all along."""
    already = check_visible_files(out)
    writes = 1 + rng.randrange(0, max(1, total - already))  # in the first half of the files left (2 a sample)
    marker = out.parent / f".paused-{rng.getrandbits(32):08x}"
    env = {**os.environ, "NO_COLOR": "1", PAUSE_ENV: f"{writes}:{marker}"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    paused = False
    try:
        while proc.poll() is None and not paused:
            assert time.monotonic() < deadline, "the run neither paused nor exited"
            check_visible_files(out)
            paused = any(marker.parent.glob(marker.name + ".*"))
            time.sleep(0.01)
    finally:
        exited = proc.poll() is not None
        _kill_all(proc)
    stderr = proc.stderr.read()
    assert "Traceback" not in stderr, stderr
    assert paused and not exited, stderr  # killed at the chosen point, not finished or failed
    return {"already": already, "writes": writes, "finished_at_kill": check_visible_files(out)}


def _run_reference(tmp_path: Path, model: Path) -> Path:
    return run(RECIPE, tmp_path / "reference", model=str(model), ipc=IPC, steps=STEPS).out


def _finish_and_compare(command: list[str] | None, out: Path, reference: Path, model: Path) -> dict:
    """Resume to the end (with `command`, or in this process) and compare with the reference."""
    if command is None:
        run(RECIPE, out, model=str(model), ipc=IPC, steps=STEPS, resume=True)
    else:
        done = subprocess.run(command, env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}, capture_output=True,
                              text=True, timeout=HANG_GUARD_SECONDS)
        assert done.returncode == 0, done.stdout + done.stderr
    assert _files(out) == _files(reference)  # every PNG and latent, byte for byte
    assert [p.name for p in out.rglob(".*")] == []  # no temporary or progress file left
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["progress"] == {"finished": 10 * IPC, "total": 10 * IPC}
    assert manifest["sessions"][-1]["mode"] == "resume"
    return manifest


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_output(tiny_pixel_model, tmp_path):
    reference = _run_reference(tmp_path, tiny_pixel_model)
    recipe = tmp_path / "r.dmgd"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"
    rng = random.Random(5)
    kills = [kill_at_random_point(_command(recipe, out, tiny_pixel_model, attempt > 0, 1), out, rng, 10 * IPC)
             for attempt in range(3)]
    manifest = _finish_and_compare(None, out, reference, tiny_pixel_model)
    assert len(manifest["sessions"]) >= 2, kills  # at least one kill left a run to resume
    assert manifest["sessions"][-1]["finished_at_start"] < 10 * IPC, kills


@pytest.mark.slow
def test_sigkill_under_torchrun_and_resume_with_another_world_size(tiny_pixel_model, tmp_path):
    """A 2-rank run killed (agent and workers) is resumed by one process, killed again, and
    finished by 2 ranks: the world size only decides who does which unfinished sample."""
    reference = _run_reference(tmp_path, tiny_pixel_model)
    recipe = tmp_path / "r.dmgd"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"
    rng = random.Random(11)
    kills = [kill_at_random_point(_command(recipe, out, tiny_pixel_model, attempt > 0, nproc), out, rng, 10 * IPC)
             for attempt, nproc in enumerate((2, 1))]
    manifest = _finish_and_compare(_command(recipe, out, tiny_pixel_model, True, 2), out, reference, tiny_pixel_model)
    assert manifest["sessions"][-1]["world_size"] == 2, kills
    assert {s["world_size"] for s in manifest["sessions"]} >= {2}


def test_resuming_a_finished_run_writes_nothing(tiny_pixel_model, tmp_path):
    out = run(RECIPE, tmp_path / "out", model=str(tiny_pixel_model), ipc=2).out
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix in (".png", ".safetensors")}
    again = run(RECIPE, out, model=str(tiny_pixel_model), ipc=2, resume=True)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert again.manifest["sessions"][-1]["written"] == 0 and len(again.manifest["sessions"]) == 2


def test_a_block_half_finished_is_sampled_whole_and_only_its_missing_samples_written(tiny_pixel_model, tmp_path):
    """What a kill inside a batch's writes leaves: some of a block's samples at one index."""
    full = run(RECIPE, tmp_path / "full", model=str(tiny_pixel_model), ipc=3).out
    part = run(RECIPE, tmp_path / "part", model=str(tiny_pixel_model), ipc=3).out
    for c in (1, 3, 6):  # blocks are classes 0-4 and 5-9
        for path in (part / str(c) / "0001.png", part / str(c) / "0001.safetensors",
                     part / str(c) / "0002.safetensors"):
            path.unlink()
    (part / "7" / "0002.png").unlink()  # a latent without its PNG: not finished either
    kept = (part / "0" / "0001.png").stat().st_mtime_ns
    run(RECIPE, part, model=str(tiny_pixel_model), ipc=3, resume=True)
    assert _files(part) == _files(full)
    assert (part / "0" / "0001.png").stat().st_mtime_ns == kept


def test_resume_refuses_another_block_size(tiny_pixel_model, tmp_path):
    from dmgd.data.store import StoreError

    out = run(RECIPE, tmp_path / "out", model=str(tiny_pixel_model), ipc=1).out
    with pytest.raises(StoreError, match="another block size"):
        run(RECIPE, out, model=str(tiny_pixel_model), ipc=1, resume=True, batch_size=3)
