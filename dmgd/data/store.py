"""The output of a run on disk: an ImageFolder of PNGs, the latents, and the manifest.

    OUT/<class name>/<index>.png           the distilled images (index zero-padded, so the
                                           sorted order is the sampling order)
    OUT/<class name>/<index>.safetensors   each image's clean latent (float32, exact), beside
                                           its PNG: ImageFolder readers take only images, and a
                                           latents folder would look like a class to them
    OUT/manifest.json                      what was run, with what, and how far it got
    OUT/.progress-rank-<r>.json            rank r's progress in the current session
    OUT/.dmgd.lock                         while a run is going: its lock (dmgd.data.lock)

Every file is written atomically: to a hidden temporary name beside it
(`.<name>.tmp-<pid>-<hex>`, which no image loader reads: it is hidden and its extension is
not an image's), then renamed over the final name; a visible file is always whole. A sample
counts as finished only once both its PNG and its latent exist (the latent is written
last), so a run killed at any moment (even `kill -9`) can be resumed; `--resume` removes
the temporary files a killed run left behind, and only while it holds OUT's lock: without
the lock another run may be writing them.

Under torchrun each rank writes only its own classes' files and its own progress file;
only rank 0 opens the store for writing (the checks, `--overwrite`'s removal, the clean-up)
and writes the manifest; the other ranks `attach` once rank 0 is done.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Literal, Sequence

from attrs import field, frozen

from dmgd.data.atomic import atomic_write_bytes, atomic_write_json, wait_for_go
from dmgd.errors import DmgdError, option

log = logging.getLogger("dmgd.store")

MANIFEST = "manifest.json"
LATENTS = "latents"
PROGRESS_PREFIX = ".progress-rank-"
LOCK_NAME = ".dmgd.lock"
Mode = Literal["new", "resume", "overwrite"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,127}$")
_TEMPORARY = re.compile(r"^\..+\.tmp-\d+(-[0-9a-f]+)*$")  # dmgd.data.atomic's temporary names (and older ones)


class StoreError(DmgdError):
    pass


PAUSE_ENV = "DMGD_TEST_PAUSE_AFTER_WRITES"
_files_written = 0


def _pause_point() -> None:
    """Test hook, off unless $DMGD_TEST_PAUSE_AFTER_WRITES is "N:MARKER": after this
    process's N-th sample file (PNG or latent) it creates MARKER.<pid> and waits until the
    test writes to the FIFO MARKER-go.<pid> (`wait_for_go`), so a test can SIGKILL the run,
    or start a second one beside it, at a point that does not depend on the machine's speed."""
    global _files_written
    setting = os.environ.get(PAUSE_ENV)
    if not setting:
        return
    _files_written += 1
    count, _, marker = setting.partition(":")
    if _files_written == int(count):
        wait_for_go(marker)


def check_class_names(names: Sequence[str]) -> None:
    """Class names become directory names: refuse anything that could leave OUT (`..`,
    `/`, absolute paths, hidden names) or collide with the run's own files."""
    for name in names:
        if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name or name == LATENTS:
            raise StoreError(
                f"class name {name!r} cannot be used as a directory name in the output; "
                "rename that class's folder to letters, digits, '_', '-', '.' or spaces "
                f"(not starting with '.' and not {LATENTS!r})"
            )
    if len(set(names)) != len(names):
        raise StoreError("two classes share one name; class names must be unique")


def _not_a_run(root: Path) -> StoreError:
    return StoreError(f"{root} is not empty and holds no dmgd run; choose an empty or new directory for "
                      f"{option('out')} (or pass {option('overwrite')} to write into it anyway)")


def _holds_a_run(root: Path, previous: dict[str, Any]) -> StoreError:
    return StoreError(f"{root} already holds a run ({previous.get('status', 'unknown')}); pass "
                      f"{option('resume')} to finish it, {option('overwrite')} to replace it, or choose "
                      f"another {option('out')}")


def check_resumable(root: Path, previous: dict[str, Any], identity: dict[str, Any], *, complete: bool) -> None:
    """Refuse to resume a run made with another identity (recipe, settings, model, data...).
    complete=False compares only the keys `identity` has (what is known before loading)."""
    before = previous.get("identity", {})
    before = before if isinstance(before, dict) else {}
    keys = set(before) | set(identity) if complete else set(identity)
    changed = [_difference(key, before.get(key), identity.get(key)) for key in sorted(keys)
               if before.get(key) != identity.get(key)]
    if changed:
        raise StoreError(f"cannot resume the run in {root}: it was made with {'; '.join(changed)}. Rerun "
                         f"with what it was made with, pass {option('overwrite')} to replace it, or choose "
                         f"another {option('out')}")


