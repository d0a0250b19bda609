"""The model card's quality check of a trained DiT (`evaluate_samples`).

Samples per class (DDIM with the project's scheduler, CFG, seeded) are classified by a
logistic regression trained on the real digits' train split, and their nearest-neighbour
distances to the train and test images show whether the model copies training images.
For the corners model (`data="corners"`) a sample's digit is the quadrant holding the most
ink (`dmgd.data.corners.corner_of`), cut out and classified the same way, and the check
also compares the samples' per-class corner shares with the real ones, at several CFG
scales (`evaluate_corners`).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np
import torch
from diffusers import DiTTransformer2DModel
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from dmgd.data.digits import load_split
from dmgd.pretrain.model import NULL_CLASS, NUM_CLASSES
from dmgd.sampling.schedulers import make_scheduler


def ddim_cfg_sample(transformer: DiTTransformer2DModel, labels: torch.Tensor,
                    steps: int = 50, cfg: float = 4.0, seed: int = 0,
                    scheduler_config: Mapping[str, Any] | None = None,
                    null_class: int = NULL_CLASS) -> torch.Tensor:
    """Plain classifier-free guidance (on all channels, no energies) with the project's
    `ddim` scheduler (`make_scheduler`, eta 0; scheduler_config None: the default betas).

    Noise comes from `torch.Generator().manual_seed(seed)`; returns x0 clipped to [-1, 1].
    """
    scheduler = make_scheduler("ddim", steps, scheduler_config)
    config = transformer.config
    n = len(labels)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n, config.in_channels, config.sample_size, config.sample_size), generator=gen)
    y = torch.cat([labels.long(), torch.full((n,), null_class, dtype=torch.long)])
    with torch.no_grad():
        for t in scheduler.timesteps:
            tt = torch.full((2 * n,), int(t), dtype=torch.long)
            out = transformer(torch.cat([x, x]), timestep=tt, class_labels=y).sample
            eps_c, eps_u = out[:n, :config.in_channels], out[n:, :config.in_channels]
            eps = eps_u + cfg * (eps_c - eps_u)
            x = scheduler.step(eps, t, x).prev_sample
    return x.clamp(-1, 1)


def digits_classifier() -> LogisticRegression:
    """Logistic regression on the real train split (flattened [-1, 1] pixels).

    Fitted with one BLAS thread: on a busy 2-core machine the multi-threaded fit of this
    tiny problem is ~40x slower (6 s instead of 0.15 s).
    """
    x, y = load_split().arrays("train")
    clf = LogisticRegression(max_iter=5000)
    with threadpool_limits(1):
        clf.fit(x.reshape(len(x), -1), y)
    return clf


def nearest_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each row of `a`, the L2 distance to its nearest row of `b`."""
    d2 = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.maximum(d2, 0)).min(1)


def evaluate_samples(transformer: DiTTransformer2DModel, per_class: int = 10,
                     steps: int = 50, cfg: float = 4.0, seed: int = 0, data: str = "digits") -> dict[str, Any]:
    """The model card's quality check (deterministic for a given seed).

    Samples `per_class` images per class (DDIM `steps`, CFG `cfg`, noise seeded by
    `seed`), and reports how many a logistic regression trained on the real train split
    assigns to their class, and nearest-neighbour L2 distances (64-d, [-1, 1] pixels) from
    each sample to the train and to the test images. A model that copied training images
    would sit much closer to train than to test; the reference line is the same distance
    from each real test image to its nearest train image. `data="corners"`: the corners
    model's check instead (`evaluate_corners`, its own defaults).
    """
    if data == "corners":
        return evaluate_corners(transformer, seed=seed)
    transformer.eval()
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    t0 = time.perf_counter()
    x = ddim_cfg_sample(transformer, labels, steps=steps, cfg=cfg, seed=seed)
    sample_s = time.perf_counter() - t0
    flat = x.reshape(len(x), -1).numpy().astype(np.float64)
    clf = digits_classifier()
    correct = clf.predict(flat) == labels.numpy()
    split = load_split()
    xtr, _ = split.arrays("train")
    xte, yte = split.arrays("test")
    xtr = xtr.reshape(len(xtr), -1).astype(np.float64)
    xte = xte.reshape(len(xte), -1).astype(np.float64)
    return {
        "samples": int(len(labels)),
        "per_class": per_class,
        "ddim_steps": steps,
        "cfg": cfg,
        "seed": seed,
        "recognised": int(correct.sum()),
        "per_class_recognised": [int(c) for c in correct.reshape(NUM_CLASSES, per_class).sum(1)],
        "classifier": "LogisticRegression(max_iter=5000) on the train split",
        "classifier_test_accuracy": round(float(clf.score(xte, yte)), 4),
        **_distance_figures(flat, xtr, xte),
        "sampling_s": round(sample_s, 2),
    }


