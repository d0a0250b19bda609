#!/usr/bin/env python
"""Scaling out and resuming `dmgd run` on this machine.

    .venv/bin/python benchmarks/scale.py [--ipc 10] [--steps 25] [--recipe recipes/dmgd.dmgd]
                                         [--model DIR] [--quick]

Every configuration runs the same recipe, settings and seed, as the commands a user types
(`python -m dmgd run`, `torchrun --standalone --nproc_per_node=2 -m dmgd run`), each in a
fresh OUT, with a target cache filled beforehand (so no configuration pays for k-means):

1. one process, 1 thread (dmgd's CPU default: bytes that do not depend on the core count);
2. one process, DMGD_THREADS = the machine's cores (what a 1-process user could pick;
   its images equal the others' up to float rounding, not byte for byte);
3. torchrun, 2 ranks, 1 thread each (torchrun's OMP_NUM_THREADS=1): the classes' two
   blocks, one a rank.

The honest speed-up is 2 ranks against the BEST single process (1 or cores threads).
Throughput is images / sampling seconds (the slowest rank's, from the manifest), and also
end to end (the command's wall clock: start-up, imports and model loading included). On a
machine other processes also use, wall clocks measure the share the scheduler gives: the
load average is printed, and the sampling CPU seconds of each process show the split.
It checks that 1. and 3. wrote identical bytes.

Resume: `dmgd run --resume` on the finished run (all of its time is skipping finished
work: start-up, loading, the finished-sample scan, reading the latents for the OT report),
and on a copy whose later half of the indices was deleted (as after a kill), against the
uninterrupted run; the resumed copy must equal the original byte for byte.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix in (".png", ".safetensors")}


def _command(args, out: Path, ranks: int, resume: bool = False) -> list[str]:
    dmgd = ["-m", "dmgd", "run", str(args.recipe), "--out", str(out), "--set", f"ipc={args.ipc}",
            "--steps", str(args.steps), *(["--set", f"model={args.model}"] if args.model else []),
            *(["--resume"] if resume else [])]
    if ranks == 1:
        return [sys.executable, *dmgd]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *dmgd]


def timed(command: list[str], env: dict[str, str]) -> float:
    tic = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, "NO_COLOR": "1", **env}, capture_output=True, text=True,
                          cwd=ROOT)
    wall = time.perf_counter() - tic
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    return wall


def sampling_seconds(out: Path, key: str = "sampling_seconds") -> float:
    """The sampling phase of the last session: its slowest rank (wall or CPU seconds)."""
    manifest = json.loads((out / "manifest.json").read_text())
    return max(r[key] for r in manifest["sessions"][-1]["ranks"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "dmgd.dmgd"))
    ap.add_argument("--model", default=None, help="a model folder (default: the embedded digits DiT)")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--steps", type=int, default=25, help="N, the real sampling steps")
    ap.add_argument("--quick", action="store_true", help="ipc 4, 10 steps")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each configuration, alternating; the best counts")
    ap.add_argument("--no-threaded", action="store_true",
                    help="skip the 1-process, many-threads configuration (on a busy machine it can take 20x longer)")
    args = ap.parse_args(argv)
    if args.quick:
        args.ipc, args.steps = 4, 10
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="dmgd-scale-"))
    env = {"DMGD_CACHE_DIR": str(work / "cache")}
    images = 10 * args.ipc  # the digits' 10 classes (or the model's data: read back below)
    try:
        print(f"{cores} cores; recipe {Path(args.recipe).name}, ipc {args.ipc}, {args.steps} steps, "
              f"model {args.model or 'embedded digits DiT'}; load average {os.getloadavg()[0]:.1f}")
        warm = work / "warm"  # fills the targets cache, and the OS's file cache with the libraries
        timed(_command(argparse.Namespace(**{**vars(args), "ipc": 1}), warm, 1), env)

        configs = [("1 process, 1 thread", 1, {"DMGD_THREADS": "1"}),
                   (f"1 process, {cores} threads", 1, {"DMGD_THREADS": str(cores)}),
                   ("torchrun 2 ranks x 1 thread", 2, {})]
        if args.no_threaded:
            configs.pop(1)
        results: dict[str, tuple[Path, float, float]] = {}
        for attempt in range(max(1, args.repeat)):
            for name, ranks, extra in configs:
                out = work / f"{name.replace(' ', '_').replace(',', '')}-{attempt}"
                wall = timed(_command(args, out, ranks), {**env, **extra})
                images = json.loads((out / "manifest.json").read_text())["progress"]["total"]
                if name not in results or sampling_seconds(out) < results[name][2]:
                    results[name] = (out, min(wall, results.get(name, (None, wall))[1]), sampling_seconds(out))
        print(f"\n{'configuration':32} {'sampling s':>10} {'images/s':>9} {'wall s':>8} {'images/s e2e':>13}")
        for name, (out, wall, sampling) in results.items():
            print(f"{name:32} {sampling:10.2f} {images / sampling:9.2f} {wall:8.1f} {images / wall:13.2f}")
        one, two = results[configs[0][0]], results[configs[-1][0]]
        many = results.get(f"1 process, {cores} threads")
        singles = [(configs[0][0], one)] + ([(f"1 process, {cores} threads", many)] if many else [])
        best_name, best = min(singles, key=lambda x: x[1][2])
        print(f"\nspeed-up of 2 ranks over the best single process ({best_name}): "
              f"{best[2] / two[2]:.2f}x sampling (target >= 1.6x), {best[1] / two[1]:.2f}x end to end")
        print(f"speed-up of 2 ranks over 1 process at 1 thread: {one[2] / two[2]:.2f}x sampling, "
              f"{one[1] / two[1]:.2f}x end to end")
        cpu_one = sampling_seconds(one[0], "sampling_cpu_seconds")
        ranks = json.loads((two[0] / "manifest.json").read_text())["sessions"][-1]["ranks"]
        print(f"sampling CPU seconds: 1 process {cpu_one:.2f} s; ranks "
              + ", ".join(f"{r['sampling_cpu_seconds']:.2f} s ({r['written']} images)" for r in ranks)
              + " (the split is even; a CPU second buys less when every core is busy)")
        same = _files(one[0]) == _files(two[0])
        print(f"2 ranks wrote the same bytes as 1 process, 1 thread: {'yes' if same else 'NO'} "
              f"({len(_files(one[0]))} files)")
        if many:
            threaded_same = _files(one[0]) == _files(many[0])
            print(f"1 process at {cores} threads wrote the same bytes: {'yes' if threaded_same else 'no'} "
                  "(not promised: threads change the last bits)")

        # --- resume ---
        finished = one[0]
        wall_finished = timed(_command(args, finished, 1, resume=True), env)
        skip_scan = json.loads((finished / "manifest.json").read_text())["timings"]
        half = work / "half"
        shutil.copytree(finished, half)
        for path in list(half.rglob("*.png")) + list(half.rglob("*.safetensors")):
            if int(path.stem) >= args.ipc // 2:
                path.unlink()
        wall_half = timed(_command(args, half, 1, resume=True), env)
        half_same = _files(half) == _files(finished)
        print(f"\nresume, finished run:     {wall_finished:6.1f} s wall against {one[1]:.1f} s for the run "
              f"({100 * wall_finished / one[1]:.0f}%); inside dmgd {skip_scan['total_seconds']:.2f} s, of which "
              f"the scan of finished samples {skip_scan['sampling_seconds']:.3f} s, model loading "
              f"{skip_scan['load_model_seconds']:.2f} s (the rest: start-up and imports)")
        print(f"resume, half of it lost:  {wall_half:6.1f} s wall against {one[1]:.1f} s "
              f"({100 * wall_half / one[1]:.0f}%); bytes equal to the uninterrupted run: "
              f"{'yes' if half_same else 'NO'}")
        return 0 if same and half_same else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
