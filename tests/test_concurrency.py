"""Runs at the same time: one run per OUT (a lock the kernel holds), and a targets cache that
concurrent runs share safely.

The runs are processes forked from the test's (each calls `dmgd.run`, as the command line
does, without paying torch's import again; the second run refused is the real command
line). They are held at chosen points by dmgd's test hooks (`DMGD_TEST_PAUSE_AFTER_WRITES`,
`DMGD_TEST_PAUSE_BEFORE_REPLACE`): each paused process announces its pid on a FIFO and waits
for the test's go. The test waits with select() on that FIFO and on the processes' pidfds,
so nothing here depends on the machine's speed; the only timeout is a hang guard.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import traceback
from pathlib import Path

import pytest

from dmgd.data.atomic import PAUSE_BEFORE_REPLACE_ENV, atomic_write_bytes, read_whole, temporary_name
from dmgd.data.lock import LockUnsupported, OutInUse, OutLock, read_holder
from dmgd.data.store import LOCK_NAME, PAUSE_ENV, is_temporary
from dmgd.pipeline import run

RECIPE = "t>=8: explore; 4..8: softlabel(bs=0.01, bn=0.06); 5..8: ot(K=3, rho=0.05..0.5)\nsteps = 10\n"
IPC, STEPS = 1, 4  # the embedded digits model: 10 classes in 2 blocks of 5, 20 sample files
HANG_GUARD_SECONDS = 1800  # a guard against a hang, never what decides an outcome


def _files(out: Path) -> dict[str, bytes]:
    """Every PNG and latent of a run, by path, byte for byte."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix in (".png", ".safetensors")}


def _state(out: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every entry under OUT (hidden ones too): (inode, mtime, bytes) of files, dirs as such."""
    return {p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            if p.is_file() else (0, 0, b"dir") for p in sorted(out.rglob("*"))}


@pytest.fixture(scope="module")
def lone(tmp_path_factory) -> tuple[Path, Path]:
    """A lone run's output, and the targets cache it filled from cold."""
    root = tmp_path_factory.mktemp("lone")
    out = run(RECIPE, root / "out", ipc=IPC, steps=STEPS, cache_dir=root / "cache").out
    return out, root / "cache"


@pytest.fixture()
def recipe(tmp_path) -> Path:
    path = tmp_path / "r.dmgd"
    path.write_text(RECIPE)
    return path


def _command(recipe: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dmgd", "run", str(recipe), "--out", str(out), "--set", f"ipc={IPC}",
            "--steps", str(STEPS), *extra]


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1", "COLUMNS": "300", "DMGD_CACHE_DIR": str(cache)}


class Run:
    """`dmgd.run(RECIPE, out, ...)` in a process forked from this one, with `env` set in it;
    its output (and any traceback) goes to a log file beside OUT."""

    def __init__(self, out: Path, env: dict[str, str], **options) -> None:
        self.log = out.parent / f"{out.name}-{len(env)}-{os.urandom(4).hex()}.log"
        self.pid = os.fork()
        if self.pid == 0:
            self._child(out, env, options)
        self.status: int | None = None

    def _child(self, out: Path, env: dict[str, str], options: dict) -> None:
        code = 1
        try:
            os.environ.update(env)
            fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            run(RECIPE, out, ipc=IPC, steps=STEPS, **options)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)

    def wait(self) -> int:
        """The exit status (negative: killed by that signal), once the process has ended."""
        if self.status is None:
            fd = os.pidfd_open(self.pid)
            try:
                assert select.select([fd], [], [], HANG_GUARD_SECONDS)[0], f"pid {self.pid} hangs"
            finally:
                os.close(fd)
            self.status = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.status

    def finish(self) -> None:
        assert self.wait() == 0, self.output()

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def kill(self) -> None:
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            self.wait()


def _run_cli(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)


