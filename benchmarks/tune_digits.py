"""Choose recipes/digits.dmgd's values on a validation part of the train split (issue 4).

    python benchmarks/tune_digits.py [--out DIR] [--jobs 2] [--gen-seeds 0 1] [--seeds 0 1] [--ipc50] [--grad-full]

The test split is never read. The digits' train split is split once more
(`dmgd.data.digits`: "fit", 1149 images, and "val", 288, stratified, fixed): every run
builds its k-means targets from "fit" (`data=` an ImageFolder of it), and every candidate
is scored by ConvNet-6 with the digits preset's full schedule (200 epochs at IPC 10, last
epoch) trained on the candidate's IPC-10 set and tested on "val", averaged over
generation seeds x classifier seeds.

Stages, each choosing on the previous one's winner (the order the issue's diagnosis gave):

1. CFG: baseline (hard label, CFG on every step) at each scale of CFGS: CFG 4 collapses
   the tiny DiT's classes to prototypes, so this is the first lever.
2. rho: the reference recipe (dmgd.dmgd: explore, soft labels, refine, OT on 30..45 with
   K = 10) at the chosen CFG, its rho ramp 0.05..0.5 multiplied by each of RHO_SCALES.
3. K and the OT window around the chosen rho.
4. With --ipc50: a check at IPC 50 (generation seed 0 only, it costs minutes a set): the
   chosen CFG's baseline, the chosen recipe, and the chosen recipe with rho x IPC50_RHO_SCALE,
   to see whether a stronger OT pull pays where the synthetic set is further from the real
   distribution. It chooses nothing; it is reported.
5. With --grad-full: the chosen recipe with `ot(grad=full)` (the gradient back-propagated
   through the denoiser, not Tweedie's explicit term only) at 1x and 100x rho, IPC 10.
   Reported, chooses nothing.

Cached under --out (default ~/.cache/dmgd/bench/tune_digits): sets, and one JSON line per
finished training in results.jsonl, so a rerun only does what is missing. Writes
docs/benchmarks/tune_digits.{json,md} and prints the chosen recipe.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks"
IPC = 10
CFGS = (1.0, 1.5, 2.0, 3.0, 4.0)
RHO_SCALES = (1, 10, 30, 100, 300, 1000)
REFERENCE_RHO = (0.05, 0.5)
WINDOWS = ((30, 45), (25, 45), (15, 45))
KS = (5, 10, 20)
IPC50_RHO_SCALE = 300

HEADER = "steps = 50\nsampler = ddpm\ncfg = {cfg}\n\n"
BASELINE = HEADER + "*: refine\n"
GUIDED = HEADER + ("t>=45: explore\n25..45: softlabel(bs=0.01, bn=0.06)\nt<25: refine\n"
                   "{w0}..{w1}: ot(K={k}, rho={r0:g}..{r1:g}{extra})\n")


def default_out() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dmgd" / "bench" / "tune_digits"


def baseline(cfg: float) -> tuple[str, str]:
    return f"baseline cfg={cfg:g}", BASELINE.format(cfg=cfg)


def guided(cfg: float, scale: float, window: tuple[int, int] = WINDOWS[0], k: int = 10,
           grad: str = "tweedie") -> tuple[str, str]:
    r0, r1 = REFERENCE_RHO[0] * scale, REFERENCE_RHO[1] * scale
    name = f"dmgd cfg={cfg:g} rho={r0:g}..{r1:g} ({scale:g}x) K={k} {window[0]}..{window[1]}"
    extra = "" if grad == "tweedie" else f", grad={grad}"
    return name + extra.replace(", ", " "), GUIDED.format(cfg=cfg, w0=window[0], w1=window[1], k=k, r0=r0,
                                                          r1=r1, extra=extra)


def text_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --- one candidate x one generation seed: generate, measure, train --------------------------


def job(args: tuple[str, str, int, tuple[int, ...], str, str, str, int]) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    os.environ["DMGD_THREADS"] = "1"
    import dmgd
    from dmgd.evaluation.protocol import EvalConfig, evaluate

    name, text, gen_seed, seeds, out, fit, val, ipc = args
    d = Path(out) / "sets" / (f"{text_id(text)}-g{gen_seed}" + ("" if ipc == IPC else f"-ipc{ipc}"))
    tic = time.perf_counter()
    try:
        dmgd.run(text, d, ipc=ipc, seed=gen_seed, data=fit, resume=(d / "manifest.json").is_file())
    except Exception as error:  # noqa: BLE001 - a candidate that cannot be generated is a result
        return [{"name": name, "text": text, "ipc": ipc, "gen_seed": gen_seed, "error": f"{type(error).__name__}: {error}"}]
    gen_seconds = time.perf_counter() - tic
    figures = set_figures(d, fit, val, ipc)
    rows = []
    for seed in seeds:
        config = EvalConfig(ipc=ipc, preset="digits", model="convnet", seeds=(seed,), eval_every=1000, device="cpu")
        r = evaluate(d, val, config, write=False)
        rows.append({"name": name, "text": text, "ipc": ipc, "gen_seed": gen_seed, "seed": seed, "val": r.seeds[0].last,
                     "epochs": r.config.epochs, "gen_seconds": gen_seconds, "train_seconds": r.seeds[0].seconds,
                     **figures})
    return rows


def set_figures(d: Path, fit: str, val: str, ipc: int) -> dict[str, float]:
    """OT distance to each class's fit images and diversity (train data only), and a logistic
    regression fitted on the set, scored on val."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from dmgd.data.images import load_image_folder
    from dmgd.evaluation.protocol import read_distilled
    from quality import ot_and_diversity  # benchmarks/quality.py, beside this script

    s = read_distilled(d, ipc=ipc, preset="digits")
    x, y = s.images.reshape(len(s.images), -1), s.labels
    real = load_image_folder(fit, channels=1)
    ot, diversity = ot_and_diversity(x, y, torch.as_tensor(real.images).reshape(len(real.labels), -1),
                                     torch.as_tensor(real.labels))
    v = load_image_folder(val, channels=1)
    vx = torch.as_tensor(v.images).reshape(len(v.labels), -1).numpy()
    logreg = LogisticRegression(max_iter=2000).fit(x.numpy(), y.numpy())
    return {"ot": ot, "diversity": diversity,
            "logreg_val": 100.0 * float((logreg.predict(vx) == v.labels.numpy()).mean())}


