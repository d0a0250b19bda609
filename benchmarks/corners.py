"""The corners testbed (issue 16): does distribution matching cover the modes plain sampling misses?

    python benchmarks/corners.py [--out DIR] [--stages tune test] [--jobs 2]
        [--tune-gen-seeds 0 1] [--gen-seeds 0 1 2] [--seeds 2] [--docs docs/benchmarks]

The embedded corners model (`model = "corners"`): scikit-learn's digits on a 16x16 canvas,
each at one corner, with per-class corner shares 70/20/7/3 % (`dmgd.data.corners`). The
modes are known, so coverage is measured directly: the corner shares of a distilled set
against the real ones. All sets are IPC 10.

Stages:
  tune  on the VALIDATION split only: k-means targets from the corners' "fit" split (an
        ImageFolder of it as `data`), every score on "val". Proxy as
        benchmarks/retarget_digits.py: logistic regression, RBF SVM and 1-NN fitted on the
        set's pixels, mean val top-1 %, averaged over --tune-gen-seeds. Candidates: the
        transferred digits recipe, and digits.dmgd with its OT window moved on the corners'
        own 50-step clock x rho scaled (the retuning), then K and CFG around the best.
        Choice: the best proxy mean (ties within one SE of the difference go to the smaller
        change from digits.dmgd, as retarget_digits.py).
  test  the issue's comparisons on the corners' TEST split: random real, baseline.dmgd, the
        plain sampler at CFG 2 (digits-baseline.dmgd), digits.dmgd transferred by the rule
        (`reference = "1x8x8"`: windows placed by noise level, sigma x2 on the 1x16x16
        model; rho as written), dm-only (K = 10) and mean (K = 1) on that transferred
        schedule, mgd3.dmgd as written, and the retuned recipe. ConvNet-6, the digits preset
        with its full epochs (200 at IPC 10), last epoch, generation seeds x classifier
        seeds; corner shares pooled over generation seeds; contact sheets.

Corner shares. Per class, the real corners are ranked by their share (70/20/7/3); a set's
share at rank r is the share of its images of that class in the real rank-r corner
(`corner_of`: the quadrant with the most ink), averaged over classes. "Within 10 points":
every rank's share within 10 points of the real one. Also the mean absolute difference
over classes and corners (MAD, points) against the real train shares.

Resumable: sets under OUT/sets/, one JSON line per finished set / training in
OUT/*.jsonl. Writes docs/benchmarks/corners.{json,md,png}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from retarget_digits import load, run_jobs  # noqa: E402  (the same resumable JSONL bookkeeping)
IPC = 10
DIGITS_RHO = (15.0, 150.0)
TRANSFER_LINE = 'reference = "1x8x8"\n'


def plain(cfg: float, rules: str = "*: refine\n") -> str:
    """A flat recipe (the texts are passed to `dmgd.run`, so no `use` lines)."""
    return f"steps = 50\nsampler = ddpm\ncfg = {cfg}\n\n{rules}"


BASELINE = plain(4.0)  # recipes/baseline.dmgd
PLAIN_CFG2 = plain(2.0)  # recipes/digits-baseline.dmgd
MGD3 = plain(4.0, "*: refine\n20..50: mode(rho=0.1)\n")  # recipes/mgd3.dmgd


def digits_variant(window=(5, 25), scale=1.0, K=5, cfg=2.0, transfer=False, term="ot") -> str:
    lo, hi = DIGITS_RHO[0] * scale, DIGITS_RHO[1] * scale
    k = f"K={K}, " if term == "ot" else ""
    return (f"steps = 50\nsampler = ddpm\ncfg = {cfg}\n" + (TRANSFER_LINE if transfer else "")
            + "\nt>=45: explore\n25..45: softlabel(bs=0.01, bn=0.06)\nt<25: refine\n"
            + f"{window[0]}..{window[1]}: {term}({k}rho={lo:g}..{hi:g})\n")


def dm_only_variant(term: str, K: int) -> str:
    k = f"K={K}, " if term == "ot" else ""
    return (f"steps = 50\nsampler = ddpm\ncfg = 2.0\n{TRANSFER_LINE}\n*: refine\n"
            f"5..25: {term}({k}rho={DIGITS_RHO[0]:g}..{DIGITS_RHO[1]:g})\n")


def tune_candidates() -> list[tuple[str, str, dict | None]]:
    """(name, recipe text or "random-real", the change from digits.dmgd or None)."""
    out = [("random real (fit)", "random-real", None), ("plain CFG 2", PLAIN_CFG2, None),
           ("digits.dmgd as written", digits_variant(), {}),
           ("digits.dmgd transferred", digits_variant(transfer=True), {"transfer": True})]
    for window in ((10, 30), (15, 35), (20, 40)):
        out.append((f"window {window[0]}..{window[1]}", digits_variant(window), {"window": window}))
    for scale in (1 / 3, 3.0):
        for window in ((5, 25), (15, 35)):
            out.append((f"window {window[0]}..{window[1]} rho x{scale:.3g}", digits_variant(window, scale),
                        {"window": window, "scale": scale}))
    return out


def refine_candidates(best: dict) -> list[tuple[str, str, dict]]:
    if best.get("transfer"):
        base = {"window": (5, 25), "transfer": True}
    else:
        base = {"window": best.get("window", (5, 25)), "scale": best.get("scale", 1.0)}
    out = []
    for change in ({"K": 10}, {"cfg": 3.0}, {"cfg": 1.5}):
        p = {**base, **change}
        out.append((f"{label(base)} {label(change)}", digits_variant(**p), p))
    return out


def label(p: dict) -> str:
    parts = []
    for k, v in p.items():
        if k == "window":
            parts.append(f"window {v[0]}..{v[1]}")
        elif k == "scale":
            parts.append(f"rho x{v:.3g}")
        elif k == "transfer":
            parts.append("transferred")
        else:
            parts.append(f"{k} {v}")
    return " ".join(parts)


def test_sets(retuned: str | None) -> list[tuple[str, str]]:
    out = [("digits.dmgd transferred", digits_variant(transfer=True)), ("baseline.dmgd", BASELINE),
           ("dm-only K=10 (transferred)", dm_only_variant("ot", 10)),
           ("mean K=1 (transferred)", dm_only_variant("mean", 1)),
           ("plain CFG 2", PLAIN_CFG2), ("random real", "random-real"),
           ("mgd3.dmgd", MGD3)]
    if retuned:
        out.append(("retuned on val", retuned))
    return out


def text_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def set_dir(out: Path, text: str, gen: int, data: str) -> Path:
    return out / "sets" / data / f"{text_id(text)}-g{gen}"


# --- one set --------------------------------------------------------------------------------


def read_set(d: Path):
    """(x [N, 256] float64 in [-1, 1], y [N]) from an ImageFolder of 16x16 PNGs, classes 0..9,
    the first IPC files of a class in sorted order."""
    import numpy as np
    from PIL import Image

    xs, ys = [], []
    for c in range(10):
        for f in sorted((d / str(c)).glob("*.png")):
            xs.append(np.asarray(Image.open(f).convert("L"), dtype=np.float64).reshape(-1) / 127.5 - 1.0)
            ys.append(c)
    return np.stack(xs), np.asarray(ys)


def make_set(d: Path, text: str, gen: int, data: str | None) -> float:
    tic = time.perf_counter()
    if not (d / "manifest.json").is_file():
        if text == "random-real":
            from dmgd.data.sample_real import sample_real

            sample_real(d, IPC, seed=gen, data=data or "corners", overwrite=True)
        else:
            import dmgd

            overrides = {"model": "corners", **({"data": data} if data else {})}
            dmgd.run(text, d, ipc=IPC, seed=gen, batch_size=10, overwrite=d.exists(), overrides=overrides)
    return time.perf_counter() - tic


def shares_of(x, y):
    import numpy as np

    from dmgd.data.corners import corner_shares

    return corner_shares(x.reshape(len(x), 1, 16, 16), y, 10)


def proxy(x, y, ex, ey) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    accs = {}
    for name, clf in (("logreg", LogisticRegression(max_iter=5000)), ("svm", SVC(kernel="rbf", C=1.0, gamma="scale")),
                      ("knn1", KNeighborsClassifier(n_neighbors=1))):
        accs[name] = 100.0 * float((clf.fit(x, y).predict(ex) == ey).mean())
    return {**accs, "score": sum(accs.values()) / 3}


def figures(x, y, rx, ry) -> dict:
    import torch

    from quality import ot_and_diversity

    ot, div = ot_and_diversity(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y),
                               torch.as_tensor(rx, dtype=torch.float32), torch.as_tensor(ry))
    return {"ot": ot, "diversity": div, "shares": shares_of(x, y).tolist()}


def gen_job(args: tuple) -> dict:
    import torch

    torch.set_num_threads(1)
    os.environ["DMGD_THREADS"] = "1"
    stage, name, text, gen, out, data, score_dir, real_dir = args
    d = set_dir(Path(out), text, gen, stage)
    base = {"stage": stage, "name": name, "id": text_id(text), "text": text, "gen_seed": gen}
    try:
        seconds = make_set(d, text, gen, data)
        x, y = read_set(d)
        ex, ey = read_set(Path(score_dir))
        rx, ry = read_set(Path(real_dir))
        return {**base, "gen_seconds": seconds, **proxy(x, y, ex, ey), **figures(x, y, rx, ry)}
    except Exception as error:  # noqa: BLE001 - a candidate that cannot be generated is a result
        return {**base, "error": f"{type(error).__name__}: {error}"}


def train_job(args: tuple) -> dict:
    import torch

    torch.set_num_threads(1)
    from dmgd.evaluation.protocol import EvalConfig, evaluate

    name, text, gen, seed, out, protocol = args
    d = set_dir(Path(out), text, gen, "test")
    soft = {"protocol": "soft", "teacher": "corners"} if protocol == "soft" else {}
    config = EvalConfig(ipc=IPC, preset="digits", model="convnet", seeds=(seed,), eval_every=1000, device="cpu",
                        **soft)
    r = evaluate(d, config=config, write=False)
    return {"name": name, "id": text_id(text), "gen_seed": gen, "seed": seed, "acc": r.seeds[0].last,
            "epochs": r.config.epochs, "train_seconds": r.seeds[0].seconds}


# --- bookkeeping (load / run_jobs: retarget_digits.py's, beside this script) ---------------


def stats(values: list[float]) -> dict:
    n = len(values)
    m = sum(values) / n if n else math.nan
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return {"n": n, "mean": m, "std": sd, "se": sd / math.sqrt(n) if n > 1 else math.nan}


def show_set(r: dict) -> str:
    if "error" in r:
        return f"{r['name']} g{r['gen_seed']}: {r['error']}"
    return f"{r['name']} g{r['gen_seed']}: proxy {r['score']:.1f} ({r['gen_seconds']:.0f} s)"


def make_sets(stage: str, named: list[tuple[str, str]], gens: list[int], a, data, score_dir, real_dir) -> list[dict]:
    path = a.out / f"{stage}.jsonl"
    done = {(r["id"], r["gen_seed"]) for r in load(path) if "error" not in r}
    jobs = [(stage, n, t, g, str(a.out), data, str(score_dir), str(real_dir))
            for n, t in named for g in gens if (text_id(t), g) not in done]
    print(f"{stage}: {len(named)} sets x {len(gens)} generation seeds, {len(jobs)} to make", flush=True)
    run_jobs(gen_job, jobs, path, a.jobs, show_set)
    ids = {text_id(t) for _, t in named}
    return [r for r in load(path) if "error" not in r and r["id"] in ids and r["gen_seed"] in gens]


# --- corner shares --------------------------------------------------------------------------


def real_train_shares():
    from dmgd.data.corners import real_shares

    return real_shares("train")


def rank_shares(shares, real) -> list[float]:
    """Mean over classes of the share in the real rank-r corner, r = 0..3, in %."""
    import numpy as np

    shares, real = np.asarray(shares), np.asarray(real)
    order = np.argsort(-real, axis=1, kind="stable")
    ranked = np.take_along_axis(shares, order, axis=1)
    return (100.0 * np.nanmean(ranked, axis=0)).tolist()


def coverage(rows: list[dict]) -> dict:
    """Corner shares pooled over a set's generation seeds (each has IPC images a class)."""
    import numpy as np

    from dmgd.data.corners import share_difference

    real = real_train_shares()
    pooled = np.nanmean(np.stack([np.asarray(r["shares"]) for r in rows]), axis=0)
    ranks, real_ranks = rank_shares(pooled, real), rank_shares(real, real)
    worst = max(abs(s - t) for s, t in zip(ranks, real_ranks))
    return {"rank_shares": ranks, "real_rank_shares": real_ranks, "worst_rank_gap": worst,
            "within_10": worst <= 10.0, "mad": share_difference(pooled, real),
            "majority": ranks[0]}


