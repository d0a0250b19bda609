"""One run at a time on an output directory: a lock the kernel holds for the run.

`OutLock.acquire(OUT)` takes an exclusive `flock` on OUT/.dmgd.lock (creating OUT when it
does not exist) and writes into that file who holds it: pid, host, start time, command.
The kernel releases an flock when its process ends, however it ends (`kill -9` included),
so a lock is never stale: the file a killed run leaves is locked by nobody, and the next
run takes it at once. A second run on the same OUT is refused at once, with the holder
named (`OutInUse`). Under torchrun rank 0 holds the lock for the whole job.

`release` removes the lock file, and the folders `acquire` created when nothing else was
written in them (a run refused or failed before its first file leaves no trace), then
unlocks. As the file is removed while still locked, a run that opened the old file
meanwhile finds, once it has locked it, that it is no longer OUT's lock file, and locks
the new one instead: two runs never both hold OUT.

Where the file system cannot lock (some network file systems answer ENOLCK or
EOPNOTSUPP), `LockUnsupported` says so, and a run goes on only when told to go without the
lock (`--no-lock`, `lock=False`). NFS locks where its lock manager runs (Linux maps flock
to NFS byte-range locks), so the lock holds across machines too.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from dmgd.data.store import LOCK_NAME, StoreError
from dmgd.errors import option

# How many times in a row the lock file may be replaced under a run trying to lock it
# (each time another run released OUT meanwhile) before it gives up: progress, not a timer.
ATTEMPTS = 100
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


class LockError(StoreError):
    """OUT's lock cannot be taken; the message says by whom or why, and what to do."""


class OutInUse(LockError):
    """Another run holds OUT."""


class LockUnsupported(LockError):
    """OUT's file system (or this system) cannot lock files."""


class OutLock:
    """The lock on one OUT, held by this process until `release` (or until it ends)."""

    def __init__(self, root: Path, fd: int, created: tuple[Path, ...]) -> None:
        self.root, self._fd, self.created = root, fd, created

    @property
    def path(self) -> Path:
        return self.root / LOCK_NAME

    @property
    def held(self) -> bool:
        return self._fd is not None

    @classmethod
    def acquire(cls, root: str | os.PathLike[str]) -> OutLock:
        """Lock OUT now or raise: OutInUse (naming the holder), LockUnsupported, or a
        StoreError when OUT cannot be created."""
        root = Path(root)
        for _ in range(ATTEMPTS):
            created = _make_folders(root)
            fd, new_file = _open_lock_file(root)
            if fd is None:  # OUT removed between mkdir and open, by a run that had made it
                continue
            try:
                _lock(fd, root)
                if _is_lock_file(fd, root / LOCK_NAME):
                    _write_holder(fd)
                    return cls(root, fd, created)
            except BaseException as error:
                if new_file and not isinstance(error, OutInUse):  # a lock file nobody holds: ours to remove
                    with contextlib.suppress(OSError):
                        (root / LOCK_NAME).unlink()
                os.close(fd)
                _remove_empty(created)
                raise
            os.close(fd)  # the file we locked was released and removed meanwhile: again
        raise LockError(f"cannot lock {root}: other runs took and released it {ATTEMPTS} times while this one "
                        "tried; rerun when they are done")

    def release(self) -> None:
        """Remove the lock file (and the empty folders `acquire` made), then unlock."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            self.path.unlink()
        _remove_empty(self.created)
        os.close(fd)

    def __enter__(self) -> OutLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def read_holder(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What OUT's lock file says of its holder (pid, host, started, command), or None.
    The file is left behind by a killed run: it names a holder only while it is locked."""
    try:
        return _parse_holder(Path(root, LOCK_NAME).read_bytes())
    except OSError:
        return None


def _make_folders(root: Path) -> tuple[Path, ...]:
    """Create OUT and its missing parents; the folders this call created, outermost first."""
    target = folder = root.absolute()
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    created: list[Path] = []
    try:
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):  # made meanwhile by another run: not ours to remove
                path.mkdir()
                created.append(path)
    except OSError as e:
        _remove_empty(tuple(created))
        raise StoreError(f"cannot create {option('out')} {root}: {e.strerror or e}") from None
    if not target.is_dir():
        _remove_empty(tuple(created))
        raise StoreError(f"{option('out')} {root} is a file, not a directory")
    return tuple(created)


def _open_lock_file(root: Path) -> tuple[int | None, bool]:
    """(fd, whether this call created the file); fd None when OUT is gone meanwhile."""
    path = root / LOCK_NAME
    try:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            return os.open(path, os.O_RDWR), False
    except FileNotFoundError:
        return None, False
    except OSError as e:
        raise StoreError(f"cannot create the lock file {path}: {e.strerror or e}; {option('out')} must be a "
                         "folder this user can write") from None


def _lock(fd: int, root: Path) -> None:
    """flock(fd) exclusively without waiting; OutInUse / LockUnsupported otherwise."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        raise LockUnsupported(f"this system cannot lock files, so nothing would stop a second run writing {root} "
                              f"at the same time; pass {option('no_lock')} to run without the lock") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in _BUSY:
            raise OutInUse(_in_use(root, _holder_of(fd))) from None
        raise LockUnsupported(
            f"cannot lock {root}: its file system does not support locks ({e.strerror or e}), so nothing would "
            f"stop a second run writing it at the same time. Put {option('out')} on a local disk, or, when sure "
            f"that no other run uses it, pass {option('no_lock')}") from None


def _in_use(root: Path, holder: dict[str, Any] | None) -> str:
    if holder:
        who = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
               f"started {holder.get('started', '?')}")
    else:
        who = "it has not yet written its pid, host and start time"
    return (f"{root} is in use by another dmgd run ({who}); wait until it ends, or stop it and rerun with "
            f"{option('resume')}, or choose another {option('out')}")


def _is_lock_file(fd: int, path: Path) -> bool:
    """Whether the file locked through fd is still the one at `path` (not released and removed)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    locked = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (locked.st_dev, locked.st_ino)


def _write_holder(fd: int) -> None:
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": started,
              "command": " ".join(sys.argv)[:2000]}
    with contextlib.suppress(OSError):  # who holds it is for messages; the lock is what counts
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)


def _holder_of(fd: int) -> dict[str, Any] | None:
    try:
        return _parse_holder(os.pread(fd, 8192, 0))
    except OSError:
        return None


def _parse_holder(data: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(data.decode("utf-8"))
    except ValueError:  # empty: the holder is between locking and writing
        return None
    return record if isinstance(record, dict) else None


def _remove_empty(created: tuple[Path, ...]) -> None:
    """Remove the folders a lock created, innermost first, as long as they are empty."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            return
