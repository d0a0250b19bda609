"""A sweep's report: OUT/sweep.json, the table (OUT/sweep.md; `summary_table` for the
terminal), the plot (OUT/sweep.png: the score against each swept parameter, mean +- SE) and
the chosen variant as a plain recipe (OUT/selected.dmgd)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from dmgd.data.atomic import atomic_write_json, atomic_write_text
from dmgd.language.formatter import canonical_hash, canonical_text
from dmgd.language.sweep import Variant, sweep_points
from dmgd.sweep.plan import SweepPlan
from dmgd.sweep.scores import SELECTION_RULE, VariantScore

__all__ = ["write_report", "sweep_record", "markdown_table", "summary_table", "plot_scores", "selected_text"]


def sweep_record(plan: SweepPlan, scores: Sequence[VariantScore], chosen: Variant | None,
                 options: Mapping[str, Any], gen_seeds: Sequence[int] | None, select_best: bool) -> dict[str, Any]:
    by_index = {s.index: s for s in scores}
    return {
        "format": "dmgd-sweep-v1",
        "recipe": {"path": plan.recipe.path, "hash": canonical_hash(plan.recipe), "text": plan.recipe.source},
        "swept": [{"key": p.key, "alternatives": list(p.texts)} for p in sweep_points(plan.recipe)],
        "split": plan.split.name if plan.split is not None else None,
        "protocol": {"eval": dict(options), "gen_seeds": list(gen_seeds) if gen_seeds else None,
                     "score": "last-epoch top-1 % on the split, one per generation seed x classifier seed",
                     "threads": _torch_threads()},
        "rule": SELECTION_RULE if select_best else None,
        "selected": chosen.label if chosen is not None else None,
        "variants": [{
            "index": v.index, "label": v.label, "hash": v.hash, "choices": dict(v.choices),
            "text": canonical_text(v.recipe), "runs": [str(r.out) for r in plan.runs_of(v)],
            **(by_index[v.index].to_dict() if v.index in by_index else {}),
        } for v in plan.variants()],
    }


def _torch_threads() -> int:
    """The classifiers' CPU thread count: a score repeats exactly only at the same count."""
    import torch

    return torch.get_num_threads()


def _pm(s: VariantScore | None) -> str:
    if s is None or not s.scores:
        return "-"
    return f"{s.mean:.2f}" + ("" if math.isnan(s.se) else f" +- {s.se:.2f}")


def markdown_table(plan: SweepPlan, scores: Sequence[VariantScore], chosen: Variant | None) -> str:
    keys = [p.key for p in sweep_points(plan.recipe)]
    by_index = {s.index: s for s in scores}
    scored = f"score on {plan.split.name}: mean +- SE" if plan.split is not None else "not evaluated"
    lines = [f"Sweep {plan.recipe.path}: {_variants(len(plan.variants()))}; {scored}.", "",
             _row(["#", "label", *keys, "sha256", "score", "n"]), _row(["---"] * (len(keys) + 5))]
    for v in plan.variants():
        s = by_index.get(v.index)
        mark = " **(selected)**" if chosen is not None and v.index == chosen.index else ""
        lines.append(_row([str(v.index), f"{v.label}{mark}", *(dict(v.choices)[k] for k in keys), v.hash[:12],
                           _pm(s), str(s.n if s else 0)]))
    if chosen is not None:
        lines += ["", f"Selected: {chosen.label} ({SELECTION_RULE})."]
    return "\n".join(lines) + "\n"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _variants(n: int) -> str:
    return f"{n} variant" + ("" if n == 1 else "s")


def summary_table(plan: SweepPlan, scores: Sequence[VariantScore], chosen: Variant | None) -> Any:
    """The table as rich draws it in a terminal."""
    from rich.markup import escape
    from rich.table import Table

    keys = [p.key for p in sweep_points(plan.recipe)]
    by_index = {s.index: s for s in scores}
    scored = f"scored on {plan.split.name}" if plan.split is not None else "not evaluated"
    table = Table(title=f"{plan.recipe.path}: {_variants(len(plan.variants()))}, {scored}",
                  caption=f"score: last-epoch top-1 %, mean +- SE; selection: {SELECTION_RULE}" if chosen else None)
    for name in ("#", "label", *keys, "score", "n"):
        table.add_column(escape(name), justify="right" if name in ("#", "score", "n") else "left")
    for v in plan.variants():
        s = by_index.get(v.index)
        style = "bold green" if chosen is not None and v.index == chosen.index else None
        table.add_row(str(v.index), escape(v.label), *(escape(dict(v.choices)[k]) for k in keys), _pm(s),
                      str(s.n if s else 0), style=style)
    return table


def plot_scores(plan: SweepPlan, scores: Sequence[VariantScore], path: Path) -> Path:
    """One panel per swept parameter: its alternatives on x, each variant's mean +- SE on y,
    one line per combination of the other parameters (legend when there are few)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sweep_points(plan.recipe)
    by_index = {s.index: s for s in scores}
    fig, axes = plt.subplots(1, len(points), figsize=(4.2 * len(points), 3.6), squeeze=False)
    for ax, point in zip(axes[0], points):
        lines: dict[tuple[tuple[str, str], ...], list[tuple[int, VariantScore]]] = {}
        for v in plan.variants():
            if v.index in by_index and by_index[v.index].scores:
                others = tuple((k, t) for k, t in v.choices if k != point.key)
                lines.setdefault(others, []).append((point.texts.index(dict(v.choices)[point.key]), by_index[v.index]))
        for others, found in lines.items():
            xs = [x for x, _ in found]
            ax.errorbar(xs, [s.mean for _, s in found], yerr=[0.0 if math.isnan(s.se) else s.se for _, s in found],
                        marker="o", capsize=3, label=", ".join(f"{k}={t}" for k, t in others) or None)
        ax.set_xticks(range(len(point.texts)), point.texts, rotation=30 if len(point.texts) > 4 else 0)
        ax.set_xlabel(point.key)
        ax.set_ylabel(f"score on {plan.split.name if plan.split else '-'} (%)")
        if 1 < len(lines) <= 8:
            ax.legend(fontsize="x-small")
    fig.suptitle(Path(plan.recipe.path).name, fontsize="medium")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def selected_text(plan: SweepPlan, chosen: Variant, score: VariantScore) -> str:
    """The chosen variant as a plain recipe: where it came from, then its statements."""
    return (f"# Variant {chosen.index} of {len(plan.variants())} of the sweep {plan.recipe.path} ({chosen.label}),\n"
            f"# chosen by `dmgd sweep --select`: {SELECTION_RULE}.\n"
            f"# Score on {plan.split.name}: {_pm(score)} (n = {score.n}).\n"
            + canonical_text(chosen.recipe))


def write_report(plan: SweepPlan, scores: Sequence[VariantScore], chosen: Variant | None,
                 options: Mapping[str, Any], gen_seeds: Sequence[int] | None, select_best: bool) -> dict[str, Path]:
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "sweep.json", "table": out / "sweep.md"}
    atomic_write_json(files["json"], sweep_record(plan, scores, chosen, options, gen_seeds, select_best))
    atomic_write_text(files["table"], markdown_table(plan, scores, chosen))
    if sweep_points(plan.recipe) and any(s.scores for s in scores):  # a plain recipe has no axis to plot
        files["plot"] = plot_scores(plan, scores, out / "sweep.png")
    if chosen is not None:
        score = next(s for s in scores if s.index == chosen.index)
        files["selected"] = out / "selected.dmgd"
        atomic_write_text(files["selected"], selected_text(plan, chosen, score))
    return files
