"""Choose recipes/digits.dmgd's values on a validation part of the train split (issue 4),
as sweep recipes run by `dmgd sweep` (issue 14).

    python benchmarks/tune_digits.py [--out DIR] [--gen-seeds 0 1] [--seeds 0 1] [--stages 1 2 3] [--ipc50] [--grad-full]

The test split is never read. The digits' train split is split once more
(`dmgd.data.digits`: "fit", 1149 images, and "val", 288, stratified, fixed): `dmgd sweep
--real val` builds every run's k-means targets from "fit" and scores every variant by
ConvNet-6 with the digits preset's full schedule (200 epochs at IPC 10, last epoch) trained
on the variant's set and tested on "val", averaged over generation seeds x classifier seeds.
Each stage chooses by `dmgd sweep --select`'s rule (best mean, ties to the first variant).

The stages are the recipes in recipes/sweeps/, each choosing on the previous one's winner:

1. tune-digits-1-cfg: the plain sampler at CFG 1, 1.5, 2, 3, 4.
2. tune-digits-2-rho: the reference recipe at the chosen CFG (passed with --set cfg=),
   its rho ramp 0.05..0.5 times 1, 10, 30, 100, 300, 1000.
3. tune-digits-3-window-k: the OT window x K around the chosen rho. The file is written for
   stage 2's recorded choice (0.05..0.5); when stage 2 chooses another rho the script says so
   and stops (edit the file's rho to go on).
4. With --ipc50: tune-digits-4-ipc50 (IPC 50, generation seed 0: the chosen recipe at its rho
   and at 300x), and the plain sampler at CFG 2 (recipes/digits-baseline.dmgd). Chooses nothing.
5. With --grad-full: tune-digits-5-grad-full (`ot(grad=full)` at 1x and 100x rho). Chooses nothing.

The classifiers train with --threads torch threads (default 1, as the recorded tuning did): on
the CPU a classifier's last-epoch accuracy depends on the thread count (the order of its
floating-point sums; the sets do not: sampling runs one thread), by a point or two at IPC 10.

Every run and score is kept under --out (default ~/.cache/dmgd/bench/tune_digits_sweeps), one
folder a stage, so a rerun only does what is missing. Writes each stage's sweep.json, sweep.md
and sweep.png there, and with --docs DIR the stages' tables to DIR/tune_digits_sweeps.md
(docs/benchmarks/tune_digits.md is the record of the tuning before sweeps, with set figures
the sweeps do not compute).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "recipes" / "sweeps"
STAGES = {
    1: ("1 (CFG)", "tune-digits-1-cfg.dmgd", True),
    2: ("2 (rho)", "tune-digits-2-rho.dmgd", True),
    3: ("3 (window, K)", "tune-digits-3-window-k.dmgd", True),
    4: ("4 (IPC 50 check, generation seed 0)", "tune-digits-4-ipc50.dmgd", False),
    5: ("5 (gradient through the denoiser)", "tune-digits-5-grad-full.dmgd", False),
}
STAGE3_RHO = "0.05..0.5"  # the rho recipes/sweeps/tune-digits-3-window-k.dmgd is written for


def default_out() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dmgd" / "bench" / "tune_digits_sweeps"


def sweep(stage: int, recipe: Path, a: argparse.Namespace, sets: list[str], gen_seeds: list[int] | None = None):
    """One stage: `dmgd sweep RECIPE --eval --real val --select` with the tuning's protocol."""
    from dmgd.sweep import run_sweep

    label, _, chooses = STAGES.get(stage, (str(stage), "", False))
    print(f"stage {label}: {recipe.relative_to(ROOT)} {' '.join('--set ' + s for s in sets)}", flush=True)
    result = run_sweep(str(recipe.relative_to(ROOT)), a.out / recipe.stem, evaluate=True, real="val",
                       overrides=sets, gen_seeds=gen_seeds or a.gen_seeds, select_best=chooses,
                       eval_options={"seeds": tuple(a.seeds), "model": "convnet", "preset": "digits",
                                     "eval_every": 1000, "device": "cpu"})
    print((result.out / "sweep.md").read_text(), flush=True)
    return result


def choice(result, key: str) -> str:
    return result.selected.choice_values()[key]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=default_out())
    p.add_argument("--gen-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3], help="which of stages 1-3 to run")
    p.add_argument("--cfg", default="2.0", help="stage 1's choice, when stage 1 is not run")
    p.add_argument("--ipc50", action="store_true", help="also check 4, at IPC 50 (about 15 minutes)")
    p.add_argument("--grad-full", action="store_true", help="also check 5, ot(grad=full) (a few minutes)")
    p.add_argument("--docs", type=Path, default=None, help="write the stages' tables to DOCS/tune_digits_sweeps.md")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for the classifiers (default 1, "
                   "the recorded tuning's: an accuracy depends on the thread count)")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    a.out = a.out.expanduser()
    os.chdir(ROOT)  # the sweep recipes use ../dmgd.dmgd: files under the current directory
    started = time.perf_counter()
    results, cfg = {}, a.cfg
    if 1 in a.stages:
        results[1] = sweep(1, SWEEPS / STAGES[1][1], a, [])
        cfg = choice(results[1], "cfg")
    if 2 in a.stages:
        results[2] = sweep(2, SWEEPS / STAGES[2][1], a, [f"cfg={cfg}"])
        if choice(results[2], "rho") != STAGE3_RHO and 3 in a.stages:
            print(f"stage 2 chose rho = {choice(results[2], 'rho')}; {SWEEPS / STAGES[3][1]} is written for "
                  f"{STAGE3_RHO}: edit its rho, then run --stages 3")
            return 1
    if 3 in a.stages:
        results[3] = sweep(3, SWEEPS / STAGES[3][1], a, [f"cfg={cfg}"])
    if a.ipc50:
        results[4] = sweep(4, SWEEPS / STAGES[4][1], a, [f"cfg={cfg}"], gen_seeds=[0])
        results[40] = sweep(40, ROOT / "recipes" / "digits-baseline.dmgd", a, ["ipc=50", f"cfg={cfg}"],
                            gen_seeds=[0])
    if a.grad_full:
        results[5] = sweep(5, SWEEPS / STAGES[5][1], a, [f"cfg={cfg}"])
    tables = "\n".join((r.out / "sweep.md").read_text() for r in results.values())
    if a.docs:
        a.docs.mkdir(parents=True, exist_ok=True)
        (a.docs / "tune_digits_sweeps.md").write_text(tables)
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
