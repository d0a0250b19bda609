"""Retarget the reference DMGD schedule to the embedded digits DiT, chosen on the VAL split.

    python benchmarks/retarget_digits.py [--out /tmp/retarget] [--jobs 2] [--gen-seeds 0 1]
        [--stages search refine confirm] [--confirm-seeds 0 1] [--docs docs/benchmarks]

The test split is never read. Every generated set builds its k-means targets from the
"fit" part of the train split (`data=` an ImageFolder of it, `dmgd.data.digits`); every
score is on "val" (288 images).

Search proxy (fast, deterministic, independent of dmgd's own classifiers): three
scikit-learn classifiers fitted on the 100 synthetic images (IPC 10, flattened pixels of
the PNGs in [-1, 1]): logistic regression, an RBF SVM (C = 1, gamma "scale") and 1-NN;
the score of a set is their mean val top-1 %. A candidate's score is the mean over
generation seeds (default 0, 1) of its sets' scores, reported with 2 SE (SE = sample std
/ sqrt(n)). Also recorded: diversity (mean pairwise L2 within a class, pixels in [-1, 1],
averaged over classes; the fit split's own classes give the real value), the OT distance
of each class to its fit images (`quality.ot_and_diversity`), and at report time the mean
absolute pixel difference to the unguided set at the same CFG and seed.

Stages:
  search   anchors (baseline.dmgd, digits-baseline.dmgd, dmgd.dmgd, digits.dmgd, random
           real from fit) and the JOINT grid: OT window x rho scale x CFG (and CFG ramps).
  refine   around the search's best guided candidate: K, the soft-label/explore window,
           soft-label strengths (bs, bn), lam's ramp, a CFG ramp in refine.
  confirm  ConvNet-6 as `dmgd eval SET --real val` (digits preset, full epochs), on the
           chosen candidate, the runners-up, the plain sampler at the same CFG and random
           real; gen seeds x --confirm-seeds classifier seeds.
Choice: the guided candidate with the best proxy mean; candidates within one SE of the
difference of the best (sqrt(2) x the median candidate SE) count as tied, and a tie goes to
the simpler one (fewest changes from the reference schedule, then the smaller rho, then the
higher mean).

Resumable: sets under OUT/sets/, one JSON line per finished set in OUT/results.jsonl and
per finished ConvNet training in OUT/confirm.jsonl; a rerun only does what is missing.
Writes docs/benchmarks/retarget_digits.{json,table.md,png} (the table, every candidate, the contact
sheet); docs/benchmarks/retarget_digits.md and recipes/digits-retargeted.dmgd are written
from them by hand (the reading and the recipe's header).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # quality.py beside this script
DOCS = ROOT / "docs" / "benchmarks"
RECIPES = ROOT / "recipes"
IPC = 10
REFERENCE_RHO = (0.05, 0.5)
REF = {"cfg": 4.0, "window": (30, 45), "scale": 1, "K": 10, "sl": (25, 45), "bs": 0.01, "bn": 0.06,
       "lam": None, "refine_cfg": None}
RANDOM_REAL = "random real (fit)"
ANCHOR_FILES = ("baseline.dmgd", "digits-baseline.dmgd", "dmgd.dmgd", "digits.dmgd")


# --- candidates --------------------------------------------------------------------------------


def guided(**changes) -> tuple[str, str, dict]:
    p = {**REF, **changes}
    r0, r1 = REFERENCE_RHO[0] * p["scale"], REFERENCE_RHO[1] * p["scale"]
    sl0, sl1 = p["sl"]
    lam = f", lam={p['lam']}" if p["lam"] else ""
    refine = f"refine(cfg={p['refine_cfg']})" if p["refine_cfg"] else "refine"
    refine_window = f"0..{sl0}" if p["refine_cfg"] else f"t<{sl0}"  # a ramp needs a bounded window
    text = (f"steps = 50\nsampler = ddpm\ncfg = {p['cfg']:.1f}\n\n"
            f"t>={sl1}: explore\n{sl0}..{sl1}: softlabel(bs={p['bs']:g}, bn={p['bn']:g}{lam})\n"
            f"{refine_window}: {refine}\n{p['window'][0]}..{p['window'][1]}: ot(K={p['K']}, rho={r0:g}..{r1:g})\n")
    name = f"cfg={p['cfg']:g} ot {p['window'][0]}..{p['window'][1]} rho x{p['scale']:g}"
    for key, label in (("K", "K"), ("bs", "bs"), ("bn", "bn"), ("lam", "lam"), ("refine_cfg", "refine cfg")):
        if p[key] != REF[key]:
            name += f" {label}={p[key]}"
    if p["sl"] != REF["sl"]:
        name += f" sl {sl0}..{sl1}"
    return name, text, p


def complexity(p: dict | None) -> tuple:
    """Changes from the reference schedule (the tie-break: fewer first, then smaller rho)."""
    if p is None:
        return (99, 0.0)
    changed = sum(p[k] != REF[k] for k in REF if k != "cfg")
    return (changed, float(p["scale"]))


def anchors() -> list[tuple[str, str, dict | None]]:
    out = [(f, (RECIPES / f).read_text(), None) for f in ANCHOR_FILES]
    return out + [(RANDOM_REAL, "random-real", None)]


SEARCH_WINDOWS_CFG2 = ((11, 32), (10, 25), (5, 25), (20, 40), (15, 35), (30, 45))
SEARCH_SCALES_CFG2 = (100, 1000, 3000)


def search_candidates() -> list[tuple[str, str, dict | None]]:
    """The joint grid, most promising region first (so a stopped run has the key rows)."""
    c = anchors()
    c.append(guided(cfg=2.0, window=(11, 32), scale=1000))
    for w in SEARCH_WINDOWS_CFG2:
        for s in SEARCH_SCALES_CFG2:
            c.append(guided(cfg=2.0, window=w, scale=s))
    c += [guided(cfg=2.0, window=w, scale=300) for w in ((11, 32), (10, 25), (5, 25))]
    c.append(guided(cfg=2.0, window=(11, 32), scale=1))
    for w in ((30, 45), (11, 32), (5, 25)):
        for s in (100, 1000):
            c.append(guided(cfg=4.0, window=w, scale=s))
    c.append(guided(cfg=4.0, window=(11, 32), scale=3000))
    # CFG ramps in refine (cfg setting 2 for the soft-label stages)
    c.append(guided(cfg=2.0, window=(11, 32), scale=1000, refine_cfg="4.0..1.5"))
    c.append(guided(cfg=4.0, window=(11, 32), scale=1000, refine_cfg="4.0..1.5"))
    seen, unique = set(), []
    for cand in c:
        if cand[1] not in seen:
            seen.add(cand[1])
            unique.append(cand)
    return unique


def refine_candidates(best: dict) -> list[tuple[str, str, dict | None]]:
    """Around the search's best: K, the soft-label window, soft-label strengths, lam's ramp.
    (The CFG ramp in refine and the rho neighbours are in the search grid already; the
    soft-label window 5..25 and more were cut to fit the session's time.)"""
    base = {k: best[k] for k in REF}
    c = [guided(**{**base, "K": k}) for k in (5, 20)]
    c.append(guided(**{**base, "sl": (15, 35)}))
    c.append(guided(**{**base, "bs": 0.1, "bn": 0.3}))
    c.append(guided(**{**base, "lam": "0.5..1"}))
    return c


def text_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def set_dir(out: Path, text: str, gen: int) -> Path:
    return out / "sets" / f"{text_id(text)}-g{gen}"


# --- one set: generate, score ------------------------------------------------------------------


def read_set(d: Path):
    """(x [N, 64] float64 in [-1, 1], y [N]) from an ImageFolder of 8x8 PNGs, classes 0..9."""
    import numpy as np
    from PIL import Image

    xs, ys = [], []
    for c in range(10):
        for f in sorted((d / str(c)).glob("*.png")):
            xs.append(np.asarray(Image.open(f).convert("L"), dtype=np.float64).reshape(-1) / 127.5 - 1.0)
            ys.append(c)
    return np.stack(xs), np.asarray(ys)


def diversity(x, y) -> float:
    import numpy as np
    from scipy.spatial.distance import pdist

    return float(np.mean([pdist(x[y == c]).mean() for c in sorted(set(y.tolist()))]))


def proxy(d: Path, fit: Path, val: Path) -> dict:
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    from quality import ot_and_diversity

    x, y = read_set(d)
    vx, vy = read_set(val)
    fx, fy = read_set(fit)
    accs = {}
    for name, clf in (("logreg", LogisticRegression(max_iter=5000)), ("svm", SVC(kernel="rbf", C=1.0, gamma="scale")),
                      ("knn1", KNeighborsClassifier(n_neighbors=1))):
        accs[name] = 100.0 * float((clf.fit(x, y).predict(vx) == vy).mean())
    ot, _ = ot_and_diversity(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y),
                             torch.as_tensor(fx, dtype=torch.float32), torch.as_tensor(fy))
    return {**accs, "score": sum(accs.values()) / 3, "diversity": diversity(x, y), "ot": ot}


