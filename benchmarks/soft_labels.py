"""Hard vs soft labels on the embedded digits (issue 13): the same sets, both protocols.

    python benchmarks/soft_labels.py [--out DIR] [--sets-from QUALITY_OUT] [--hard-from RESULTS.jsonl]
                                     [--ipcs 10] [--names real baseline dmgd digits]
                                     [--pairs 0:0 0:1 1:2 1:3 2:4 2:5] [--jobs 2] [--md FILE]

Sets are those of benchmarks/quality.py (same names, generation seeds, the prefix property):
read from --sets-from (a quality.py --out) when there, else generated into --out/sets.
Each (generation seed : classifier seed) pair of --pairs trains one ConvNet-6 per protocol
with the digits preset's full length (300 / 200 / 150 epochs at IPC 1 / 10 / 50), scored
once, on the real digits test split, after the last epoch (nothing selected on the test set):

* hard: `EvalConfig(ipc, epochs=e, eval_every=e, seeds=(seed,), preset="digits",
  model="convnet")`, exactly quality.py's trainings, so --hard-from can reuse its
  results.jsonl lines for the same (set, ipc, gen, seed);
* soft: the same with `protocol="soft", teacher="digits"` (the cached digits teacher:
  ConvNet-6 trained on the whole digits train split).

One thread a training, --jobs at a time; one JSON line per finished training in
--out/results.jsonl, so a rerun does only what is missing. Prints (and writes to --md) the
table: mean +- SE per set and protocol, soft - hard against twice its SE, and the ranking
of the sets under each protocol.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality  # noqa: E402  (benchmarks/quality.py: set names, directories, generation)


def config_for(protocol: str, ipc: int, seed: int):
    from dmgd.evaluation.protocol import EvalConfig

    e = quality.full_epochs(ipc)
    soft = {"protocol": "soft", "teacher": "digits"} if protocol == "soft" else {}
    return EvalConfig(ipc=ipc, epochs=e, eval_every=e, seeds=(seed,), preset="digits", model="convnet",
                      device="cpu", **soft)


def train_job(job: tuple[str, str, int, int, int, str]) -> dict:
    import torch

    torch.set_num_threads(1)
    from dmgd.evaluation.protocol import evaluate

    protocol, name, ipc, gen, seed, d = job
    tic = time.perf_counter()
    r = evaluate(d, config=config_for(protocol, ipc, seed), write=False)
    return {"protocol": protocol, "set": name, "ipc": ipc, "gen": gen, "seed": seed, "acc": r.seeds[0].last,
            "seconds": time.perf_counter() - tic, "config": r.config.to_dict(), "teacher": r.teacher, "dir": d}


def set_dir(a: argparse.Namespace, name: str, ipc: int, gen: int) -> Path:
    """quality.py's directory of the set, under --sets-from when it is finished there."""
    max_ipc = max(a.ipcs)
    if a.sets_from is not None:
        found = quality.set_dir(a.sets_from, name, ipc, gen, max(max_ipc, 50))
        if quality.finished(found):
            return found
        own10 = a.sets_from / "sets" / f"{name}-ipc10-gen{gen}"
        if ipc <= 10 and quality.finished(own10) and name not in quality.PER_IPC:
            return own10
    return quality.set_dir(a.out, name, ipc, gen, max_ipc)


def load_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def hard_from(path: Path | None) -> dict[tuple, float]:
    """quality.py's results (hard labels, same trainings): (set, ipc, gen, seed) -> accuracy."""
    if path is None:
        return {}
    return {(r["set"], r["ipc"], r["gen"], r["seed"]): r["acc"] for r in load_results(path)
            if r["config"].get("epochs") == quality.full_epochs(r["ipc"])}


def todo_jobs(a: argparse.Namespace, done: set, reused: dict) -> list[tuple]:
    jobs = []
    for ipc in a.ipcs:
        for name in a.names:
            for gen, seed in a.pairs:
                d = set_dir(a, name, ipc, gen)
                for protocol in ("soft", "hard"):
                    key = (protocol, name, ipc, gen, seed)
                    if key in done or (protocol == "hard" and key[1:] in reused):
                        continue
                    jobs.append((protocol, name, ipc, gen, seed, str(d)))
    return jobs


def _stats(values: list[float]) -> tuple[float, float]:
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return m, sd / math.sqrt(n)


def _verdict(difference: float, two_se: float) -> str:
    if math.isnan(two_se):
        return "n/a (n = 1)"
    return "yes" if difference > two_se else "no"