class Gate:
    """The test's end of dmgd's pause hooks: paused processes announce their pid on the FIFO
    `path`; `release(pid)` lets one go on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self.fd = os.open(path, os.O_RDWR)  # held open for reading and writing: never an EOF
        self.buffer = b""

    def wait(self, procs: list[Run]) -> list[int]:
        """Block until every run in `procs` has paused; their pids. A run that ends
        instead fails the test with its output."""
        exits = {os.pidfd_open(proc.pid): proc for proc in procs}
        paused: list[int] = []
        try:
            while len(paused) < len(procs):
                ready, _, _ = select.select([self.fd, *exits], [], [], HANG_GUARD_SECONDS)
                assert ready, "the runs neither paused nor exited"
                if self.fd in ready:
                    self.buffer += os.read(self.fd, 4096)
                    *lines, self.buffer = self.buffer.split(b"\n")
                    paused += [int(line) for line in lines]
                    continue
                proc = exits[ready[0]]
                pytest.fail(f"pid {proc.pid} ended ({proc.wait()}) before pausing:\n{proc.output()}")
        finally:
            for fd in exits:
                os.close(fd)
        assert sorted(paused) == sorted(proc.pid for proc in procs)
        return paused

    def release(self, pid: int) -> None:
        with open(f"{self.path}-go.{pid}", "wb"):
            pass

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture()
def gate(tmp_path):
    g = Gate(tmp_path / "gate")
    yield g
    g.close()


def _kill(procs: list[Run]) -> None:
    for proc in procs:
        proc.kill()


# --------------------------------------------------------------------------- one OUT, two runs


def test_a_second_run_on_the_same_out_is_refused_naming_the_first_which_finishes_unharmed(
        lone, recipe, gate, tmp_path):
    """The first run is held with its first image's temporary file written and not yet
    renamed (what the reported failure swept away). A second `dmgd run`, new, --resume or
    --overwrite, stops at once naming the first, and leaves every file of OUT as it was."""
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    first = Run(out, {"DMGD_CACHE_DIR": str(cache), PAUSE_BEFORE_REPLACE_ENV: f"{out / '0'}:{gate.path}"})
    try:
        (pid,) = gate.wait([first])
        before = _state(out)
        assert any(is_temporary(name.split("/")[-1]) for name in before)  # the first run's write in progress
        for mode in ((), ("--resume",), ("--overwrite",)):
            second = _run_cli(_command(recipe, out, *mode), _env(cache))
            assert second.returncode == 1, second.stderr
            message = " ".join(second.stderr.split())
            assert message.count("error:") == 1 and "Traceback" not in message, message
            assert (f"{out} is in use by another dmgd run (pid {pid} on host {socket.gethostname()}, started "
                    in message), message
            assert "--resume" in message and "--out" in message, message
            assert _state(out) == before  # nothing removed, replaced or added
        gate.release(pid)
        first.finish()
    finally:
        _kill([first])
    assert _files(out) == _files(lone[0])
    assert [p.name for p in out.rglob(".*")] == []  # no lock, temporary or progress file left
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_without_the_lock_a_second_run_never_removes_the_first_runs_temporary_files(
        lone, gate, tmp_path):
    """The reported failure, with lock=False (--no-lock): the second run (resume) finishes
    beside the first and keeps its temporary file, so the first finishes too, same bytes."""
    out = tmp_path / "out"
    first = Run(out, {PAUSE_BEFORE_REPLACE_ENV: f"{out / '0'}:{gate.path}"}, lock=False)
    try:
        (pid,) = gate.wait([first])
        pending = [p for p in out.rglob(".*") if is_temporary(p.name)]
        assert len(pending) == 1
        run(RECIPE, out, ipc=IPC, steps=STEPS, resume=True, lock=False)
        assert pending[0].exists()
        gate.release(pid)
        first.finish()
    finally:
        _kill([first])
    assert _files(out) == _files(lone[0])


@pytest.mark.slow
def test_under_torchrun_rank_0_is_refused_and_every_rank_stops(recipe, tmp_path):
    """A job on an OUT another run holds: rank 0 names the holder once, every rank stops
    before loading anything, nothing is written."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               *_command(recipe, out)[1:]]
    with OutLock.acquire(out):
        done = _run_cli(command, _env(tmp_path / "cache"))
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    assert done.returncode != 0
    message = " ".join(done.stderr.split())
    assert message.count(f"{out} is in use by another dmgd run (pid {os.getpid()} on host ") == 1, message
    assert "loading the model" not in message and "[rank 1/2] error" not in message, message


# --------------------------------------------------------------------------- killed, then resumed


def test_a_run_killed_with_sigkill_leaves_no_lock_and_resume_starts_at_once(lone, gate, tmp_path):
    out = tmp_path / "out"
    first = Run(out, {PAUSE_ENV: f"7:{gate.path}"})  # 3 samples and one PNG written
    try:
        (pid,) = gate.wait([first])
        assert read_holder(out)["pid"] == pid
        os.kill(pid, signal.SIGKILL)
        assert first.wait() == -signal.SIGKILL
    finally:
        _kill([first])
    assert (out / LOCK_NAME).exists()  # left by the kill; locked by nobody
    resumed = run(RECIPE, out, ipc=IPC, steps=STEPS, resume=True)
    assert _files(out) == _files(lone[0])
    sessions = resumed.manifest["sessions"]
    assert resumed.manifest["status"] == "complete" and [s["mode"] for s in sessions] == ["new", "resume"]
    assert sessions[-1]["finished_at_start"] == 3
    assert [p.name for p in out.rglob(".*")] == []


