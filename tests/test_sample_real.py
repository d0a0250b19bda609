"""`dmgd sample-real`: the random-real baseline in a run's layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import write_image_folder
from dmgd.cli import app
from dmgd.data.digits import load_split, to_uint8
from dmgd.data.sample_real import FORMAT, SampleRealError, sample_real


def _pngs(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))


def test_digits_baseline_layout_manifest_and_pixels(tmp_path):
    out = tmp_path / "base"
    result = sample_real(out, ipc=3, seed=7)
    assert _pngs(out) == [f"{c}/{k:04d}.png" for c in range(10) for k in range(3)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == FORMAT == "dmgd-sample-real-v1"
    assert manifest["ipc"] == 3 and manifest["seed"] == 7 and manifest["settings"]["ipc"] == 3
    assert manifest["class_names"] == [str(c) for c in range(10)]
    assert "random-real baseline" in manifest["kind"]
    split = load_split()
    train = set(int(i) for i in split.train_indices)
    for c in range(10):
        chosen = manifest["chosen"][str(c)]
        assert chosen == result.chosen[str(c)]
        assert len(set(chosen)) == 3 and set(chosen) <= train  # train split only, no repeats
        for k, index in enumerate(chosen):
            assert split.labels[index] == c
            image = Image.open(out / str(c) / f"{k:04d}.png")
            assert image.mode == "L" and image.size == (8, 8)
            expected = to_uint8(split.pixels[index].astype(np.float32) / 8.0 - 1.0)
            assert np.array_equal(np.asarray(image), expected)


def test_the_seed_decides_the_images(tmp_path):
    a = sample_real(tmp_path / "a", ipc=5, seed=0)
    b = sample_real(tmp_path / "b", ipc=5, seed=0)
    c = sample_real(tmp_path / "c", ipc=5, seed=1)
    assert a.chosen == b.chosen
    assert a.chosen != c.chosen
    assert all((a.out / f).read_bytes() == (b.out / f).read_bytes() for f in _pngs(a.out))
    # classes draw independently: not the same positions in every class
    split = load_split()
    train = split.train_indices
    positions = {c: [int(np.searchsorted(train[split.labels[train] == int(c)], i)) for i in v]
                 for c, v in a.chosen.items()}
    assert len({tuple(p) for p in positions.values()}) > 1


def test_a_non_empty_directory_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SampleRealError, match="not empty.*--overwrite"):
        sample_real(out, ipc=2)
    sample_real(out, ipc=2, overwrite=True)
    (out / "eval.json").write_text("{}")  # stale results of the previous set go
    sample_real(out, ipc=1, seed=3, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "eval.json").exists()
    assert _pngs(out) == [f"{c}/0000.png" for c in range(10)]
    assert json.loads((out / "manifest.json").read_text())["seed"] == 3


def test_an_image_folder_source(tmp_path):
    data = write_image_folder(tmp_path / "data", classes=3, per_class=6, size=20)
    out = tmp_path / "out"
    result = sample_real(out, ipc=4, seed=0, data=data)
    assert result.class_names == ("class_0", "class_1", "class_2")
    assert _pngs(out) == [f"class_{c}/{k:04d}.png" for c in range(3) for k in range(4)]
    for c in range(3):
        for k, rel in enumerate(result.chosen[f"class_{c}"]):
            assert rel.startswith(f"class_{c}/")
            original = np.asarray(Image.open(data / rel).convert("RGB"))
            copy = Image.open(out / f"class_{c}" / f"{k:04d}.png")
            assert copy.mode == "RGB" and np.array_equal(np.asarray(copy), original)  # lossless
    cropped = sample_real(tmp_path / "cropped", ipc=2, data=data, image_size=16)
    assert Image.open(cropped.out / "class_0" / "0000.png").size == (16, 16)


def test_too_few_images_names_the_class(tmp_path):
    data = write_image_folder(tmp_path / "data", classes=2, per_class=3, size=8, mode="L")
    with pytest.raises(SampleRealError, match="class 'class_0'.*3 images.*--ipc 4"):
        sample_real(tmp_path / "out", ipc=4, data=data)
    assert not (tmp_path / "out").exists()  # nothing half-written
    with pytest.raises(SampleRealError, match="fewer than --ipc 200"):
        sample_real(tmp_path / "out", ipc=200)


def test_cli(tmp_path):
    runner = CliRunner()
    out = tmp_path / "base"
    ok = runner.invoke(app, ["sample-real", "--ipc", "2", "--seed", "1", "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "10 classes x 2 random real images (seed 1)" in ok.output
    again = runner.invoke(app, ["sample-real", "--ipc", "2", "--out", str(out)])
    assert again.exit_code == 1 and "error:" in again.output and "--overwrite" in again.output
    assert again.exception is None or isinstance(again.exception, SystemExit)
    missing = runner.invoke(app, ["sample-real", "--ipc", "2", "--out", str(tmp_path / "x"),
                                  "--data", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    assert "Traceback" not in missing.output
