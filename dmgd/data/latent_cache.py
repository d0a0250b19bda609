"""The latent cache: each class's real images encoded once, one safetensors file a class.

`encode_classes` streams the images of the classes it is given through the model's encoder
(`encode`: a latent model's VAE posterior MEAN times its scaling factor; a pixel model's
images as they are): a torch DataLoader with workers decodes a folder's files (ADM centre
crop, no flip: `dmgd.data.images`), a batch of `batch_size` images of ONE class at a time,
so that a class's latents never depend on the other classes, on the number of ranks or on
what was encoded before a crash. When a class is complete its file is written atomically
(`write_cache_file`: a temporary name unique to the process and thread, fsync, os.replace);
a kill loses at most the class in progress, and a rerun writes the bytes an uninterrupted
run writes (the metadata holds no times or devices).

A class's file is keyed by the class's fingerprint (its files' names and bytes, and the
preprocessing: `RealImages.class_fingerprint`), the VAE's weights hash, the encoder, the
scale, the latent shape, the batch size and the precision; the key is in the file's
metadata and is checked on every read (a stale, foreign or corrupt file is logged and
encoded again). Files live in `CACHE_DIR/latents/`, and any later run or recipe on the same
data and VAE reuses them. `class_latents` reads one class: the k-means targets need no more.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from dmgd.data.atomic import atomic_write_bytes
from dmgd.data.images import DataError, RealImages, as_model_input, decode_file

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger("dmgd.targets")

LATENTS_VERSION = "dmgd-latents-v2"
DEFAULT_BATCH_SIZE = 32
PAUSE_ENV = "DMGD_TEST_PAUSE_AFTER_CLASSES"

# What the last calls did (for tests and benchmarks): kmeans fits, classes encoded, cache
# hits and misses, rebuilt (stale or corrupt) files.
STATS: Counter[str] = Counter()
_classes_written = 0


# --------------------------------------------------------------------------- files


def write_cache_file(path: Path, data: bytes) -> None:
    """Every cache write goes through here: `atomic_write_bytes` (whole or not at all,
    under a temporary name that no other process or thread writing the same entry shares)."""
    atomic_write_bytes(Path(path), data)


def key_text(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


ENTRY_META = "dmgd-cache-entry"  # the metadata key holding an entry's key and facts


def save_entry(path: Path, tensors: dict[str, torch.Tensor], key: dict[str, Any], extra: dict[str, Any],
               what: str = "targets cache") -> None:
    """A safetensors cache file holding `key` and `extra` (JSON) in its metadata; a cache
    that cannot be written (read-only, full) is logged, and the run goes on."""
    from safetensors.torch import save

    # One metadata entry: safetensors writes its metadata map in an order that varies from
    # process to process, and two processes that build one entry must write the same bytes.
    meta = {ENTRY_META: json.dumps({"key": key_text(key), "extra": extra}, sort_keys=True)}
    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta)
    try:
        write_cache_file(path, data)
    except OSError as e:
        log.warning("could not write the %s %s: %s", what, path, e)


def load_entry(path: Path, key: dict[str, Any], *, tensors: bool = True
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The tensors (none unless `tensors`) and decoded metadata of a cache file whose key
    matches, else None (and a log line saying why, when a file was there)."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(ENTRY_META, "{}"))
            if meta.get("key") != key_text(key):
                log.warning("cache file %s was made for another key; rebuilding", path)
                STATS["rebuilt"] += 1
                return None
            found = {name: f.get_tensor(name) for name in f.keys()} if tensors else {}
        extra = meta.get("extra", {})
    except Exception as e:  # truncated file, bad header, bad JSON...
        log.warning("cache file %s is unreadable (%s: %s); rebuilding", path, type(e).__name__, e)
        STATS["rebuilt"] += 1
        return None
    return found, extra


def _pause_point() -> None:
    """Test hook, off unless $DMGD_TEST_PAUSE_AFTER_CLASSES is "N:MARKER": after this
    process's N-th class file it creates MARKER.<pid> and waits forever, so a test can
    SIGKILL the encode at a point that does not depend on the machine's speed."""
    global _classes_written
    setting = os.environ.get(PAUSE_ENV)
    if not setting:
        return
    _classes_written += 1
    count, _, marker = setting.partition(":")
    if _classes_written == int(count):
        Path(f"{marker}.{os.getpid()}").touch()
        while True:
            signal.pause()


# --------------------------------------------------------------------------- encoding


def pixel_shape(backbone: Any) -> tuple[int, int, int]:
    """(C, H, W) of the real images the backbone's targets need."""
    c, h, w = (int(s) for s in backbone.latent_shape)
    vae = getattr(backbone, "vae", None)
    if vae is None:
        return (c, h, w)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    return (int(vae.config.in_channels), h * factor, w * factor)