# --- bookkeeping ------------------------------------------------------------------------------


def load_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarise(rows: list[dict], text: str, ipc: int) -> dict | None:
    mine = [r for r in rows if r["text"] == text and r.get("ipc", IPC) == ipc and "val" in r]
    if not mine:
        return None
    vals = [r["val"] for r in mine]
    n, m = len(vals), sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1)) if n > 1 else float("nan")
    per_gen = {}
    for r in mine:
        per_gen.setdefault(r["gen_seed"], r)
    figs = list(per_gen.values())
    return {"n": n, "mean": m, "std": sd, "se": sd / math.sqrt(n),
            "ot": sum(f["ot"] for f in figs) / len(figs), "diversity": sum(f["diversity"] for f in figs) / len(figs),
            "logreg_val": sum(f["logreg_val"] for f in figs) / len(figs)}


def run_stage(label: str, candidates: list[tuple[str, str]], a: argparse.Namespace, fit: str, val: str,
              results: Path, ipc: int = IPC, gen_seeds: list[int] | None = None) -> dict[str, dict]:
    """Run what is missing of the candidates; returns name -> summary (failed: error)."""
    gen_seeds = gen_seeds or a.gen_seeds
    done = {(r["text"], r.get("ipc", IPC), r["gen_seed"]) for r in load_results(results)}
    jobs = [(name, text, g, tuple(a.seeds), str(a.out), fit, val, ipc)
            for name, text in candidates for g in gen_seeds if (text, ipc, g) not in done]
    print(f"stage {label}: {len(candidates)} candidates, {len(jobs)} generations to run", flush=True)
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        for rows in pool.map(job, jobs):
            with results.open("a") as fh:
                for r in rows:
                    fh.write(json.dumps(r) + "\n")
            r = rows[0]
            print(f"  {r['name']} gen {r['gen_seed']}: "
                  + (r["error"] if "error" in r else " ".join(f"{x['val']:.1f}" for x in rows)), flush=True)
    rows = load_results(results)
    summary = {}
    for name, text in candidates:
        s = summarise(rows, text, ipc)
        errors = [r["error"] for r in rows if r["text"] == text and r.get("ipc", IPC) == ipc and "error" in r]
        summary[name] = {"text": text, "stage": label, **(s or {}), **({"error": errors[0]} if errors else {})}
        print(f"  {name:48s} " + (f"val {s['mean']:.2f} +- {s['se']:.2f} (n={s['n']})  OT {s['ot']:.3f}  "
                                  f"div {s['diversity']:.2f}  logreg {s['logreg_val']:.1f}" if s else errors[0]),
              flush=True)
    return summary


