"""benchmarks/gpu.py --smoke: the GPU benchmark's whole path (model and data made, both
recipes in fp32 and bf16 through the real pipeline, the figures) at a tiny size on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HANG_GUARD_SECONDS = 1800


def test_gpu_benchmark_smoke_runs_on_the_cpu(tmp_path):
    figures_path = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--json", str(figures_path)],
                          env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}, capture_output=True,
                          text=True, timeout=HANG_GUARD_SECONDS)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(figures_path.read_text())
    runs = {(r["recipe"], r["precision"]): r for r in figures["runs"]}
    assert set(runs) == {(recipe, p) for recipe in ("baseline.dmgd", "dmgd.dmgd") for p in ("fp32", "bf16")}
    assert all(r["images"] == 2 * 2 and r["images_per_second"] > 0 and r["block_size"] >= 1 for r in runs.values())
    assert figures["device"] == "cpu" and set(figures["ratios"]) == {"fp32", "bf16"}
    assert "dmgd / baseline images/s" in done.stdout and "paper: 0.26 h" in done.stdout
