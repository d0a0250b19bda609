"""Real images: an ImageFolder on disk, or the embedded digits' train split.

`load_image_folder(root)` reads the layout torchvision's ImageFolder reads
(`root/<class name>/**/<image>`), class names sorted, files sorted within a class, with
PIL only (torchvision is not a dependency). Preprocessing is deterministic: ADM's centre
crop (as DiT's `center_crop_arr`) to `image_size` when one is given, conversion to the
requested channels, no random flip; pixels map to [-1, 1] as x / 127.5 - 1 (torchvision's
ToTensor + Normalize(0.5, 0.5)).

Stricter than torchvision on purpose: a file in a class folder that is not an image (by
extension) or that cannot be decoded (corrupt, truncated) is an error naming the file,
instead of being skipped or crashing a worker later. Hidden files (".DS_Store") and files
directly under `root` are ignored.

`fingerprint` is a sha256 over the preprocessing (image size, channels), every file's
relative path and its bytes: the same images give the same fingerprint wherever they are,
and any change to a file changes it. It keys the targets cache.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from attrs import field, frozen

from dmgd.errors import DmgdError, option

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

# torchvision's IMG_EXTENSIONS
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
FINGERPRINT_VERSION = "dmgd-images-v1"

FOLDER_HINT = (
    "dmgd reads an ImageFolder: one sub-directory per class, named after the class, "
    "holding that class's images (" + ", ".join(IMG_EXTENSIONS) + "), e.g. "
    "train/n02086240/xxx.JPEG. Without a data folder dmgd uses its embedded digits."
)


log = logging.getLogger("dmgd.data")


class DataError(DmgdError):
    """Real data that cannot be used; the message names the path and what to do."""


@frozen(eq=False)
class RealImages:
    """Preprocessed real images of a classification set.

    images: float32 [N, C, H, W] in [-1, 1], or None for a folder that is streamed
    (`scan_image_folder`: its images are decoded a batch at a time when they are encoded);
    labels: int64 [N] (index into class_names);
    class_names: sorted directory names (or "0".."9" for the digits); paths: each image's
    path relative to `root` (posix); fingerprint: sha256 hex of the data and its
    preprocessing; root: the folder read (None for an embedded data set); source: how
    manifests name an embedded set (None for a folder: its root names it).
    A streamed folder also has: class_fingerprints (one sha256 a class, over the
    preprocessing and its files' names and bytes), image_size / channels (the
    preprocessing) and pixel_shape (C, H, W of a decoded image).
    """

    images: torch.Tensor | None = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    class_names: tuple[str, ...]
    paths: tuple[str, ...] = field(repr=False)
    fingerprint: str
    root: str | None = None
    # what reading changed, e.g. {"RGB -> L": 1437, "28x28 -> 8x8": 1437}: image counts
    conversions: Mapping[str, int] = field(factory=dict)
    source: str | None = None
    class_fingerprints: tuple[str, ...] = field(default=(), repr=False)
    image_size: int | None = None
    channels: int | None = None
    pixel_shape: tuple[int, int, int] | None = None

    @property
    def streamed(self) -> bool:
        return self.images is None

    def class_fingerprint(self, c: int) -> str:
        """sha256 hex naming class c's images and their preprocessing (what keys its
        latents in the cache): a streamed folder's own, else derived from the data's."""
        if self.class_fingerprints:
            return self.class_fingerprints[int(c)]
        return hashlib.sha256(f"{self.fingerprint}\0class={int(c)}".encode()).hexdigest()

    def class_files(self, c: int) -> list[str]:
        """Absolute paths of a streamed folder's class c images, in order."""
        return [os.path.join(str(self.root), self.paths[int(i)]) for i in self.class_indices(c).tolist()]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        if self.images is None:
            return self.pixel_shape  # type: ignore[return-value]
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    def class_counts(self) -> tuple[int, ...]:
        import torch

        return tuple(int(n) for n in torch.bincount(self.labels, minlength=self.num_classes))

    def class_indices(self, c: int) -> Any:
        """Indices (ascending) of class c's images."""
        import torch

        return torch.nonzero(self.labels == int(c), as_tuple=False).reshape(-1)


