"""Files that appear whole or not at all: write to a temporary name beside, then rename."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all. A file replaced keeps its permission
    bits; the temporary file is removed if the write fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _keep_mode(tmp, path)
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