def report(a: argparse.Namespace, rows: list[dict], reused: dict) -> str:
    acc: dict[tuple, float] = {("hard",) + k: v for k, v in reused.items()}
    acc.update({(r["protocol"], r["set"], r["ipc"], r["gen"], r["seed"]): r["acc"] for r in rows})
    lines = []
    for ipc in a.ipcs:
        lines += [f"IPC {ipc} (pairs gen:seed {' '.join(f'{g}:{s}' for g, s in a.pairs)})", "",
                  "| set | hard (mean +- SE, n) | soft (mean +- SE, n) | soft - hard | 2 SE | > 2 SE |",
                  "| --- | --- | --- | --- | --- | --- |"]
        means = {}
        for name in a.names:
            got = {p: [acc[(p, name, ipc, g, s)] for g, s in a.pairs if (p, name, ipc, g, s) in acc]
                   for p in ("hard", "soft")}
            if not got["hard"] or not got["soft"]:
                lines.append(f"| {name} | {len(got['hard'])} done | {len(got['soft'])} done | | | |")
                continue
            (mh, eh), (ms, es) = _stats(got["hard"]), _stats(got["soft"])
            means[name] = (mh, ms)
            two_se = 2 * math.sqrt(eh ** 2 + es ** 2)
            lines.append(f"| {name} | {mh:.2f} +- {eh:.2f} ({len(got['hard'])}) | {ms:.2f} +- {es:.2f} "
                         f"({len(got['soft'])}) | {ms - mh:+.2f} | {two_se:.2f} | {_verdict(ms - mh, two_se)} |")
        for i, protocol in enumerate(("hard", "soft")):
            ranked = sorted(means, key=lambda n: -means[n][i])
            lines.append(f"\n{protocol} ranking: " + " > ".join(f"{n} ({means[n][i]:.2f})" for n in ranked))
        lines.append("")
    teachers = {json.dumps(r["teacher"], sort_keys=True) for r in rows if r.get("teacher")}
    for t in map(json.loads, teachers):
        lines.append(f"teacher: {t['display']} {t['path']} sha256 {t['sha256'][:16]}, trained on {t['trained_on']}, "
                     f"{t['test_accuracy']:.2f}% on {t['test_accuracy_on']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path.home() / ".cache" / "dmgd" / "bench" / "soft")
    p.add_argument("--sets-from", type=Path, default=None, help="a quality.py --out whose sets are reused")
    p.add_argument("--hard-from", type=Path, default=None, help="a quality.py results.jsonl (hard trainings)")
    p.add_argument("--ipcs", type=int, nargs="+", default=[10])
    p.add_argument("--names", nargs="+", default=["real", "baseline", "dmgd", "digits"])
    p.add_argument("--pairs", nargs="+", default=["0:0", "0:1", "1:2", "1:3", "2:4", "2:5"])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--md", type=Path, default=None)
    a = p.parse_args(argv)
    a.pairs = [tuple(int(v) for v in pair.split(":")) for pair in a.pairs]
    results = a.out / "results.jsonl"
    rows = load_results(results)
    done = {(r["protocol"], r["set"], r["ipc"], r["gen"], r["seed"]) for r in rows}
    reused = hard_from(a.hard_from)
    from dmgd.evaluation.teacher import ensure_embedded_teacher

    print(f"teacher: {ensure_embedded_teacher('digits')}", flush=True)  # trained once, before the jobs
    missing = {}
    for ipc in a.ipcs:
        for name in a.names:
            for gen, _ in a.pairs:
                d = set_dir(a, name, ipc, gen)
                if not quality.finished(d):
                    missing[d] = (name, quality.generated_ipc(name, ipc, gen, max(a.ipcs)), gen, d)
    for w in missing.values():
        name, took, error = quality.generate_one(w)
        print(f"generated {name} in {took:.0f} s" if not error else f"FAILED {name}: {error}", flush=True)
    jobs = todo_jobs(a, done, reused)
    print(f"{len(jobs)} trainings to run, {a.jobs} at a time", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        for fut in as_completed([pool.submit(train_job, j) for j in jobs]):
            row = fut.result()
            rows.append(row)
            with open(results, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(f"{row['protocol']} {row['set']} ipc {row['ipc']} gen {row['gen']} seed {row['seed']}: "
                  f"{row['acc']:.2f}% in {row['seconds']:.0f} s", flush=True)
    text = report(a, rows, reused)
    print(text)
    if a.md is not None:
        a.md.write_text(text + "\n")


if __name__ == "__main__":
    main()
