"""Files that appear whole or not at all, safe to share between processes and threads.

A writer writes to a temporary name of its own beside the file (`.<name>.tmp-<pid>-<hex>`:
the process id, then random hex, so no two writers, in one process or on two machines
sharing a folder, ever share one), fsyncs it, then renames it over the final name. A reader
therefore sees the old file, the new one, or none, never half of one; two writers of the
same bytes (two runs computing one cache entry) just replace each other. `read_whole`
is the reader for caches: an absent or unparsable file is a miss, never an error.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")

PAUSE_BEFORE_REPLACE_ENV = "DMGD_TEST_PAUSE_BEFORE_REPLACE"
_paused_once = False


def temporary_name(path: Path) -> Path:
    """A fresh hidden name beside `path` for one write: unique per call, process and machine."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all. A file replaced keeps its permission
    bits; the temporary file is removed if the write fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _keep_mode(tmp, path)
        _pause_before_replace(path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def _keep_mode(tmp: Path, path: Path) -> None:
    try:
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
    except OSError:  # no file to replace (or its mode cannot be read or copied)
        pass


def atomic_write_text(path: Path, text: str) -> None:
    """`text` in UTF-8, its line endings as they are."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_whole(path: Path, parse: Callable[[bytes], T]) -> T | None:
    """`parse` of the file's bytes, read whole in one go (never memory-mapped: a file
    replaced or removed while it is read cannot break the reader); None, a miss, when the
    file is absent, unreadable, or `parse` raises (not a file dmgd wrote whole)."""
    try:
        data = Path(path).read_bytes()
    except OSError:  # absent, removed meanwhile, a folder, no permission
        return None
    try:
        return parse(data)
    except Exception:  # truncated or foreign bytes: a miss, recomputed and replaced by the caller
        return None


def wait_for_go(marker: str) -> None:
    """Test hook: stop here until the test says go. Creates the FIFO `MARKER-go.<pid>`,
    then the file `MARKER.<pid>`; when MARKER is a FIFO (the test's), writes "<pid>\n" to
    it; then blocks until the test opens `MARKER-go.<pid>` for writing and closes it (or
    kills this process). No timer anywhere: the test decides when the process goes on."""
    import stat

    pid = os.getpid()
    go = Path(f"{marker}-go.{pid}")
    os.mkfifo(go)
    Path(f"{marker}.{pid}").touch()
    with contextlib.suppress(OSError):
        if stat.S_ISFIFO(os.stat(marker).st_mode):
            with open(marker, "wb") as announce:
                announce.write(f"{pid}\n".encode())
    try:
        with open(go, "rb") as fifo:  # blocks until the test opens the other end
            fifo.read()
    finally:
        go.unlink(missing_ok=True)


def _pause_before_replace(path: Path) -> None:
    """Test hook, off unless $DMGD_TEST_PAUSE_BEFORE_REPLACE is "FOLDER:MARKER": the first
    write into FOLDER in this process stops with its temporary file written whole and not
    yet renamed (`wait_for_go(MARKER)`), so a test can hold several writers of one cache
    entry at that point at once."""
    global _paused_once
    setting = os.environ.get(PAUSE_BEFORE_REPLACE_ENV)
    if not setting or _paused_once:
        return
    folder, _, marker = setting.rpartition(":")
    if Path(path).parent.resolve() == Path(folder).resolve():
        _paused_once = True
        wait_for_go(marker)