def _difference(key: str, before: Any, now: Any) -> str:
    if key == "settings" and isinstance(before, dict) and isinstance(now, dict):
        names = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        return "other settings (" + ", ".join(f"{k} = {before.get(k)!r}, now {now.get(k)!r}" for k in names) + ")"
    if key == "recipe_hash":
        return f"another recipe (sha256:{str(before)[:12]}, now sha256:{str(now)[:12]})"
    return f"another {key.replace('_', ' ')} ({before!r}, now {now!r})"


def image_name(index: int) -> str:
    return f"{index:04d}"


def is_temporary(name: str) -> bool:
    """Whether a file name is one of dmgd's temporary names (a write in progress or killed)."""
    return bool(_TEMPORARY.match(name))


def _holds_nothing(root: Path) -> bool:
    """Whether OUT holds nothing but dmgd's temporary files and lock: as good as empty."""
    return all(is_temporary(entry.name) or entry.name == LOCK_NAME for entry in root.iterdir())


@frozen
class RunStore:
    root: Path
    class_names: tuple[str, ...]
    previous: dict[str, Any] | None = field(default=None, eq=False, repr=False)  # the manifest found on open

    @classmethod
    def open(cls, root: str | Path, class_names: Sequence[str], mode: Mode, identity: dict[str, Any], *,
             sweep: bool = True) -> RunStore:
        """Open OUT for a run (rank 0 only). `identity` is what must match for a resume
        (recipe hash, settings...). sweep: remove a killed run's temporary and progress
        files; only for a caller that holds OUT's lock (else they may be another run's)."""
        check_class_names(tuple(class_names))
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise StoreError(f"{option('out')} {root} is a file, not a directory")
        try:
            previous = cls(root, tuple(class_names)).read_manifest()
        except StoreError:
            if mode != "overwrite":
                raise
            log.warning("%s is unreadable; %s replaces it and this run's class folders", root / MANIFEST,
                        option("overwrite"))
            previous = {"class_names": list(class_names)}
        store = cls(root, tuple(class_names), previous)
        store._prepare(mode, identity, sweep)
        return store

    @classmethod
    def precheck(cls, root: str | Path, mode: Mode, identity: dict[str, Any] | None = None) -> None:
        """The checks `open` can make before the model and the data are loaded: OUT is a
        directory (or absent), holds a run exactly when the mode says so, and, to resume,
        the parts of the run's identity known so far (recipe, settings) match."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise StoreError(f"{option('out')} {root} is a file, not a directory")
        if mode == "overwrite":
            return
        previous = cls(root, ()).read_manifest()
        if previous is None and mode == "new" and root.exists() and not _holds_nothing(root):
            raise _not_a_run(root)
        if previous is not None and mode == "new":
            raise _holds_a_run(root, previous)
        if previous is not None and mode == "resume" and identity:
            check_resumable(root, previous, identity, complete=False)

    @classmethod
    def attach(cls, root: str | Path, class_names: Sequence[str]) -> RunStore:
        """The store rank 0 opened, for another rank: no checks, no clean-up."""
        check_class_names(tuple(class_names))
        return cls(Path(root), tuple(class_names))

    # --- paths ---------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def png_path(self, cls: int, index: int) -> Path:
        return self.root / self.class_names[cls] / f"{image_name(index)}.png"

    def latent_path(self, cls: int, index: int) -> Path:
        return self.root / self.class_names[cls] / f"{image_name(index)}.safetensors"

    def progress_path(self, rank: int) -> Path:
        return self.root / f"{PROGRESS_PREFIX}{int(rank)}.json"

    # --- opening ---------------------------------------------------------------

    def _prepare(self, mode: Mode, identity: dict[str, Any], sweep: bool) -> None:
        previous = self.previous
        if previous is None:
            if self.root.exists() and mode != "overwrite" and not _holds_nothing(self.root):
                raise _not_a_run(self.root)
        elif mode == "new":
            raise _holds_a_run(self.root, previous)
        elif mode == "resume":
            check_resumable(self.root, previous, identity, complete=True)
        elif mode == "overwrite":
            self._remove_previous(previous)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create {option('out')} {self.root}: {e.strerror or e}") from None
        if sweep:
            self._sweep()

    def _sweep(self) -> None:
        removed = self.remove_temporary()
        if removed:
            log.warning("removed %d temporary file(s) a killed run left in %s", removed, self.root)
        for stale in self.root.glob(f"{PROGRESS_PREFIX}*.json"):
            stale.unlink(missing_ok=True)

    def _remove_previous(self, previous: dict[str, Any]) -> None:
        """Remove only what an earlier run wrote, never other files the user keeps in OUT."""
        names = previous.get("class_names", [])
        for name in names if isinstance(names, list) else []:
            if isinstance(name, str) and _SAFE_NAME.match(name) and ".." not in name and name != LATENTS:
                shutil.rmtree(self.root / name, ignore_errors=True)
        shutil.rmtree(self.root / LATENTS, ignore_errors=True)
        self.manifest_path.unlink(missing_ok=True)

    def remove_temporary(self) -> int:
        """Delete dmgd's temporary files in OUT, its class folders and latent folders (what
        a killed run leaves); returns how many. Only rank 0 holding OUT's lock, before the
        other ranks attach: then no live writer has a temporary file there."""
        folders = [self.root, self.root / LATENTS]
        for name in self.class_names:
            folders += [self.root / name, self.root / LATENTS / name]
        removed = 0
        for folder in folders:
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if is_temporary(entry.name) and entry.is_file():
                    entry.unlink(missing_ok=True)
                    removed += 1
        return removed

    # --- samples ---------------------------------------------------------------

    def write_sample(self, cls: int, index: int, image: Any, latent: Any) -> None:
        """image: uint8 array [H, W] or [H, W, 3]; latent: a float32 torch tensor (saved
        exactly). PNG first, latent last: the latent marks the sample finished."""
        import torch
        from PIL import Image
        from safetensors.torch import save

        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        atomic_write_bytes(self.png_path(cls, index), buffer.getvalue())
        _pause_point()
        latent = latent.detach().to("cpu", torch.float32).contiguous()
        atomic_write_bytes(self.latent_path(cls, index), save({"latent": latent}))
        _pause_point()

    def is_finished(self, cls: int, index: int) -> bool:
        return self.latent_path(cls, index).is_file() and self.png_path(cls, index).is_file()

    def count_finished(self, classes: Sequence[int], ipc: int) -> int:
        return sum(self.is_finished(c, i) for c in classes for i in range(ipc))

    def load_latent(self, cls: int, index: int, shape: Sequence[int] | None = None):
        """The sample's latent, exactly as written (float32); StoreError when the file is
        unreadable or not a latent of this run's shape."""
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.latent_path(cls, index)
        hint = f"delete it (and its PNG) and rerun with {option('resume')} to sample it again"
        try:
            latent = load_file(path)["latent"]
        except (SafetensorError, KeyError, OSError, ValueError) as error:
            raise StoreError(f"{path} is unreadable ({error}); {hint}") from None
        if latent.dtype != torch.float32 or (shape is not None and tuple(latent.shape) != tuple(shape)):
            raise StoreError(f"{path} holds a {latent.dtype} latent of shape {tuple(latent.shape)}, not a "
                             f"float32 {tuple(shape or ())}: it is not this run's; {hint}")
        if not bool(torch.isfinite(latent).all()):
            raise StoreError(f"{path} holds non-finite values; {hint}")
        return latent

    # --- progress ----------------------------------------------------------------

    def write_progress(self, rank: int, record: dict[str, Any]) -> None:
        atomic_write_json(self.progress_path(rank), record)

    def read_progress(self, session: str) -> list[dict[str, Any]]:
        """Every rank's progress record of this session (others, and unreadable ones, skipped)."""
        records = []
        for path in sorted(self.root.glob(f"{PROGRESS_PREFIX}*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("session") == session:
                records.append(record)
        return records

    # --- manifest ----------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            raise StoreError(f"cannot read {self.manifest_path}: {error}") from None
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError:
            raise StoreError(
                f"{self.manifest_path} is not valid JSON; it was not written by dmgd, or was edited. "
                f"Restore it, or pass {option('overwrite')}"
            ) from None
        if not isinstance(manifest, dict):
            raise StoreError(f"{self.manifest_path} is not a dmgd manifest; pass {option('overwrite')} to replace "
                             "the run")
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.manifest_path, manifest)
