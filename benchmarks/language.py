"""Benchmark of the recipe language: parse + compile, and the cold start of `dmgd check`.

    .venv/bin/python benchmarks/language.py [--runs 2000] [--cold 9]

Measured in one run and printed as absolute figures and against a baseline:
- parse + compile of the reference recipe (recipes/dmgd.dmgd), in process: the median of
  `--runs` runs after a warm-up (target: under 2 ms); parse and compile apart too;
- the cold start of `dmgd check recipes/dmgd.dmgd` in a fresh interpreter, against
  `python -c pass` (target: under 0.5 s more), the median of `--cold` runs of each,
  interleaved so that a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "dmgd.dmgd"

PARSE_COMPILE_TARGET_MS = 2.0
COLD_START_TARGET_S = 0.5


def _median_ms(fn, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e6


def bench_in_process(runs: int) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from dmgd.language.compiler import compile_schedule
    from dmgd.language.parser import parse_recipe

    text = RECIPE.read_text(encoding="utf-8")
    t0 = time.perf_counter()
    recipe = parse_recipe(text, str(RECIPE))  # the first parse imports the generated parser
    first = (time.perf_counter() - t0) * 1e3
    warmup = max(50, runs // 10)
    return {
        "first_parse": first,
        "parse": _median_ms(lambda: parse_recipe(text, str(RECIPE)), runs, warmup),
        "compile": _median_ms(lambda: compile_schedule(recipe), runs, warmup),
        "compile_n100": _median_ms(lambda: compile_schedule(recipe, steps=100), runs, warmup),
        "parse_compile": _median_ms(lambda: compile_schedule(parse_recipe(text, str(RECIPE))), runs, warmup),
    }


# A cold start as an installed dmgd has it: a fresh interpreter that finds the modules'
# bytecode cached (some machines set PYTHONDONTWRITEBYTECODE, which would time Python
# compiling the 140 KB generated parser from source on every start instead).
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_ENV)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr.decode(errors='replace')}")
    return elapsed


def bench_cold_start(runs: int) -> dict[str, float]:
    check = [sys.executable, "-m", "dmgd", "check", str(RECIPE.relative_to(ROOT))]
    baseline = [sys.executable, "-c", "pass"]
    _wall(check)  # fills the OS file cache and the bytecode cache, as any second run finds them
    _wall(baseline)
    checks, bases = [], []
    for _ in range(runs):
        checks.append(_wall(check))
        bases.append(_wall(baseline))
    return {"check": statistics.median(checks), "baseline": statistics.median(bases),
            "check_min": min(checks), "baseline_min": min(bases)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000, help="in-process runs (median)")
    parser.add_argument("--cold", type=int, default=9, help="cold starts of each command (median)")
    args = parser.parse_args()

    inproc = bench_in_process(args.runs)
    cold = bench_cold_start(args.cold)

    ok_pc = inproc["parse_compile"] < PARSE_COMPILE_TARGET_MS
    extra = cold["check"] - cold["baseline"]
    ok_cold = extra < COLD_START_TARGET_S
    print(f"recipe: {RECIPE.relative_to(ROOT)}    python {sys.version.split()[0]}")
    print(f"parse + compile (N = 50), median of {args.runs}: {inproc['parse_compile']:.3f} ms "
          f"(target < {PARSE_COMPILE_TARGET_MS:g} ms: {'met' if ok_pc else 'MISSED'}; "
          f"{PARSE_COMPILE_TARGET_MS / inproc['parse_compile']:.1f}x under it)")
    print(f"  parse alone: {inproc['parse']:.3f} ms; compile alone: {inproc['compile']:.3f} ms; "
          f"compile at N = 100: {inproc['compile_n100']:.3f} ms")
    print(f"  the first parse in a process (imports the generated parser, builds its lexer): "
          f"{inproc['first_parse']:.0f} ms")
    print(f"cold start, median of {args.cold}: `dmgd check` {cold['check']:.3f} s, `python -c pass` "
          f"{cold['baseline']:.3f} s (min {cold['check_min']:.3f} s vs {cold['baseline_min']:.3f} s)")
    print(f"  difference: +{extra:.3f} s (target < +{COLD_START_TARGET_S:g} s: {'met' if ok_cold else 'MISSED'}); "
          f"ratio {cold['check'] / cold['baseline']:.1f}x the bare interpreter")


if __name__ == "__main__":
    main()