def gen_job(args: tuple) -> dict:
    import torch

    torch.set_num_threads(1)
    os.environ["DMGD_THREADS"] = "1"
    name, text, gen, out, fit, val = args
    d = set_dir(Path(out), text, gen)
    tic = time.perf_counter()
    try:
        if not (d / "manifest.json").is_file():
            if text == "random-real":
                from dmgd.data.sample_real import sample_real

                sample_real(d, IPC, seed=gen, data=fit, overwrite=True)
            else:
                import dmgd

                # batch_size=10: all ten classes in one block; the images equal the default's
                # (per-sample generators), in half the time.
                dmgd.run(text, d, ipc=IPC, seed=gen, data=fit, batch_size=10, overwrite=d.exists())
        seconds = time.perf_counter() - tic
        return {"name": name, "text": text, "id": text_id(text), "gen_seed": gen, "gen_seconds": seconds,
                **proxy(d, Path(fit), Path(val))}
    except Exception as error:  # noqa: BLE001 - a candidate that cannot be generated is a result
        return {"name": name, "text": text, "id": text_id(text), "gen_seed": gen,
                "error": f"{type(error).__name__}: {error}"}


def train_job(args: tuple) -> dict:
    import torch

    torch.set_num_threads(1)
    from dmgd.evaluation.protocol import EvalConfig, evaluate

    name, text, gen, seed, out, val = args
    d = set_dir(Path(out), text, gen)
    config = EvalConfig(ipc=IPC, preset="digits", model="convnet", seeds=(seed,), eval_every=1000, device="cpu")
    r = evaluate(d, val, config, write=False)
    return {"name": name, "text": text, "id": text_id(text), "gen_seed": gen, "seed": seed,
            "val": r.seeds[0].last, "epochs": r.config.epochs, "train_seconds": r.seeds[0].seconds}


