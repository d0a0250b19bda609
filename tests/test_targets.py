"""Targets: encoding, seeded per-class k-means, and the on-disk cache."""

from __future__ import annotations

import logging
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dmgd.data import targets as T
from dmgd.data.images import DataError, RealImages, real_data_for
from dmgd.data.targets import ClassTargets, build_targets, encode, kmeans_class, pixel_shape
from dmgd.guidance import TargetBatch


def pixel_backbone(weights: str = "w" * 64, shape=(1, 8, 8)):
    return types.SimpleNamespace(vae=None, latent_shape=shape, vae_scale=1.0, model_id="test:pixels",
                                 weights_sha256=weights, num_classes=10)


@pytest.fixture(scope="module")
def digits() -> RealImages:
    return real_data_for(None)


@pytest.fixture
def small() -> RealImages:
    """Three classes of 2-d blobs in a 1x1x2 'image' (F = 2): the k-means is obvious."""
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for c in range(3):
        for j, (centre, n) in enumerate([((0, 0), 6), ((5, 5), 3), ((-5, 5), 1)]):
            xs.append(np.asarray(centre) + 0.01 * rng.standard_normal((n, 2)) + 10 * c)
            ys += [c] * n
    x = torch.tensor(np.concatenate(xs), dtype=torch.float32).reshape(-1, 1, 1, 2)
    return RealImages(images=x, labels=torch.tensor(ys), class_names=("a", "b", "c"),
                      paths=tuple(f"{i}.png" for i in range(len(ys))), fingerprint="f" * 64)


def test_kmeans_order_and_masses(small):
    bb = pixel_backbone(shape=(1, 1, 2))
    t = build_targets(bb, small, [3, 1], seed=0, use_cache=False)
    assert set(t) == {1, 3}
    t3 = t[3]
    assert t3.points.shape == (3, 3, 2) and t3.masses.shape == (3, 3)
    torch.testing.assert_close(t3.masses, torch.tensor([[0.6, 0.3, 0.1]] * 3))
    for c in range(3):  # largest cluster first
        torch.testing.assert_close(t3.points[c], torch.tensor([[0, 0], [5, 5], [-5, 5]], dtype=torch.float32) + 10 * c,
                                   atol=0.05, rtol=0)
    # K = 1: the class mean
    for c in range(3):
        torch.testing.assert_close(t[1].points[c, 0], small.images[small.labels == c].reshape(-1, 2).mean(0))
    torch.testing.assert_close(t[1].masses, torch.ones(3, 1))
    assert t3.class_sizes == (10, 10, 10)
    assert len(t3.kmeans_seconds) == 3 and all(s > 0 for s in t3.kmeans_seconds)
    manifest = t3.to_manifest()
    assert manifest["k"] == 3 and len(manifest["kmeans_seconds_per_class"]) == 3


def test_tie_order_by_first_member():
    x = np.array([[10.0, 0], [10.1, 0], [0, 0], [0.1, 0]])  # two clusters of 2
    c, m, _ = kmeans_class(x, 2, seed=0)
    np.testing.assert_allclose(m, [0.5, 0.5])
    np.testing.assert_allclose(c[0], [10.05, 0], atol=1e-6)  # its first member is index 0


def test_seeded_kmeans_is_reproducible_and_masses_sum_to_one(digits):
    bb = pixel_backbone()
    a = build_targets(bb, digits, [10], seed=3, use_cache=False)[10]
    b = build_targets(bb, digits, [10], seed=3, use_cache=False)[10]
    assert torch.equal(a.points, b.points) and torch.equal(a.masses, b.masses)
    torch.testing.assert_close(a.masses.double().sum(1), torch.ones(10, dtype=torch.float64), atol=1e-6, rtol=0)
    assert (a.masses[:, :-1] >= a.masses[:, 1:]).all()  # mass descending
    assert a.points.dtype == torch.float32 and a.points.shape == (10, 10, 64)
    # a class's targets do not depend on the other classes
    keep = digits.labels != 0
    sub = RealImages(images=digits.images[keep], labels=digits.labels[keep] - 1, class_names=digits.class_names[1:],
                     paths=tuple(p for p, k in zip(digits.paths, keep.tolist()) if k), fingerprint="x")
    s = build_targets(bb, sub, [10], seed=3, use_cache=False)[10]
    # class 1 is row 0 of the subset, but seeds follow the class index: reseed by hand
    cen, m, _ = kmeans_class(digits.images[digits.labels == 1].reshape(-1, 64).numpy(), 10, T.class_seed(3, 1))
    assert torch.equal(a.points[1], torch.from_numpy(cen)) and torch.equal(a.masses[1], torch.from_numpy(m))
    assert s.points.shape == (9, 10, 64)