def center_crop_arr(pil_image: Image.Image, image_size: int) -> Image.Image:
    """ADM's centre crop (guided-diffusion, as in DiT): halve with BOX while the short side
    is at least twice the size, BICUBIC so the short side equals the size, crop the centre."""
    from PIL import Image

    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return Image.fromarray(arr[crop_y: crop_y + image_size, crop_x: crop_x + image_size])


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16-bit grayscale: rescale, not clip
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")  # palette transparency, without PIL's warning
    return img.convert("L" if channels == 1 else "RGB")


def _decode(data: bytes, path: Path, image_size: int | None, channels: int) -> np.ndarray:
    """Bytes -> uint8 array [H, W, C]; DataError naming the file on any failure."""
    return _decode_with_changes(data, path, image_size, channels)[0]


def _decode_with_changes(data: bytes, path: Path, image_size: int | None,
                         channels: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """`_decode`, and what it converted (mode and size changes, in words)."""
    from PIL import Image

    fix = "replace it or move it out of the data folder."
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decodes fully: a truncated file fails here
            changes = _conversions(img, image_size, channels)
            img = _to_mode(img, channels)
            if image_size is not None:
                img = center_crop_arr(img, image_size)
            arr = np.asarray(img, dtype=np.uint8)
    except Image.UnidentifiedImageError:
        raise DataError(f"{path} is not a readable image: its contents are in no image format PIL "
                        f"knows (the file is corrupt or not an image); {fix}") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        why = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the file", str(e))  # no object reprs
        raise DataError(f"{path} is not a readable image ({type(e).__name__}: {why}): the file is corrupt "
                        f"or truncated; {fix}") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr, changes


def _conversions(img: Image.Image, image_size: int | None, channels: int) -> tuple[str, ...]:
    """What reading does to this image, in words: its mode and size changes."""
    changes = []
    target = "L" if channels == 1 else "RGB"
    if img.mode != target:
        changes.append(f"{img.mode} -> {target}")
    w, h = img.size
    if image_size is not None and (w, h) != (image_size, image_size):
        changes.append(f"{w}x{h} -> {image_size}x{image_size}")
    return tuple(changes)


def _report_conversions(root: Path, conversions: Mapping[str, int], total: int) -> None:
    """Say once, with counts, what reading changed (a model of another size or mode)."""
    if conversions:
        what = ", ".join(f"{n} of {total} images {change}" for change, n in conversions.items())
        log.warning("%s: converted to the model's input: %s (recorded in the manifest)", root, what)


def _class_dirs(root: Path) -> list[Path]:
    if not root.exists():
        raise DataError(f"Data directory {root} does not exist. {FOLDER_HINT}")
    if not root.is_dir():
        raise DataError(f"Data path {root} is not a directory. {FOLDER_HINT}")
    dirs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)
    if not dirs:
        raise DataError(f"Data directory {root} has no class sub-directories. {FOLDER_HINT}")
    return dirs


def _class_files(root: Path, class_dir: Path) -> list[Path]:
    """A class's image files in torchvision's order (sorted walk, sorted names)."""
    files: list[Path] = []
    walked = []
    # Walk lazily, so that pruning works (hidden folders, link loops), then sort as torchvision does.
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(dirpath)
        parent = os.path.dirname(dirpath)
        ancestors = [os.path.realpath(a) for a in (parent, *Path(parent).parents)
                     if len(str(a)) >= len(str(class_dir.parent))]
        if real in ancestors:
            raise DataError(
                f"{dirpath} is a link back to a folder that holds it ({real}): a loop, which would "
                f"read the same images again and again. Remove the link from {root}."
            )
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        walked.append((dirpath, filenames))
    for dirpath, filenames in sorted(walked):
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            if not name.lower().endswith(IMG_EXTENSIONS):
                raise DataError(
                    f"{p} is not an image (extensions read: {', '.join(IMG_EXTENSIONS)}). "
                    f"Move it out of {root}, or convert it."
                )
            if not p.is_file():  # a broken link, a FIFO (reading one blocks forever), a device...
                raise DataError(
                    f"{p} is not a regular file (a broken link, a pipe or a device). "
                    f"Replace it with the image, or move it out of {root}."
                )
            files.append(p)
    if not files:
        raise DataError(
            f"Class directory {class_dir} has no images: every class needs at least one. "
            f"Remove the empty directory or add its images. {FOLDER_HINT}"
        )
    return files


