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
rebuilt. The encoded real images live in the latent cache (`dmgd.data.latent_cache`: one
file a class, written as each class is encoded), and the k-means reads one class at a time
from it: memory stays flat in the data's size. Every file is written atomically. The cache
directory is `cache_dir`, else `$DMGD_CACHE_DIR`, else `~/.cache/dmgd/targets`.

Sharded builds (torchrun): `build_targets(..., classes=mine, gather=all_gather)` encodes and
clusters this rank's classes only and exchanges the rows, so every rank ends with the
targets a single process builds, bit for bit (a class is encoded in batches of its own
images, whatever the other classes). Only complete targets are ever cached, under the same
key as a single-process build, and only by the rank passing `write_cache=True`; each rank
writes the latents of its own classes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
from attrs import field, frozen

from dmgd.data.images import DataError, RealImages, real_data_for
from dmgd.data.latent_cache import (DEFAULT_BATCH_SIZE, STATS, LatentCache, encode, encoder_name, key_text,
                                    load_entry, pixel_shape, save_entry)

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger("dmgd.targets")

TARGETS_VERSION = "dmgd-targets-v1"
DEFAULT_N_INIT = 4
__all__ = ["STATS", "ClassTargets", "build_targets", "encode", "kmeans_class", "pixel_shape"]


@frozen(eq=False)
class ClassTargets:
    """The K-point targets of every class (class c is row c).

    points: float32 [C, K, F] flattened latents (k-means centroids), mass-descending;
    masses: float32 [C, K] cluster shares (rows sum to 1); class_sizes: images per class;
    kmeans_seconds: wall time of each class's k-means in this call (0 on a targets-cache
    hit: nothing was fitted; a cache entry holds no timings, so two processes that build
    the same entry write the same bytes); encode_seconds: time spent encoding the real images (or
    reading their cached latents) for this call (0 on a targets-cache hit); from_cache / cache_path: where the numbers came from.
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


# --------------------------------------------------------------------------- real data


def real_data_for_backbone(data: str | os.PathLike[str] | None, backbone: Any, *,
                           classes: str | None = None) -> RealImages:
    """`real_data_for` with the image size and channels the backbone needs; with `data`
    None, the backbone's default data (`Backbone.default_data`: the embedded digits model's
    is "digits", the corners model's "corners"; None: the digits)."""
    c, h, w = pixel_shape(backbone)
    return real_data_for(data, image_size=h if h == w else None, channels=c,
                         default=getattr(backbone, "default_data", None), streamed=True,
                         classes=classes)


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