# --- stages ---------------------------------------------------------------------------------


def summarise(rows: list[dict], named: list[tuple[str, str]]) -> dict[str, dict]:
    out = {}
    for name, text in named:
        mine = [r for r in rows if r["id"] == text_id(text)]
        if not mine:
            continue
        out[name] = {"text": text, "proxy": stats([r["score"] for r in mine]),
                     "ot": stats([r["ot"] for r in mine]), "diversity": stats([r["diversity"] for r in mine]),
                     "coverage": coverage(mine)}
    return out


def complexity(p: dict) -> tuple:
    return (len(p), p.get("scale", 1.0), p.get("cfg", 2.0))


def choose(summary: dict[str, dict], changes: dict[str, dict]) -> str:
    """The best proxy mean among the guided candidates; candidates within one SE of the
    difference of the best (sqrt(2) x the median SE) tie, and a tie goes to the smaller change."""
    guided = {n: s for n, s in summary.items() if n in changes}
    best = max(guided, key=lambda n: guided[n]["proxy"]["mean"])
    ses = sorted(s["proxy"]["se"] for s in guided.values() if not math.isnan(s["proxy"]["se"]))
    band = math.sqrt(2) * ses[len(ses) // 2] if ses else 0.0
    tied = [n for n, s in guided.items() if s["proxy"]["mean"] >= guided[best]["proxy"]["mean"] - band]
    return min(tied, key=lambda n: (complexity(changes[n]), -guided[n]["proxy"]["mean"]))


def tune(a) -> tuple[str, dict]:
    from dmgd.data.corners import write_image_folder

    fit, val = a.out / "fit", a.out / "val"
    for folder, split in ((fit, "fit"), (val, "val")):
        if not folder.is_dir():
            write_image_folder(folder, split)
    cands = tune_candidates()
    rows = make_sets("tune", [(n, t) for n, t, _ in cands], a.tune_gen_seeds, a, str(fit), val, fit)
    changes = {n: p for n, _, p in cands if p is not None}
    first = choose(summarise(rows, [(n, t) for n, t, _ in cands]), changes)
    more = refine_candidates(changes[first])
    cands += more
    rows = make_sets("tune", [(n, t) for n, t, _ in cands], a.tune_gen_seeds, a, str(fit), val, fit)
    changes.update({n: p for n, _, p in more})
    summary = summarise(rows, [(n, t) for n, t, _ in cands])
    chosen = choose(summary, changes)
    print(f"tune: chosen {chosen!r} (first round: {first!r})", flush=True)
    return chosen, {"summary": summary, "changes": {n: label(p) for n, p in changes.items()}, "chosen": chosen,
                    "first_round": first}


def test(a, retuned: str | None) -> dict:
    import tempfile

    from dmgd.data.corners import write_image_folder

    named = test_sets(retuned)
    tmp = Path(tempfile.mkdtemp())
    test_dir, train_dir = write_image_folder(tmp / "test", "test"), write_image_folder(tmp / "train", "train")
    rows = make_sets("test", named, a.gen_seeds, a, None, test_dir, train_dir)
    path = a.out / ("trainings.jsonl" if a.protocol == "hard" else "trainings-soft.jsonl")
    done = {(r["id"], r["gen_seed"], r["seed"]) for r in load(path)}
    made = {(r["id"], r["gen_seed"]) for r in rows}
    # Most important first (the goals' pairs), so a cut run still answers them.
    jobs = [(n, t, g, s, str(a.out), a.protocol) for s in range(a.seeds) for g in a.gen_seeds for n, t in named
            if (text_id(t), g) in made and (text_id(t), g, s) not in done]
    if a.max_trainings is not None:
        jobs = jobs[:a.max_trainings]
    if jobs and a.protocol == "soft":
        from dmgd.evaluation.teacher import ensure_embedded_teacher

        print(f"the corners teacher: {ensure_embedded_teacher('corners')}", flush=True)
    print(f"test: {len(jobs)} ConvNet-6 trainings ({a.protocol} labels) to run", flush=True)
    run_jobs(train_job, jobs, path, a.jobs,
             lambda r: f"{r['name']} g{r['gen_seed']} s{r['seed']}: {r['acc']:.1f} ({r['train_seconds']:.0f} s)")
    trainings = [r for r in load(path) if r["gen_seed"] in a.gen_seeds and r["seed"] < a.seeds]
    summary = summarise(rows, named)
    for name, text in named:
        if name in summary:
            summary[name]["convnet"] = stats([r["acc"] for r in trainings if r["id"] == text_id(text)])
    return {"summary": summary, "comparisons": comparisons(summary), "sheet": sheet(a, named)}


def recorded_retuned(path: Path) -> str | None:
    """The retuned recipe's text that an earlier tune stage recorded, if any."""
    try:
        tune = json.loads(path.read_text())["tune"]
        return tune["summary"][tune["chosen"]]["text"]
    except (OSError, ValueError, KeyError):
        return None


def difference(summary: dict, x: str, y: str, key: str = "convnet") -> dict | None:
    if x not in summary or y not in summary or key not in summary[x] or key not in summary[y]:
        return None
    sx, sy = summary[x][key], summary[y][key]
    d = sx["mean"] - sy["mean"]
    two_se = 2 * math.sqrt(sx["se"] ** 2 + sy["se"] ** 2)
    return {"a": x, "b": y, "measure": key, "diff": d, "two_se": two_se, "holds": d > two_se}


def comparisons(summary: dict) -> list[dict]:
    pairs = [("digits.dmgd transferred", "baseline.dmgd"), ("digits.dmgd transferred", "plain CFG 2"),
             ("digits.dmgd transferred", "random real"), ("dm-only K=10 (transferred)", "mean K=1 (transferred)"),
             ("mgd3.dmgd", "baseline.dmgd"), ("retuned on val", "digits.dmgd transferred"),
             ("retuned on val", "baseline.dmgd")]
    return [c for x, y in pairs if (c := difference(summary, x, y)) is not None]


def sheet(a, named: list[tuple[str, str]]) -> str:
    """One PNG: each set's generation-seed-0 images (rows: classes), side by side."""
    from PIL import Image, ImageDraw

    from dmgd.data.contact_sheet import contact_sheet

    tiles = [(n, contact_sheet(set_dir(a.out, t, a.gen_seeds[0], "test"), cell=24)) for n, t in named
             if (set_dir(a.out, t, a.gen_seeds[0], "test") / "manifest.json").is_file()
             or (t == "random-real" and set_dir(a.out, t, a.gen_seeds[0], "test").is_dir())]
    w, h = max(t.width for _, t in tiles), max(t.height for _, t in tiles)
    cols = 4
    out = Image.new("RGB", (cols * (w + 8), ((len(tiles) + cols - 1) // cols) * (h + 24)), "white")
    draw = ImageDraw.Draw(out)
    for i, (name, tile) in enumerate(tiles):
        x, y = (i % cols) * (w + 8), (i // cols) * (h + 24)
        draw.text((x + 4, y + 4), name, fill="black")
        out.paste(tile, (x, y + 20))
    path = Path(a.docs) / "corners.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


# --- report ---------------------------------------------------------------------------------


def pm(s: dict | None) -> str:
    if not s or s.get("n", 0) == 0:
        return "-"
    return f"{s['mean']:.1f} +- {2 * s['se']:.1f}" if s["n"] > 1 else f"{s['mean']:.1f}"


def shares_text(c: dict) -> str:
    return "/".join(f"{v:.0f}" for v in c["rank_shares"])


def tune_table(t: dict) -> list[str]:
    lines = ["| candidate (val split) | proxy (mean +- 2 SE) | corner shares by rank | MAD | OT to fit | diversity |",
             "|---|---|---|---|---|---|"]
    for name, s in sorted(t["summary"].items(), key=lambda kv: -kv[1]["proxy"]["mean"]):
        mark = " **(chosen)**" if name == t["chosen"] else ""
        lines.append(f"| {name}{mark} | {pm(s['proxy'])} | {shares_text(s['coverage'])} | "
                     f"{s['coverage']['mad']:.1f} | {s['ot']['mean']:.3f} | {s['diversity']['mean']:.2f} |")
    return lines


def test_table(r: dict) -> list[str]:
    real = next(iter(r["summary"].values()))["coverage"]["real_rank_shares"]
    lines = [f"Real corner shares by rank: {'/'.join(f'{v:.0f}' for v in real)} %.", "",
             "| set (test split) | ConvNet-6 (mean +- 2 SE, n) | corner shares by rank | worst rank gap | "
             "within 10 | MAD | proxy | OT to train | diversity |", "|---|---|---|---|---|---|---|---|---|"]
    for name, s in r["summary"].items():
        c, cn = s["coverage"], s.get("convnet")
        lines.append(f"| {name} | {pm(cn)} (n = {cn['n'] if cn else 0}) | {shares_text(c)} | {c['worst_rank_gap']:.1f} | "
                     f"{'yes' if c['within_10'] else 'no'} | {c['mad']:.1f} | {pm(s['proxy'])} | "
                     f"{s['ot']['mean']:.3f} | {s['diversity']['mean']:.2f} |")
    lines += ["", "| comparison | difference | 2 SE | > 2 SE |", "|---|---|---|---|"]
    for c in r["comparisons"]:
        lines.append(f"| {c['a']} - {c['b']} | {c['diff']:+.2f} | {c['two_se']:.2f} | {'holds' if c['holds'] else 'no'} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("DMGD_BENCH", "/tmp")) / "corners-bench")
    p.add_argument("--stages", nargs="+", default=["tune", "test"], choices=["tune", "test"])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--tune-gen-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--gen-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--seeds", type=int, default=2, help="ConvNet-6 classifier seeds per generation")
    p.add_argument("--max-trainings", type=int, default=None,
                   help="run at most this many of the missing trainings (most important first)")
    p.add_argument("--docs", default=str(ROOT / "docs" / "benchmarks"))
    p.add_argument("--protocol", choices=["hard", "soft"], default="hard",
                   help="soft: the test stage's trainings under RDED's soft labels from the corners teacher "
                        "(the test stage only; the retuned recipe is the one docs/benchmarks/corners.json records); "
                        "writes corners-soft.{json,md}")
    a = p.parse_args(argv)
    if a.protocol == "soft":
        a.stages = ["test"]
    a.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    report: dict = {"ipc": IPC, "gen_seeds": a.gen_seeds, "seeds": a.seeds, "tune_gen_seeds": a.tune_gen_seeds}
    retuned = None
    if "tune" in a.stages:
        chosen, report["tune"] = tune(a)
        retuned = report["tune"]["summary"][chosen]["text"]
    if a.protocol == "soft":
        retuned = recorded_retuned(ROOT / "docs" / "benchmarks" / "corners.json")
    if "test" in a.stages:
        report["test"] = test(a, retuned)
    report["protocol"] = a.protocol
    report["wall_seconds_this_call"] = time.time() - started
    docs = Path(a.docs)
    docs.mkdir(parents=True, exist_ok=True)
    stem = "corners" if a.protocol == "hard" else "corners-soft"
    (docs / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["# Corners testbed (benchmarks/corners.py" + (", soft labels" if a.protocol == "soft" else "") + ")", ""]
    if a.protocol == "soft":
        lines += ["ConvNet-6 trained with RDED's soft labels (`--protocol soft --teacher corners`: the corners "
                  "teacher, ConvNet-6 trained on the corners' whole train split) instead of the class labels; "
                  "everything else as the hard table in corners.md (the same sets).", ""]
    if "tune" in report:
        lines += ["## Retuning on the validation split", "", *tune_table(report["tune"]), ""]
    if "test" in report:
        lines += ["## Test split", "", *test_table(report["test"]), "", f"![contact sheets]({Path(report['test']['sheet']).name})"]
    (docs / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
