"""The corners testbed: the data set (`dmgd.data.corners`), its embedded model
(`model = "corners"`), its default real data, test split, random-real baseline and
pretraining."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dmgd.cli import app
from dmgd.data import corners, digits
from dmgd.data.corners import (CORNER_ORDER, SHARES, corner_counts, corner_of, corner_shares, load_split,
                               real_shares, share_difference, write_image_folder)

ASSET = Path(__file__).resolve().parents[1] / "dmgd" / "assets" / "corners_dit"
needs_model = pytest.mark.skipif(not (ASSET / "transformer" / "config.json").is_file(),
                                 reason="the embedded corners model is not trained yet")


# --- the data set ---------------------------------------------------------------------------


def test_corner_counts_are_the_shares_by_largest_remainder():
    assert corner_counts(36) == [25, 7, 3, 1]
    assert corner_counts(100) == [70, 20, 7, 3]
    for n in range(0, 200):
        counts = corner_counts(n)
        assert sum(counts) == n
        assert all(abs(k - s * n) < 1 for k, s in zip(counts, SHARES))


@pytest.mark.parametrize("split", ["fit", "val", "test"])
def test_every_split_has_the_shares_as_exactly_as_counts_allow(split):
    s = load_split()
    labels, found = s.labels[s.indices(split)], s.corners_of(split)
    for c in range(10):
        k = found[labels == c]
        by_rank = [int((k == corner).sum()) for corner in CORNER_ORDER[c]]
        assert by_rank == corner_counts(len(k))
        assert np.allclose(np.array(by_rank) / len(k), SHARES, atol=1 / len(k))


def test_train_is_fit_plus_val_and_keeps_the_shares():
    shares = real_shares("train")
    for c in range(10):
        assert np.allclose(shares[c][list(CORNER_ORDER[c])], SHARES, atol=0.01)


def test_each_class_has_its_own_corner_order():
    assert all(sorted(order) == [0, 1, 2, 3] for order in CORNER_ORDER)
    assert len(set(CORNER_ORDER)) > 5  # seeded per class, not one order for all
    # the fixed contract: changing the seed or the draw changes the testbed
    assert CORNER_ORDER[0] == (2, 0, 1, 3) and CORNER_ORDER[9] == (0, 1, 3, 2)


def test_splits_are_the_digits_and_disjoint():
    s, d = load_split(), digits.load_split()
    for split in ("train", "test", "fit", "val"):
        assert np.array_equal(s.indices(split), d.indices(split))
    assert not set(s.train_indices) & set(s.test_indices)
    assert not set(s.fit_indices) & set(s.val_indices)
    assert set(s.fit_indices) | set(s.val_indices) == set(s.train_indices)


def test_deterministic():
    first = load_split()
    images, labels = first.arrays("train")
    corners.load_split.cache_clear()
    digits.load_split.cache_clear()
    again = load_split()
    assert again is not first
    assert np.array_equal(again.corners, first.corners)
    assert np.array_equal(again.arrays("train")[0], images) and np.array_equal(again.arrays("train")[1], labels)


def test_images_are_the_digits_at_their_corner_on_a_black_canvas():
    s, d = load_split(), digits.load_split()
    x, y = s.arrays("test")
    dx, dy = d.arrays("test")
    assert x.shape == (360, 1, 16, 16) and x.dtype == np.float32 and np.array_equal(y, dy)
    assert x.min() == -1.0 and x.max() == 1.0
    for img, digit, corner in zip(x[:, 0], dx[:, 0], s.corners_of("test")):
        r, c = divmod(int(corner), 2)
        assert np.array_equal(img[8 * r:8 * r + 8, 8 * c:8 * c + 8], digit)
        rest = img.copy()
        rest[8 * r:8 * r + 8, 8 * c:8 * c + 8] = -1
        assert (rest == -1).all()
    t, ty = s.tensors("val")
    assert tuple(t.shape) == (288, 1, 16, 16) and ty.dtype.is_floating_point is False


@pytest.mark.parametrize("split", ["train", "fit", "val", "test"])
def test_corner_shares_recover_the_assignment(split):
    s = load_split()
    x, y = s.arrays(split)
    assert np.array_equal(corner_of(x), s.corners_of(split))
    assert np.allclose(corner_shares(x, y), real_shares(split))
    assert share_difference(corner_shares(x, y), real_shares(split)) == 0.0


def test_corner_of_by_quadrant_ink_and_nan_for_missing_classes():
    x = -np.ones((4, 1, 16, 16), dtype=np.float32)
    x[0, 0, 2, 3] = 1  # top-left
    x[1, 0, 1, 12] = 0.5  # top-right
    x[2, 0, 9, 0] = 1  # bottom-left
    x[3, 0, 15, 15] = 1  # bottom-right
    assert corner_of(x).tolist() == [0, 1, 2, 3]
    assert corner_of(x[:, 0]).tolist() == [0, 1, 2, 3]
    shares = corner_shares(x, np.array([0, 0, 1, 1]), num_classes=3)
    assert shares[0].tolist() == [0.5, 0.5, 0, 0] and shares[1].tolist() == [0, 0, 0.5, 0.5]
    assert np.isnan(shares[2]).all()
    with pytest.raises(ValueError, match="even H"):
        corner_of(np.zeros((1, 1, 15, 15)))


def test_write_image_folder(tmp_path):
    root = write_image_folder(tmp_path / "val", "val")
    files = sorted(root.rglob("*.png"))
    assert len(files) == 288
    s = load_split()
    first = files[0]
    index = int(first.stem)
    image = np.array(Image.open(first))
    assert image.shape == (16, 16) and image.dtype == np.uint8
    assert np.array_equal(image, digits.to_uint8(s.pixels[index].astype(np.float32) / 8 - 1))


# --- the default real data of the corners model -----------------------------------------------


def test_real_data_by_name_and_by_the_models_default(tmp_path, monkeypatch):
    from dmgd.data.images import DataError, real_data_for
    from dmgd.data.targets import real_data_for_backbone

    real = real_data_for("corners", image_size=16, channels=1)
    assert real.image_shape == (1, 16, 16) and len(real) == 1437 and real.root is None
    assert "corners" in real.source and real.source.endswith("train split")
    assert real_data_for(None, default="corners").fingerprint == real.fingerprint
    assert real_data_for(None).image_shape == (1, 8, 8)  # the digits stay the default
    assert real_data_for(None).fingerprint != real.fingerprint
    with pytest.raises(DataError, match="embedded corners are 16x16"):
        real_data_for("corners", image_size=8)
    corners_bb = SimpleNamespace(latent_shape=(1, 16, 16), vae=None, default_data="corners")
    digits_bb = SimpleNamespace(latent_shape=(1, 8, 8), vae=None, default_data="digits")
    other_bb = SimpleNamespace(latent_shape=(1, 8, 8), vae=None)
    assert real_data_for_backbone(None, corners_bb).fingerprint == real.fingerprint
    assert real_data_for_backbone(None, digits_bb).image_shape == (1, 8, 8)
    assert real_data_for_backbone(None, other_bb).image_shape == (1, 8, 8)
    # a directory named like an embedded set is a folder
    folder = write_image_folder(tmp_path / "corners", "val")
    monkeypatch.chdir(tmp_path)
    assert real_data_for("corners", channels=1).root is not None
    assert len(real_data_for("corners", channels=1)) == 288 == len(real_data_for(str(folder), channels=1))


def test_manifest_names_the_corners_as_the_source():
    from dmgd.data.images import real_data_for
    from dmgd.data.manifest import _data_record

    assert "corners" in _data_record(real_data_for("corners"))["source"]
    assert _data_record(real_data_for(None))["source"] == "embedded digits (scikit-learn load_digits), train split"


@needs_model
def test_model_corners_loads_the_embedded_corners_model(tmp_path, monkeypatch):
    from dmgd.sampling.backbones import EMBEDDED_MODEL_ID, load_backbone

    bb = load_backbone("corners")
    assert bb.model_id == "embedded:corners_dit" and bb.default_data == "corners"
    assert bb.latent_shape == (1, 16, 16) and bb.num_classes == 10 and bb.is_pixel
    assert bb.class_names == tuple(str(i) for i in range(10))
    assert load_backbone("embedded:corners_dit").weights_sha256 == bb.weights_sha256
    digits_bb = load_backbone(None)
    assert digits_bb.model_id == EMBEDDED_MODEL_ID and digits_bb.default_data == "digits"
    assert load_backbone("digits").weights_sha256 == digits_bb.weights_sha256
    facts = json.loads((ASSET / "training_facts.json").read_text())
    assert facts["weights_sha256"] == bb.weights_sha256 and facts["data"] == "corners"
    assert sum(f.stat().st_size for f in ASSET.rglob("*")) <= 10 * 2**20


@needs_model
def test_a_run_of_the_corners_model_uses_the_corners_and_eval_their_test_split(tmp_path):
    from dmgd.evaluation.protocol import EvalConfig, evaluate
    from dmgd.pipeline import run

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "baseline.dmgd"
    out = tmp_path / "run"
    run(recipe, out, ipc=1, steps=3, model="corners")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["id"] == "embedded:corners_dit"
    assert "corners" in manifest["data"]["source"] and manifest["data"]["images"] == 1437
    assert Image.open(out / "0" / "0000.png").size == (16, 16)
    result = evaluate(out, config=EvalConfig(seeds=1, epochs=1), write=False)
    assert result.test_images == 360 and "corners" in result.real_source
    val = write_image_folder(tmp_path / "val", "val")  # --real keeps choosing the set
    result = evaluate(out, val, config=EvalConfig(seeds=1, epochs=1), write=False)
    assert result.test_images == 288 and result.real_source == str(val)


def test_default_test_split_follows_the_manifest():
    from dmgd.evaluation.sets import default_test_data, read_real

    assert default_test_data(None) == "digits"
    assert default_test_data({"model": {"id": "embedded:digits_dit"}}) == "digits"
    assert default_test_data({"model": {"id": "embedded:corners_dit"}}) == "corners"
    assert default_test_data({"model": {"id": "some/dir"}, "data": {"source": corners_source()}}) == "corners"
    assert default_test_data({"source": {"data": corners_source()}}) == "corners"
    real, source = read_real(None, image_size=16, channels=1, manifest={"model": {"id": "embedded:corners_dit"}})
    assert len(real) == 360 and real.image_shape == (1, 16, 16) and "corners" in source
    assert np.array_equal(real.labels.numpy(), load_split().arrays("test")[1])
    real, source = read_real(None, image_size=8, channels=1)
    assert len(real) == 360 and real.image_shape == (1, 8, 8) and real.fingerprint == "digits-test"


def corners_source() -> str:
    from dmgd.data.embedded import source

    return source("corners", "train")


def test_sample_real_from_the_corners_and_its_eval(tmp_path):
    from dmgd.data.sample_real import SampleRealError, sample_real
    from dmgd.evaluation.protocol import EvalConfig, evaluate

    out = tmp_path / "base"
    result = CliRunner().invoke(app, ["sample-real", "--ipc", "2", "--out", str(out), "--data", "corners"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["data"] == corners_source()
    s = load_split()
    train = set(int(i) for i in s.train_indices)
    for c in range(10):
        for k, index in enumerate(manifest["chosen"][str(c)]):
            assert index in train and s.labels[index] == c
            image = np.array(Image.open(out / str(c) / f"{k:04d}.png"))
            assert image.shape == (16, 16)
            assert np.array_equal(image, digits.to_uint8(s.pixels[index].astype(np.float32) / 8 - 1))
    # the same draws as from the digits (same split, same rng), placed on the canvas
    digits_out = sample_real(tmp_path / "digits", ipc=2)
    assert digits_out.chosen == manifest["chosen"]
    with pytest.raises(SampleRealError, match="corners are 16x16"):
        sample_real(tmp_path / "x", ipc=1, data="corners", image_size=8)
    result = evaluate(out, config=EvalConfig(seeds=1, epochs=1), write=False)
    assert result.test_images == 360 and "corners" in result.real_source


# --- pretraining ------------------------------------------------------------------------------


def test_corners_dit_config_and_a_tiny_pretrain_with_its_card(tmp_path):
    from dmgd.pretrain import CORNERS_DIT_CONFIG, build_dit, evaluate_corners, pretrain
    from dmgd.sampling.backbones import load_backbone

    assert CORNERS_DIT_CONFIG["sample_size"] == 16 and CORNERS_DIT_CONFIG["patch_size"] == 4
    m = build_dit(0, CORNERS_DIT_CONFIG)
    assert m.pos_embed.height * m.pos_embed.width == 16  # 16 tokens, as many as the digits model
    out = tmp_path / "c"
    facts = pretrain(out, steps=2, batch_size=8, data="corners", progress=False, evaluate=False)
    assert facts["data"] == "corners" and facts["dit_config"]["sample_size"] == 16
    assert "70%/20%/7%/3%" in facts["split"]["corners"]
    card = (out / "MODEL_CARD.md").read_text()
    assert "corners DiT" in card and "--data corners" in card and "16x16" in card
    bb = load_backbone(out)
    assert bb.latent_shape == (1, 16, 16) and bb.default_data is None
    q = evaluate_corners(bb.transformer, per_class=1, steps=2, cfgs=(1.0, 2.0))
    assert [r["cfg"] for r in q["by_cfg"]] == [1.0, 2.0] and q["samples_per_cfg"] == 10
    assert q["corner_detection_test_accuracy"] == 1.0 and q["classifier_test_accuracy"] > 0.9
    assert q["real_majority_corner_share"] == pytest.approx(0.7, abs=0.01)
    from dmgd.pretrain.card import model_card

    text = model_card({**facts, "quality": q})
    assert "corner-share MAD" in text and "| 2.0 |" in text


def test_pretrain_cli_refuses_an_unknown_data_set():
    result = CliRunner().invoke(app, ["pretrain", "--data", "mnist", "--steps", "1"])
    assert result.exit_code == 2 and "digits, corners" in result.output
