"""The embedded default data: sklearn's digits with a fixed stratified split."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dmgd.data import digits
from dmgd.data.digits import (
    CLASS_NAMES,
    DigitsSplit,
    digits_test,
    digits_train,
    load_split,
    to_uint8,
    write_image_folder,
)


def _fresh_split() -> DigitsSplit:
    load_split.cache_clear()
    try:
        return load_split()
    finally:
        load_split.cache_clear()


def test_split_sizes_disjoint_and_complete():
    s = load_split()
    tr, te = s.train_indices, s.test_indices
    assert len(tr) == 1437 and len(te) == 360
    assert np.intersect1d(tr, te).size == 0
    assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(1797))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(te) > 0)  # sorted, unique
    assert tr.dtype.kind == "i" and te.dtype.kind == "i"


def test_split_is_fixed():
    a, b = _fresh_split(), _fresh_split()
    assert np.array_equal(a.train_indices, b.train_indices)
    assert np.array_equal(a.test_indices, b.test_indices)
    # pinned: the first test indices of train_test_split(..., stratify=y, random_state=0)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    _, te = train_test_split(np.arange(1797), test_size=0.2, stratify=y, random_state=0)
    assert np.array_equal(a.test_indices, np.sort(te))


def test_split_is_stratified():
    s = load_split()
    counts_tr = np.bincount(s.labels[s.train_indices], minlength=10)
    counts_te = np.bincount(s.labels[s.test_indices], minlength=10)
    assert counts_tr.min() >= 139 and counts_te.min() >= 35
    total = counts_tr + counts_te
    np.testing.assert_allclose(counts_te / total, 0.2, atol=0.01)


def test_arrays_are_read_only():
    s = load_split()
    with pytest.raises(ValueError):
        s.train_indices[0] = 5


def test_tensors_range_shape_and_mapping():
    x, y = digits_train()
    xt, yt = digits_test()
    assert tuple(x.shape) == (1437, 1, 8, 8) and tuple(xt.shape) == (360, 1, 8, 8)
    assert str(x.dtype) == "torch.float32" and str(y.dtype) == "torch.int64"
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    s = load_split()
    i = int(s.train_indices[0])
    np.testing.assert_allclose(x[0, 0].numpy(), s.pixels[i] / 8.0 - 1.0)
    assert int(y[0]) == int(s.labels[i])
    assert set(y.tolist()) == set(range(10)) == set(yt.tolist())
    assert CLASS_NAMES == tuple("0123456789")
    with pytest.raises(ValueError):
        s.indices("validation")


def test_fit_and_val_partition_train_stratified_and_never_touch_test():
    s = load_split()
    fit, val = s.indices("fit"), s.indices("val")
    assert len(fit) == 1149 and len(val) == 288
    assert np.array_equal(np.sort(np.concatenate([fit, val])), s.train_indices)
    assert np.intersect1d(fit, s.test_indices).size == 0 == np.intersect1d(val, s.test_indices).size
    counts_val = np.bincount(s.labels[val], minlength=10)
    assert counts_val.min() >= 28
    again = _fresh_split()
    assert np.array_equal(again.val_indices, val)


def test_val_split_writes_an_image_folder(tmp_path):
    root = write_image_folder(tmp_path / "val", "val")
    files = sorted(root.glob("*/*.png"))
    assert len(files) == 288
    assert {f.parent.name for f in files} == set(CLASS_NAMES)


def test_to_uint8():
    out = to_uint8(np.array([-1.0, 0.0, 1.0, -2.0, 2.0, -0.75]))
    assert out.tolist() == [0, 128, 255, 0, 255, 32]


def test_write_image_folder(tmp_path):
    root = write_image_folder(tmp_path / "test", "test")
    s = load_split()
    assert sorted(p.name for p in root.iterdir()) == list(CLASS_NAMES)
    files = sorted(root.rglob("*.png"))
    assert len(files) == 360
    first = sorted((root / "3").iterdir())[0]
    idx = int(first.stem)
    assert idx in set(s.test_indices.tolist()) and s.labels[idx] == 3
    with Image.open(first) as im:
        assert im.mode == "L" and im.size == (8, 8)
        px = np.asarray(im)
    assert np.array_equal(px, to_uint8(s.pixels[idx] / 8.0 - 1.0))
    assert digits.IMAGE_SHAPE == (1, 8, 8)
