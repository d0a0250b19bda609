"""Sampling benchmark on the embedded default (or --model DIR), all figures from one run.

    python benchmarks/sampling.py            # the figures of issue 3's acceptance
    python benchmarks/sampling.py --quick    # smaller settings, for a smoke test

Prints, each as a ratio against a baseline measured in the same run:
1. wall time of recipes/dmgd.dmgd against recipes/baseline.dmgd (target <= 1.25x);
2. greedy matching batched across classes against one image at a time, the reference's
   order (target >= 4x faster), and the largest difference between their images;
3. peak memory of greedy sampling at IPC 50 against IPC 5 (target <= 1.2x), each measured
   in a fresh subprocess as the growth of peak RSS during sampling;
4. k-means target building per class (the paper: 0.03 s), uncached.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


def _setup(recipe: Path, model: str | None, ipc: int, steps: int | None = None):
    import dmgd
    from dmgd.data.targets import build_targets, real_data_for_backbone
    from dmgd.guidance import TargetTable, target_ks
    from dmgd.pipeline import map_classes
    from dmgd.sampling.backbones import load_backbone
    from dmgd.sampling.sampler import GuidedSampler
    from dmgd.sampling.schedulers import noise_levels

    backbone = load_backbone(model)
    draft = dmgd.compile(recipe, steps=steps, overrides={"ipc": ipc})
    noise = noise_levels(draft.settings.sampler, draft.num_steps, backbone.scheduler_config)
    schedule = dmgd.compile(recipe, steps=steps, overrides={"ipc": ipc}, noise=noise)
    real = real_data_for_backbone(None if model is None else schedule.settings.data, backbone)
    ids = map_classes(real.class_names, backbone)
    with tempfile.TemporaryDirectory() as cache:
        targets = build_targets(backbone, real, target_ks(schedule), cache_dir=cache)
    targets = {k: TargetTable(t.points, t.masses, ids) for k, t in targets.items()}
    return GuidedSampler(backbone, schedule, targets, "cpu", class_pool=ids), ids


def greedy(sampler, classes, ipc: int, batched: bool) -> dict[tuple[int, int], torch.Tensor]:
    """Greedy progressive matching: index by index across classes, or class by class."""
    done: dict[tuple[int, int], torch.Tensor] = {}

    def memory(cs, index):
        return torch.stack([torch.stack([done[(c, j)] for j in range(index)]) for c in cs]) if index else None

    if batched:
        for index in range(ipc):
            for c, z in zip(classes, sampler.sample_batch(classes, index, memory(classes, index))):
                done[(c, index)] = z
    else:
        for c in classes:
            for index in range(ipc):
                done[(c, index)] = sampler.sample_batch([c], index, memory([c], index))[0]
    return done


def recipe_vs_baseline(model, ipc: int, steps: int | None) -> None:
    times = {}
    for name in ("baseline", "dmgd"):
        sampler, ids = _setup(RECIPES / f"{name}.dmgd", model, ipc, steps)
        greedy(sampler, list(ids), 1, batched=True)  # warm-up
        tic = time.perf_counter()
        greedy(sampler, list(ids), ipc, batched=True)
        times[name] = time.perf_counter() - tic
    print(f"1. dmgd.dmgd vs baseline.dmgd, IPC {ipc}, {len(ids)} classes: "
          f"{times['dmgd']:.2f} s vs {times['baseline']:.2f} s = {times['dmgd'] / times['baseline']:.2f}x "
          f"(target <= 1.25x)")


def batched_vs_single(model, ipc: int, steps: int | None) -> None:
    sampler, ids = _setup(RECIPES / "dmgd.dmgd", model, ipc, steps)
    greedy(sampler, list(ids)[:2], 1, batched=True)  # warm-up
    tic = time.perf_counter()
    single = greedy(sampler, list(ids), ipc, batched=False)
    t_single = time.perf_counter() - tic
    tic = time.perf_counter()
    batched = greedy(sampler, list(ids), ipc, batched=True)
    t_batched = time.perf_counter() - tic
    diff = max(float((single[k] - batched[k]).abs().max()) for k in single)
    print(f"2. greedy batched across {len(ids)} classes vs one image at a time, IPC {ipc}: "
          f"{t_batched:.2f} s vs {t_single:.2f} s = {t_single / t_batched:.2f}x faster (target >= 4x); "
          f"max |difference| of the latents {diff:.2e} (tolerance 1e-5)")


def _peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_probe(model, ipc: int, steps: int | None, classes: int) -> None:
    """Runs in a subprocess: prints the growth of peak RSS (KiB) while sampling."""
    sampler, ids = _setup(RECIPES / "dmgd.dmgd", model, ipc, steps)
    greedy(sampler, list(ids)[:classes], 1, batched=True)  # warm-up: allocator pools, kernels
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
    before = _peak_rss_kib()
    greedy(sampler, list(ids)[:classes], ipc, batched=True)
    print(json.dumps({"growth_kib": _peak_rss_kib() - before, "before_kib": before}))


def peak_memory(model, steps: int | None, classes: int, small: int, large: int) -> None:
    figures = {}
    for ipc in (small, large):
        cmd = [sys.executable, __file__, "--probe-ipc", str(ipc), "--classes", str(classes)]
        cmd += (["--model", model] if model else []) + (["--steps", str(steps)] if steps else [])
        figures[ipc] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    a, b = (figures[small]["before_kib"] + figures[small]["growth_kib"],
            figures[large]["before_kib"] + figures[large]["growth_kib"])
    print(f"3. peak memory, greedy, {classes} classes: IPC {large} vs IPC {small}: process peak {b / 1024:.0f} MiB "
          f"vs {a / 1024:.0f} MiB = {b / a:.3f}x (target <= 1.2x); growth while sampling "
          f"{figures[large]['growth_kib'] / 1024:.1f} MiB vs {figures[small]['growth_kib'] / 1024:.1f} MiB")


def target_building(model) -> None:
    from dmgd.data.targets import build_targets, real_data_for_backbone
    from dmgd.sampling.backbones import load_backbone

    backbone = load_backbone(model)
    real = real_data_for_backbone(None, backbone)  # the embedded digits' train split
    with tempfile.TemporaryDirectory() as cache:
        t = build_targets(backbone, real, [10], cache_dir=cache)[10]
    per_class = sum(t.kmeans_seconds) / len(t.kmeans_seconds)
    print(f"4. target building (k-means K=10 on {len(real) // real.num_classes} x {t.points.shape[2]} per class): "
          f"{per_class * 1000:.1f} ms per class = {per_class / 0.03:.2f}x the paper's 0.03 s; "
          f"encoding {t.encode_seconds * 1000:.0f} ms for all {len(real)} images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a diffusers DiT folder (default: the embedded digits DiT)")
    parser.add_argument("--steps", type=int, default=None, help="real sampling steps (default: the recipe's 50)")
    parser.add_argument("--quick", action="store_true", help="small settings: a smoke test of the script")
    parser.add_argument("--probe-ipc", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--classes", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.probe_ipc is not None:
        memory_probe(args.model, args.probe_ipc, args.steps, args.classes)
        return
    steps = 10 if args.quick and args.steps is None else args.steps
    print(f"device cpu, {torch.get_num_threads()} threads, torch {torch.__version__}")
    recipe_vs_baseline(args.model, 2 if args.quick else 10, steps)
    batched_vs_single(args.model, 2 if args.quick else 5, steps)
    peak_memory(args.model, steps, 2 if args.quick else 10, 5, 10 if args.quick else 50)
    target_building(args.model)


if __name__ == "__main__":
    main()
