"""The output of a run on disk: an ImageFolder of PNGs, the latents, and the manifest.

    OUT/<class name>/<index>.png           the distilled images (index zero-padded, so the
                                           sorted order is the sampling order)
    OUT/latents/<class name>/<index>.safetensors   each image's clean latent
    OUT/manifest.json                      what was run, with what, and how far it got

Every file is written atomically, and a sample counts as finished only once both its
PNG and its latent exist, so a run killed at any moment can be resumed.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Any, Literal

from attrs import frozen

from dmgd.data.atomic import atomic_write_bytes, atomic_write_json
from dmgd.errors import DmgdError

MANIFEST = "manifest.json"
LATENTS = "latents"
Mode = Literal["new", "resume", "overwrite"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,127}$")


class StoreError(DmgdError):
    pass


def check_class_names(names: tuple[str, ...]) -> None:
    """Class names become directory names: refuse anything that could leave OUT."""
    for name in names:
        if not _SAFE_NAME.match(name) or ".." in name:
            raise StoreError(
                f"class name {name!r} cannot be used as a directory name in the output; "
                "rename that class's folder to letters, digits, '_', '-', '.' or spaces"
            )
    if len(set(names)) != len(names):
        raise StoreError("two classes share one name; class names must be unique")


def image_name(index: int) -> str:
    return f"{index:04d}"


@frozen
class RunStore:
    root: Path
    class_names: tuple[str, ...]

    @classmethod
    def open(cls, root: str | Path, class_names: tuple[str, ...], mode: Mode, identity: dict[str, Any]) -> RunStore:
        """Open OUT for a run. `identity` is what must match for a resume (recipe hash, settings...)."""
        check_class_names(class_names)
        store = cls(Path(root), class_names)
        store._prepare(mode, identity)
        return store

    # --- paths ---------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def png_path(self, cls: int, index: int) -> Path:
        return self.root / self.class_names[cls] / f"{image_name(index)}.png"

    def latent_path(self, cls: int, index: int) -> Path:
        return self.root / LATENTS / self.class_names[cls] / f"{image_name(index)}.safetensors"

    # --- opening ---------------------------------------------------------------

    def _prepare(self, mode: Mode, identity: dict[str, Any]) -> None:
        previous = self.read_manifest()
        if previous is None:
            if self.root.exists() and any(self.root.iterdir()) and mode != "overwrite":
                raise StoreError(
                    f"{self.root} is not empty and holds no dmgd run; choose an empty or new "
                    "directory for --out (or pass --overwrite to write into it anyway)"
                )
        elif mode == "new":
            raise StoreError(
                f"{self.root} already holds a run ({previous.get('status', 'unknown')}); pass "
                "--resume to finish it, --overwrite to replace it, or choose another --out"
            )
        elif mode == "resume":
            before = previous.get("identity", {})
            changed = sorted(k for k in set(before) | set(identity) if before.get(k) != identity.get(k))
            if changed:
                raise StoreError(
                    f"cannot resume: the run in {self.root} was made with different "
                    f"{', '.join(changed)}; rerun with the same recipe and settings, or pass --overwrite"
                )
        elif mode == "overwrite":
            self._remove_previous(previous)
        self.root.mkdir(parents=True, exist_ok=True)

    def _remove_previous(self, previous: dict[str, Any]) -> None:
        """Remove only what an earlier run wrote, never other files the user keeps in OUT."""
        for name in previous.get("class_names", []):
            if _SAFE_NAME.match(name) and ".." not in name:
                shutil.rmtree(self.root / name, ignore_errors=True)
        shutil.rmtree(self.root / LATENTS, ignore_errors=True)
        self.manifest_path.unlink(missing_ok=True)

    # --- samples ---------------------------------------------------------------

    def write_sample(self, cls: int, index: int, image: Any, latent: Any) -> None:
        """image: uint8 array [H, W] or [H, W, 3]; latent: a torch tensor. PNG first, latent
        last: the latent marks the sample finished."""
        from PIL import Image
        from safetensors.torch import save

        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        atomic_write_bytes(self.png_path(cls, index), buffer.getvalue())
        atomic_write_bytes(self.latent_path(cls, index), save({"latent": latent.detach().cpu().contiguous()}))

    def is_finished(self, cls: int, index: int) -> bool:
        return self.latent_path(cls, index).is_file() and self.png_path(cls, index).is_file()

    def load_latent(self, cls: int, index: int):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.latent_path(cls, index)
        try:
            return load_file(path)["latent"]
        except (SafetensorError, KeyError, OSError) as error:
            raise StoreError(f"{path} is unreadable ({error}); delete it and rerun with --resume") from None

    # --- manifest ----------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StoreError(f"cannot read {self.manifest_path}: {error}") from None
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError:
            raise StoreError(
                f"{self.manifest_path} is not valid JSON; it was not written by dmgd, or was edited. "
                "Restore it, or pass --overwrite"
            ) from None
        if not isinstance(manifest, dict):
            raise StoreError(f"{self.manifest_path} is not a dmgd manifest; pass --overwrite to replace the run")
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.manifest_path, manifest)