def load_image_folder(
    root: str | os.PathLike[str],
    image_size: int | None = None,
    channels: int = 3,
    num_classes: int | None = None,
    *,
    workers: int | None = None,
    classes: str | None = None,
    folders: Sequence[str] | None = None,
) -> RealImages:
    """Read an ImageFolder into [-1, 1] tensors (see the module doc). Raises DataError.

    image_size: ADM centre crop to image_size x image_size; None keeps the images as they
    are (then they must all have one size). channels: 3 (RGB) or 1 (grayscale); every image
    is converted. num_classes: when given, the folder must have exactly that many classes.
    classes: a `classes` setting (`dmgd.data.classes`): only the class folders it picks are read.
    folders: exactly these class folders (names), labelled in this order; the others are never opened.
    """
    import torch

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels!r}")
    if image_size is not None and int(image_size) < 1:
        raise ValueError(f"image_size must be positive, not {image_size!r}")
    root = Path(root).expanduser()
    dirs, files, labels = _listing(root, num_classes, classes, folders)
    rel = [p.relative_to(root).as_posix() for p in files]
    arrays, fingerprint, conversions = _read_images(root, files, rel, image_size, channels, workers)
    _report_conversions(root, conversions, len(arrays))
    stacked = np.stack(arrays)  # [N, H, W, C] uint8
    del arrays
    images = torch.from_numpy(stacked).permute(0, 3, 1, 2).to(torch.float32).div_(127.5).sub_(1.0).contiguous()
    return RealImages(
        images=images,
        labels=torch.tensor(labels, dtype=torch.long),
        class_names=tuple(d.name for d in dirs),
        paths=tuple(rel),
        fingerprint=fingerprint,
        root=str(root),
        conversions=conversions,
    )


def chosen_class_dirs(root: Path, dirs: list[Path], classes: str | None) -> list[Path]:
    """The class folders a `classes` setting picks (None: all); the others are never opened."""
    if classes is None:
        return dirs
    from dmgd.data.classes import choose_class_names

    chosen = set(choose_class_names([d.name for d in dirs], classes, root=root))
    return [d for d in dirs if d.name in chosen]


def class_folder_names(root: str | os.PathLike[str]) -> list[str]:
    """The class folders of an ImageFolder, sorted; nothing inside them is read. Raises DataError."""
    return [d.name for d in _class_dirs(Path(root).expanduser())]


def _listing(root: Path, num_classes: int | None, classes: str | None = None,
             folders: Sequence[str] | None = None) -> tuple[list[Path], list[Path], list[int]]:
    """(class directories, image files, their labels) of an ImageFolder, torchvision's order
    (or `folders`' order when given)."""
    dirs = chosen_class_dirs(root, _class_dirs(root), classes)
    if folders is not None:
        by_name = {d.name: d for d in dirs}
        absent = [name for name in folders if name not in by_name]
        if absent:
            raise DataError(f"Data directory {root} has no class folder {', '.join(map(repr, absent[:8]))}. "
                            f"{FOLDER_HINT}")
        dirs = [by_name[name] for name in folders]
    if num_classes is not None and len(dirs) != int(num_classes):
        raise DataError(
            f"Data directory {root} has {len(dirs)} class directories "
            f"({', '.join(d.name for d in dirs[:12])}{', ...' if len(dirs) > 12 else ''}), "
            f"but the model has {num_classes} classes. Point {option('data')} at a folder with one "
            "sub-directory per class of the model, in the model's class order (sorted names)."
        )
    files: list[Path] = []
    labels: list[int] = []
    for c, d in enumerate(dirs):
        fs = _class_files(root, d)
        files.extend(fs)
        labels.extend([c] * len(fs))
    return dirs, files, labels


def _read_images(root: Path, files: list[Path], rel: list[str], image_size: int | None, channels: int,
                 workers: int | None) -> tuple[list[np.ndarray], str, dict[str, int]]:
    """Decode every file (threads: PIL decodes without the GIL): (uint8 arrays, the data's
    fingerprint over names, sizes and bytes, the conversions made with their counts)."""
    h = hashlib.sha256()
    h.update(f"{FINGERPRINT_VERSION}\0size={image_size}\0channels={channels}\0".encode())

    def read(p: Path) -> tuple[bytes, np.ndarray, tuple[str, ...]]:
        try:
            data = p.read_bytes()
        except OSError as e:
            raise DataError(f"Cannot read {p}: {e}. Check the file's permissions.") from None
        return data, *_decode_with_changes(data, p, image_size, channels)

    arrays: list[np.ndarray] = []
    conversions: dict[str, int] = {}
    pool = ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1))
    try:
        for r, (data, arr, changes) in zip(rel, pool.map(read, files)):
            for change in changes:
                conversions[change] = conversions.get(change, 0) + 1
            h.update(r.encode("utf-8") + b"\0" + len(data).to_bytes(8, "little"))
            h.update(data)
            if arrays and arr.shape != arrays[0].shape:
                raise DataError(
                    f"Image {root / r} is {arr.shape[1]}x{arr.shape[0]}, but {root / rel[0]} is "
                    f"{arrays[0].shape[1]}x{arrays[0].shape[0]}: images of different sizes need a "
                    "common image_size (the model's resolution) to be centre-cropped to."
                )
            arrays.append(arr)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error, skip the files not yet read
    return arrays, h.hexdigest(), conversions


