"""Quality benchmark (issue 4): what the distilled digits sets are worth, recipe by recipe.

    python benchmarks/quality.py [--out DIR] [--ipcs 1 10 50] [--gen-seeds 0 1 2] [--seeds 2]
                                 [--ipc50-gen-seeds 0] [--ipc50-seeds 5] [--epochs N] [--jobs 2]
                                 [--quick] [--only NAME ...] [--transfer [--transfer-gen-seeds 0 1]
                                 [--transfer-seeds 2]]

On the embedded default (the tiny DiT on scikit-learn's digits), for every IPC: random
real (`dmgd sample-real`), baseline.dmgd, sm-only.dmgd, dm-only.dmgd, dmgd.dmgd, mean.dmgd,
mgd3.dmgd, and the values tuned on the validation split (benchmarks/tune_digits.py):
digits.dmgd and digits-baseline.dmgd (the same sampler at digits.dmgd's CFG, no guidance).
Then

* `dmgd.evaluate` (ConvNet-6, the digits preset with its FULL schedule: 300 epochs at IPC 1,
  200 at IPC 10, 150 at IPC 50; one test evaluation at the last epoch, nothing selected on
  the test set) trains classifiers on each set and tests them on the real digits test split;
* two training-free probes of the generation-seed-0 sets, deterministic: logistic
  regression and 1-nearest-neighbour trained on the set, tested on the test split;
* two figures of those sets: the OT distance of each class's synthetic images to that
  class's WHOLE real train distribution (every train image of the class, uniform masses;
  pixels flattened, L2-normalised, Euclidean cost: `ot_distance`, in [0, 2]) and the
  diversity (mean pairwise L2 distance within a class, pixels in [-1, 1]), averaged over
  the classes;
* the issue's comparisons: difference of means and whether it exceeds twice its standard
  error (SE of a difference = sqrt(SE1^2 + SE2^2)).

Seeds. At IPC 1 and 10 every set is generated with each of --gen-seeds (default 0, 1, 2)
and --seeds classifiers (default 2) are trained on each generation: n = 6 trainings, and
the spread includes the generation's. IPC-50 generation costs minutes a set on a CPU, so
at IPC 50 by default only generation seed 0, with --ipc50-seeds classifiers (default 5);
`--ipc50-gen-seeds 0 1 2 --ipc50-seeds 2` gives IPC 50 the design of the smaller IPCs
(docs/benchmarks.md ran it for the goal's sets).

Generation. Greedy progressive matching has a prefix property (sample i depends only on
samples < i, and each sample draws from its own generator seeded by (seed, class, index)),
so the IPC-50 run (generation seed 0) gives the IPC-10 and IPC-1 sets as its first 10 / 1
images per class, and the IPC-10 runs of the other generation seeds give their IPC-1 sets
(`EvalConfig(ipc=...)` reads the first IPC files per class in sorted order = sampling
order). `--check-prefix` verifies it (IPC 3 vs IPC 2, same seed: same bytes). mgd3.dmgd is
the exception (mode guidance uses K = ipc modes): one run per IPC. Random real: one
`sample-real` draw per IPC and generation seed (numpy's choice without replacement is not
prefix-stable).

Transfer (--transfer, issue 15): at IPC 10, digits-baseline.dmgd, digits.dmgd and
digits.dmgd with the setting `push = "total"` are also run under ddim and dpm at 25 steps
(`dmgd.run(..., steps=25, sampler=...)`; sets named "<recipe>@<sampler><steps>"), with
--transfer-gen-seeds x --transfer-seeds trainings; the report gives each guided set's gain
over the plain sampler at the same sampler and steps and its ratio to the gain at ddpm 50
(the main IPC-10 sets, on the same (generation, classifier seed) pairs). An IPC-10 run of a
greedy recipe already in --out serves as the IPC-10 (and IPC-1) set of its generation seed
instead of the max-IPC run's prefix (the same images, by the prefix property).

The corners testbed (issue 16: the embedded corners model, whose per-class modes are known,
and the corner shares of each set): `python benchmarks/quality.py --corners [its options]`
runs benchmarks/corners.py (see its docstring).

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
RECIPES = ("baseline", "sm-only", "dm-only", "dmgd", "mean", "mgd3", "digits-baseline", "digits")
SETS = ("real",) + RECIPES
PER_IPC = ("real", "mgd3")  # sets generated once per IPC (no prefix property)
# Transfer (issue 15): the retargeted recipe and the plain sampler at its CFG under other
# samplers / step counts, and digits.dmgd with `push = "total"` (same total OT push at any
# sampler and step count). Set names "<base>@<sampler><steps>", generated at IPC 10 only.
VARIANTS = {"digits-total": ("digits", {"push": "total"})}  # name -> (recipe file, settings)
TRANSFER_BASES = ("digits-baseline", "digits", "digits-total")
TRANSFER_RUNS = (("ddim", 25), ("dpm", 25))
TRANSFER = tuple(f"{b}@{s}{n}" for s, n in TRANSFER_RUNS for b in TRANSFER_BASES)
LABELS = {"real": "random real", **{n: f"{n}.dmgd" for n in RECIPES},
          "digits-total": 'digits.dmgd + push = "total"'}
LABELS.update({t: f"{LABELS[t.split('@')[0]]} @ {t.split('@')[1]}" for t in TRANSFER})
# The comparisons: (better?, than), at IPC 10 and 50.
COMPARISONS = (("dmgd", "baseline"), ("digits", "baseline"), ("digits", "digits-baseline"),
               ("dm-only", "mean"), ("digits", "real"))
DOCS = ROOT / "docs" / "benchmarks"


def default_out() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dmgd" / "bench" / "quality"


def set_dir(out: Path, name: str, ipc: int, gen: int, max_ipc: int) -> Path:
    """Where the set evaluated at (`ipc`, generation seed `gen`) lives: greedy recipes read the
    prefix of the max-IPC run (generation seed 0) or of the IPC-10 run (other seeds)."""
    if name == "real":
        return out / "sets" / f"real-ipc{ipc}-seed{gen}"
    own = out / "sets" / f"{name}-ipc10-gen{gen}"
    if ipc <= 10 and name not in PER_IPC and finished(own):
        return own  # an IPC-10 run made earlier: by the prefix property the same images
    return out / "sets" / f"{name}-ipc{generated_ipc(name, ipc, gen, max_ipc)}-gen{gen}"


def generated_ipc(name: str, ipc: int, gen: int, max_ipc: int) -> int:
    """The IPC of the run whose prefix is the set: seed 0 and IPCs above 10 read the max-IPC
    run, other seeds at IPC <= 10 an IPC-10 run (cheaper); mgd3 and real are drawn per IPC."""
    if name in PER_IPC:
        return ipc
    if "@" in name:  # transfer sets: IPC 10 runs only
        return 10
    return max_ipc if gen == 0 or ipc > 10 else min(max_ipc, 10)


def finished(d: Path) -> bool:
    """A set whose manifest says it is whole (a run writes status "running" first)."""
    try:
        m = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return m.get("status", "complete") not in ("running", "failed")


def wanted_sets(out: Path, ipcs: list[int], gen_seeds: list[int], names,
                ipc50_gen_seeds: list[int]) -> list[tuple[str, int, int, Path]]:
    """(name, ipc to generate, generation seed, directory) of every set the benchmark reads."""
    max_ipc, found = max(ipcs), {}
    for name in names:
        for ipc in ipcs:
            for gen in (ipc50_gen_seeds if ipc >= 50 else gen_seeds):
                d = set_dir(out, name, ipc, gen, max_ipc)
                found.setdefault(d, (name, generated_ipc(name, ipc, gen, max_ipc), gen, d))
    return list(found.values())


def generate(out: Path, ipcs: list[int], gen_seeds: list[int], names=SETS,
             failed: dict[str, str] | None = None, jobs: int = 2, ipc50_gen_seeds=(0,)) -> dict[str, float]:
    """Make every set that is missing, `jobs` at a time; returns seconds per generated set. A
    run that fails is reported (in `failed`: directory name -> the error) and left out."""
    todo = [w for w in wanted_sets(out, ipcs, gen_seeds, names, list(ipc50_gen_seeds)) if not finished(w[3])]
    todo.sort(key=lambda w: -w[1])  # the long IPC-50 runs first
    seconds = {}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for fut in as_completed([pool.submit(generate_one, w) for w in todo]):
            name, took, error = fut.result()
            if error:
                print(f"FAILED {name}: {error}", flush=True)
                if failed is not None:
                    failed[name] = error
            else:
                seconds[name] = took
                print(f"generated {name} in {took:.0f} s", flush=True)
    return seconds


def generate_one(w: tuple[str, int, int, Path]) -> tuple[str, float, str | None]:
    import dmgd
    from dmgd.data.sample_real import sample_real

    name, ipc, gen, d = w
    tic = time.perf_counter()
    try:
        if name == "real":
            sample_real(d, ipc, seed=gen, overwrite=True)
        else:
            base, _, run = name.partition("@")
            recipe, settings = VARIANTS.get(base, (base, {}))
            kw = {}
            if run:
                sampler = run.rstrip("0123456789")
                kw = {"sampler": sampler, "steps": int(run[len(sampler):])}
            dmgd.run(ROOT / "recipes" / f"{recipe}.dmgd", d, ipc=ipc, seed=gen, overwrite=True, **kw, **settings)
    except Exception as error:  # noqa: BLE001 - a failed recipe is a result, not a crash
        return d.name, 0.0, f"{type(error).__name__}: {error}"
    return d.name, time.perf_counter() - tic, None


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


def ot_and_diversity(x, y, real_x, real_y) -> tuple[float, float]:
    """Mean over classes of the OT distance from a set's class images (x [N, F], labels y) to
    the real class images (real_x, real_y; uniform masses), and of the mean pairwise L2
    distance within a class (nan when every class has one image)."""
    import torch

    from dmgd.guidance.transport import ot_distance

    ots, divs = [], []
    for c in sorted(set(y.tolist())):
        xc, rc = x[y == c], real_x[real_y == c]
        ots.append(ot_distance(xc, rc, torch.ones(len(rc))))
        if len(xc) > 1:
            dist = torch.cdist(xc.double(), xc.double())
            divs.append(float(dist.sum() / (len(xc) * (len(xc) - 1))))
    return sum(ots) / len(ots), (sum(divs) / len(divs) if divs else math.nan)


def set_figures(d: Path, ipc: int) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    from dmgd.data.digits import digits_test, digits_train
    from dmgd.evaluation.protocol import read_distilled

    s = read_distilled(d, ipc=ipc, preset="digits")
    x, y = s.images.reshape(len(s.images), -1), s.labels
    tx, ty = digits_train()
    ot, diversity = ot_and_diversity(x, y, tx.reshape(len(tx), -1), ty)
    ex, ey = digits_test()
    ex = ex.reshape(len(ex), -1).numpy()
    logreg = LogisticRegression(max_iter=2000).fit(x.numpy(), y.numpy())
    knn = KNeighborsClassifier(1).fit(x.numpy(), y.numpy())
    return {"ot": ot, "diversity": diversity,
            "logreg": 100.0 * float((logreg.predict(ex) == ey.numpy()).mean()),
            "knn1": 100.0 * float((knn.predict(ex) == ey.numpy()).mean())}


# --- classifier trainings ------------------------------------------------------------------


def full_epochs(ipc: int) -> int:
    from dmgd.evaluation.protocol import digits_epochs

    return digits_epochs(ipc)


def eval_config(ipc: int, seed: int, epochs: int | None):
    from dmgd.evaluation.protocol import EvalConfig

    e = epochs or full_epochs(ipc)
    return EvalConfig(ipc=ipc, epochs=e, eval_every=e, seeds=(seed,), preset="digits", model="convnet",
                      device="cpu")


def train_job(job: tuple[str, int, int, int, str, int | None]) -> dict:
    import torch

    torch.set_num_threads(1)
    from dmgd.evaluation.protocol import evaluate

    name, ipc, gen, seed, d, epochs = job
    tic = time.perf_counter()
    r = evaluate(d, config=eval_config(ipc, seed, epochs), write=False)
    return {"set": name, "ipc": ipc, "gen": gen, "seed": seed, "acc": r.seeds[0].last,
            "seconds": time.perf_counter() - tic, "config": r.config.to_dict(), "dir": d}


def trainings(ipc: int, a: argparse.Namespace, name: str = "") -> list[tuple[int, int]]:
    """(generation seed, classifier seed) pairs trained per set at this IPC."""
    if "@" in name:
        return [(g, i * a.transfer_seeds + k) for i, g in enumerate(a.transfer_gen_seeds)
                for k in range(a.transfer_seeds)]
    if ipc >= 50:
        return [(g, i * a.ipc50_seeds + k) for i, g in enumerate(a.ipc50_gen_seeds) for k in range(a.ipc50_seeds)]
    return [(g, i * a.seeds + k) for i, g in enumerate(a.gen_seeds) for k in range(a.seeds)]


def load_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stats(values: list[float]) -> dict[str, float]:
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return {"n": n, "mean": m, "std": sd, "se": sd / math.sqrt(n) if n > 1 else float("nan")}


def previous_report(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def comparisons(summary: dict, ipcs: list[int]) -> list[dict]:
    rows = []
    for better, than in COMPARISONS:
        for ipc in ipcs:
            x, y = summary.get(better, {}).get(str(ipc)), summary.get(than, {}).get(str(ipc))
            if not x or not y:
                continue
            diff, se = x["mean"] - y["mean"], math.sqrt(x["se"] ** 2 + y["se"] ** 2)
            rows.append({"set": better, "than": than, "ipc": ipc, "diff": diff, "se": se,
                         "holds": diff > 2 * se})
    return rows


# --- report ------------------------------------------------------------------------------------


def rows(by_set: dict, ipcs: list[int], cell) -> list[str]:
    """One markdown row per set: cell(value) per IPC, "-" where the set has none."""
    def text(name: str, ipc: int) -> str:
        value = by_set.get(name, {}).get(str(ipc))
        return cell(value) if value else "-"

    return [f"| {LABELS[name]} | " + " | ".join(text(name, ipc) for ipc in ipcs) + " |" for name in SETS]


def table(summary: dict, figures: dict, compared: list[dict], ipcs: list[int], a: argparse.Namespace) -> str:
    schedule = "the preset's full schedule" if not a.epochs else "a SHORTENED schedule (--epochs)"
    lines = [f"ConvNet-6 trained on the set (digits preset, {schedule}: "
             + ", ".join(f"{a.epochs or full_epochs(i)} epochs at IPC {i}" for i in ipcs)
             + "), top-1 % on the real digits test split (360 images), last epoch, mean +- std (SE, n) over "
             f"trainings: at IPC < 50, generation seeds {a.gen_seeds} x {a.seeds} classifier seeds each; at "
             f"IPC 50, generation seeds {a.ipc50_gen_seeds} x {a.ipc50_seeds} classifier seeds each.", "",
             "| set | " + " | ".join(f"IPC {i}" for i in ipcs) + " |",
             "| --- | " + " | ".join("---" for _ in ipcs) + " |"]
    lines += rows(summary, ipcs, lambda s: f"{s['mean']:.1f} +- {s['std']:.1f} ({s['se']:.1f}, n={s['n']})")
    lines += ["", "The issue's comparisons (difference of means; it holds when it exceeds twice the SE of the "
              "difference, sqrt(SE1^2 + SE2^2)):", "",
              "| comparison | IPC | difference | 2 SE | holds |", "| --- | --- | --- | --- | --- |"]
    for c in compared:
        lines.append(f"| {LABELS[c['set']]} > {LABELS[c['than']]} | {c['ipc']} | {c['diff']:+.2f} | "
                     f"{2 * c['se']:.2f} | {'yes' if c['holds'] else 'no'} |")
    lines += ["", "Training-free probes and set figures (deterministic; generation seed 0): logistic regression "
              "/ 1-NN top-1 % on the test split; OT = mean over classes of the exact OT distance to the "
              "class's whole real train set (sphere, [0, 2], lower = closer); div = mean pairwise L2 "
              "within a class (pixels in [-1, 1]; real train classes: see the real row).", "",
              "| set | " + " | ".join(f"IPC {i} logreg / 1-NN / OT / div" for i in ipcs) + " |",
              "| --- | " + " | ".join("---" for _ in ipcs) + " |"]
    lines += rows(figures, ipcs, lambda f: f"{f['logreg']:.1f} / {f['knn1']:.1f} / {f['ot']:.3f} / {f['diversity']:.2f}")
    return "\n".join(lines) + "\n"


def transfer_gains(results: list[dict], a: argparse.Namespace) -> list[dict]:
    """Gain = guided minus plain (digits-baseline) at the same sampler and steps, IPC 10, over the
    transfer trainings (generation x classifier seeds); the reference gain (ddpm, 50 steps, the
    recipes' own) on the SAME (generation, classifier seed) pairs of the main IPC-10 sets; the
    ratio = gain / reference gain."""
    e = a.epochs or full_epochs(10)
    pairs = trainings(10, a, "x@y")

    def accs(name: str) -> dict:
        return {(r.get("gen", 0), r["seed"]): r["acc"] for r in results
                if r["set"] == name and r["ipc"] == 10 and r["config"]["epochs"] == e}

    def gain(guided: str, plain: str, on: list) -> dict | None:
        g, p = accs(guided), accs(plain)
        if len(on) < 2:
            return None
        x, y = stats([g[k] for k in on]), stats([p[k] for k in on])
        return {"guided_acc": x["mean"], "plain_acc": y["mean"], "gain": x["mean"] - y["mean"],
                "se": math.sqrt(x["se"] ** 2 + y["se"] ** 2), "n": len(on), "pairs": on}

    def have(*names: str) -> list:  # the (generation, classifier seed) pairs every set has (a cut run: fewer)
        return [k for k in pairs if all(k in accs(n) for n in names)]

    main = ("digits", "digits-baseline")
    ref = gain(*main, have(*main))
    rows = [{"run": "ddpm50", "guided": "digits", **ref, "ratio": 1.0}] if ref else []
    for sampler, steps in TRANSFER_RUNS:
        for guided in ("digits", "digits-total"):
            names = (f"{guided}@{sampler}{steps}", f"digits-baseline@{sampler}{steps}")
            on = have(*names, *main)
            g, r = gain(*names, on), gain(*main, on)  # the reference gain on the SAME pairs
            if g and r:
                rows.append({"run": f"{sampler}{steps}", "guided": guided, **g, "ref_gain": r["gain"],
                             "ratio": g["gain"] / r["gain"] if r["gain"] else math.nan,
                             "keeps_90": bool(r["gain"] > 0 and g["gain"] >= 0.9 * r["gain"])})
    return rows


def transfer_table(summary: dict, figures: dict, transfer: list[dict], a: argparse.Namespace) -> str:
    pairs = trainings(10, a, "x@y")
    lines = [f"Transfer (IPC 10, {full_epochs(10) if not a.epochs else a.epochs} epochs): generation seeds "
             f"{a.transfer_gen_seeds} x {a.transfer_seeds} classifier seeds each (n = {len(pairs)}); the "
             "ddpm-50 row (the recipes' own sampler and steps) reads the SAME (generation, classifier "
             "seed) pairs of the main IPC-10 sets (n: the pairs every set of the row has, fewer in a run cut short). gain = guided minus digits-baseline.dmgd at the same "
             "sampler and steps (2 SE of the difference); ratio = gain / the ddpm-50 gain; goal: >= 0.90.", "",
             "| run | guided | n | guided % | plain % | gain | 2 SE | ddpm-50 gain, same pairs | ratio | keeps >= 90% |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for t in transfer:
        keeps = "-" if t["run"] == "ddpm50" else ("yes" if t["keeps_90"] else "no")
        lines.append(f"| {t['run']} | {LABELS[t['guided']]} | {t['n']} | {t['guided_acc']:.1f} | {t['plain_acc']:.1f} | "
                     f"{t['gain']:+.2f} | {2 * t['se']:.2f} | {t.get('ref_gain', t['gain']):+.2f} | "
                     f"{t['ratio']:.2f} | {keeps} |")
    lines += ["", "Transfer sets (IPC 10): accuracy mean +- std (SE, n); set figures of generation seed 0 "
              "(logreg / 1-NN / OT / div as above).", "",
              "| set | ConvNet-6 | logreg / 1-NN / OT / div |", "| --- | --- | --- |"]
    for name in TRANSFER:
        s, f = summary.get(name, {}).get("10"), figures.get(name, {}).get("10")
        lines.append(f"| {LABELS[name]} | "
                     + (f"{s['mean']:.1f} +- {s['std']:.1f} ({s['se']:.1f}, n={s['n']})" if s else "-") + " | "
                     + (f"{f['logreg']:.1f} / {f['knn1']:.1f} / {f['ot']:.3f} / {f['diversity']:.2f}" if f else "-")
                     + " |")
    return "\n".join(lines) + "\n"


def chart(summary: dict, ipcs: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.4))
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
    ax.set_title("Distilled digits sets: mean over trainings, error bars = standard error")
    ax.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False)
    lows = [s["mean"] for v in summary.values() for s in v.values()]
    ax.set_ylim(max(0, min(lows, default=0) - 10), 100)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--corners"]:  # the corners testbed (issue 16): its own sets and measures
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import corners

        return corners.main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=default_out())
    p.add_argument("--ipcs", type=int, nargs="+", default=[1, 10, 50])
    p.add_argument("--gen-seeds", type=int, nargs="+", default=[0, 1, 2], help="generation seeds at IPC < 50")
    p.add_argument("--seeds", type=int, default=2, help="classifier seeds per generation at IPC < 50")
    p.add_argument("--ipc50-gen-seeds", type=int, nargs="+", default=[0], help="generation seeds at IPC 50")
    p.add_argument("--ipc50-seeds", type=int, default=5, help="classifier seeds per generation at IPC 50")
    p.add_argument("--epochs", type=int, default=None, help="epochs for every IPC (default: the preset's)")
    p.add_argument("--jobs", type=int, default=2, help="parallel generations and trainings (one thread each)")
    p.add_argument("--only", nargs="+", choices=SETS, default=None,
                   help="sets to generate, measure and train (the report still shows every cached result)")
    p.add_argument("--transfer", action="store_true",
                   help="also the transfer sets at IPC 10: digits-baseline, digits and digits + push = total "
                        "under ddim and dpm at 25 steps")
    p.add_argument("--transfer-gen-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--transfer-seeds", type=int, default=2, help="classifier seeds per generation, transfer sets")
    p.add_argument("--quick", action="store_true", help="IPC 1 and 2, generation seed 0, 2 seeds, 5 epochs")
    p.add_argument("--check-prefix", action="store_true")
    p.add_argument("--no-train", action="store_true", help="generate and compute the set figures only")
    p.add_argument("--docs", type=Path, default=DOCS)
    a = p.parse_args(argv)
    if a.quick:
        a.ipcs, a.gen_seeds, a.seeds, a.epochs = [1, 2], [0], 2, a.epochs or 5
    out = a.out.expanduser()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if a.check_prefix:
        check_prefix(out)
    names = tuple(a.only) if a.only else SETS
    failed: dict[str, str] = {}
    gen = generate(out, a.ipcs, a.gen_seeds, names, failed, a.jobs, a.ipc50_gen_seeds)
    if a.transfer:
        gen.update(generate(out, [10], a.transfer_gen_seeds, TRANSFER, failed, a.jobs))
    max_ipc = max(a.ipcs)

    def where(name: str, ipc: int, g: int) -> Path:
        return set_dir(out, name, ipc, g, max_ipc)

    def ipcs_of(name: str) -> list[int]:
        return [10] if "@" in name else a.ipcs

    figures: dict = {}
    for name in SETS + TRANSFER:
        for ipc in ipcs_of(name):
            if not finished(where(name, ipc, 0)):
                continue
            figures.setdefault(name, {})[str(ipc)] = set_figures(where(name, ipc, 0), ipc)
            f = figures[name][str(ipc)]
            print(f"{LABELS[name]:20s} IPC {ipc:3d}: OT {f['ot']:.4f}  diversity {f['diversity']:.3f}  "
                  f"logreg {f['logreg']:.1f}  1-NN {f['knn1']:.1f}", flush=True)

    results_path = out / "results.jsonl"

    def key(r: dict) -> tuple:
        return r["set"], r["ipc"], r.get("gen", 0), r["seed"], r["config"]["epochs"]

    done = {key(r) for r in load_results(results_path)}
    jobs = []
    # the comparisons first, IPC 50 (the longest) before 10, then the rest; a run cut
    # short still answers the main questions; the tables say n.
    order = ("digits", "digits-baseline", "baseline", "dmgd", "dm-only", "mean", "real", "sm-only", "mgd3")
    plan = [(ipc, name) for ipc in sorted(a.ipcs, reverse=True) for name in order if name in names]
    pairs = [(ipc, name, g, seed) for ipc, name in plan for g, seed in trainings(ipc, a, name)]
    if a.transfer:  # pair-major: a run cut short has every transfer set at a smaller n
        per_gen = a.transfer_seeds  # and the first classifier of every generation before the second
        order_t = sorted(enumerate(trainings(10, a, "x@y")), key=lambda t: (t[0] % per_gen, t[0]))
        pairs += [(10, name, g, seed) for _, (g, seed) in order_t for name in TRANSFER]
    for ipc, name, g, seed in pairs:
        d, e = where(name, ipc, g), a.epochs or full_epochs(ipc)
        if finished(d) and (name, ipc, g, seed, e) not in done:
            jobs.append((name, ipc, g, seed, str(d), a.epochs))
    if a.no_train:
        jobs = []
    print(f"{len(jobs)} trainings to run, {a.jobs} at a time", flush=True)
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        for fut in as_completed([pool.submit(train_job, j) for j in jobs]):
            r = fut.result()
            with results_path.open("a") as fh:
                fh.write(json.dumps(r) + "\n")
            print(f"{LABELS[r['set']]:20s} IPC {r['ipc']:3d} gen {r['gen']} seed {r['seed']}: {r['acc']:.1f}% "
                  f"({r['seconds']:.0f} s)", flush=True)

    results = load_results(results_path)
    summary: dict = {}
    for name in SETS + TRANSFER:
        for ipc in ipcs_of(name):
            e = a.epochs or full_epochs(ipc)
            want = set(trainings(ipc, a, name))
            accs = [r["acc"] for r in results if r["set"] == name and r["ipc"] == ipc
                    and r["config"]["epochs"] == e and (r.get("gen", 0), r["seed"]) in want]
            if accs:
                summary.setdefault(name, {})[str(ipc)] = stats(accs)
    compared = comparisons(summary, a.ipcs)
    text = table(summary, figures, compared, a.ipcs, a)
    transfer = transfer_gains(results, a) if a.transfer else []
    if transfer:
        text += "\n" + transfer_table(summary, figures, transfer, a)
    print(text)
    a.docs.mkdir(parents=True, exist_ok=True)
    configs = {str(i): eval_config(i, 0, a.epochs).to_dict() for i in a.ipcs}
    earlier = previous_report(a.docs / "quality.json")  # a rerun on a full cache keeps what the first call measured
    gen = {**earlier.get("generation_seconds", {}), **gen}
    walls = earlier.get("wall_seconds_by_call", []) + [round(time.perf_counter() - started, 1)]
    (a.docs / "quality.json").write_text(json.dumps({
        "ipcs": a.ipcs, "gen_seeds": a.gen_seeds, "seeds_per_generation": a.seeds, "ipc50_seeds": a.ipc50_seeds, "ipc50_gen_seeds": a.ipc50_gen_seeds,
        "eval_config_by_ipc": configs, "summary": summary, "comparisons": compared, "transfer": transfer,
        "figures": figures, "trainings": [r for r in results if key(r)[4] == (a.epochs or full_epochs(r["ipc"]))],
        "generation_seconds": gen, "generation_failed": failed,
        "wall_seconds_by_call": walls,
    }, indent=1))
    (a.docs / "quality.md").write_text(text)
    chart(summary, a.ipcs, a.docs / "quality.png")
    print(f"wrote {a.docs}/quality.json, quality.md, quality.png in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