# --- bookkeeping ----------------------------------------------------------------------------


def load(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_jobs(fn, jobs: list[tuple], path: Path, n: int, label) -> None:
    if not jobs:
        return
    with ProcessPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(fn, j) for j in jobs]
        for i, f in enumerate(as_completed(futures), 1):
            r = f.result()
            with path.open("a") as fh:
                fh.write(json.dumps(r) + "\n")
            print(f"  [{i}/{len(jobs)}] {label(r)}", flush=True)


def generate(cands, a, fit, val) -> None:
    results = a.out / "results.jsonl"
    done = {(r["id"], r["gen_seed"]) for r in load(results) if "error" not in r}
    jobs = [(n, t, g, str(a.out), fit, val) for n, t, _ in cands for g in a.gen_seeds if (text_id(t), g) not in done]
    print(f"{len(cands)} candidates, {len(jobs)} sets to make", flush=True)
    run_jobs(gen_job, jobs, results, a.jobs, lambda r: f"{r['name']} g{r['gen_seed']}: " + (
        r["error"] if "error" in r else f"score {r['score']:.1f} div {r['diversity']:.2f} ({r['gen_seconds']:.0f} s)"))


def stats(values: list[float]) -> dict:
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return {"n": n, "mean": m, "std": sd, "se": sd / math.sqrt(n) if n > 1 else float("nan")}


def summarise(cands, a) -> dict[str, dict]:
    rows = load(a.out / "results.jsonl")
    out = {}
    for name, text, p in cands:
        mine = {r["gen_seed"]: r for r in rows if r["id"] == text_id(text) and "error" not in r}
        mine = [mine[g] for g in sorted(mine)]
        errors = [r["error"] for r in rows if r["id"] == text_id(text) and "error" in r]
        s = {"name": name, "text": text, "params": p, "per_seed": mine}
        if mine:
            s.update(stats([r["score"] for r in mine]))
            for key in ("logreg", "svm", "knn1", "diversity", "ot"):
                s[key] = sum(r[key] for r in mine) / len(mine)
        elif errors:
            s["error"] = errors[0]
        out[name] = s
    return out


