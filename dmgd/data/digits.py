"""scikit-learn's digits as the embedded default dataset.

`sklearn.datasets.load_digits()` ships inside scikit-learn's wheel: 1797 images, 8x8, one
channel, pixel values 0..16, ten classes "0".."9" (about 180 images each). Nothing is
downloaded.

The split is FIXED and part of the project's contract:

    train_test_split(arange(1797), test_size=0.2, stratify=y, random_state=0)

giving 1437 training and 360 test images, stratified by class. `train_indices` and
`test_indices` are sorted index arrays into `load_digits()`. Only the train split is ever
used to train the embedded DiT or to build distillation targets; the test split is for
evaluation only.

For choosing recipe values without looking at the test split, the train split is split
once more, the same way (`train_test_split(train, test_size=0.2, stratify=..,
random_state=0)`): "fit" (1149 images: what tuned runs build their k-means targets from)
and "val" (288 images: what tuned values are scored on). `benchmarks/tune_digits.py` uses
them.

Images are float32 tensors in [-1, 1], shape [N, 1, 8, 8] (pixel value v -> v / 8 - 1).
As PNGs (`write_image_folder`) they are 8x8 grayscale uint8, round((x + 1) * 127.5).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from attrs import field, frozen

if TYPE_CHECKING:  # pragma: no cover
    import torch

NUM_CLASSES = 10
CLASS_NAMES: tuple[str, ...] = tuple(str(i) for i in range(NUM_CLASSES))
IMAGE_SHAPE = (1, 8, 8)
TEST_SIZE = 0.2
SPLIT_SEED = 0


def _frozen_array(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@frozen
class DigitsSplit:
    """The fixed train/test split of scikit-learn's digits (read-only arrays)."""

    pixels: np.ndarray = field(converter=_frozen_array, repr=False)  # [1797, 8, 8] 0..16
    labels: np.ndarray = field(converter=_frozen_array, repr=False)  # [1797] int64
    train_indices: np.ndarray = field(converter=_frozen_array, repr=False)  # sorted
    test_indices: np.ndarray = field(converter=_frozen_array, repr=False)  # sorted
    fit_indices: np.ndarray = field(converter=_frozen_array, repr=False)  # sorted, part of train
    val_indices: np.ndarray = field(converter=_frozen_array, repr=False)  # sorted, rest of train
    class_names: tuple[str, ...] = CLASS_NAMES

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def indices(self, split: str) -> np.ndarray:
        """"train" / "test": the fixed split; "fit" / "val": the train split split again."""
        splits = {"train": self.train_indices, "test": self.test_indices,
                  "fit": self.fit_indices, "val": self.val_indices}
        if split not in splits:
            raise ValueError(f"unknown split {split!r}: expected one of {', '.join(splits)}")
        return splits[split]

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(images float32 [N, 1, 8, 8] in [-1, 1], labels int64 [N]) as numpy arrays."""
        idx = self.indices(split)
        images = (self.pixels[idx].astype(np.float32) / 8.0 - 1.0)[:, None]
        return images, self.labels[idx].astype(np.int64)

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images float32 [N, 1, 8, 8] in [-1, 1], labels int64 [N]) as torch tensors."""
        import torch

        images, labels = self.arrays(split)
        return torch.from_numpy(images.copy()), torch.from_numpy(labels.copy())


@functools.lru_cache(maxsize=1)
def load_split() -> DigitsSplit:
    """The digits and their fixed stratified 80/20 split (cached; identical every call)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    pixels = d.images.astype(np.uint8)  # values 0..16
    labels = d.target.astype(np.int64)
    idx = np.arange(len(labels))
    train, test = train_test_split(
        idx, test_size=TEST_SIZE, stratify=labels, random_state=SPLIT_SEED
    )
    fit, val = train_test_split(
        train, test_size=TEST_SIZE, stratify=labels[train], random_state=SPLIT_SEED
    )
    return DigitsSplit(
        pixels=pixels,
        labels=labels,
        train_indices=np.sort(train).astype(np.int64),
        test_indices=np.sort(test).astype(np.int64),
        fit_indices=np.sort(fit).astype(np.int64),
        val_indices=np.sort(val).astype(np.int64),
    )


def digits_train() -> tuple[torch.Tensor, torch.Tensor]:
    """The train split: images [1437, 1, 8, 8] float32 in [-1, 1], labels [1437] int64."""
    return load_split().tensors("train")


def digits_test() -> tuple[torch.Tensor, torch.Tensor]:
    """The test split: images [360, 1, 8, 8] float32 in [-1, 1], labels [360] int64."""
    return load_split().tensors("test")


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] floats -> uint8 via round((x + 1) * 127.5), clipped to 0..255."""
    return np.clip(np.round((np.asarray(images, dtype=np.float64) + 1.0) * 127.5), 0, 255).astype(
        np.uint8
    )


def write_image_folder(root: str | Path, split: str = "train") -> Path:
    """Write a split as an ImageFolder: `<root>/<class name>/<index>.png`.

    `<index>` is the image's index in `load_digits()` (zero-padded to 4 digits so that
    sorted file order is index order). Each PNG is 8x8 grayscale ("L"). Returns `root`.
    """
    return write_split_folder(load_split(), root, split)


def write_split_folder(s: Any, root: str | Path, split: str) -> Path:
    """An embedded split (`DigitsSplit`-like: arrays, indices, class_names) as an
    ImageFolder of grayscale PNGs named by their `load_digits()` index."""
    from PIL import Image

    root = Path(root)
    images, labels = s.arrays(split)
    pixels = to_uint8(images[:, 0])
    for name in s.class_names:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, img, y in zip(s.indices(split), pixels, labels):
        Image.fromarray(img).save(root / s.class_names[int(y)] / f"{int(i):04d}.png")
    return root