# --------------------------------------------------------------------------- one cache, four runs


def test_four_runs_on_four_outs_share_one_cold_cache(lone, gate, tmp_path):
    """All four miss the cache and are held with the same entry written to their own
    temporary files at once; let go, each renames its own: the four outputs equal a lone
    run's, and every cache entry is byte for byte the lone run's (entries hold no timings)."""
    cache = tmp_path / "shared-cache"
    outs = [tmp_path / f"out{i}" for i in range(4)]
    env = {"DMGD_CACHE_DIR": str(cache), PAUSE_BEFORE_REPLACE_ENV: f"{cache}:{gate.path}"}
    procs = []
    try:
        procs += [Run(out, env) for out in outs]
        pids = gate.wait(procs)
        pending = sorted(p.name for p in cache.iterdir())
        assert len(pending) == 4 and all(is_temporary(name) for name in pending), pending
        for pid in pids:
            gate.release(pid)
        for proc in procs:
            proc.finish()
    finally:
        _kill(procs)
    for out in outs:
        assert _files(out) == _files(lone[0])
    entries = sorted(p.name for p in cache.iterdir())
    assert entries == sorted(p.name for p in lone[1].iterdir()) and entries
    for name in entries:
        assert (cache / name).read_bytes() == (lone[1] / name).read_bytes()


# --------------------------------------------------------------------------- the parts


def test_the_lock_is_exclusive_even_within_one_process_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    held = OutLock.acquire(out)
    holder = read_holder(out)
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(OutInUse, match=rf"in use by another dmgd run \(pid {os.getpid()} on host "):
        OutLock.acquire(out)
    held.release()
    assert not (tmp_path / "a").exists()  # the folders it created, empty again, are removed
    with OutLock.acquire(out):
        (out / "kept.txt").write_text("mine")
    assert sorted(p.name for p in out.iterdir()) == ["kept.txt"]


def test_a_file_system_that_cannot_lock_is_named_and_lock_false_goes_on(recipe, tmp_path, monkeypatch):
    """ENOLCK is what Linux answers for flock on an NFS mount without its lock manager; no
    such mount here, so flock raises it as that file system would."""
    import fcntl

    from typer.testing import CliRunner

    from dmgd.cli import app

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(LockUnsupported, match=r"does not support locks \(No locks available\).*pass lock=False"):
        run(RECIPE, tmp_path / "out", ipc=1, steps=2)
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "out"), "--steps", "2"])
    assert result.exit_code == 1 and "pass --no-lock" in " ".join(result.output.split()), result.output
    assert run(RECIPE, tmp_path / "out", ipc=1, steps=2, lock=False).manifest["status"] == "complete"


def test_temporary_names_are_unique_per_write_and_recognised(tmp_path):
    target = tmp_path / "entry.safetensors"
    names = {temporary_name(target).name for _ in range(1000)}
    assert len(names) == 1000 and all(is_temporary(name) for name in names)
    assert is_temporary(".0002.png.tmp-13070")  # the names older versions wrote
    assert is_temporary(".latents.safetensors.tmp-13070-140234977-9fa0c2d1")  # pid, thread, hex
    assert not is_temporary("notes.tmp-1") and not is_temporary(LOCK_NAME)


def test_threads_writing_one_file_never_leave_it_partial(tmp_path):
    """Eight threads write the same path at once (two runs in one process filling one cache
    entry): none fails, the file ends whole, one writer's bytes, no temporary file is left.
    (With one temporary name per process, as before, about 5 of 8 writers failed here.)"""
    target = tmp_path / "entry.bin"
    payloads = [bytes([i]) * 1_000_000 for i in range(8)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            atomic_write_bytes(target, data)
        except BaseException as error:  # with one temporary name a process, the renames collided
            errors.append(error)

    threads = [threading.Thread(target=write, args=(data,)) for data in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert target.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["entry.bin"]


def test_read_whole_treats_a_missing_or_broken_entry_as_a_miss(tmp_path):
    from safetensors.torch import load, save
    import torch

    path = tmp_path / "entry.safetensors"
    assert read_whole(path, load) is None
    data = save({"x": torch.arange(100, dtype=torch.float32)})
    path.write_bytes(data[: len(data) // 2])
    assert read_whole(path, load) is None
    atomic_write_bytes(path, data)
    assert torch.equal(read_whole(path, load)["x"], torch.arange(100, dtype=torch.float32))