def scan_image_folder(
    root: str | os.PathLike[str],
    image_size: int | None = None,
    channels: int = 3,
    num_classes: int | None = None,
    *,
    workers: int | None = None,
    classes: str | None = None,
) -> RealImages:
    """An ImageFolder as a streamed RealImages (`images` None): the listing, the labels, the
    fingerprint (the same as `load_image_folder`'s), one fingerprint a class, and the
    conversions reading will make (from each file's header). Memory: a chunk of files at a
    time. The pixels are decoded later, a batch at a time (`dmgd.data.latent_cache`); a file
    that PIL cannot identify is a DataError now, one that fails to decode then."""
    import torch

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels!r}")
    if image_size is not None and int(image_size) < 1:
        raise ValueError(f"image_size must be positive, not {image_size!r}")
    root = Path(root).expanduser()
    dirs, files, labels = _listing(root, num_classes, classes)
    rel = [p.relative_to(root).as_posix() for p in files]
    fingerprint, per_class, conversions, size = _scan_files(root, files, rel, labels, image_size, channels, workers)
    _report_conversions(root, conversions, len(files))
    h, w = (image_size, image_size) if image_size is not None else (size[1], size[0])
    return RealImages(
        images=None, labels=torch.tensor(labels, dtype=torch.long), class_names=tuple(d.name for d in dirs),
        paths=tuple(rel), fingerprint=fingerprint, root=str(root), conversions=conversions,
        class_fingerprints=per_class, image_size=image_size, channels=channels, pixel_shape=(channels, h, w),
    )


SCAN_CHUNK = 64  # files read ahead at a time: memory stays flat in the data's size


def _scan_files(root: Path, files: list[Path], rel: list[str], labels: list[int], image_size: int | None,
                channels: int, workers: int | None) -> tuple[str, tuple[str, ...], dict[str, int], tuple[int, int]]:
    """(the data's fingerprint, each class's, the conversions with counts, the first image's
    (width, height)), reading each file's bytes once and its header only."""
    head = f"{FINGERPRINT_VERSION}\0size={image_size}\0channels={channels}\0".encode()
    whole = hashlib.sha256(head)
    per_class = [hashlib.sha256(b"class\0" + head) for _ in range(max(labels) + 1 if labels else 0)]
    conversions: dict[str, int] = {}
    first: tuple[int, int] | None = None

    def read(p: Path) -> tuple[bytes, tuple[int, int], tuple[str, ...]]:
        data = _read_bytes(p)
        return data, *_header(data, p, image_size, channels)

    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(files), SCAN_CHUNK):
            chunk = slice(start, start + SCAN_CHUNK)
            for r, c, (data, size, changes) in zip(rel[chunk], labels[chunk], pool.map(read, files[chunk])):
                for change in changes:
                    conversions[change] = conversions.get(change, 0) + 1
                first = first or size
                if image_size is None and size != first:
                    raise DataError(
                        f"Image {root / r} is {size[0]}x{size[1]}, but {root / rel[0]} is {first[0]}x{first[1]}: "
                        "images of different sizes need a common image_size (the model's resolution) "
                        "to be centre-cropped to.")
                entry = r.encode("utf-8") + b"\0" + len(data).to_bytes(8, "little")
                for h in (whole, per_class[c]):
                    h.update(entry)
                    h.update(data)
    return whole.hexdigest(), tuple(h.hexdigest() for h in per_class), conversions, first or (0, 0)


