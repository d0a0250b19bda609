"""The two sets of an evaluation, read into tensors: the distilled set (`read_distilled`,
the first IPC images of each class folder) and the real held-out set (`read_real`, an
ImageFolder or an embedded data set's test split: the corners' for a set made by the
embedded corners model or sampled from the corners, else the digits'), matched by class
name (`real_folders_for`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from PIL import Image

from dmgd.data import embedded
from dmgd.data.images import (IMG_EXTENSIONS, DataError, RealImages, _decode, class_folder_names, embedded_real_images,
                              load_image_folder)
from dmgd.evaluation.config import IMAGENET_SIZE, EvalError, preset_for
from dmgd.evaluation.results import DistilledSet

MANIFEST = "manifest.json"
EMBEDDED_TEST = "embedded digits test split (scikit-learn load_digits, fixed stratified 80/20 split)"
EMBEDDED_TESTS = {
    "digits": EMBEDDED_TEST,
    "corners": "embedded corners test split (dmgd.data.corners: the digits' fixed stratified 80/20 split on a "
               "16x16 canvas)",
}
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def folder_list(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:8])
    return shown + (f" and {len(names) - 8} more" if len(names) > 8 else "")


# --- the distilled set ------------------------------------------------------------------------


def read_distilled(out_dir: str | os.PathLike[str], *, ipc: int | None = None,
                   image_size: int | None = None, channels: int | None = None,
                   preset: str = "auto") -> DistilledSet:
    """The distilled set in `out_dir` (see `DistilledSet`). Class folders: the manifest's
    `class_names` when it has them, else every non-hidden sub-directory but `latents`.
    image_size None: 224 for images of >= 64 px (preset imagenet), else their own size."""
    root = _existing_dir(out_dir)
    manifest = _read_manifest(root)
    names = _class_names(root, manifest)
    files = _class_files(root, names)
    want = _chosen_ipc(root, names, files, ipc, manifest)
    chosen = [(c, p) for c, n in enumerate(names) for p in files[n][:want]]
    first_channels, first_size = _channels_of(chosen[0][1])
    channels = channels or first_channels
    size = image_size or (IMAGENET_SIZE if preset_for(first_size, preset) == "imagenet" else first_size)
    return DistilledSet(
        root=root, images=_load_images([p for _, p in chosen], size, channels),
        labels=torch.tensor([c for c, _ in chosen], dtype=torch.long),
        class_names=tuple(names), files=tuple(p.relative_to(root).as_posix() for _, p in chosen), ipc=want,
        native_size=first_size, channels=channels, manifest=manifest,
    )


def _existing_dir(out_dir: str | os.PathLike[str]) -> Path:
    root = Path(out_dir).expanduser().absolute()
    if not root.exists():
        raise EvalError(f"{root} does not exist; give the --out directory of `dmgd run` or `dmgd sample-real`")
    if not root.is_dir():
        raise _not_a_set(root, "it is a file, not a directory")
    return root


def _read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvalError(f"{path} is unreadable or not JSON ({error}); restore it or remove it") from None
    return manifest if isinstance(manifest, dict) else None


def _manifest_ipc(manifest: dict[str, Any] | None) -> int | None:
    if not manifest:
        return None
    for value in ((manifest.get("settings") or {}).get("ipc"), manifest.get("ipc")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _class_names(root: Path, manifest: dict[str, Any] | None) -> list[str]:
    names = manifest.get("class_names") if manifest else None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                       and p.name != "latents")
    if not names:
        raise _not_a_set(root, "it has no class folders")
    return names


def _image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.name.lower().endswith(IMG_EXTENSIONS)), key=lambda p: p.name)


def _class_files(root: Path, names: list[str]) -> dict[str, list[Path]]:
    """Each class's image files, sorted by name; every class must have at least one."""
    files: dict[str, list[Path]] = {}
    for name in names:
        folder = root / name
        if not folder.is_dir():
            raise EvalError(f"{root}/manifest.json lists class {name!r} but {folder} is missing: the set is "
                            "incomplete (finish it with `dmgd run ... --resume`)")
        files[name] = _image_files(folder)
    if not any(files.values()):
        raise _not_a_set(root, f"none of its {len(names)} class folders holds an image")
    empty = [n for n in names if not files[n]]
    if empty:
        raise EvalError(f"class {empty[0]!r} of {root} has no images ({folder_list(empty)} empty): every class "
                        "needs at least one image; finish the run (`dmgd run ... --resume`) or remove the class "
                        "from the set and from the real test set")
    return files


