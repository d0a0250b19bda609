"""`dmgd sample-real`: the random-real baseline, written in a run's layout.

    DIR/<class name>/<index>.png     N images per class drawn from the real TRAIN split
    DIR/manifest.json                "format": "dmgd-sample-real-v1", what was drawn

The source is an embedded data set's train split -- the digits (default, or `data`
"digits") or the corners (`data` "corners", `dmgd.data.corners`) -- or an ImageFolder
(`data`; a directory named "digits" or "corners" is read as a folder).
Class c's images are `numpy.random.default_rng([seed, c]).choice(count, N,
replace=False)` into the class's images in ImageFolder order (sorted file names; for the
digits, ascending load_digits index), kept in the order drawn: so the first k of a set
are themselves a uniform random k-subset, and `dmgd eval --ipc k` on it is a fair
smaller baseline. Digits (corners) are written as 8x8 (16x16) grayscale PNGs exactly as
`dmgd.data.digits.write_image_folder` (`dmgd.data.corners.write_image_folder`) writes them. Folder images are decoded and
re-encoded losslessly as PNG, at their own size (or ADM's centre crop to `image_size`,
the preprocessing of a run's real data), grayscale sources as "L", others as "RGB".

Every file is written atomically, the manifest last; a non-empty DIR is refused unless
`overwrite` (which removes only what an earlier run or sample wrote: the class folders
its manifest names, latents/, manifest.json and eval.json).
"""

from __future__ import annotations

import datetime
import io
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from attrs import frozen

from dmgd.data.atomic import atomic_write_bytes, atomic_write_json
from dmgd.data.store import MANIFEST, StoreError, check_class_names, image_name
from dmgd.errors import DmgdError

FORMAT = "dmgd-sample-real-v1"
DIGITS_SOURCE = "embedded digits (scikit-learn load_digits), train split"
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class SampleRealError(DmgdError):
    pass


@frozen
class SampleRealResult:
    out: Path
    manifest_path: Path
    class_names: tuple[str, ...]
    ipc: int
    seed: int
    chosen: dict[str, list[Any]]  # class name -> source indices (digits) or relative paths (folder)