def test_cache_hit_returns_identical_tensors_without_recomputing(digits, tmp_path):
    bb = pixel_backbone()
    T.STATS.clear()
    first = build_targets(bb, digits, [10, 1], seed=0, cache_dir=tmp_path)
    assert T.STATS["kmeans"] == 20 and T.STATS["miss"] == 2 and T.STATS["hit"] == 0
    assert not first[10].from_cache
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(f.endswith(".safetensors") for f in files)  # no temp files left
    T.STATS.clear()
    again = build_targets(bb, digits, [1, 10], seed=0, cache_dir=tmp_path)
    assert T.STATS["kmeans"] == 0 and T.STATS["encode"] == 0 and T.STATS["hit"] == 2
    for k in (1, 10):
        assert again[k].from_cache
        assert torch.equal(again[k].points, first[k].points) and torch.equal(again[k].masses, first[k].masses)
        assert again[k].kmeans_seconds == (0.0,) * len(first[k].kmeans_seconds)  # nothing fitted
        assert again[k].class_sizes == first[k].class_sizes


def test_cache_dir_from_environment(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("DMGD_CACHE_DIR", str(tmp_path / "env"))
    assert T.default_cache_dir() == tmp_path / "env"
    t = build_targets(pixel_backbone(), digits, [2], seed=0)
    assert Path(t[2].cache_path).parent == tmp_path / "env"


def _one_file(d: Path) -> Path:
    (f,) = [p for p in d.iterdir() if p.name.startswith("targets-")]
    return f


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong_shape", "bad_masses"])
def test_corrupt_cache_file_is_rebuilt(digits, tmp_path, caplog, damage):
    bb = pixel_backbone()
    ref = build_targets(bb, digits, [3], seed=0, cache_dir=tmp_path)[3]
    path = _one_file(tmp_path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\xff" * 64)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        bad = {"points": ref.points[:, :2].contiguous(), "masses": ref.masses} if damage == "wrong_shape" else \
            {"points": ref.points, "masses": ref.masses * 2}
        save_file(bad, str(path), metadata=meta)
    T.STATS.clear()
    with caplog.at_level(logging.WARNING, logger="dmgd.targets"):
        t = build_targets(bb, digits, [3], seed=0, cache_dir=tmp_path)[3]
    assert not t.from_cache and T.STATS["rebuilt"] == 1 and T.STATS["kmeans"] == 10
    assert "rebuilding" in caplog.text and path.name in caplog.text
    assert torch.equal(t.points, ref.points)
    T.STATS.clear()
    assert build_targets(bb, digits, [3], seed=0, cache_dir=tmp_path)[3].from_cache  # repaired
    assert T.STATS["kmeans"] == 0


def test_key_mismatch_is_rebuilt(digits, tmp_path, caplog):
    """A file of another key under this key's name (renamed, or a hash-prefix clash)."""
    bb = pixel_backbone()
    build_targets(bb, digits, [3], seed=0, cache_dir=tmp_path)
    path3 = _one_file(tmp_path)
    other = build_targets(pixel_backbone(weights="v" * 64), digits, [3], seed=0, cache_dir=tmp_path)[3]
    assert Path(other.cache_path) != path3  # other weights: another file, computed afresh
    path3.write_bytes(Path(other.cache_path).read_bytes())  # foreign content under our name
    T.STATS.clear()
    with caplog.at_level(logging.WARNING, logger="dmgd.targets"):
        t = build_targets(bb, digits, [3], seed=0, cache_dir=tmp_path)[3]
    assert not t.from_cache and T.STATS["rebuilt"] == 1 and "another key" in caplog.text


@pytest.mark.parametrize("change", [{"ks": [4]}, {"seed": 1}, {"weights": "v" * 64}])
def test_other_key_does_not_hit(digits, tmp_path, change):
    build_targets(pixel_backbone(), digits, [3], seed=0, cache_dir=tmp_path)
    T.STATS.clear()
    t = build_targets(pixel_backbone(change.get("weights", "w" * 64)), digits, change.get("ks", [3]),
                      seed=change.get("seed", 0), cache_dir=tmp_path)
    (ct,) = t.values()
    assert not ct.from_cache and T.STATS["hit"] == 0 and T.STATS["kmeans"] == 10


def test_other_data_does_not_hit(small, tmp_path):
    bb = pixel_backbone(shape=(1, 1, 2))
    build_targets(bb, small, [2], seed=0, cache_dir=tmp_path)
    moved = RealImages(images=small.images + 1, labels=small.labels, class_names=small.class_names,
                       paths=small.paths, fingerprint="g" * 64)
    t = build_targets(bb, moved, [2], seed=0, cache_dir=tmp_path)[2]
    assert not t.from_cache


def test_class_with_fewer_images_than_k(small):
    with pytest.raises(DataError, match=r"Class 'a' has 10 real image\(s\).*K = 11"):
        build_targets(pixel_backbone(shape=(1, 1, 2)), small, [11], seed=0, use_cache=False)
    # exactly K images is fine: every image its own support point
    t = build_targets(pixel_backbone(shape=(1, 1, 2)), small, [10], seed=0, use_cache=False)[10]
    torch.testing.assert_close(t.masses, torch.full((3, 10), 0.1))


def test_pixel_model_shape_mismatch(digits):
    with pytest.raises(DataError, match="pixel model"):
        encode(pixel_backbone(shape=(3, 8, 8)), digits.images)


# --------------------------------------------------------------------------- a real VAE


@pytest.fixture(scope="module")
def vae_backbone():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, sample_size=16,
    ).eval()
    return types.SimpleNamespace(vae=vae, latent_shape=(4, 8, 8), vae_scale=0.18215, model_id="test:vae",
                                 weights_sha256="a" * 64, num_classes=2)


@pytest.fixture
def rgb16() -> RealImages:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 3, 16, 16, generator=g) * 2 - 1
    return RealImages(images=x, labels=torch.tensor([0] * 6 + [1] * 6), class_names=("a", "b"),
                      paths=tuple(f"{i}.png" for i in range(12)), fingerprint="r" * 64)


