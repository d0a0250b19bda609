"""The streamed latent cache: a folder scanned (not decoded whole), each class encoded a batch
at a time into its own file, reused, and complete after a kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import save_tiny_dit, write_image_folder
from dmgd.data import latent_cache as L
from dmgd.data import targets as T
from dmgd.data.images import DataError, load_image_folder, scan_image_folder
from dmgd.data.targets import build_targets

HANG_GUARD_SECONDS = 1800  # a guard against a hang, not a timer deciding an outcome
CLASSES, PER_CLASS = 4, 6


@pytest.fixture(scope="module")
def vae_model(tmp_path_factory) -> Path:
    return save_tiny_dit(tmp_path_factory.mktemp("vae_dit"), num_classes=CLASSES, sample_size=8, channels=3, vae=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("data") / "train", CLASSES, PER_CLASS, 20)  # cropped to 16


@pytest.fixture(scope="module")
def backbone(vae_model):
    from dmgd.sampling.backbones import load_backbone

    return load_backbone(vae_model)


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((d / "latents").iterdir())}


def test_scan_matches_a_full_read(folder):
    streamed = scan_image_folder(folder, image_size=16, channels=3)
    loaded = load_image_folder(folder, image_size=16, channels=3)
    assert streamed.images is None and streamed.streamed and not loaded.streamed
    assert streamed.fingerprint == loaded.fingerprint  # the same data, the same key as before
    assert streamed.conversions == loaded.conversions == {"20x20 -> 16x16": CLASSES * PER_CLASS}
    assert streamed.image_shape == loaded.image_shape == (3, 16, 16)
    assert torch.equal(streamed.labels, loaded.labels) and streamed.paths == loaded.paths
    assert len(set(streamed.class_fingerprints)) == CLASSES


def test_streamed_targets_equal_in_memory_ones_and_the_cache_is_reused(backbone, folder, tmp_path):
    streamed = scan_image_folder(folder, image_size=16, channels=3)
    loaded = load_image_folder(folder, image_size=16, channels=3)
    T.STATS.clear()
    a = build_targets(backbone, streamed, [2, 3], seed=0, cache_dir=tmp_path / "a", workers=2)
    assert T.STATS["encode"] == CLASSES and len(_files(tmp_path / "a")) == CLASSES
    b = build_targets(backbone, loaded, [2, 3], seed=0, use_cache=False)
    for k in (2, 3):  # the same batches of the same pixels: the same bits
        assert torch.equal(a[k].points, b[k].points) and torch.equal(a[k].masses, b[k].masses)
    T.STATS.clear()
    c = build_targets(backbone, streamed, [4], seed=0, cache_dir=tmp_path / "a")  # a new K: no encode
    assert T.STATS["encode"] == 0 and T.STATS["latents_hit"] == CLASSES and c[4].points.shape == (CLASSES, 4, 256)


def test_latent_files_do_not_depend_on_workers_or_on_other_classes(backbone, folder, tmp_path):
    real = scan_image_folder(folder, image_size=16, channels=3)
    L.LatentCache(backbone, real, tmp_path / "w0", batch_size=4, workers=0).fill(range(CLASSES))
    L.LatentCache(backbone, real, tmp_path / "w2", batch_size=4, workers=2).fill([3, 1])
    L.LatentCache(backbone, real, tmp_path / "w2", batch_size=4, workers=2).fill(range(CLASSES))
    assert _files(tmp_path / "w0") == _files(tmp_path / "w2")


def test_a_damaged_latent_file_is_encoded_again(backbone, folder, tmp_path):
    real = scan_image_folder(folder, image_size=16, channels=3)
    cache = L.LatentCache(backbone, real, tmp_path, batch_size=4, workers=0)
    cache.fill(range(CLASSES))
    good = _files(tmp_path)
    path = cache.path(2)
    path.write_bytes(path.read_bytes()[:100])
    assert cache.missing(range(CLASSES)) == [2]
    z = cache.class_latents(2)  # read for the k-means: encoded again, and written
    assert z.shape == (PER_CLASS, 256) and _files(tmp_path) == good


def test_a_corrupt_image_is_named_when_it_is_decoded(backbone, tmp_path):
    data = write_image_folder(tmp_path / "train", 2, 3, 16)
    bad = data / "class_1" / "001.png"
    bad.write_bytes(bad.read_bytes()[:60])  # the header survives, the pixels do not
    real = scan_image_folder(data, image_size=16, channels=3)
    with pytest.raises(DataError, match="001.png"):
        L.LatentCache(backbone, real, tmp_path / "cache", batch_size=2, workers=1).fill([0, 1])
    assert len(list((tmp_path / "cache" / "latents").iterdir())) == 1  # class 0 was kept


ENCODE = """
import sys
from dmgd.data.images import scan_image_folder
from dmgd.data.latent_cache import LatentCache
from dmgd.sampling.backbones import load_backbone
model, data, cache = sys.argv[1:4]
real = scan_image_folder(data, image_size=16, channels=3)
LatentCache(load_backbone(model), real, cache, batch_size=4, workers=1).fill(range(real.num_classes))
"""


def _encode(vae_model: Path, folder: Path, cache: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root, **(env or {})}
    return subprocess.Popen([sys.executable, "-c", ENCODE, str(vae_model), str(folder), str(cache)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_kill_9_during_the_encode_loses_at_most_the_class_in_progress(vae_model, folder, tmp_path):
    reference = _encode(vae_model, folder, tmp_path / "reference")
    assert reference.wait(HANG_GUARD_SECONDS) == 0, reference.stderr.read()
    marker = tmp_path / "paused"
    proc = _encode(vae_model, folder, tmp_path / "cache", {L.PAUSE_ENV: f"2:{marker}"})
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while proc.poll() is None and not any(tmp_path.glob("paused.*")):
        assert time.monotonic() < deadline, "the encode neither paused nor exited"
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read()  # paused after its 2nd class, not finished
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(HANG_GUARD_SECONDS)
    kept = _files(tmp_path / "cache")
    assert len(kept) == 2 and all(kept[name] == data for name, data in _files(tmp_path / "reference").items()
                                  if name in kept)
    rerun = _encode(vae_model, folder, tmp_path / "cache")
    assert rerun.wait(HANG_GUARD_SECONDS) == 0, rerun.stderr.read()
    assert _files(tmp_path / "cache") == _files(tmp_path / "reference")  # the bytes of an uninterrupted run
    assert [p.name for p in (tmp_path / "cache").rglob(".*")] == []  # no temporary file left


def test_cache_writes_use_a_name_unique_to_the_process_and_thread(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    L.write_cache_file(tmp_path / "x.safetensors", b"a")
    L.write_cache_file(tmp_path / "x.safetensors", b"b")
    assert (tmp_path / "x.safetensors").read_bytes() == b"b" and len(set(seen)) == 2
    assert all(f"-{os.getpid()}-" in name for name in seen)
