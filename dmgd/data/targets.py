"""Distillation targets: per-class k-means of the real data in the model's latent space.

For each class, the real images are encoded (`encode`: a latent model's VAE posterior MEAN
times the VAE's scaling factor, deterministic; a pixel model's images as they are),
flattened, and clustered with scikit-learn's KMeans seeded per (seed, class). The K
centroids are the support points of the class's target distribution and the cluster
shares are their masses. Clusters are ordered by mass, largest first, ties by their first
member's index in the class, so that "mode i" (mode guidance) is well defined.

Differences from the reference code (solomonWQC/DMGD), on purpose, for determinism: VAE
mean instead of `latent_dist.sample()`, no random horizontal flip, seeded k-means.

Targets are cached on disk as safetensors, one file per key (data fingerprint, model
weights hash, K, seed, n_init, latent shape, encoder). The metadata records the key; a load
checks it and the tensors' shapes, and a stale, foreign or corrupt file is logged and
rebuilt. Files are written atomically (temp file + rename). A latent model's encoded
latents are cached too (keyed without K and seed). The cache directory is `cache_dir`, else
`$DMGD_CACHE_DIR`, else `~/.cache/dmgd/targets`.

Sharded builds (torchrun): `build_targets(..., classes=mine, gather=all_gather)` runs the
k-means of this rank's classes only and exchanges the rows, so every rank ends with the
targets a single process builds, bit for bit (a latent model encodes only the fixed batches
of `batch_size` images that hold its classes, the same batches a full encode runs). Only
complete targets are ever cached, under the same key as a single-process build, and only
by the rank passing `write_cache=True`; a sharded encode is not cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
from attrs import field, frozen

from dmgd.data.images import DataError, RealImages, real_data_for

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger("dmgd.targets")

TARGETS_VERSION = "dmgd-targets-v1"
DEFAULT_N_INIT = 4
DEFAULT_BATCH_SIZE = 32

# What the last calls did (for tests and benchmarks): kmeans fits, encodes, cache hits,
# cache misses, rebuilt (stale or corrupt) files.
STATS: Counter[str] = Counter()


@frozen(eq=False)
class ClassTargets:
    """The K-point targets of every class (class c is row c).

    points: float32 [C, K, F] flattened latents (k-means centroids), mass-descending;
    masses: float32 [C, K] cluster shares (rows sum to 1); class_sizes: images per class;
    kmeans_seconds: wall time of each class's k-means when the targets were built (read
    back from the cache on a hit); encode_seconds: time spent encoding the real images for
    this call (0 on a cache hit); from_cache / cache_path: where the numbers came from.
    """

    k: int
    points: torch.Tensor = field(repr=False)
    masses: torch.Tensor = field(repr=False)
    class_sizes: tuple[int, ...]
    kmeans_seconds: tuple[float, ...]
    encode_seconds: float = 0.0
    from_cache: bool = False
    cache_path: str | None = None
    key: dict[str, Any] = field(factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return int(self.points.shape[0])

    def to_manifest(self) -> dict[str, Any]:
        """A JSON-ready summary for the run's manifest."""
        ks = self.kmeans_seconds
        return {
            "k": self.k,
            "num_classes": self.num_classes,
            "features": int(self.points.shape[2]),
            "class_sizes": list(self.class_sizes),
            "kmeans_seconds_per_class": [round(s, 6) for s in ks],
            "kmeans_seconds_mean": round(sum(ks) / len(ks), 6) if ks else 0.0,
            "encode_seconds": round(self.encode_seconds, 6),
            "from_cache": self.from_cache,
            "cache_path": self.cache_path,
            "key": dict(self.key),
        }


# --------------------------------------------------------------------------- encoding


def _encoder_name(backbone: Any) -> str:
    return "pixels" if getattr(backbone, "vae", None) is None else "vae-mean"


def pixel_shape(backbone: Any) -> tuple[int, int, int]:
    """(C, H, W) of the real images the backbone's targets need."""
    c, h, w = (int(s) for s in backbone.latent_shape)
    vae = getattr(backbone, "vae", None)
    if vae is None:
        return (c, h, w)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    return (int(vae.config.in_channels), h * factor, w * factor)


def real_data_for_backbone(data: str | os.PathLike[str] | None, backbone: Any, *,
                           classes: str | None = None) -> RealImages:
    """`real_data_for` with the image size and channels the backbone needs; with `data`
    None, the backbone's default data (`Backbone.default_data`: the embedded digits model's
    is "digits", the corners model's "corners"; None: the digits)."""
    c, h, w = pixel_shape(backbone)
    return real_data_for(data, image_size=h if h == w else None, channels=c,
                         default=getattr(backbone, "default_data", None), classes=classes)


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
    STATS["encode"] += 1
    return torch.cat(out) if out else torch.zeros(0, int(np.prod(latent_shape)))


