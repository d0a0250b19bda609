"""Quality benchmark (issue 4): what the distilled digits sets are worth, recipe by recipe.

    python benchmarks/quality.py [--out DIR] [--seeds 5] [--ipcs 1 10 50] [--epochs N]
                                 [--jobs 2] [--quick] [--only NAME ...]

On the embedded default (the tiny DiT on scikit-learn's digits), for every IPC: random
real (`dmgd sample-real`), baseline.dmgd, sm-only.dmgd, dm-only.dmgd, dmgd.dmgd, mean.dmgd
and mgd3.dmgd. Then

* `dmgd.evaluate` (ConvNet-6, digits preset, a FIXED short schedule chosen for a 2-core
  CPU, see EPOCHS and docs/benchmarks.md) trains one classifier per (set, IPC, seed) and
  tests it on the real digits test split: last-epoch top-1 (no test-set selection);
* two training-free probes of the same sets, deterministic: logistic regression and
  1-nearest-neighbour trained on the set, tested on the test split;
* two figures of the sets themselves: the OT distance of each class's synthetic images
  to that class's WHOLE real train distribution (every train image of the class, uniform
  masses; pixels flattened, L2-normalised, Euclidean cost: `ot_distance`, a number in
  [0, 2]) and the diversity (mean pairwise L2 distance within a class, pixels in [-1, 1]),
  each averaged over the classes.

Generation. Greedy progressive matching has a prefix property (sample i depends only on
samples < i, and each sample draws from its own generator seeded by (seed, class, index)),
so ONE IPC-50 run per recipe gives the IPC-10 and IPC-1 sets as its first 10 / 1 images
per class (`EvalConfig(ipc=...)` reads the first IPC files per class in sorted order =
sampling order). `--check-prefix` verifies it (IPC 3 vs IPC 2, same seed: same bytes).
mgd3.dmgd is the exception (mode guidance uses K = ipc modes): one run per IPC. Random
real: one `sample-real` draw per IPC (seed 0; numpy's choice without replacement is not
prefix-stable). Generation seed 0 for every recipe.

Everything is cached under --out (default ~/.cache/dmgd/bench/quality): sets, and one
JSON line per finished training in results.jsonl, so a rerun (or an interrupted run)
only does what is missing. Writes docs/benchmarks/quality.json, docs/benchmarks/quality.md
(the tables) and docs/benchmarks/quality.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("baseline", "sm-only", "dm-only", "dmgd", "mean", "mgd3")
SETS = ("real",) + RECIPES
LABELS = {"real": "random real", "baseline": "baseline.dmgd", "sm-only": "sm-only.dmgd",
          "dm-only": "dm-only.dmgd", "dmgd": "dmgd.dmgd", "mean": "mean.dmgd", "mgd3": "mgd3.dmgd"}
# Training epochs by IPC: a fixed short schedule (about 50-80 optimizer steps; batch 64) so
# that 105 trainings fit a loaded 2-core CPU. The digits preset's own (200/150 epochs) costs
# minutes per training here. Evaluated once, at the last epoch.
EPOCHS = {1: 50, 10: 30, 50: 10}
DOCS = ROOT / "docs" / "benchmarks"


def default_out() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dmgd" / "bench" / "quality"


def set_dir(out: Path, name: str, ipc: int, max_ipc: int) -> Path:
    """Where the set evaluated at `ipc` lives (greedy recipes: the max-IPC run)."""
    if name == "real":
        return out / "sets" / f"real-ipc{ipc}-seed0"
    gen_ipc = ipc if name == "mgd3" else max_ipc
    return out / "sets" / f"{name}-ipc{gen_ipc}-gen0"


def finished(d: Path) -> bool:
    """A set whose manifest says it is whole (a run writes status "running" first)."""
    try:
        m = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return m.get("status", "complete") not in ("running", "failed")


def generate(out: Path, ipcs: list[int], names: tuple[str, ...] = SETS,
             failed: dict[str, str] | None = None) -> dict[str, float]:
    """Make every set that is missing; returns seconds per generated set. A run that fails
    is reported (in `failed`: set directory name -> the error) and left out, not fatal."""
    import dmgd
    from dmgd.data.sample_real import sample_real

    seconds = {}
    max_ipc = max(ipcs)
    wanted = []
    for name in names:
        for ipc in (ipcs if name in ("real", "mgd3") else [max_ipc]):
            wanted.append((name, ipc, set_dir(out, name, ipc, max_ipc)))
    for name, ipc, d in wanted:
        if finished(d):
            continue
        tic = time.perf_counter()
        try:
            if name == "real":
                sample_real(d, ipc, seed=0, overwrite=True)
            else:
                dmgd.run(ROOT / "recipes" / f"{name}.dmgd", d, ipc=ipc, seed=0, overwrite=True)
        except Exception as error:  # noqa: BLE001 - a failed recipe is a result, not a crash
            message = f"{type(error).__name__}: {error}"
            print(f"FAILED {d.name}: {message}", flush=True)
            if failed is not None:
                failed[d.name] = message
            continue
        seconds[d.name] = time.perf_counter() - tic
        print(f"generated {d.name} in {seconds[d.name]:.0f} s", flush=True)
    return seconds


def check_prefix(out: Path) -> bool:
    """IPC 3 vs IPC 2 of dmgd.dmgd, seed 0: the first 2 images per class identical bytes."""
    import dmgd

    a = dmgd.run(ROOT / "recipes" / "dmgd.dmgd", out / "prefix" / "ipc2", ipc=2, seed=0, overwrite=True)
    b = dmgd.run(ROOT / "recipes" / "dmgd.dmgd", out / "prefix" / "ipc3", ipc=3, seed=0, overwrite=True)
    same = all(pa.read_bytes() == pb.read_bytes()
               for c in a.class_names for pa, pb in zip(a.images[c], b.images[c][:2]))
    print(f"prefix property (IPC 2 == first 2 of IPC 3, every class, bytes): {same}", flush=True)
    return same


# --- set figures and training-free probes ------------------------------------------------


def set_figures(d: Path, ipc: int) -> dict[str, float]:
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    from dmgd.data.digits import digits_test, digits_train
    from dmgd.evaluation.protocol import read_distilled
    from dmgd.guidance.transport import ot_distance

    s = read_distilled(d, ipc=ipc, preset="digits")
    x, y = s.images.reshape(len(s.images), -1), s.labels
    tx, ty = digits_train()
    tx = tx.reshape(len(tx), -1)
    ots, divs = [], []
    for c in range(10):
        xc = x[y == c]
        real = tx[ty == c]
        ots.append(ot_distance(xc, real, torch.ones(len(real))))
        if len(xc) > 1:
            dist = torch.cdist(xc.double(), xc.double())
            divs.append(float(dist.sum() / (len(xc) * (len(xc) - 1))))
    ex, ey = digits_test()
    ex = ex.reshape(len(ex), -1).numpy()
    logreg = LogisticRegression(max_iter=2000).fit(x.numpy(), y.numpy())
    knn = KNeighborsClassifier(1).fit(x.numpy(), y.numpy())
    return {"ot": float(np.mean(ots)), "diversity": float(np.mean(divs)) if divs else float("nan"),
            "logreg": 100.0 * float((logreg.predict(ex) == ey.numpy()).mean()),
            "knn1": 100.0 * float((knn.predict(ex) == ey.numpy()).mean())}


# --- classifier trainings ------------------------------------------------------------------


def eval_config(ipc: int, seed: int, epochs: int | None):
    from dmgd.evaluation.protocol import EvalConfig

    e = epochs or EPOCHS.get(ipc, 10)
    return EvalConfig(ipc=ipc, epochs=e, eval_every=e, seeds=(seed,), preset="digits", model="convnet",
                      device="cpu")


def train_job(job: tuple[str, int, int, str, int | None]) -> dict:
    import torch

    torch.set_num_threads(1)
    from dmgd.evaluation.protocol import evaluate

    name, ipc, seed, d, epochs = job
    tic = time.perf_counter()
    r = evaluate(d, config=eval_config(ipc, seed, epochs), write=False)
    return {"set": name, "ipc": ipc, "seed": seed, "acc": r.seeds[0].last, "seconds": time.perf_counter() - tic,
            "config": r.config.to_dict(), "dir": d}


def load_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stats(values: list[float]) -> dict[str, float]:
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return {"n": n, "mean": m, "std": sd, "se": sd / math.sqrt(n) if n > 1 else float("nan")}


# --- report ------------------------------------------------------------------------------------


def table(summary: dict, figures: dict, ipcs: list[int]) -> str:
    lines = ["ConvNet-6 trained on the set, top-1 % on the real digits test split (360 images), "
             "last epoch, mean +- std (SE) over classifier seeds (n):", "",
             "| set | " + " | ".join(f"IPC {i}" for i in ipcs) + " |",
             "| --- | " + " | ".join("---" for _ in ipcs) + " |"]
    for name in SETS:
        cells = []
        for ipc in ipcs:
            s = summary.get(name, {}).get(str(ipc))
            cells.append(f"{s['mean']:.1f} +- {s['std']:.1f} ({s['se']:.1f}, n={s['n']})" if s else "-")
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    lines += ["", "Training-free probes and set figures (deterministic; generation seed 0): logistic regression "
              "/ 1-NN top-1 % on the test split; OT = mean over classes of the exact OT distance to the "
              "class's whole real train set (sphere, [0, 2], lower = closer); div = mean pairwise L2 "
              "within a class (pixels in [-1, 1]; real train classes: see the real row).", "",
              "| set | " + " | ".join(f"IPC {i} logreg / 1-NN / OT / div" for i in ipcs) + " |",
              "| --- | " + " | ".join("---" for _ in ipcs) + " |"]
    for name in SETS:
        cells = []
        for ipc in ipcs:
            f = figures.get(name, {}).get(str(ipc))
            cells.append(f"{f['logreg']:.1f} / {f['knn1']:.1f} / {f['ot']:.3f} / {f['diversity']:.2f}" if f else "-")
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chart(summary: dict, ipcs: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(SETS)
    for j, name in enumerate(SETS):
        xs, ms, es = [], [], []
        for i, ipc in enumerate(ipcs):
            s = summary.get(name, {}).get(str(ipc))
            if s:
                xs.append(i + (j - (len(SETS) - 1) / 2) * width)
                ms.append(s["mean"])
                es.append(s["se"] if s["n"] > 1 else 0.0)
        if xs:  # a set with no results (e.g. its generation failed) is left out of the legend
            ax.bar(xs, ms, width, yerr=es, capsize=2, label=LABELS[name], color=f"C{j}")
    ax.set_xticks(range(len(ipcs)), [f"IPC {i}" for i in ipcs])
    ax.set_ylabel("top-1 % on real digits test (ConvNet-6)")
    ax.set_title("Distilled digits sets: mean over classifier seeds, error bars = standard error")
    ax.legend(fontsize=8, ncol=4, loc="upper left")
    ax.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=default_out())
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--ipcs", type=int, nargs="+", default=[1, 10, 50])
    p.add_argument("--epochs", type=int, default=None, help="epochs for every IPC (default: EPOCHS by IPC)")
    p.add_argument("--jobs", type=int, default=2, help="parallel trainings (one thread each)")
    p.add_argument("--only", nargs="+", choices=SETS, default=None,
                   help="sets to generate, measure and train (the report still shows every cached result)")
    p.add_argument("--quick", action="store_true", help="IPC 1 and 10, 2 seeds, 5 epochs: a smoke test")
    p.add_argument("--check-prefix", action="store_true")
    p.add_argument("--no-train", action="store_true", help="generate and compute the set figures only")
    p.add_argument("--docs", type=Path, default=DOCS)
    a = p.parse_args(argv)
    if a.quick:
        a.ipcs, a.seeds, a.epochs = [1, 10], 2, a.epochs or 5
    out = a.out.expanduser()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if a.check_prefix:
        check_prefix(out)
    names = tuple(a.only) if a.only else SETS
    failed: dict[str, str] = {}
    gen = generate(out, a.ipcs, names, failed)
    max_ipc = max(a.ipcs)

    def ready(name: str, ipc: int) -> bool:
        return finished(set_dir(out, name, ipc, max_ipc))

    figures: dict = {}
    for name in names:
        for ipc in a.ipcs:
            if not ready(name, ipc):
                continue
            figures.setdefault(name, {})[str(ipc)] = set_figures(set_dir(out, name, ipc, max_ipc), ipc)
            f = figures[name][str(ipc)]
            print(f"{LABELS[name]:14s} IPC {ipc:3d}: OT {f['ot']:.4f}  diversity {f['diversity']:.3f}  "
                  f"logreg {f['logreg']:.1f}  1-NN {f['knn1']:.1f}", flush=True)

    results_path = out / "results.jsonl"
    done = {(r["set"], r["ipc"], r["seed"], r["config"]["epochs"]) for r in load_results(results_path)}
    jobs = []
    # priority: the comparisons first (dmgd vs baseline, dm-only vs mean at IPC 10 and
    # 50, every seed), then random real, sm-only, mgd3, then IPC 1: a run cut short still
    # answers the main questions; the tables say n.
    groups = [(("dmgd", "baseline"), (10, 50)), (("dm-only", "mean"), (10, 50)),
              (("real", "sm-only", "mgd3"), (10, 50)), (SETS, (1,))]
    for names, group_ipcs in groups:
        for ipc in group_ipcs:
            for seed in range(a.seeds):
                for name in names:
                    if ipc not in a.ipcs or (a.only and name not in a.only) or not ready(name, ipc):
                        continue
                    e = a.epochs or EPOCHS.get(ipc, 10)
                    if (name, ipc, seed, e) not in done:
                        jobs.append((name, ipc, seed, str(set_dir(out, name, ipc, max_ipc)), a.epochs))
    seen = set()
    jobs = [j for j in jobs if not (j[:3] in seen or seen.add(j[:3]))]
    if a.no_train:
        jobs = []
    print(f"{len(jobs)} trainings to run, {a.jobs} at a time", flush=True)
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        for fut in as_completed([pool.submit(train_job, j) for j in jobs]):
            r = fut.result()
            with results_path.open("a") as fh:
                fh.write(json.dumps(r) + "\n")
            print(f"{LABELS[r['set']]:14s} IPC {r['ipc']:3d} seed {r['seed']}: {r['acc']:.1f}% "
                  f"({r['seconds']:.0f} s)", flush=True)

    results = load_results(results_path)
    summary: dict = {}
    for name in SETS:
        for ipc in a.ipcs:
            e = a.epochs or EPOCHS.get(ipc, 10)
            accs = [r["acc"] for r in results if r["set"] == name and r["ipc"] == ipc
                    and r["config"]["epochs"] == e and r["seed"] < a.seeds]
            if accs:
                summary.setdefault(name, {})[str(ipc)] = stats(accs)
    text = table(summary, figures, a.ipcs)
    print(text)
    a.docs.mkdir(parents=True, exist_ok=True)
    configs = {str(i): eval_config(i, 0, a.epochs).to_dict() for i in a.ipcs}
    (a.docs / "quality.json").write_text(json.dumps({
        "ipcs": a.ipcs, "seeds": a.seeds, "eval_config_by_ipc": configs, "summary": summary,
        "figures": figures, "trainings": [r for r in results], "generation_seconds": gen, "generation_failed": failed,
        "wall_seconds_this_call": time.perf_counter() - started,
        "sets": {n: {str(i): set_dir(out, n, i, max_ipc).name for i in a.ipcs} for n in SETS},
    }, indent=1))
    (a.docs / "quality.md").write_text(text)
    chart(summary, a.ipcs, a.docs / "quality.png")
    print(f"wrote {a.docs}/quality.json, quality.md, quality.png in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
