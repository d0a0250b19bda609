"""Runs split across ranks: torchrun on 2 CPU processes (gloo) writes exactly what one
process writes; sharded k-means targets equal the full build; the sharding rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from conftest import write_image_folder
from dmgd import distributed
from dmgd.distributed import DistributedError, blocks_of_rank, class_blocks, default_block_size, env_world

RECIPE = "t>=8: explore; 4..8: softlabel(bs=0.01, bn=0.06); 5..8: ot(K=3, rho=0.05..0.5)\nsteps = 10\n"


def _files(out: Path) -> dict[str, bytes]:
    """Every image and latent of a run, by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix in (".png", ".safetensors")}


def torchrun(nproc: int, *args: str, env: dict[str, str] | None = None, timeout: float = 1800,
             **kw) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=N -m dmgd ARGS` (a free port of its own)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "dmgd", *args]
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=timeout, **kw)


# --------------------------------------------------------------------------- the rule


def test_blocks_are_fixed_by_the_class_count_alone():
    assert default_block_size(10) == 5 and default_block_size(1) == 1 and default_block_size(2) == 1
    assert default_block_size(1000) == 63 and default_block_size(64) == 32 and default_block_size(129) == 43
    assert class_blocks(10, 5) == [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)]
    assert class_blocks(5, 2) == [(0, 1), (2, 3), (4,)]
    blocks = class_blocks(10, 3)
    assert blocks_of_rank(blocks, 0, 2) == [(0, 1, 2), (6, 7, 8)] and blocks_of_rank(blocks, 1, 2) == [(3, 4, 5), (9,)]
    for world in (1, 2, 3, 7):  # every class exactly once, whatever the world size
        owned = [c for rank in range(world) for block in blocks_of_rank(blocks, rank, world) for c in block]
        assert sorted(owned) == list(range(10))


def test_torchrun_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert env_world() == (0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_world() == (3, 4, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(DistributedError, match="do not make sense"):
        env_world()
    monkeypatch.delenv("RANK")
    with pytest.raises(DistributedError, match="RANK is not set"):
        env_world()
    monkeypatch.setenv("WORLD_SIZE", "1")
    ctx, device = distributed.setup("cpu")  # one process: no process group at all
    assert (ctx.rank, ctx.world_size, ctx.distributed, device) == (0, 1, False, "cpu")
    assert ctx.all_gather(5) == [5] and ctx.broadcast(6) == 6 and ctx.on_main(lambda: 7) == 7


# --------------------------------------------------------------------------- sharded targets


def _as_ranks(world: int, fn):
    """Call fn(rank, gather) in `world` threads, `gather` exchanging like all_gather_object."""
    barrier = threading.Barrier(world)
    slots: list = [None] * world
    results: list = [None] * world
    errors: list = []

    def gather(obj):
        rank = int(threading.current_thread().name)
        barrier.wait()
        slots[rank] = obj
        barrier.wait()
        out = list(slots)
        barrier.wait()
        return out

    def body(rank):
        try:
            results[rank] = fn(rank, gather)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=body, args=(r,), name=str(r)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("kind", ["pixel", "latent"])
def test_sharded_targets_equal_the_full_build_and_cache_it(tiny_pixel_model, tiny_latent_model, tmp_path, kind):
    from dmgd.data import targets as T
    from dmgd.data.targets import build_targets, real_data_for_backbone
    from dmgd.sampling.backbones import load_backbone

    if kind == "pixel":
        backbone = load_backbone(str(tiny_pixel_model))
        real = real_data_for_backbone(None, backbone)
    else:  # 3 classes of 7 images in encode batches of 4: batches straddle the classes
        backbone = load_backbone(str(tiny_latent_model))
        real = real_data_for_backbone(str(write_image_folder(tmp_path / "data", 3, 7, 16)), backbone)
    full = build_targets(backbone, real, [1, 3], seed=2, use_cache=False, batch_size=4)
    C = real.num_classes
    blocks = class_blocks(C, 2)

    def rank_build(rank, gather, cache):
        mine = [c for b in blocks_of_rank(blocks, rank, 2) for c in b]
        return build_targets(backbone, real, [1, 3], seed=2, cache_dir=cache, batch_size=4, classes=mine,
                             gather=gather, write_cache=rank == 0)

    cache = tmp_path / "cache"
    sharded = _as_ranks(2, lambda rank, gather: rank_build(rank, gather, cache))
    for k in (1, 3):
        for rank in range(2):
            assert torch.equal(sharded[rank][k].points, full[k].points)
            assert torch.equal(sharded[rank][k].masses, full[k].masses)
            assert len(sharded[rank][k].kmeans_seconds) == C and not sharded[rank][k].from_cache
    # the cache the sharded build wrote is a full build's: one process reads it back
    T.STATS.clear()
    again = build_targets(backbone, real, [1, 3], seed=2, cache_dir=cache, batch_size=4)
    assert T.STATS["hit"] == 2 and T.STATS["kmeans"] == 0
    assert torch.equal(again[3].points, full[3].points)
    # ranks that disagree (one cache has the targets, the other's is empty) still agree
    other = tmp_path / "empty-cache"
    mixed = _as_ranks(2, lambda rank, gather: rank_build(rank, gather, cache if rank == 0 else other))
    assert all(torch.equal(m[3].points, full[3].points) for m in mixed)
    # without a gather, only this process's rows are filled, and nothing is cached
    part = build_targets(backbone, real, [3], seed=2, cache_dir=tmp_path / "part", batch_size=4, classes=[1])
    assert torch.equal(part[3].points[1], full[3].points[1]) and not part[3].points[0].any()
    assert not list((tmp_path / "part").glob("targets-*"))


# --------------------------------------------------------------------------- torchrun


def _embedded_available() -> bool:
    from dmgd.sampling.backbones import default_model_dir

    return (default_model_dir() / "transformer" / "config.json").is_file()


def test_torchrun_two_ranks_write_what_one_process_writes(tiny_pixel_model, tmp_path):
    """Acceptance: `torchrun --nproc_per_node=2` (gloo, CPU) on the embedded default gives
    identical images and latents, and a consistent manifest."""
    from dmgd.data.targets import default_cache_dir
    from dmgd.pipeline import run

    model = [] if _embedded_available() else ["--set", f"model={tiny_pixel_model}"]
    settings = {} if not model else {"model": str(tiny_pixel_model)}
    recipe = tmp_path / "r.dmgd"
    recipe.write_text(RECIPE)
    single = run(str(recipe), tmp_path / "one", ipc=2, **settings)
    one_cache = default_cache_dir()

    two = tmp_path / "two"
    done = torchrun(2, "run", str(recipe), "--out", str(two), "--set", "ipc=2", *model,
                    env={"DMGD_CACHE_DIR": str(tmp_path / "cache-two")})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[rank 0/2]" in done.stderr and "[rank 1/2]" in done.stderr
    assert done.stdout.count("OT distance") == 1  # rank 0 alone prints the summary

    expected = _files(single.out)
    assert len(expected) == 2 * 10 * 2
    assert _files(two) == expected  # byte for byte: every PNG and every latent

    a = json.loads((single.out / "manifest.json").read_text())
    b = json.loads((two / "manifest.json").read_text())
    assert b["status"] == "complete" and b["progress"] == {"finished": 20, "total": 20}
    assert b["sharding"]["world_size"] == 2 and b["sharding"]["backend"] == "gloo"
    assert b["sharding"]["block_size"] == a["sharding"]["block_size"] == 5
    ranks = b["sessions"][-1]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and [r["written"] for r in ranks] == [10, 10]
    assert b["ot_distance"] == a["ot_distance"]
    for key in ("identity", "settings", "schedule", "class_names", "model_class_ids", "seeds", "data", "model"):
        assert a[key] == b[key], key
    assert a["identity"]["block_size"] == 5
    leftovers = [p.name for p in two.rglob(".*")]
    assert leftovers == []  # no progress or temporary files

    # target building was sharded, and its cache is the single process's, number for number
    from safetensors.torch import load_file

    for path in sorted(Path(tmp_path / "cache-two").glob("targets-*.safetensors")):
        mine = load_file(path)
        theirs = load_file(one_cache / path.name)
        assert all(torch.equal(mine[name], theirs[name]) for name in ("points", "masses"))
