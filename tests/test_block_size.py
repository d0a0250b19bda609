"""The block size (classes sampled together): --batch, a resumed run's own, or the default
cut to the GPU's free memory; on the CPU the default, as before."""

from __future__ import annotations

import json
import types

from dmgd.distributed import default_block_size
from dmgd.pipeline.inputs import MEMORY_SHARE, block_size_for_memory, memory_block_size, recorded_block_size

MiB = 2**20


def test_the_default_is_cut_to_what_the_free_memory_holds():
    assert block_size_for_memory(100, 10_000 * MiB, 1 * MiB) == default_block_size(100) == 50  # plenty: default
    assert block_size_for_memory(100, 1000 * MiB, 60 * MiB) == int(MEMORY_SHARE * 1000) // 60  # 10 classes fit
    assert block_size_for_memory(100, 10 * MiB, 60 * MiB) == 1  # never below one class


def test_on_the_cpu_the_block_size_is_the_default():
    import torch

    backbone = types.SimpleNamespace(transformer=torch.nn.Linear(2, 2))
    assert memory_block_size(10, backbone, ctx=None) == default_block_size(10)


def test_a_resumed_run_keeps_its_block_size(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"identity": {"block_size": 7}}))
    resume = types.SimpleNamespace(mode="resume", out=tmp_path)
    assert recorded_block_size(resume) == 7
    assert recorded_block_size(types.SimpleNamespace(mode="new", out=tmp_path)) is None
    assert recorded_block_size(types.SimpleNamespace(mode="resume", out=tmp_path / "none")) is None