def _chosen_ipc(root: Path, names: list[str], files: dict[str, list[Path]], ipc: int | None,
                manifest: dict[str, Any] | None) -> int:
    """The IPC used: `ipc`, else the manifest's, else the smallest class's count."""
    counts = {n: len(f) for n, f in files.items()}
    want = ipc or _manifest_ipc(manifest) or min(counts.values())
    short = [n for n in names if counts[n] < want]
    if short:
        source = "--ipc" if ipc else "the manifest's ipc"
        raise EvalError(f"class {short[0]!r} of {root} has {counts[short[0]]} images, fewer than the IPC "
                        f"of {want} ({source}); finish the run (`dmgd run ... --resume`) or pass a smaller --ipc")
    return want


def _not_a_set(root: Path, why: str) -> EvalError:
    return EvalError(
        f"{root} is not a distilled set: {why}. `dmgd eval` reads the --out directory of "
        "`dmgd run` or `dmgd sample-real`: one folder per class holding its images "
        "(<class>/<index>.png), optionally with manifest.json"
    )


def _channels_of(path: Path) -> tuple[int, int]:
    """(channels, size) of one image: 1 for grayscale modes, else 3; size = min side."""
    try:
        with Image.open(path) as image:
            return (1 if image.mode in _GRAY_MODES else 3), min(image.size)
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError...
        raise EvalError(f"Cannot read image {path}: {type(error).__name__}: {error}. Replace the file or "
                        "move it out of the set.") from None


def _load_images(paths: list[Path], size: int, channels: int) -> torch.Tensor:
    """The images, centre-cropped to `size`, as float32 [N, C, H, W] in [-1, 1]."""
    arrays = []
    for path in paths:
        try:
            arr = _decode(path.read_bytes(), path, size, channels)
        except DataError as error:
            raise EvalError(str(error)) from None
        except OSError as error:
            raise EvalError(f"Cannot read {path}: {error.strerror or error}") from None
        arrays.append(arr)
    stacked = np.stack(arrays)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).to(torch.float32).div_(127.5).sub_(1.0).contiguous()


# --- the real set -----------------------------------------------------------------------------


def read_real(real_dir: str | os.PathLike[str] | None, *, image_size: int, channels: int,
              manifest: dict[str, Any] | None = None, class_names: tuple[str, ...] | None = None,
              out: Path | None = None) -> tuple[RealImages, str]:
    """The real held-out set: an ImageFolder (centre-cropped to image_size), or (None) an
    embedded data set's TEST split: the one `default_test_data(manifest)` names (the
    distilled set's manifest: the corners for the corners model, else the digits).
    class_names: the distilled set's classes (its folder names): then only the real classes
    matching them are kept (`real_folders_for`; a folder's others are never opened), one
    label per class in class_names' order. Returns (images, a description of the source)."""
    if real_dir is None:
        name = default_test_data(manifest)
        real, source = _embedded_test(name, image_size, channels), EMBEDDED_TESTS[name]
        if class_names is None:
            return real, source
        wanted = real_folders_for(class_names, real.class_names, manifest, out, source)
        return _keep_classes(real, wanted), _described(source, wanted, real.class_names)
    root = Path(real_dir).expanduser()
    try:
        wanted = None
        if class_names is not None:
            available = class_folder_names(root)
            wanted = real_folders_for(class_names, tuple(available), manifest, out, str(root))
        real = load_image_folder(root, image_size=image_size, channels=channels, folders=wanted)
    except DataError as error:
        raise EvalError(f"the real test set: {error}") from None
    return real, (str(root) if wanted is None else _described(str(root), wanted, tuple(available)))