def encode(backbone: Any, images: torch.Tensor, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
    """Real images [N, C, H, W] in [-1, 1] -> flattened float32 latents [N, F] on the CPU.

    Latent models: `vae.encode(x).latent_dist.mean * vae_scale` (no sampling); pixel models:
    the images themselves. Raises DataError when the images do not fit the model.
    """
    import torch

    latent_shape = tuple(int(s) for s in backbone.latent_shape)
    vae = getattr(backbone, "vae", None)
    n = int(images.shape[0])
    if vae is None:
        if tuple(images.shape[1:]) != latent_shape:
            raise DataError(
                f"The real images are {tuple(images.shape[1:])} (C, H, W) but the pixel model "
                f"{getattr(backbone, 'model_id', '?')} denoises {latent_shape}: use data of the "
                "model's resolution and channels."
            )
        return images.reshape(n, -1).to(torch.float32).cpu()
    want = pixel_shape(backbone)
    if int(images.shape[1]) != want[0]:
        raise DataError(
            f"The real images have {int(images.shape[1])} channel(s), the VAE of "
            f"{getattr(backbone, 'model_id', '?')} reads {want[0]}."
        )
    param = next(vae.parameters())
    out = []
    with torch.no_grad():
        for i in range(0, n, int(batch_size)):
            x = images[i:i + int(batch_size)].to(device=param.device, dtype=param.dtype)
            z = vae.encode(x).latent_dist.mean * float(backbone.vae_scale)
            if tuple(z.shape[1:]) != latent_shape:
                raise DataError(
                    f"The real images {tuple(images.shape[1:])} encode to latents {tuple(z.shape[1:])}, "
                    f"but the model denoises {latent_shape}: centre-crop the data to "
                    f"{want[1]}x{want[2]} (image_size={want[1]})."
                )
            out.append(z.to(torch.float32).reshape(z.shape[0], -1).cpu())
    return torch.cat(out) if out else torch.zeros(0, int(np.prod(latent_shape)))


class _Files:
    """The image files a DataLoader decodes: item i is (uint8 [H, W, C], "") or (None, the
    error), so that a bad file is reported as itself, not as a worker's traceback."""

    def __init__(self, paths: Sequence[str], image_size: int | None, channels: int) -> None:
        self.paths, self.image_size, self.channels = list(paths), image_size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[np.ndarray | None, str]:
        try:
            return decode_file(self.paths[i], self.image_size, self.channels), ""
        except DataError as e:
            return None, str(e)


def _collate(items: list[tuple[np.ndarray | None, str]]) -> tuple[np.ndarray | None, str]:
    errors = [e for _, e in items if e]
    if errors:
        return None, errors[0]
    return np.stack([a for a, _ in items]), ""


def default_workers() -> int:
    """DataLoader workers: $DMGD_DATA_WORKERS, else the cores less one (at most 8)."""
    raw = os.environ.get("DMGD_DATA_WORKERS", "").strip()
    if raw.isdigit():
        return int(raw)
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def _pixel_batches(real: RealImages, classes: Sequence[int], batch_size: int,
                   workers: int | None) -> Iterator[tuple[int, torch.Tensor, bool]]:
    """(class, a batch of its images in [-1, 1], whether it is the class's last), the
    classes in order, each in batches of `batch_size` consecutive images of its own."""
    index = [real.class_indices(c).tolist() for c in classes]
    plan = [(c, rows[s:s + batch_size], s + batch_size >= len(rows))
            for c, rows in zip(classes, index) for s in range(0, len(rows), batch_size)]
    if not real.streamed:
        for c, rows, last in plan:
            yield c, real.images[rows], last
        return
    from torch.utils.data import DataLoader

    paths = [os.path.join(str(real.root), real.paths[i]) for _, rows, _ in plan for i in rows]
    batches, start = [], 0
    for _, rows, _ in plan:
        batches.append(list(range(start, start + len(rows))))
        start += len(rows)
    workers = default_workers() if workers is None else int(workers)
    loader = DataLoader(_Files(paths, real.image_size, int(real.channels or 3)), batch_sampler=batches,
                        num_workers=workers, collate_fn=_collate, **({"prefetch_factor": 2} if workers else {}))
    for (c, _, last), (arrays, error) in zip(plan, loader):
        if error:
            raise DataError(error)
        yield c, as_model_input(arrays), last


def encoded_classes(backbone: Any, real: RealImages, classes: Sequence[int], batch_size: int = DEFAULT_BATCH_SIZE,
                    workers: int | None = None, advance: Callable[[int], None] | None = None
                    ) -> Iterator[tuple[int, torch.Tensor]]:
    """(class, its latents [n_c, F]) for each of `classes`, encoded a batch at a time."""
    import torch

    parts = []
    for c, x, last in _pixel_batches(real, list(classes), int(batch_size), workers):
        parts.append(encode(backbone, x, batch_size))
        if advance is not None:
            advance(int(x.shape[0]))
        if last:
            STATS["encode"] += 1
            yield c, torch.cat(parts)
            parts = []


# --------------------------------------------------------------------------- the cache


def vae_hash(backbone: Any) -> str:
    """The hash that names the encoder's weights: the VAE's own (any DiT on that VAE shares
    the latents), else the backbone's weights hash; "" for a pixel model."""
    if getattr(backbone, "vae", None) is None:
        return ""
    return str(getattr(backbone, "vae_sha256", None) or getattr(backbone, "weights_sha256", ""))


def encoder_name(backbone: Any) -> str:
    return "pixels" if getattr(backbone, "vae", None) is None else "vae-mean"


class LatentCache:
    """The cached latents of one data set under one encoder (`cache_dir` None: no cache,
    every class encoded when it is read)."""

    def __init__(self, backbone: Any, real: RealImages, cache_dir: Path | None,
                 batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None) -> None:
        self.backbone, self.real, self.cache_dir = backbone, real, cache_dir
        self.batch_size, self.workers = int(batch_size), workers
        self.features = int(np.prod(backbone.latent_shape))
        self.sizes = real.class_counts()

    @property
    def caching(self) -> bool:
        """Folder data and latent models are cached; in-memory pixels are read as they are."""
        return self.cache_dir is not None and (self.real.streamed or getattr(self.backbone, "vae", None) is not None)

    def key(self, c: int) -> dict[str, Any]:
        bb = self.backbone
        return {"version": LATENTS_VERSION, "class": self.real.class_fingerprint(c), "n": int(self.sizes[c]),
                "encoder": encoder_name(bb), "weights": vae_hash(bb), "vae_scale": float(getattr(bb, "vae_scale", 1.0)),
                "latent_shape": [int(s) for s in bb.latent_shape], "batch_size": self.batch_size,
                "precision": str(getattr(bb, "precision", "fp32"))}

    def path(self, c: int) -> Path:
        key = self.key(c)
        digest = hashlib.sha256(key_text(key).encode()).hexdigest()[:24]
        return Path(self.cache_dir) / "latents" / f"{key['class'][:16]}-{digest}.safetensors"  # type: ignore[arg-type]

    def has(self, c: int) -> bool:
        return self.caching and load_entry(self.path(c), self.key(c), tensors=False) is not None

    def missing(self, classes: Sequence[int]) -> list[int]:
        """The classes of `classes` whose latents are to be encoded."""
        if not self.caching:
            return []
        return [c for c in classes if not self.has(c)]

    def fill(self, classes: Sequence[int], progress: bool = False) -> float:
        """Encode and write the missing classes of `classes`; the seconds it took."""
        todo = self.missing(classes)
        if not todo:
            return 0.0
        tic = time.perf_counter()
        with encode_bar(sum(self.sizes[c] for c in todo), progress) as advance:
            for c, z in encoded_classes(self.backbone, self.real, todo, self.batch_size, self.workers, advance):
                self._write(c, z)
        return time.perf_counter() - tic

    def _write(self, c: int, z: torch.Tensor) -> None:
        save_entry(self.path(c), {"latents": z}, self.key(c), {}, what="latent cache")
        _pause_point()

    def class_latents(self, c: int) -> torch.Tensor:
        """Class c's latents [n_c, F] float32: from the cache (encoded and written if missing or
        damaged), or encoded now without a cache."""
        import torch

        if self.caching:
            hit = load_entry(self.path(c), self.key(c))
            z = None if hit is None else hit[0].get("latents")
            if z is not None and tuple(z.shape) == (self.sizes[c], self.features) and bool(torch.isfinite(z).all()):
                STATS["latents_hit"] += 1
                return z
            if hit is not None:
                log.warning("latents cache %s holds the wrong shape or non-finite values; encoding again", self.path(c))
                STATS["rebuilt"] += 1
        ((_, z),) = list(encoded_classes(self.backbone, self.real, [c], self.batch_size, self.workers))
        if self.caching:
            self._write(c, z)
        return z


@contextlib.contextmanager
def encode_bar(total: int, show: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar for the encode (images, images/s) on a terminal; `advance(n)`."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    bar = Progress(TextColumn("encoding the real images"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console,
                   disable=not (show and console.is_terminal))
    task = bar.add_task("encode", total=total, rate="")
    tic = time.perf_counter()
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        rate = done / max(time.perf_counter() - tic, 1e-9)
        bar.update(task, advance=n, rate=f"{rate:.1f} images/s")

    with bar:
        yield advance