def _read_bytes(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError as e:
        raise DataError(f"Cannot read {p}: {e}. Check the file's permissions.") from None


def _header(data: bytes, path: Path, image_size: int | None, channels: int) -> tuple[tuple[int, int], tuple[str, ...]]:
    """((width, height), the conversions reading makes) from an image's header alone."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size, _conversions(img, image_size, channels)
    except Exception as e:  # UnidentifiedImageError, or a header PIL cannot parse
        raise DataError(f"{path} is not a readable image ({type(e).__name__}): the file is corrupt or not an "
                        "image; replace it or move it out of the data folder.") from None


def decode_file(path: str, image_size: int | None, channels: int) -> np.ndarray:
    """One image file -> uint8 [H, W, C], preprocessed as `load_image_folder` does."""
    return _decode(_read_bytes(Path(path)), Path(path), image_size, channels)


def as_model_input(arrays: Any) -> torch.Tensor:
    """uint8 [N, H, W, C] -> float32 [N, C, H, W] in [-1, 1] (x / 127.5 - 1)."""
    import torch

    stacked = torch.as_tensor(np.asarray(arrays))
    return stacked.permute(0, 3, 1, 2).to(torch.float32).div_(127.5).sub_(1.0).contiguous()


def embedded_real_images(name: str = "digits", split: str = "train") -> RealImages:
    """An embedded data set's split as RealImages ("digits": [1437, 1, 8, 8] for train,
    "corners": [1437, 1, 16, 16]; classes "0".."9"; `source` names it, `root` is None)."""
    from dmgd.data import embedded

    s = embedded.load_split(name)
    images, labels = s.tensors(split)
    h = hashlib.sha256()
    h.update(f"{FINGERPRINT_VERSION}\0{name}-{split}\0".encode())
    h.update(images.numpy().astype("<f4").tobytes())
    h.update(labels.numpy().astype("<i8").tobytes())
    idx = s.indices(split)
    paths = tuple(f"{s.class_names[int(y)]}/{int(i):04d}.png" for i, y in zip(idx, labels.tolist()))
    return RealImages(
        images=images,
        labels=labels,
        class_names=tuple(s.class_names),
        paths=paths,
        fingerprint=h.hexdigest(),
        root=None,
        source=embedded.source(name, split),
    )


def digits_real_images() -> RealImages:
    """The embedded digits' TRAIN split as RealImages: [1437, 1, 8, 8], classes "0".."9"."""
    return embedded_real_images("digits", "train")


def real_data_for(
    data: str | os.PathLike[str] | None,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    num_classes: int | None = None,
    default: str | None = None,
    streamed: bool = False,
    classes: str | None = None,
) -> RealImages:
    """The real data of a run: the ImageFolder `data`, or an embedded data set's train
    split: `data` "digits" / "corners" (unless a directory of that name exists), or, with
    `data` None, `default` (the model's default data: `Backbone.default_data`; None: the
    digits). image_size / channels / num_classes: what the model needs (checked for an
    embedded set, applied to a folder; channels defaults to 3 for a folder). streamed: a
    folder is scanned, not decoded (`scan_image_folder`). classes: the `classes` setting,
    which picks class folders of an ImageFolder."""
    from dmgd.data.embedded import DEFAULT_DATA, is_embedded_name

    if data is None or is_embedded_name(data):
        name = str(data) if data is not None else (default or DEFAULT_DATA)
        real = embedded_real_images(name, "train")
        c, h, w = real.image_shape
        what = f"The embedded {name}"
        if classes is not None:
            raise DataError(f"the `classes` setting ({classes}) picks class folders of an ImageFolder; {what} "
                            f"are no folder: pass {option('data')} with an ImageNet-layout folder, or drop `classes`")
        if channels is not None and channels != c:
            raise DataError(
                f"{what} have {c} channel(s), the model wants {channels}: pass "
                f"{option('data')} with a folder of the model's images, or use the embedded {name} model."
            )
        if image_size is not None and (h, w) != (image_size, image_size):
            raise DataError(
                f"{what} are {h}x{w}, the model wants {image_size}x{image_size}: "
                f"pass {option('data')} with a folder of the model's images, or use the embedded {name} model."
            )
        if num_classes is not None and num_classes != real.num_classes:
            raise DataError(
                f"{what} have {real.num_classes} classes, the model has {num_classes}: "
                f"pass {option('data')} with a folder of the model's classes."
            )
        return real
    read = scan_image_folder if streamed else load_image_folder
    return read(data, image_size=image_size, channels=channels or 3, num_classes=num_classes, classes=classes)
