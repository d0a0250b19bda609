"""Reading real images: an ImageFolder of real files, and the embedded digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dmgd.data.images import DataError, center_crop_arr, load_image_folder, real_data_for
from dmgd.errors import DmgdError


def _png(path: Path, arr: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three classes, created out of order; RGB and grayscale PNGs and a JPEG."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    _png(root / "zebra" / "b.png", rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    _png(root / "zebra" / "a.png", rng.integers(0, 256, (12, 12), dtype=np.uint8))  # grayscale
    _png(root / "apple" / "x.png", np.full((12, 12, 3), 255, dtype=np.uint8))
    _png(root / "mango" / "sub" / "c.png", np.zeros((12, 12, 3), dtype=np.uint8))  # nested
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / "mango" / "d.jpg")
    (root / "README.txt").write_text("files at the root are ignored")
    (root / "apple" / ".DS_Store").write_bytes(b"\0\1")
    return root


def test_loads_sorted_classes_and_files(folder: Path):
    real = load_image_folder(folder)
    assert real.class_names == ("apple", "mango", "zebra")
    assert real.paths == ("apple/x.png", "mango/d.jpg", "mango/sub/c.png", "zebra/a.png", "zebra/b.png")
    assert real.labels.tolist() == [0, 1, 1, 2, 2]
    assert real.images.shape == (5, 3, 12, 12) and real.images.dtype == torch.float32
    assert float(real.images.min()) >= -1 and float(real.images.max()) <= 1
    assert torch.equal(real.images[0], torch.ones(3, 12, 12))  # white -> 1
    assert torch.equal(real.images[2], -torch.ones(3, 12, 12))  # black -> -1
    # the grayscale PNG became three equal channels
    g = real.images[3]
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])
    assert real.class_counts() == (1, 2, 2)
    assert real.class_indices(2).tolist() == [3, 4]
    assert len(real.fingerprint) == 64


def test_pixel_values(folder: Path):
    arr = np.arange(12 * 12, dtype=np.uint8).reshape(12, 12)
    _png(folder / "apple" / "y.png", arr)
    real = load_image_folder(folder, channels=1)
    assert real.images.shape[1] == 1
    i = real.paths.index("apple/y.png")
    torch.testing.assert_close(real.images[i, 0], torch.from_numpy(arr.astype(np.float32) / 127.5 - 1))


def test_grayscale_conversion_of_rgb(folder: Path):
    real = load_image_folder(folder, channels=1)
    i = real.paths.index("zebra/b.png")
    rgb = Image.open(folder / "zebra" / "b.png").convert("L")
    torch.testing.assert_close(real.images[i, 0], torch.from_numpy(np.asarray(rgb, np.float32) / 127.5 - 1))


def test_fingerprint_is_content_based(folder: Path, tmp_path: Path):
    a = load_image_folder(folder).fingerprint
    assert load_image_folder(folder).fingerprint == a
    # the same files elsewhere: same fingerprint
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert load_image_folder(copy).fingerprint == a
    # preprocessing is part of it
    assert load_image_folder(folder, channels=1).fingerprint != a
    # one changed pixel changes it
    arr = np.asarray(Image.open(copy / "apple" / "x.png")).copy()
    arr[0, 0, 0] = 0
    _png(copy / "apple" / "x.png", arr)
    assert load_image_folder(copy).fingerprint != a


def test_centre_crop_like_adm(tmp_path: Path):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (40, 90, 3), dtype=np.uint8)  # H=40, W=90
    _png(tmp_path / "d" / "c" / "a.png", arr)
    _png(tmp_path / "d" / "c" / "b.png", rng.integers(0, 256, (17, 17, 3), dtype=np.uint8))
    real = load_image_folder(tmp_path / "d", image_size=16)
    assert real.images.shape == (2, 3, 16, 16)
    # by hand: 40 >= 32 -> BOX halving to 45x20, then BICUBIC to short side 16 (36x16), crop
    img = Image.fromarray(arr).resize((45, 20), resample=Image.BOX)
    img = img.resize((36, 16), resample=Image.BICUBIC)
    expect = np.asarray(img)[0:16, 10:26]
    torch.testing.assert_close(real.images[0], torch.from_numpy(expect.astype(np.float32) / 127.5 - 1).permute(2, 0, 1))
    assert np.asarray(center_crop_arr(Image.fromarray(arr), 16)).shape == (16, 16, 3)


def test_mixed_sizes_need_an_image_size(tmp_path: Path):
    _png(tmp_path / "d" / "a" / "1.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "d" / "b" / "2.png", np.zeros((9, 8), np.uint8))
    with pytest.raises(DataError, match=r"2\.png.*image_size"):
        load_image_folder(tmp_path / "d")
    assert load_image_folder(tmp_path / "d", image_size=8).images.shape == (2, 3, 8, 8)


def test_missing_directory(tmp_path: Path):
    with pytest.raises(DataError, match=r"nope.*does not exist"):
        load_image_folder(tmp_path / "nope")


def test_data_error_is_a_dmgd_error():
    assert issubclass(DataError, DmgdError)


def test_no_class_directories(tmp_path: Path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="no class sub-directories"):
        load_image_folder(tmp_path / "d")


def test_empty_class(folder: Path):
    (folder / "kiwi").mkdir()
    with pytest.raises(DataError, match=r"kiwi.*no images"):
        load_image_folder(folder)


def test_non_image_file(folder: Path):
    (folder / "mango" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt is not an image"):
        load_image_folder(folder)


def test_garbage_with_an_image_extension(folder: Path):
    (folder / "mango" / "fake.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"fake\.png"):
        load_image_folder(folder)


def test_truncated_file(folder: Path):
    rng = np.random.default_rng(2)
    path = folder / "apple" / "big.png"
    _png(path, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"big\.png.*(corrupt|truncated)"):
        load_image_folder(folder)


def test_class_count_mismatch(folder: Path):
    with pytest.raises(DataError, match=r"3 class directories.*10 classes"):
        load_image_folder(folder, num_classes=10)
    assert load_image_folder(folder, num_classes=3).num_classes == 3


def test_digits_train_split():
    from dmgd.data.digits import digits_train

    real = real_data_for(None)
    images, labels = digits_train()
    assert torch.equal(real.images, images) and torch.equal(real.labels, labels)
    assert real.class_names == tuple(str(i) for i in range(10))
    assert real.root is None and len(real.paths) == len(real) == 1437
    assert real.fingerprint == real_data_for(None).fingerprint
    assert real_data_for(None, image_size=8, channels=1, num_classes=10).fingerprint == real.fingerprint
    with pytest.raises(DataError, match="channel"):
        real_data_for(None, channels=3)
    with pytest.raises(DataError, match="256x256"):
        real_data_for(None, image_size=256)


def test_digits_written_as_a_folder_read_back(tmp_path: Path):
    from dmgd.data.digits import write_image_folder

    root = write_image_folder(tmp_path / "digits")
    folder = real_data_for(root, channels=1, num_classes=10)
    emb = real_data_for(None)
    assert folder.class_names == emb.class_names
    assert folder.class_counts() == emb.class_counts()
    # same images up to the PNGs' 8-bit quantisation, in class-then-index order
    order = sorted(range(len(emb)), key=lambda i: (int(emb.labels[i]), emb.paths[i]))
    assert (folder.images - emb.images[order]).abs().max() <= 1 / 127.5 + 1e-6