# --------------------------------------------------------------------------- k-means


def class_seed(seed: int, c: int) -> int:
    """The KMeans random_state of class c: independent of the other classes."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(c)]).generate_state(1)[0])


def kmeans_class(
    x: np.ndarray, k: int, seed: int, n_init: int = DEFAULT_N_INIT
) -> tuple[np.ndarray, np.ndarray, float]:
    """(centroids [k, F] float32, masses [k] float32, seconds) of one class's points [n, F].

    KMeans in float64 with random_state=seed, on one thread; clusters ordered by size descending, ties by
    their first member's index. Fewer distinct points than k leaves empty clusters (mass 0,
    ordered last); they are logged.
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    x = np.ascontiguousarray(x, dtype=np.float64)
    n = x.shape[0]
    t0 = time.perf_counter()
    # One thread: sklearn's Lloyd sums per-thread partial centres, so the last bits (and in
    # rare ties the clusters) could depend on the machine's core count; and on small
    # classes threads only cost.
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(limits=1):
        warnings.simplefilter("always", ConvergenceWarning)
        km = KMeans(n_clusters=int(k), n_init=int(n_init), random_state=int(seed)).fit(x)
    seconds = time.perf_counter() - t0
    STATS["kmeans"] += 1
    labels = km.labels_
    counts = np.bincount(labels, minlength=k)
    first = np.full(k, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    order = np.lexsort((np.arange(k), first, -counts))
    if (counts == 0).any() or caught:
        log.warning("k-means with K=%d found %d non-empty clusters among %d points%s", k,
                    int((counts > 0).sum()), n, f" ({caught[0].message})" if caught else "")
    centroids = km.cluster_centers_[order].astype(np.float32)
    masses = (counts[order] / n).astype(np.float32)
    return centroids, masses, seconds


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    env = os.environ.get("DMGD_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dmgd" / "targets"


def _key_text(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def _key_path(cache_dir: Path, prefix: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(_key_text(key).encode()).hexdigest()[:24]
    k = key.get("k")
    return cache_dir / (f"{prefix}-k{k}-{digest}.safetensors" if k is not None else f"{prefix}-{digest}.safetensors")


def _save(path: Path, tensors: dict[str, torch.Tensor], key: dict[str, Any], extra: dict[str, Any]) -> None:
    from safetensors.torch import save

    from dmgd.data.atomic import atomic_write_bytes

    meta = {"key": _key_text(key), **{k: json.dumps(v) for k, v in extra.items()}}
    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta)
    try:
        atomic_write_bytes(path, data)
    except OSError as e:  # a read-only or full cache is not fatal: the run goes on
        log.warning("could not write the targets cache %s: %s", path, e)


def _load(path: Path, key: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The tensors and decoded metadata of a cache file whose key matches, else None (and
    a log line saying why, when a file was there)."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != _key_text(key):
                log.warning("targets cache %s was made for another key; rebuilding", path)
                STATS["rebuilt"] += 1
                return None
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        extra = {k: json.loads(v) for k, v in meta.items() if k != "key"}
    except Exception as e:  # truncated file, bad header, bad JSON...
        log.warning("targets cache %s is unreadable (%s: %s); rebuilding", path, type(e).__name__, e)
        STATS["rebuilt"] += 1
        return None
    return tensors, extra


def _base_key(backbone: Any, real: RealImages) -> dict[str, Any]:
    return {
        "version": TARGETS_VERSION,
        "data": real.fingerprint,
        "weights": str(getattr(backbone, "weights_sha256", "")),
        "latent_shape": [int(s) for s in backbone.latent_shape],
        "encoder": _encoder_name(backbone),
        "vae_scale": float(getattr(backbone, "vae_scale", 1.0)),
        "num_classes": real.num_classes,
    }


def _valid_targets(t: dict[str, torch.Tensor], extra: dict[str, Any], c: int, k: int, f: int) -> str | None:
    import torch

    pts, ms = t.get("points"), t.get("masses")
    if pts is None or ms is None:
        return "missing tensors"
    if tuple(pts.shape) != (c, k, f) or tuple(ms.shape) != (c, k):
        return f"shapes {tuple(pts.shape)}, {tuple(ms.shape)} instead of {(c, k, f)}, {(c, k)}"
    if not (torch.isfinite(pts).all() and torch.isfinite(ms).all()):
        return "non-finite values"
    if (ms < 0).any() or (ms.double().sum(1) - 1).abs().max() > 1e-4:
        return "masses that are not distributions"
    if len(extra.get("kmeans_seconds", [])) != c or len(extra.get("class_sizes", [])) != c:
        return "incomplete metadata"
    return None


def _encode_rows(backbone: Any, real: RealImages, rows: np.ndarray, batch_size: int) -> torch.Tensor:
    """Latents [N, F] of the images in `rows` (zeros elsewhere), encoded in exactly the
    batches a full `encode` uses, so that they are bit-identical to it."""
    import torch

    n, b = len(real), int(batch_size)
    z = torch.zeros(n, int(np.prod(backbone.latent_shape)))
    wanted = np.zeros(n, dtype=bool)
    wanted[rows] = True
    for start in range(0, n, b):
        if wanted[start:start + b].any():
            z[start:start + b] = encode(backbone, real.images[start:start + b], b)
    return z


def _latents(backbone: Any, real: RealImages, cache_dir: Path | None, batch_size: int,
             rows: np.ndarray | None = None) -> tuple[torch.Tensor, float]:
    """Encoded latents [N, F] (cached for latent models) and the seconds spent encoding.
    rows: only these images are needed (a sharded build): encoded, not cached, unless the
    cache has them all."""
    import torch

    if getattr(backbone, "vae", None) is not None and rows is not None and cache_dir is None:
        t0 = time.perf_counter()
        return _encode_rows(backbone, real, rows, batch_size), time.perf_counter() - t0
    if getattr(backbone, "vae", None) is None or cache_dir is None:
        t0 = time.perf_counter()
        z = encode(backbone, real.images, batch_size)
        return z, time.perf_counter() - t0
    key = {**_base_key(backbone, real), "kind": "latents", "n": len(real)}
    path = _key_path(cache_dir, "latents", key)
    hit = _load(path, key)
    if hit is not None:
        z = hit[0].get("latents")
        f = int(np.prod(backbone.latent_shape))
        if z is not None and tuple(z.shape) == (len(real), f) and bool(torch.isfinite(z).all()):
            STATS["latents_hit"] += 1
            return z, 0.0
        log.warning("latents cache %s has the wrong shape; rebuilding", path)
        STATS["rebuilt"] += 1
    t0 = time.perf_counter()
    if rows is not None:
        return _encode_rows(backbone, real, rows, batch_size), time.perf_counter() - t0
    z = encode(backbone, real.images, batch_size)
    seconds = time.perf_counter() - t0
    _save(path, {"latents": z}, key, {"encode_seconds": seconds})
    return z, seconds


# --------------------------------------------------------------------------- targets


def build_targets(
    backbone: Any,
    real: RealImages,
    ks: Iterable[int],
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    n_init: int = DEFAULT_N_INIT,
    use_cache: bool = True,
    classes: Iterable[int] | None = None,
    gather: Callable[[Any], list[Any]] | None = None,
    write_cache: bool = True,
) -> dict[int, ClassTargets]:
    """{K: ClassTargets} for every K in `ks`, for every class of `real` (row c = class c):
    from the cache when its key matches, else the real images encoded once and each class's
    k-means, then cached. DataError when a class has fewer images than K.

    Sharded (every rank calls it): `classes` are this process's, `gather(obj)` returns every
    process's `obj` in rank order (`Context.all_gather`); every rank gets the full targets.
    With `classes` and no `gather`, only those rows are filled and nothing is cached.
    `write_cache=False`: read the cache, never write it.
    """
    wanted = sorted({int(k) for k in ks})
    _check_k_fits(real, wanted)
    cdir = None if not use_cache else Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    C = real.num_classes
    mine = _my_classes(classes, C)
    base = _base_key(backbone, real)
    feat = int(np.prod(backbone.latent_shape))
    labels = real.labels.numpy()
    encoded: list[Any] = []  # the real latents, encoded at most once: [(latents, seconds)]
    out: dict[int, ClassTargets] = {}
    for k in wanted:
        key = {**base, "kind": "targets", "k": k, "seed": int(seed), "n_init": int(n_init)}
        path = _key_path(cdir, "targets", key) if cdir is not None else None
        cached = _cached_targets(path, key, C, k, feat)
        # Sharded: the ranks agree on hit or miss (their caches may differ), so that all
        # of them take part in the same exchanges.
        if cached is not None and (gather is None or all(gather(True))):
            out[k] = cached
            continue
        if cached is None and gather is not None:
            gather(False)
        STATS["miss"] += 1
        this_encode = 0.0
        if cached is not None:  # a rank with a hit serves its classes from it
            rows = {c: (cached.points[c].numpy(), cached.masses[c].numpy(), cached.kmeans_seconds[c]) for c in mine}
        else:
            if not encoded:
                need = np.flatnonzero(np.isin(labels, mine)) if len(mine) < C else None
                encoded.append(_latents(backbone, real, cdir, batch_size, need))
                this_encode = encoded[0][1]
            rows = _kmeans_rows(encoded[0][0].numpy(), labels, mine, k, seed, n_init)
        if gather is not None:
            for part in gather(rows):
                rows.update(part)
        out[k] = _assembled(rows, real, k, feat, key, path, this_encode, write_cache)
    return out


def _my_classes(classes: Iterable[int] | None, C: int) -> list[int]:
    mine = list(range(C)) if classes is None else sorted({int(c) for c in classes})
    if any(not 0 <= c < C for c in mine):
        raise ValueError(f"classes must lie in 0..{C - 1}, not {mine}")
    return mine


def _kmeans_rows(z: np.ndarray, labels: np.ndarray, mine: list[int], k: int, seed: int,
                 n_init: int) -> dict[int, tuple[np.ndarray, np.ndarray, float]]:
    """Each of `mine`'s k-means (centroids, masses, seconds) on its rows of the latents z."""
    return {c: kmeans_class(z[labels == c], k, class_seed(seed, c), n_init) for c in mine}


def _check_k_fits(real: RealImages, wanted: list[int]) -> None:
    """DataError when a class has fewer images than a K asks for."""
    if any(k < 1 for k in wanted):
        raise ValueError(f"K must be at least 1, not {wanted}")
    sizes = real.class_counts()
    for k in wanted:
        small = [(real.class_names[c], n) for c, n in enumerate(sizes) if n < k]
        if small:
            name, n = small[0]
            raise DataError(
                f"Class {name!r} has {n} real image(s) but the targets need K = {k} k-means "
                f"support points (K <= images per class): lower K (or the ipc, for mode "
                f"guidance), or add images to the class"
                + (f" ({len(small)} classes are too small)." if len(small) > 1 else ".")
            )


def _cached_targets(path: Path | None, key: dict[str, Any], C: int, k: int, feat: int) -> ClassTargets | None:
    """The cache's targets for `key` when the file holds them whole, else None (logged)."""
    hit = _load(path, key) if path is not None else None
    if hit is None:
        return None
    tensors, extra = hit
    why = _valid_targets(tensors, extra, C, k, feat)
    if why is not None:
        log.warning("targets cache %s holds %s; rebuilding", path, why)
        STATS["rebuilt"] += 1
        return None
    STATS["hit"] += 1
    return ClassTargets(
        k=k, points=tensors["points"], masses=tensors["masses"],
        class_sizes=tuple(int(n) for n in extra["class_sizes"]),
        kmeans_seconds=tuple(float(s) for s in extra["kmeans_seconds"]),
        encode_seconds=0.0, from_cache=True, cache_path=str(path), key=key,
    )


def _assembled(rows: dict[int, tuple[np.ndarray, np.ndarray, float]], real: RealImages, k: int, feat: int,
               key: dict[str, Any], path: Path | None, encode_seconds: float, write_cache: bool) -> ClassTargets:
    """The classes' rows as one ClassTargets (missing rows zero); cached when complete."""
    import torch

    C = real.num_classes
    points = np.zeros((C, k, feat), dtype=np.float32)
    masses = np.zeros((C, k), dtype=np.float32)
    seconds = [0.0] * C
    for c, (cen, m, s) in rows.items():
        points[c], masses[c], seconds[c] = cen, m, float(s)
    complete = len(rows) == C
    t = ClassTargets(
        k=k, points=torch.from_numpy(points), masses=torch.from_numpy(masses),
        class_sizes=tuple(int(n) for n in real.class_counts()), kmeans_seconds=tuple(seconds),
        encode_seconds=encode_seconds, from_cache=False,
        cache_path=str(path) if path is not None and complete else None, key=key,
    )
    if path is not None and complete and write_cache:
        _save(path, {"points": t.points, "masses": t.masses}, key,
              {"kmeans_seconds": list(seconds), "class_sizes": list(t.class_sizes),
               "encode_seconds": encode_seconds})
    return t