def real_folders_for(class_names: tuple[str, ...], available: tuple[str, ...], manifest: dict[str, Any] | None,
                     out: Path | None, real_source: str) -> list[str]:
    """The real class folder of each distilled class, in order: the folder of the same name,
    else the data folder the run's manifest maps the class to (a set written with
    `out_names = index`, `OUT/00193/`, is tested on the folder of its wnid, `n02096294`).
    The real set may hold more classes (ImageNet's whole val split): they are left out."""
    have = set(available)
    data_of = {str(c.get("folder")): str(c.get("data")) for c in (manifest or {}).get("classes") or ()
               if isinstance(c, dict)}
    wanted, missing = [], []
    for name in class_names:
        folder = name if name in have else data_of.get(name)
        if folder in have:
            wanted.append(folder)
        else:
            missing.append(name)
    if missing:
        where = out if out is not None else "the distilled set"
        extra = [n for n in available if n not in set(wanted)]
        raise EvalError(
            f"the real test set {real_source} has no class folder for {folder_list(missing)} of {where} "
            f"({len(missing)} of its {len(class_names)} classes; the real set has {len(available)}: "
            f"{folder_list(extra or list(available))}). Point --real at held-out images of the classes that were "
            "distilled, one folder a class named as the set's folders or as the run's data folders (more classes "
            "are fine: only the set's are read)"
        )
    return wanted


def _keep_classes(real: RealImages, wanted: list[str]) -> RealImages:
    """The images of the `wanted` classes, relabelled in that order."""
    if list(real.class_names) == wanted:
        return real
    new_label = torch.full((len(real.class_names),), -1, dtype=torch.long)
    for i, name in enumerate(wanted):
        new_label[real.class_names.index(name)] = i
    labels = new_label[real.labels]
    keep = labels >= 0
    paths = tuple(p for p, k in zip(real.paths, keep.tolist()) if k)
    return attrs.evolve(real, images=real.images[keep], labels=labels[keep], class_names=tuple(wanted), paths=paths,
                        fingerprint=f"{real.fingerprint}:{','.join(wanted)}")


def _described(source: str, wanted: list[str], available: tuple[str, ...]) -> str:
    if len(wanted) == len(available):
        return source
    return f"{source} ({len(wanted)} of its {len(available)} classes)"


def default_test_data(manifest: dict[str, Any] | None) -> str:
    """The embedded data set whose test split a distilled set is scored on by default:
    the default data of the embedded model that made it (manifest "model" "id"), else the
    embedded set it was drawn from or distilled from (a sample-real manifest's "source",
    a run's "data" "source"), else "digits"."""
    from dmgd.sampling.backbones import EMBEDDED_MODELS, embedded_model_name

    manifest = manifest or {}
    model = manifest.get("model")
    if isinstance(model, dict):
        name = embedded_model_name(str(model.get("id")))
        if name is not None:
            return EMBEDDED_MODELS[name][1]
    for record in (manifest.get("source"), manifest.get("data")):
        if isinstance(record, dict):
            text = str(record.get("data", record.get("source", "")))
            for name in embedded.EMBEDDED_DATA:
                if text == embedded.source(name, "train"):
                    return name
    return embedded.DEFAULT_DATA


def _embedded_test(name: str, image_size: int, channels: int) -> RealImages:
    c, h, _ = embedded.image_shape(name)
    if (image_size, channels) != (h, c):
        raise EvalError(
            f"the distilled set is {image_size}x{image_size} with {channels} channel(s), but the default "
            f"real test set, the embedded {name}, is {h}x{h} grayscale: pass --real with the real "
            "held-out images of the set's classes (an ImageFolder, e.g. the validation split)"
        )
    real = embedded_real_images(name, "test")
    return RealImages(images=real.images, labels=real.labels, class_names=real.class_names, paths=real.paths,
                      fingerprint=f"{name}-test", root=None, source=real.source)
