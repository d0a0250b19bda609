"""Corners: the digits in a 16x16 canvas, each at one of four corners, with known modes.

Every 8x8 digit of `dmgd.data.digits` is placed at one corner (quadrant) of a 16x16
black canvas (pixel value 0, i.e. -1 in [-1, 1]). Each class has its own corner order,
drawn once with `numpy.random.default_rng(CORNER_SEED)` (`CORNER_ORDER[c]`: the corner
indices from most to least frequent); its images go to those corners in the proportions
SHARES = 70 / 20 / 7 / 3 %. The counts are set per class WITHIN EACH SPLIT -- fit, val and
test of `dmgd.data.digits` (train = fit + val) -- by largest remainder, so every split has
the same shares as exactly as its counts allow; which images of a class get which corner
is a seeded shuffle. So the sub-modes of every class are known and `corner_shares` of a
generated set can be compared directly with `real_shares`.

The splits are exactly the digits' (same indices into `load_digits()`): no image of the
test split is in train. Images are float32 [N, 1, 16, 16] in [-1, 1] (pixel v -> v / 8 - 1,
as digits); as PNGs (`write_image_folder`) 16x16 grayscale uint8.

Corners are numbered 0..3 in CORNER_NAMES order: top-left, top-right, bottom-left,
bottom-right.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from attrs import field, frozen

from dmgd.data import digits
from dmgd.data.digits import CLASS_NAMES, NUM_CLASSES, DigitsSplit, _frozen_array, write_split_folder

__all__ = [
    "CLASS_NAMES", "CORNER_NAMES", "CORNER_ORDER", "CORNER_SEED", "CornersSplit", "IMAGE_SHAPE", "NUM_CLASSES",
    "SHARES", "SPLITS", "corner_counts", "corner_of", "corner_shares", "load_split", "real_shares",
    "share_difference", "write_image_folder",
]

IMAGE_SHAPE = (1, 16, 16)
CORNER_NAMES: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")
SHARES: tuple[float, ...] = (0.70, 0.20, 0.07, 0.03)
CORNER_SEED = 0
SPLITS = ("fit", "val", "test")  # where the counts are set; train = fit + val


def _corner_order() -> tuple[tuple[int, ...], ...]:
    rng = np.random.default_rng(CORNER_SEED)
    return tuple(tuple(int(k) for k in rng.permutation(4)) for _ in range(NUM_CLASSES))


CORNER_ORDER: tuple[tuple[int, ...], ...] = _corner_order()
"""CORNER_ORDER[c][r]: the corner receiving the r-th largest share (SHARES[r]) of class c."""


def corner_counts(n: int) -> list[int]:
    """SHARES of `n` images as whole counts (largest remainder; ties to the larger share)."""
    raw = np.asarray(SHARES) * n
    counts = np.floor(raw).astype(int)
    rest = n - int(counts.sum())
    for r in sorted(range(len(SHARES)), key=lambda r: (-(raw[r] - counts[r]), r))[:rest]:
        counts[r] += 1
    return [int(c) for c in counts]


@frozen
class CornersSplit(DigitsSplit):
    """The digits' split with every image on a 16x16 canvas; `corners[i]` is the corner
    (0..3, CORNER_NAMES) of `load_digits()` image i. `pixels` are [1797, 16, 16], 0..16."""

    corners: np.ndarray = field(converter=_frozen_array, repr=False, kw_only=True)  # [1797] int64

    def corners_of(self, split: str) -> np.ndarray:
        """The corner (0..3) of each image of `split`, in the split's (ascending) order."""
        return self.corners[self.indices(split)]


def _place(pixels8: np.ndarray, corners: np.ndarray) -> np.ndarray:
    canvas = np.zeros((len(pixels8), 16, 16), dtype=pixels8.dtype)
    for k in range(4):
        r, c = divmod(k, 2)
        sel = corners == k
        canvas[sel, 8 * r:8 * r + 8, 8 * c:8 * c + 8] = pixels8[sel]
    return canvas


@functools.lru_cache(maxsize=1)
def load_split() -> CornersSplit:
    """The corners data on the digits' fixed splits (cached; identical every call)."""
    d = digits.load_split()
    corners = np.full(len(d.labels), -1, dtype=np.int64)
    rng = np.random.default_rng(CORNER_SEED + 1)
    for split in SPLITS:
        idx = d.indices(split)
        for c in range(NUM_CLASSES):
            members = idx[d.labels[idx] == c]  # ascending
            assigned = np.repeat(CORNER_ORDER[c], corner_counts(len(members)))
            corners[members] = assigned[rng.permutation(len(members))]
    assert (corners >= 0).all()
    return CornersSplit(
        pixels=_place(np.asarray(d.pixels), corners), labels=d.labels,
        train_indices=d.train_indices, test_indices=d.test_indices,
        fit_indices=d.fit_indices, val_indices=d.val_indices, corners=corners,
    )


def corner_of(images: np.ndarray) -> np.ndarray:
    """The corner (0..3) of each image [N, C, 16, 16] (or [N, 16, 16]) in [-1, 1]: the
    quadrant holding the most ink (x + 1, summed over channels and pixels)."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[-1] != x.shape[-2] or x.shape[-1] % 2:
        raise ValueError(f"expected images [N, C, H, H] with an even H, got shape {x.shape}")
    h = x.shape[-1] // 2
    ink = (x + 1.0).sum(1)
    quads = np.stack([ink[:, :h, :h], ink[:, :h, h:], ink[:, h:, :h], ink[:, h:, h:]], 1)
    return quads.reshape(len(x), 4, -1).sum(-1).argmax(1)


def corner_shares(images: np.ndarray, labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """[num_classes, 4]: per class, the share of its images in each corner (`corner_of`);
    a class with no images gets a row of NaN."""
    found = corner_of(images)
    labels = np.asarray(labels)
    out = np.full((num_classes, 4), np.nan)
    for c in range(num_classes):
        k = found[labels == c]
        if len(k):
            out[c] = np.bincount(k, minlength=4) / len(k)
    return out


def real_shares(split: str = "train") -> np.ndarray:
    """[10, 4]: the assigned corner shares of each class in `split` (from the assignment)."""
    s = load_split()
    corners, labels = s.corners_of(split), s.labels[s.indices(split)]
    return np.stack([np.bincount(corners[labels == c], minlength=4) / (labels == c).sum()
                     for c in range(NUM_CLASSES)])


def share_difference(shares: np.ndarray, reference: np.ndarray) -> float:
    """Mean absolute difference in percentage points over classes and corners."""
    return float(np.nanmean(np.abs(np.asarray(shares) - np.asarray(reference))) * 100)


def write_image_folder(root: str | Path, split: str = "train") -> Path:
    """Write a split as an ImageFolder: `<root>/<class name>/<index>.png` (16x16 "L"),
    `<index>` the image's `load_digits()` index, zero-padded to 4 digits. Returns `root`."""
    return write_split_folder(load_split(), root, split)