def best(summary: dict[str, dict]) -> str:
    scored = {n: s["mean"] for n, s in summary.items() if "mean" in s and "error" not in s}
    return max(scored, key=scored.get)


def winner(summary: dict[str, dict], candidates: dict) -> float:
    """The parameter value (key of `candidates`, value (name, text)) of the stage's best candidate."""
    name = best(summary)
    return next(value for value, (candidate, _) in candidates.items() if candidate == name)


def report(stages: dict[str, dict], chosen: str, a: argparse.Namespace) -> str:
    lines = [f"Validation accuracy (ConvNet-6, digits preset, {IPC} images per class unless the stage says "
             "otherwise, last epoch), "
             f"targets from the fit split, scored on the val split; mean +- SE over generation seeds "
             f"{list(a.gen_seeds)} x classifier seeds {list(a.seeds)}. OT: to each class's fit images; "
             "div: mean pairwise L2 within a class; logreg: logistic regression on the set, val top-1 %.", ""]
    for label, summary in stages.items():
        lines += [f"**Stage {label}**", "", "| candidate | val % | OT | div | logreg |", "| --- | --- | --- | --- | --- |"]
        for name, s in summary.items():
            mark = " **(chosen)**" if name == chosen else ""
            if "mean" in s:
                lines.append(f"| {name}{mark} | {s['mean']:.2f} +- {s['se']:.2f} | {s['ot']:.3f} | "
                             f"{s['diversity']:.2f} | {s['logreg_val']:.1f} |")
            else:
                lines.append(f"| {name} | failed: {s.get('error', '?')} | | | |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=default_out())
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--gen-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--ipc50", action="store_true", help="also stage 4, the IPC-50 check (about 15 minutes)")
    p.add_argument("--grad-full", action="store_true", help="also stage 5, ot(grad=full) (a few minutes)")
    p.add_argument("--docs", type=Path, default=DOCS)
    a = p.parse_args(argv)
    a.out = a.out.expanduser()
    a.out.mkdir(parents=True, exist_ok=True)
    from dmgd.data.digits import write_image_folder

    fit = str(write_image_folder(a.out / "fit", "fit"))
    val = str(write_image_folder(a.out / "val", "val"))
    results = a.out / "results.jsonl"
    started = time.perf_counter()

    by_cfg = {cfg: baseline(cfg) for cfg in CFGS}
    stages = {"1 (CFG)": run_stage("1 (CFG)", list(by_cfg.values()), a, fit, val, results)}
    cfg = winner(stages["1 (CFG)"], by_cfg)
    by_scale = {scale: guided(cfg, scale) for scale in RHO_SCALES}
    stages["2 (rho)"] = run_stage("2 (rho)", list(by_scale.values()), a, fit, val, results)
    scale = winner(stages["2 (rho)"], by_scale)
    third = [guided(cfg, scale, w, 10) for w in WINDOWS[1:]] + [guided(cfg, scale, WINDOWS[0], k) for k in KS if k != 10]
    stages["3 (window, K)"] = run_stage("3 (window, K)", third, a, fit, val, results)
    everything = {n: s for st in stages.values() for n, s in st.items() if n.startswith("dmgd")}
    chosen = best(everything)
    if a.ipc50:
        check = [baseline(cfg), (chosen, everything[chosen]["text"]), guided(cfg, scale * IPC50_RHO_SCALE)]
        stages["4 (IPC 50 check, generation seed 0)"] = run_stage(
            "4 (IPC 50 check, generation seed 0)", check, a, fit, val, results, ipc=50, gen_seeds=[0])
    if a.grad_full:
        label = "5 (gradient through the denoiser)"
        stages[label] = run_stage(label, [guided(cfg, s, grad="full") for s in (1, 100)], a, fit, val, results)
    text = report(stages, chosen, a)
    print(text)
    print("chosen:", chosen, "\n" + everything[chosen]["text"])
    a.docs.mkdir(parents=True, exist_ok=True)
    (a.docs / "tune_digits.md").write_text(text)
    (a.docs / "tune_digits.json").write_text(json.dumps(
        {"ipc": IPC, "gen_seeds": a.gen_seeds, "seeds": a.seeds, "stages": stages, "chosen": chosen,
         "chosen_text": everything[chosen]["text"], "wall_seconds_this_call": time.perf_counter() - started},
        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