def choose(count: int, ipc: int, seed: int, class_index: int) -> list[int]:
    """Which of a class's `count` images (positions in its sorted order) are drawn."""
    rng = np.random.default_rng([int(seed), int(class_index)])
    return [int(i) for i in rng.choice(count, size=ipc, replace=False)]


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _prepare_out(out: Path, class_names: tuple[str, ...], overwrite: bool) -> None:
    import json

    if out.exists() and not out.is_dir():
        raise SampleRealError(f"{out} is a file; --out must be a directory")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SampleRealError(f"{out} is not empty; choose an empty or new directory for --out "
                                  "(or pass --overwrite to replace the set in it)")
        previous: dict[str, Any] = {}
        try:
            loaded = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
            previous = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            pass
        names = set(class_names) | {n for n in previous.get("class_names", []) if isinstance(n, str)}
        for name in names:
            try:
                check_class_names((name,))
            except StoreError:
                continue
            shutil.rmtree(out / name, ignore_errors=True)
        if previous:
            shutil.rmtree(out / "latents", ignore_errors=True)
        for name in (MANIFEST, "eval.json"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _short_class(name: str, count: int, ipc: int, where: str) -> SampleRealError:
    return SampleRealError(f"class {name!r} of {where} has {count} images, fewer than --ipc {ipc}; "
                           "choose a smaller --ipc")


def sample_real(out: str | os.PathLike[str], ipc: int, seed: int = 0, *, data: str | os.PathLike[str] | None = None,
                image_size: int | None = None, overwrite: bool = False) -> SampleRealResult:
    """Write a random-real baseline of `ipc` images per class to `out` (see the module doc)."""
    from dmgd.data import embedded

    if int(ipc) < 1:
        raise SampleRealError(f"--ipc must be at least 1, not {ipc}")
    if image_size is not None and int(image_size) < 1:
        raise SampleRealError(f"--image-size must be positive, not {image_size}")
    out = Path(out).expanduser()
    if data is None or embedded.is_embedded_name(data):
        class_names, chosen, writes, source = _draw_embedded(data, ipc, seed, image_size)
    else:
        class_names, chosen, writes, source = _draw_from_folder(Path(data).expanduser(), ipc, seed, image_size)
    _prepare_out(out, class_names, overwrite)
    for relative, png in writes:
        atomic_write_bytes(out / relative, png)
    atomic_write_json(out / MANIFEST, _manifest(ipc, seed, image_size, class_names, source, chosen))
    return SampleRealResult(out=out, manifest_path=out / MANIFEST, class_names=class_names, ipc=int(ipc),
                            seed=int(seed), chosen=chosen)


# (class names, chosen per class, (relative PNG path, PNG bytes) to write, the source record)
Draw = tuple[tuple[str, ...], dict[str, list[Any]], list[tuple[Path, bytes]], dict[str, Any]]


def _draw_embedded(data: str | os.PathLike[str] | None, ipc: int, seed: int, image_size: int | None) -> Draw:
    """The draw from an embedded data set's train split (None: the default one)."""
    from dmgd.data import embedded
    from dmgd.data.digits import to_uint8

    name = str(data) if data is not None else embedded.DEFAULT_DATA
    size = embedded.image_shape(name)[1]
    if image_size not in (None, size):
        raise SampleRealError(f"the embedded {name} are {size}x{size}: --image-size applies to --data folders only")
    split = embedded.load_split(name)
    class_names = tuple(split.class_names)
    train = split.train_indices
    labels = split.labels[train]
    chosen: dict[str, list[Any]] = {}
    writes: list[tuple[Path, bytes]] = []
    for c, class_name in enumerate(class_names):
        members = train[labels == c]  # ascending load_digits indices
        if len(members) < ipc:
            raise _short_class(class_name, len(members), ipc, f"the {name}' train split")
        picks = [int(members[i]) for i in choose(len(members), ipc, seed, c)]
        chosen[class_name] = picks
        for k, index in enumerate(picks):
            pixels = to_uint8(split.pixels[index].astype(np.float32) / 8.0 - 1.0)
            writes.append((Path(class_name) / f"{image_name(k)}.png", _png(pixels)))
    source = {"data": embedded.source(name, "train"), "chosen_are": "load_digits indices (train split)"}
    return class_names, chosen, writes, source


def _draw_from_folder(root: Path, ipc: int, seed: int, image_size: int | None) -> Draw:
    """The draw from an ImageFolder (every image read before anything is written)."""
    from dmgd.data.images import DataError, _class_dirs, _class_files

    chosen: dict[str, list[Any]] = {}
    writes: list[tuple[Path, bytes]] = []
    try:
        dirs = _class_dirs(root)
        class_names = tuple(d.name for d in dirs)
        check_class_names(class_names)
        for c, folder in enumerate(dirs):
            files = _class_files(root, folder)
            if len(files) < ipc:
                raise _short_class(folder.name, len(files), ipc, str(root))
            picks = [files[i] for i in choose(len(files), ipc, seed, c)]
            chosen[folder.name] = [p.relative_to(root).as_posix() for p in picks]
            for k, path in enumerate(picks):
                writes.append((Path(folder.name) / f"{image_name(k)}.png", _png(_read_for_copy(path, image_size))))
    except (DataError, StoreError) as error:
        raise SampleRealError(str(error)) from None
    return class_names, chosen, writes, {"data": str(root), "chosen_are": "paths relative to the data folder"}


def _manifest(ipc: int, seed: int, image_size: int | None, class_names: tuple[str, ...], source: dict[str, Any],
              chosen: dict[str, list[Any]]) -> dict[str, Any]:
    from dmgd.data.manifest import package_versions

    return {
        "format": FORMAT,
        "kind": "random-real baseline: real training images drawn at random, not distilled",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "ipc": int(ipc),
        "seed": int(seed),
        "settings": {"ipc": int(ipc), "seed": int(seed), "image_size": image_size},
        "class_names": list(class_names),
        "source": source,
        "sampling": "class c (index in class_names): numpy.random.default_rng([seed, c]).choice(count, ipc, "
                    "replace=False) into the class's images in ImageFolder order; file <k> is draw k",
        "chosen": chosen,
        "layout": {"images": f"<class name>/<index as {image_name(0)}>.png"},
        "status": "complete",
        "versions": package_versions(),
    }


def _read_for_copy(path: Path, image_size: int | None) -> np.ndarray:
    """A folder image as uint8 [H, W] (grayscale source) or [H, W, 3]."""
    from PIL import Image

    from dmgd.data.images import DataError, _decode

    try:
        with Image.open(path) as image:
            channels = 1 if image.mode in _GRAY_MODES else 3
    except Exception as error:
        raise DataError(f"Cannot read image {path}: {type(error).__name__}: {error}. The file is corrupt, "
                        "truncated or not an image: replace it or move it out of the data folder.") from None
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"Cannot read {path}: {error}. Check the file's permissions.") from None
    array = _decode(data, path, image_size, channels)
    return array[:, :, 0] if channels == 1 else array