def _key_path(cache_dir: Path, prefix: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(key_text(key).encode()).hexdigest()[:24]
    return cache_dir / f"{prefix}-k{key['k']}-{digest}.safetensors"


def _base_key(backbone: Any, real: RealImages) -> dict[str, Any]:
    precision = str(getattr(backbone, "precision", "fp32"))
    return {
        "version": TARGETS_VERSION,
        "data": real.fingerprint,
        "weights": str(getattr(backbone, "weights_sha256", "")),
        "latent_shape": [int(s) for s in backbone.latent_shape],
        "encoder": encoder_name(backbone),
        "vae_scale": float(getattr(backbone, "vae_scale", 1.0)),
        "num_classes": real.num_classes,
        **({"precision": precision} if precision != "fp32" else {}),  # fp32 keeps the keys it always had
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
    if len(extra.get("class_sizes", [])) != c:
        return "incomplete metadata"
    return None


@frozen(eq=False)
class _Plan:
    """One K's targets: its key and file, what the cache held, and whether every rank hit."""

    k: int
    key: dict[str, Any]
    path: Path | None
    cached: ClassTargets | None
    hit: bool


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
    workers: int | None = None,
    progress: bool = False,
) -> dict[int, ClassTargets]:
    """{K: ClassTargets} for every K in `ks`, for every class of `real` (row c = class c):
    from the cache when its key matches, else each class's latents (encoded into the latent
    cache first, a class at a time, with a progress bar when `progress`) and its k-means,
    one class at a time, then cached. DataError when a class has fewer images than K.

    Sharded (every rank calls it): `classes` are this process's, `gather(obj)` returns every
    process's `obj` in rank order (`Context.all_gather`); every rank gets the full targets.
    With `classes` and no `gather`, only those rows are filled and nothing is cached.
    `write_cache=False`: read the targets cache, never write it. workers: the DataLoader's
    (None: `latent_cache.default_workers()`).
    """
    wanted = sorted({int(k) for k in ks})
    _check_k_fits(real, wanted)
    cdir = None if not use_cache else Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    mine = _my_classes(classes, real.num_classes)
    base = _base_key(backbone, real)
    feat = int(np.prod(backbone.latent_shape))
    plans = [_plan(k, base, int(seed), int(n_init), cdir, real.num_classes, feat, gather) for k in wanted]
    out = {p.k: p.cached for p in plans if p.hit}
    todo = [p for p in plans if not p.hit]
    if todo:
        latents = LatentCache(backbone, real, cdir, batch_size, workers)
        encode_seconds = latents.fill(mine, progress) if any(p.cached is None for p in todo) else 0.0
        rows, read_seconds = _class_rows(latents, mine, todo, int(seed), int(n_init))
        for p in todo:
            if gather is not None:
                for part in gather(rows[p.k]):
                    rows[p.k].update(part)
            out[p.k] = _assembled(rows[p.k], real, p.k, feat, p.key, p.path, encode_seconds + read_seconds,
                                  write_cache)
    return {k: out[k] for k in wanted}  # type: ignore[misc]


def _plan(k: int, base: dict[str, Any], seed: int, n_init: int, cdir: Path | None, C: int, feat: int,
          gather: Callable[[Any], list[Any]] | None) -> _Plan:
    """K's key, file and cached targets. Sharded, the ranks agree on hit or miss (their
    caches may differ), so that all of them take part in the same exchanges."""
    key = {**base, "kind": "targets", "k": k, "seed": seed, "n_init": n_init}
    path = _key_path(cdir, "targets", key) if cdir is not None else None
    cached = _cached_targets(path, key, C, k, feat)
    if gather is None:
        hit = cached is not None
    else:
        hit = all(gather(cached is not None))
    if not hit:
        STATS["miss"] += 1
    return _Plan(k, key, path, cached, hit)


def _class_rows(latents: LatentCache, mine: list[int], todo: list[_Plan], seed: int, n_init: int
                ) -> tuple[dict[int, dict[int, tuple[np.ndarray, np.ndarray, float]]], float]:
    """Each K's rows {class: (centroids, masses, seconds)} for this rank's classes, reading
    one class's latents at a time (a rank whose cache had K serves its rows from it); and
    the seconds spent reading (or, without a cache, encoding) the latents."""
    rows: dict[int, dict[int, tuple[np.ndarray, np.ndarray, float]]] = {p.k: {} for p in todo}
    seconds = 0.0
    for c in mine:
        z = None
        for p in todo:
            if p.cached is not None:
                rows[p.k][c] = (p.cached.points[c].numpy(), p.cached.masses[c].numpy(), p.cached.kmeans_seconds[c])
                continue
            if z is None:
                tic = time.perf_counter()
                z = latents.class_latents(c).numpy()
                seconds += time.perf_counter() - tic
            rows[p.k][c] = kmeans_class(z, p.k, class_seed(seed, c), n_init)
    return rows, seconds


def _my_classes(classes: Iterable[int] | None, C: int) -> list[int]:
    mine = list(range(C)) if classes is None else sorted({int(c) for c in classes})
    if any(not 0 <= c < C for c in mine):
        raise ValueError(f"classes must lie in 0..{C - 1}, not {mine}")
    return mine


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
    hit = load_entry(path, key) if path is not None else None
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
        kmeans_seconds=(0.0,) * c_count(extra),
        encode_seconds=0.0, from_cache=True, cache_path=str(path), key=key,
    )


def c_count(extra: dict[str, Any]) -> int:
    return len(extra["class_sizes"])


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
        save_entry(path, {"points": t.points, "masses": t.masses}, key,
              {"class_sizes": list(t.class_sizes)})
    return t