def choose(summary: dict[str, dict]) -> str | None:
    """The best guided candidate by proxy mean; a candidate within one SE of the difference
    of the best ties with it, and a tie goes to the simpler one (`complexity`), then the higher
    mean. The SE of the difference is sqrt(2) x the MEDIAN candidate SE: with two generation
    seeds one candidate's own SE is too noisy to set the band (a lucky seed pair gives a
    wide band that would call nearly everything a tie)."""
    guided_ = {n: s for n, s in summary.items() if s["params"] is not None and "mean" in s and s["n"] >= 2}
    if not guided_:
        return None
    ses = sorted(s["se"] for s in guided_.values())
    band = math.sqrt(2) * ses[len(ses) // 2]
    top = max(guided_.values(), key=lambda s: s["mean"])["mean"]
    tied = [n for n, s in guided_.items() if top - s["mean"] <= band]
    return min(tied, key=lambda n: (complexity(guided_[n]["params"]), -guided_[n]["mean"]))


def pixel_diff(out: Path, text: str, twin: str, gens) -> float | None:
    import numpy as np

    diffs = []
    for g in gens:
        a_, b_ = set_dir(out, text, g), set_dir(out, twin, g)
        if (a_ / "manifest.json").is_file() and (b_ / "manifest.json").is_file():
            diffs.append(float(np.abs(read_set(a_)[0] - read_set(b_)[0]).mean()))
    return sum(diffs) / len(diffs) if diffs else None


# --- report ---------------------------------------------------------------------------------------


def fmt(s: dict) -> str:
    return f"{s['mean']:.2f} +- {2 * s['se']:.2f}" if "mean" in s else s.get("error", "not run")


def report(summary, chosen, confirm, a, real_div, started) -> None:
    out = a.out
    twins = {2.0: (RECIPES / "digits-baseline.dmgd").read_text(), 4.0: (RECIPES / "baseline.dmgd").read_text()}
    for s in summary.values():
        if s["params"] is not None:
            s["pixel_diff_vs_plain"] = pixel_diff(out, s["text"], twins.get(s["params"]["cfg"], ""), a.gen_seeds)
    ranked = sorted((s for s in summary.values() if "mean" in s), key=lambda s: -s["mean"])
    lines = [
        "Proxy: mean val top-1 % of logistic regression, RBF SVM and 1-NN fitted on the IPC-10 set's pixels; "
        f"targets from the fit split, scores on the val split (288 images); mean +- 2 SE over generation seeds "
        f"{a.gen_seeds}. div: mean pairwise L2 within a class (pixels in [-1, 1]; real fit classes: {real_div:.2f}). "
        "OT: to each class's fit images. dpx: mean |pixel| difference to the plain sampler at the same CFG and seed.",
        "", "| # | candidate | proxy % (2 SE) | logreg | SVM | 1-NN | div | OT | dpx |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i, s in enumerate(ranked, 1):
        mark = " **(chosen)**" if s["name"] == chosen else ""
        anchor = " *(anchor)*" if s["params"] is None else ""
        dpx = s.get("pixel_diff_vs_plain")
        lines.append(f"| {i} | {s['name']}{anchor}{mark} | {fmt(s)} | {s['logreg']:.1f} | {s['svm']:.1f} | "
                     f"{s['knn1']:.1f} | {s['diversity']:.2f} | {s['ot']:.3f} | "
                     + (f"{dpx:.3f}" if dpx is not None else "") + " |")
    failed = [s for s in summary.values() if "error" in s]
    for s in failed:
        lines.append(f"| - | {s['name']} | failed: {s['error']} | | | | | | |")
    conf = {}
    for r in confirm:
        conf.setdefault(r["name"], []).append(r["val"])
    conf_stats = {n: {**stats(v), "values": v} for n, v in conf.items()}
    if conf_stats:
        lines += ["", "ConvNet-6 confirmation (`dmgd.evaluate(set, real_dir=VAL, EvalConfig(ipc=10, preset='digits', "
                  "model='convnet'))`, 200 epochs, last epoch), val top-1 %, mean +- 2 SE over generation seeds x "
                  f"classifier seeds {a.confirm_seeds}:", "", "| candidate | ConvNet-6 val % (2 SE) | n | values |",
                  "| --- | --- | --- | --- |"]
        for n, s in sorted(conf_stats.items(), key=lambda kv: -kv[1]["mean"]):
            lines.append(f"| {n} | {fmt(s)} | {s['n']} | {' '.join(f'{v:.1f}' for v in s['values'])} |")
    (a.docs / "retarget_digits.table.md").write_text("\n".join(lines) + "\n")
    (a.docs / "retarget_digits.json").write_text(json.dumps(
        {"ipc": IPC, "gen_seeds": a.gen_seeds, "confirm_seeds": a.confirm_seeds, "split": "targets: fit, scores: val",
         "proxy": "mean of logreg / RBF SVM (C=1, gamma scale) / 1-NN val top-1 % on flattened PNG pixels in [-1, 1]",
         "real_fit_diversity": real_div, "chosen": chosen, "candidates": summary, "confirm": confirm,
         "confirm_summary": conf_stats, "wall_seconds_this_call": time.perf_counter() - started}, indent=1))
    print("\n".join(lines))


def sheet(a, chosen_text: str, plain_text: str, extra: tuple[str, str] | None = None) -> None:
    from PIL import Image, ImageDraw

    from dmgd.data.contact_sheet import contact_sheet

    panels = [("plain sampler, same CFG (gen seed 0)", set_dir(a.out, plain_text, 0)),
              ("chosen", set_dir(a.out, chosen_text, 0)),
              ("random real (fit)", set_dir(a.out, "random-real", 0))]
    if extra:
        panels.insert(2, (extra[0], set_dir(a.out, extra[1], 0)))
    images = [(t, contact_sheet(d, cell=32)) for t, d in panels if (d / "manifest.json").is_file()]
    if not images:
        return
    w = sum(im.width for _, im in images) + 20 * (len(images) - 1)
    h = max(im.height for _, im in images) + 20
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for title, im in images:
        draw.text((x + 4, 4), title, fill="black")
        canvas.paste(im, (x, 20))
        x += im.width + 20
    canvas.save(a.docs / "retarget_digits.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/retarget"))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--gen-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--confirm-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--stages", nargs="*", default=["search", "refine", "confirm"],
                   choices=["search", "refine", "confirm"])
    p.add_argument("--confirm-max", type=int, default=4, help="sets to confirm, in priority order")
    p.add_argument("--confirm-extra", nargs="*", default=[], help="candidate names to confirm too (after the others)")
    p.add_argument("--docs", type=Path, default=DOCS)
    a = p.parse_args(argv)
    started = time.perf_counter()
    a.out.mkdir(parents=True, exist_ok=True)
    a.docs.mkdir(parents=True, exist_ok=True)
    from dmgd.data.digits import write_image_folder

    fit, val = a.out / "fit", a.out / "val"
    for folder, split in ((fit, "fit"), (val, "val")):
        if not folder.is_dir():
            write_image_folder(folder, split)
    fx, fy = read_set(fit)
    real_div = diversity(fx, fy)

    cands = search_candidates()
    if "search" in a.stages:
        generate(cands, a, str(fit), str(val))
    summary = summarise(cands, a)
    best_search = choose(summary)
    if best_search and ("refine" in a.stages or any(r["name"] not in summary for r in load(a.out / "results.jsonl"))):
        extra = [c for c in refine_candidates(summary[best_search]["params"]) if c[1] not in {t for _, t, _ in cands}]
        if "refine" in a.stages:
            print(f"refine around: {best_search}")
            generate(extra, a, str(fit), str(val))
        cands += extra
        summary = summarise(cands, a)
    chosen = choose(summary)
    confirm_path = a.out / "confirm.jsonl"
    if chosen:
        cfg = summary[chosen]["params"]["cfg"]
        plain = "digits-baseline.dmgd" if cfg == 2.0 else "baseline.dmgd"
        guided_ranked = sorted((s for s in summary.values() if s["params"] is not None and "mean" in s),
                               key=lambda s: -s["mean"])
        order = [chosen, plain, RANDOM_REAL] + [s["name"] for s in guided_ranked if s["name"] != chosen][:2] + ["digits.dmgd"]
        order = list(dict.fromkeys(list(dict.fromkeys(order))[: a.confirm_max] + a.confirm_extra))
        if "confirm" in a.stages:
            done = {(r["id"], r["gen_seed"], r["seed"]) for r in load(confirm_path)}
            jobs = [(n, summary[n]["text"], g, s, str(a.out), str(val)) for n in order for g in a.gen_seeds
                    for s in a.confirm_seeds if (text_id(summary[n]["text"]), g, s) not in done]
            print(f"confirm {order}: {len(jobs)} trainings", flush=True)
            run_jobs(train_job, jobs, confirm_path, a.jobs,
                     lambda r: f"{r['name']} g{r['gen_seed']} s{r['seed']}: {r['val']:.1f} ({r['train_seconds']:.0f} s)")
        colleague = guided(cfg=2.0, window=(11, 32), scale=1000)
        sheet(a, summary[chosen]["text"], summary[plain]["text"],
              None if colleague[0] == chosen else (colleague[0], colleague[1]))
    report(summary, chosen, load(confirm_path), a, real_div, started)
    if chosen:
        print(f"\nchosen: {chosen}\n{summary[chosen]['text']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