def test_vae_encoding_is_the_scaled_posterior_mean(vae_backbone, rgb16):
    assert pixel_shape(vae_backbone) == (3, 16, 16)
    z = encode(vae_backbone, rgb16.images, batch_size=5)
    with torch.no_grad():
        ref = vae_backbone.vae.encode(rgb16.images).latent_dist.mean * 0.18215
    assert z.shape == (12, 256) and z.dtype == torch.float32
    torch.testing.assert_close(z, ref.reshape(12, -1), atol=1e-5, rtol=0)
    assert torch.equal(encode(vae_backbone, rgb16.images, batch_size=5), z)  # deterministic
    with pytest.raises(DataError, match="channel"):
        encode(vae_backbone, rgb16.images[:, :1])
    with pytest.raises(DataError, match="image_size=16"):
        encode(vae_backbone, torch.zeros(2, 3, 32, 32))


def test_vae_targets_and_latent_cache(vae_backbone, rgb16, tmp_path):
    T.STATS.clear()
    t = build_targets(vae_backbone, rgb16, [2, 3], seed=0, cache_dir=tmp_path)
    # each of the 2 classes encoded once for both K, into one latent file a class
    assert t[2].points.shape == (2, 2, 256) and T.STATS["encode"] == 2
    assert t[2].encode_seconds > 0
    assert len(list((tmp_path / "latents").glob("*.safetensors"))) == 2
    T.STATS.clear()
    t4 = build_targets(vae_backbone, rgb16, [4], seed=0, cache_dir=tmp_path)[4]  # new K: latents cached
    assert T.STATS["encode"] == 0 and T.STATS["latents_hit"] == 2 and T.STATS["kmeans"] == 2
    assert t4.points.shape == (2, 4, 256)


def test_target_batch_gather():
    pts = torch.arange(3 * 4 * 2, dtype=torch.float32).reshape(3, 4, 2)
    ct = ClassTargets(k=4, points=pts, masses=torch.full((3, 4), 0.25), class_sizes=(4, 4, 4),
                      kmeans_seconds=(0.0, 0.0, 0.0))
    tb = TargetBatch.gather(torch.tensor([2, 0]), ct, ct, sample_index=[1, 3])
    assert torch.equal(tb.points, pts[[2, 0]]) and torch.equal(tb.masses, torch.full((2, 4), 0.25))
    assert torch.equal(tb.modes, torch.stack([pts[2, 1], pts[0, 3]]))
    tb = TargetBatch.gather(torch.tensor([1, 2]), None, ct, sample_index=2)
    assert tb.points is None and torch.equal(tb.modes, pts[[1, 2], 2])
    with pytest.raises(ValueError, match="K = ipc"):
        TargetBatch.gather(torch.tensor([0]), None, ct, sample_index=4)