def _distance_figures(samples: np.ndarray, train: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    d_train, d_test = nearest_distances(samples, train), nearest_distances(samples, test)
    d_ref = nearest_distances(test, train)
    return {
        "nn_train_median": round(float(np.median(d_train)), 3),
        "nn_test_median": round(float(np.median(d_test)), 3),
        "nn_train_min": round(float(d_train.min()), 3),
        "real_test_to_train_median": round(float(np.median(d_ref)), 3),
        "real_test_to_train_min": round(float(d_ref.min()), 3),
        "closer_to_train_than_test": int((d_train < d_test).sum()),
    }


def corners_digits(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(corner [N], the 8x8 crop of that corner [N, 64]) of corners images [N, 1, 16, 16]."""
    from dmgd.data.corners import corner_of

    x = np.asarray(images, dtype=np.float64)[:, 0]
    corners = corner_of(x)
    rows, cols = (corners // 2) * 8, (corners % 2) * 8
    crops = np.stack([x[i, r:r + 8, c:c + 8] for i, (r, c) in enumerate(zip(rows, cols))])
    return corners, crops.reshape(len(x), 64)


def evaluate_corners(transformer: DiTTransformer2DModel, per_class: int = 20, steps: int = 25,
                     cfgs: tuple[float, ...] = (1.0, 2.0, 4.0), seed: int = 0) -> dict[str, Any]:
    """The corners model's quality check (deterministic for a given seed).

    At each CFG scale in `cfgs`, `per_class` samples per class (DDIM `steps`, noise seeded
    by `seed`): how many are recognised as their class (the digit in the quadrant with the
    most ink, classified by `digits_classifier`), their per-class corner shares against the
    real train split's (mean absolute difference over classes and corners, in points, and
    the share of samples in their class's majority corner, real: about 70 %), and, at the
    last scale, nearest-neighbour distances (256-d pixels) to the corners train and test
    images.
    """
    from dmgd.data.corners import CORNER_ORDER, load_split as corners_split, real_shares, share_difference

    transformer.eval()
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    clf = digits_classifier()
    split = corners_split()
    xte, yte = split.arrays("test")
    _, test_crops = corners_digits(xte)
    test_corners_ok = float((corners_digits(xte)[0] == split.corners_of("test")).mean())
    real = real_shares("train")
    majority = np.array([CORNER_ORDER[c][0] for c in range(NUM_CLASSES)])
    by_cfg = []
    t0 = time.perf_counter()
    for cfg in cfgs:
        x = ddim_cfg_sample(transformer, labels, steps=steps, cfg=cfg, seed=seed).numpy()
        corners, crops = corners_digits(x)
        correct = clf.predict(crops) == labels.numpy()
        shares = _shares(corners, labels.numpy())
        by_cfg.append({
            "cfg": cfg,
            "recognised": int(correct.sum()),
            "per_class_recognised": [int(c) for c in correct.reshape(NUM_CLASSES, per_class).sum(1)],
            "corner_share_mad_points": round(share_difference(shares, real), 2),
            "majority_corner_share": round(float((corners == majority[labels.numpy()]).mean()), 3),
            "per_class_corner_shares": [[round(float(v), 3) for v in row] for row in shares],
        })
    sample_s = time.perf_counter() - t0
    xtr, _ = split.arrays("train")
    flat = x.reshape(len(x), -1).astype(np.float64)
    return {
        "samples": int(len(labels)) * len(cfgs),
        "per_class": per_class,
        "ddim_steps": steps,
        "cfgs": list(cfgs),
        "seed": seed,
        "samples_per_cfg": int(len(labels)),
        "classifier": "LogisticRegression(max_iter=5000) on the digits' train split, applied to the 8x8 "
                      "quadrant with the most ink",
        "classifier_test_accuracy": round(float((clf.predict(test_crops) == yte).mean()), 4),
        "corner_detection_test_accuracy": round(test_corners_ok, 4),
        "real_train_corner_shares": [[round(float(v), 3) for v in row] for row in real],
        "real_majority_corner_share": round(float(np.mean([row.max() for row in real])), 3),
        "by_cfg": by_cfg,
        "distances_at_cfg": cfgs[-1],
        **_distance_figures(flat, xtr.reshape(len(xtr), -1).astype(np.float64),
                            xte.reshape(len(xte), -1).astype(np.float64)),
        "sampling_s": round(sample_s, 2),
    }


def _shares(corners: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.stack([np.bincount(corners[labels == c], minlength=4) / max(int((labels == c).sum()), 1)
                     for c in range(NUM_CLASSES)])
